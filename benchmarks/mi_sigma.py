"""MI against σ² for units of a trained ResNet-20 and ResNet-56 (CIFAR-10 subset), at the default
median scaling and raw: the evidence for the default σ² = 1 (median squared distance = 1).

    .venv/bin/python benchmarks/mi_sigma.py                 # trains/caches the models first
    .venv/bin/python benchmarks/mi_sigma.py --epochs 15 --n 1000

Prints, per σ², the MI range across units (min, max, spread) and how well the ranking of the
units agrees with the next σ²'s (Spearman's ρ: where the curves cross, the ranking flips), and
writes benchmarks/out/mi_sigma.png (one curve per unit, the default marked). Also prints the
synthetic check: features with growing class separation must score in increasing order (below
σ² ≈ 0.5 the bound is not monotone in the separation and exceeds ln K on noise).
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from _cifar import OUT, trained
from edgeprune.information import MIConfig, mutual_information, unit_information
from edgeprune.units import list_units

SIGMAS = [0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0]


def synthetic() -> None:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 10, size=400)
    noise, centres = rng.normal(size=(400, 256)), rng.normal(size=(10, 256))
    print("synthetic: separation 0, 0.5, 1, 1.5, 3 (MI should increase left to right)")
    for s in SIGMAS:
        v = [mutual_information(noise + a * centres[y], y, MIConfig(sigma2=s))
             for a in (0, 0.5, 1, 1.5, 3)]
        print(f"  σ²={s:<5} " + " ".join(f"{x:.3f}" for x in v)
              + ("  monotone" if v == sorted(v) else "  NOT monotone"))


def curves(arch: str, epochs: int, n: int) -> dict:
    from scipy.stats import spearmanr  # scipy comes with scikit-learn

    loaded, data = trained(arch, epochs)
    s = data.sample("train", n, seed=0)
    x = torch.from_numpy(data.normalize(s.x))
    units = list_units(loaded.model)
    table = {}
    for sigma2 in SIGMAS:
        mi = unit_information(loaded.model, x, s.y, range(len(units)), MIConfig(sigma2=sigma2))
        table[sigma2] = [mi[i] for i in range(len(units))]
    raw = unit_information(loaded.model, x, s.y, range(len(units)), MIConfig(scaling="none"))
    print(f"{arch} ({len(units)} units, n={n}): raw σ²=1e-3 gives "
          f"{min(raw.values()):.3f}..{max(raw.values()):.3f}")
    print(f"  {'σ²':<6} {'min':>6} {'max':>6} {'spread':>7}  rank corr. with the next σ²")
    sigmas = list(table)
    for k, (sigma2, v) in enumerate(table.items()):
        rho = (f"{spearmanr(v, table[sigmas[k + 1]]).statistic:+.2f}"
               if k + 1 < len(sigmas) else "")
        print(f"  {sigma2:<6} {min(v):6.3f} {max(v):6.3f} {max(v) - min(v):7.3f}  {rho}")
    return table


def plot(tables: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(tables), figsize=(6 * len(tables), 4), squeeze=False)
    for ax, (arch, table) in zip(axes[0], tables.items()):
        per_unit = np.array(list(table.values())).T
        for i, row in enumerate(per_unit):
            ax.plot(SIGMAS, row, color=plt.cm.viridis(i / len(per_unit)), lw=1)
        ax.axvline(MIConfig().effective_sigma2, color="red", ls="--", label="default")
        ax.set(xscale="log", xlabel="σ² (median squared distance = 1)", ylabel="I(T; Y) [nats]",
               title=f"{arch}: one curve per unit (dark = near the input)")
        ax.legend()
    OUT.mkdir(exist_ok=True)
    fig.tight_layout()
    fig.savefig(OUT / "mi_sigma.png", dpi=110)
    print(f"wrote {OUT / 'mi_sigma.png'}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--archs", default="resnet20,resnet56")
    args = ap.parse_args()
    synthetic()
    plot({a: curves(a, args.epochs, args.n) for a in args.archs.split(",")})


if __name__ == "__main__":
    main()
