"""mspic.png: per stage, each active unit's score (MI) against its original index, coloured by
the chosen policy's cluster, with the bin edges drawn and removed units crossed out in red."""

from __future__ import annotations

from pathlib import Path

from edgeprune.atomic import atomic_path


def plot_stages(record: dict, path: Path) -> Path:
    """Draw the stages of a mspic.json record into ``path`` (PNG, written atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    index = {u["name"]: u["index"] for u in record["units"]}
    stages = record["stages"]
    fig, axes = plt.subplots(len(stages), 1, figsize=(9, 2.6 * len(stages) + 0.6), squeeze=False)
    for ax, st in zip(axes[:, 0], stages):
        _draw_stage(ax, st, index, record["method"])
    axes[-1, 0].set_xlabel("unit index in the original model (0 = nearest the input)")
    fig.suptitle(f"{record['method']}: {record['summary']['units_before']} → "
                 f"{record['summary']['units_after']} units", fontsize=11)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return Path(path)


def _draw_stage(ax, st: dict, index: dict[str, int], method: str) -> None:
    import matplotlib.pyplot as plt

    scores = st.get("scores") or {}
    removed = set(st["removed"])
    chosen = st["policies"][st["chosen"]] if st.get("chosen") is not None else None
    cluster_of = {}
    if chosen:
        for c, members in enumerate(chosen["clusters"]):
            for n in members:
                cluster_of[n] = c
    cmap = plt.get_cmap("tab10")
    for name, v in scores.items():
        x = index.get(name, -1)
        color = cmap(cluster_of.get(name, 0) % 10) if chosen else "tab:blue"
        ax.scatter([x], [v], color=color, s=36, zorder=3, edgecolors="black", linewidths=0.4)
        if name in removed:
            ax.scatter([x], [v], marker="x", color="red", s=90, zorder=4, linewidths=2)
    if chosen and chosen.get("edges"):
        for e in chosen["edges"]:
            ax.axhline(e, color="gray", lw=0.6, ls=":")
    for name in removed - set(scores):  # baselines without scores: mark removals on the axis
        ax.axvline(index.get(name, -1), color="red", lw=1, alpha=0.6)
    kind = {"mi": "I(T; Y) [nats]", "l1": "L1 norm"}.get(st.get("score_kind"), "score")
    ax.set_ylabel(kind)
    how = (f"policy {chosen['clustering']} {chosen['parameter']}, gated val error "
           f"{chosen['val_error']:.3f}" if chosen and method == "mspic" else method)
    ax.set_title(f"stage {st['stage'] + 1}: removed {len(removed)} of {st['units_before']} "
                 f"units ({how}; val error after fine-tune {st['val_error_finetuned']:.3f})",
                 fontsize=9)
    ax.grid(alpha=0.3)
