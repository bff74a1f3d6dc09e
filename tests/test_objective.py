"""--objective latency (per-unit estimated latency on a target) and bootstrap-stable clusters."""

import json

import edgeprune.cli  # noqa: F401  (registers the commands)
import pytest
from edgeprune.build import BuildConfig
from edgeprune.checkpoint import data_for_model
from edgeprune.cli.app import app
from edgeprune.errors import EdgepruneError
from edgeprune.prune import PruneConfig, prune_model
from edgeprune.prune.latency import node_scope, unit_latency
from edgeprune.prune.methods import StageContext, _choose, _policy_record
from edgeprune.prune.mspic import unit_costs
from edgeprune.prune.policies import Policy
from edgeprune.targets import load_target
from edgeprune.units import IDENTITY, list_units
from typer.testing import CliRunner

runner = CliRunner()
SHAPE = (1, 8, 8)  # digits


def _estimate(model, tmp_path, name, target):
    import onnx
    from edgeprune.export import export_onnx
    from edgeprune.profile.accounting import account
    from edgeprune.profile.latency import estimate_latency_ms

    export_onnx(model, SHAPE, tmp_path / name)
    return estimate_latency_ms(account(onnx.load(str(tmp_path / name))).nodes, target)[0]


def test_node_scope_is_the_module_path():
    assert node_scope("/layer1/layer1.0/conv1/Conv") == "layer1.0.conv1"
    assert node_scope("/layer2/layer2.0/downsample/downsample.0/Conv") == \
        "layer2.0.downsample.0"
    assert node_scope("/conv1/Conv") == "conv1" and node_scope("Identity_3") == ""


def test_unit_latencies_add_up_to_the_model_estimate(resnet20_digits, tmp_path):
    from edgeprune.complexity import unit_complexity
    from edgeprune.surgery import remove_units

    model, target = resnet20_digits.model.eval(), load_target("host-cpu")
    units = list_units(model)
    macs = [c.macs for c in unit_complexity(model, SHAPE, units)]
    lat = unit_latency(model, SHAPE, units, target, "fp32", macs)
    # The same export and estimate as `edgeprune profile`, split without loss.
    assert lat.total_ms == pytest.approx(_estimate(model, tmp_path, "a.onnx", target), rel=1e-12)
    assert sum(lat.owned_ms) + lat.unowned_ms == pytest.approx(lat.total_ms, rel=1e-12)
    assert all(ms > 0 for ms in lat.owned_ms) and lat.unowned_ms > 0
    assert lat.extra_ms == [0.0] * len(units)  # each unit's own nodes hold all its MACs
    # Removing an identity unit saves exactly what it is credited with.
    i = next(u.index for u in units if u.kind == IDENTITY and u.stage == 2)
    after = _estimate(remove_units(model, [units[i].name]), tmp_path, "b.onnx", target)
    assert lat.total_ms - after == pytest.approx(lat.units_ms[i], rel=1e-9)


def test_a_traced_models_units_are_estimated_from_their_macs():
    import torch
    from edgeprune.complexity import unit_complexity
    from edgeprune.units import prunable
    from torch import nn

    class Block(nn.Module):  # not a zoo block: the model is pruned as its traced graph
        def __init__(self, c):
            super().__init__()
            self.a, self.b = nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c)

        def forward(self, x):
            return torch.relu(x + self.b(self.a(x)))

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Conv2d(1, 8, 3, padding=1)
            self.blocks = nn.Sequential(Block(8), Block(8))
            self.head = nn.Linear(8, 10)

        def forward(self, x):
            return self.head(self.blocks(self.stem(x)).mean((2, 3)))

    model = prunable(Net().eval(), SHAPE)
    units = list_units(model)
    macs = [c.macs for c in unit_complexity(model, SHAPE, units)]
    lat = unit_latency(model, SHAPE, units, load_target("host-cpu"), "fp32", macs)
    assert not lat.attributed and lat.owned_ms == [0.0, 0.0] and lat.unowned_ms == lat.total_ms
    assert len(units) == 2 and all(ms > 0 for ms in lat.units_ms)
    assert lat.units_ms[0] / lat.units_ms[1] == pytest.approx(macs[0] / macs[1])


def _ctx(model, units, objective, errors, costs):
    return StageContext(stage=0, model=model, units=units, base_error=0.1, epsilon=0.05,
                        parameters=[], clustering="kmeans", seed=0, count=None,
                        score_fn=dict, error_fn=lambda removed: errors[removed],
                        objective=objective,
                        costs_fn=lambda: costs)


def test_latency_objective_ranks_by_unit_latency_and_can_differ_from_macs(resnet20_digits):
    model = resnet20_digits.model.eval()
    units = list_units(model)
    # layer1.1 + layer1.2 (16 channels at 8×8) and layer3.1 + layer3.2 (64 channels at 2×2):
    # the same MACs, different weight and activation traffic.
    a, b = (1, 2), (7, 8)
    costs = unit_costs(model, SHAPE, units, PruneConfig(objective="latency", target="host-cpu"))
    assert sum(costs[i].macs for i in a) == sum(costs[i].macs for i in b)
    lat = {p: sum(costs[i].latency for i in p) for p in (a, b)}
    slow, fast = sorted((a, b), key=lat.get, reverse=True)
    assert lat[slow] > 1.05 * lat[fast]
    # Both within ε; the faster pair has the lower gated error, so MACs (a tie) takes it.
    errors = {fast: 0.10, slow: 0.12}
    # one cluster of three units keeps its first and removes the pair
    policies = [Policy("kmeans", k, ((r[0] - 1, *r),)) for k, r in enumerate((fast, slow))]
    assert [p.removed for p in policies] == [fast, slow]
    chosen = {}
    for objective in ("macs", "latency"):
        ctx = _ctx(model, units, objective, errors, costs)
        records = [_policy_record(ctx, p, errors[p.removed]) for p in policies]
        if objective == "latency":
            assert [r["saving"] for r in records] == pytest.approx([lat[fast], lat[slow]])
        chosen[objective] = (fast, slow)[_choose(records)]
    assert chosen == {"macs": fast, "latency": slow}



def test_prune_with_the_latency_objective_records_and_uses_the_estimate(resnet20_digits, digits,
                                                                       tmp_path):
    data = data_for_model(resnet20_digits, digits)
    config = PruneConfig(objective="latency", target="jetson-nano", stages=1, finetune_epochs=0,
                         samples=200, max_error_increase=0.05)
    record = prune_model(resnet20_digits, data, config, tmp_path).record
    stage = record["stages"][0]
    unit_ms = stage["unit_latency_ms"]
    assert set(unit_ms) == {u.name for u in list_units(resnet20_digits.model)}
    for p in stage["policies"]:  # each policy's saving is the sum of its units' estimates
        assert p["objective"] == "latency"
        assert p["saving"] == pytest.approx(sum(unit_ms[n] for n in p["removed"]))
    qualifying = [p["saving"] for p in stage["policies"] if p["qualifies"] and p["removed"]]
    if qualifying:
        assert stage["policies"][stage["chosen"]]["saving"] == max(qualifying)
    assert record["config"]["target"] == "jetson-nano"


def test_latency_objective_needs_a_target(resnet20_digits_path, tmp_path):
    with pytest.raises(EdgepruneError, match="--objective latency needs"):
        PruneConfig(objective="latency").validate()
    with pytest.raises(EdgepruneError, match="unknown latency precision"):
        PruneConfig(objective="latency", target="host-cpu", latency_precision="fp8").validate()
    PruneConfig(target="no-such-device").validate()  # ignored unless the objective is latency
    for args, msg in [([], "--objective latency needs"),
                      (["--target", "no-such-device"], "unknown target")]:
        out = tmp_path / "p"
        r = runner.invoke(app, ["prune", str(resnet20_digits_path), "--data", "digits", "--out",
                                str(out), "--objective", "latency", *args])
        assert r.exit_code == 2 and msg in r.output, r.output
        assert len(r.output.strip().splitlines()) == 1 and not out.exists()


def test_build_passes_its_target_and_precision(tmp_path):
    cfg = BuildConfig(target="jetson-nano", model=tmp_path / "m.pt",
                      prune={"objective": "latency"})
    cfg.validate()
    prune = cfg.prune_config("fp16")
    assert (prune.target, prune.target_file, prune.latency_precision) == \
        ("jetson-nano", None, "fp16")
    assert prune.latency_target().name == "jetson-nano"
    fixed = BuildConfig(target="jetson-nano", model=tmp_path / "m.pt",
                        prune={"objective": "latency", "latency_precision": "int8"})
    assert fixed.prune_config("fp16").latency_precision == "int8"  # [prune] names its own
    # the target only enters the resume fingerprint when it changes what a stage computes
    assert "target" not in PruneConfig(target="host-cpu").fingerprint_fields()
    assert PruneConfig(objective="latency", target="host-cpu").fingerprint_fields()["target"] \
        == "host-cpu"


# ---------------------------------------------------------------- bootstrap-stable clusters


def test_bootstrap_draws_reuse_the_distances_exactly(monkeypatch):
    import numpy as np
    import torch
    from edgeprune import information as inf

    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.standard_normal((60, 5)) + 3.0)
    y = torch.from_numpy(rng.integers(0, 3, 60))
    config = inf.MIConfig(score="mi-shuffle", shuffles=2)
    rows = inf.bootstrap_rows(60, 3, seed=4)
    assert all(torch.equal(a, b) for a, b in zip(rows, inf.bootstrap_rows(60, 3, seed=4)))
    main, draws = inf.bootstrap_terms(x, y, config, rows, shuffles=2)
    assert main == inf.scaled_terms(x, y, config, 2)  # the sample's terms, unchanged
    scale = inf.scale_factor(x, "median")
    for r, d in zip(rows, draws):  # a draw = the estimate on the resampled rows at that scale
        direct = inf.bound_terms(x[r], y[r], 1.0, shuffles=2, scale=scale)
        assert d.h_t == pytest.approx(direct.h_t, abs=1e-9)
        assert d.h_t_y == pytest.approx(direct.h_t_y, abs=1e-9)
        assert d.h_t_y_shuffled == pytest.approx(direct.h_t_y_shuffled, abs=1e-9)
    monkeypatch.setattr(inf, "FULL_DIST_BYTES", 0)  # the row-chunk path gives the same
    _, chunked = inf.bootstrap_terms(x, y, config, rows, shuffles=2)
    assert [c.h_t_y for c in chunked] == pytest.approx([d.h_t_y for d in draws], abs=1e-9)
    assert len({round(d.h_t_y, 9) for d in draws} | {round(main.h_t_y, 9)}) == 4


def test_bootstrap_scores_are_seeded(resnet20_digits, digits):
    from edgeprune.information import unit_information, unit_information_bootstrap
    from edgeprune.prune.mspic import mi_sample

    config = PruneConfig(samples=100)
    model = resnet20_digits.model.eval()
    x, y = mi_sample(data_for_model(resnet20_digits, digits), config)
    idx = range(len(list_units(model)))
    scores, draws = unit_information_bootstrap(model, x, y, idx, config.mi_config(), draws=2,
                                               seed=1)
    assert scores == pytest.approx(unit_information(model, x, y, idx, config.mi_config()),
                                   abs=1e-12)
    again = unit_information_bootstrap(model, x, y, idx, config.mi_config(), draws=2, seed=1)
    other = unit_information_bootstrap(model, x, y, idx, config.mi_config(), draws=2, seed=2)
    assert again[1] == draws and other[1] != draws
    assert draws[0] != draws[1] and all(set(d) == set(idx) for d in draws)


def test_an_unstable_policy_is_dropped(resnet20_digits):
    from edgeprune.prune.methods import mspic

    units = list_units(resnet20_digits.model)
    # distinct gaps, so k-means has no ties; k = 8 merges the one close pair (6, 7)
    main = [0.0, 1.0, 2.1, 3.3, 4.6, 6.0, 7.5, 7.55, 9.2]
    moved = [0.95, 1.0, 2.1, 3.3, 4.6, 6.0, 7.5, 8.5, 9.2]  # there the close pair is (0, 1)
    draws = [dict(enumerate(v)) for v in (moved, main, moved)]

    def ctx(fraction, with_draws=True):
        return StageContext(stage=0, model=resnet20_digits.model, units=units, base_error=0.1,
                            epsilon=0.05, parameters=[8, 1], clustering="kmeans", seed=0,
                            count=None, score_fn=lambda: dict(enumerate(main)),
                            error_fn=lambda removed: 0.1 if len(removed) == 1 else 0.9,
                            draws_fn=(lambda: draws) if with_draws else None,
                            stable_fraction=fraction)

    plain = mspic(ctx(0.5, with_draws=False))
    assert plain.removed == [7] and "stability" not in plain.policies[0]
    robust = mspic(ctx(0.5))
    assert [p["stability"] for p in robust.policies] == pytest.approx([1 / 3, 1.0])
    assert [p["stable"] for p in robust.policies] == [False, True]
    assert robust.removed == [] and robust.chosen is None  # k = 1 exceeds ε; k = 8 is unstable
    assert mspic(ctx(0.3)).removed == [7]  # once in three draws is enough at 0.3


def test_prune_with_stable_clusters_reports_the_stability(resnet20_digits, digits, tmp_path):
    data = data_for_model(resnet20_digits, digits)
    config = PruneConfig(stable_clusters=3, stages=1, finetune_epochs=0, samples=150,
                         max_error_increase=0.05)
    stage = prune_model(resnet20_digits, data, config, tmp_path).record["stages"][0]
    assert stage["bootstrap"]["draws"] == 3 and stage["bootstrap"]["stable_fraction"] == 0.5
    assert set(stage["bootstrap"]["score_sd"]) == set(stage["scores"])
    assert all(round(p["stability"] * 3, 9) in (0, 1, 2, 3) for p in stage["policies"])
    assert all(p["stable"] == (p["stability"] >= 0.5) for p in stage["policies"])
    if stage["chosen"] is not None:
        assert stage["policies"][stage["chosen"]]["stable"]
    saved = json.loads((tmp_path / "mspic.json").read_text())
    assert saved["config"]["stable_clusters"] == 3
    with pytest.raises(EdgepruneError, match="stable"):
        PruneConfig(stable_clusters=-1).validate()
    with pytest.raises(EdgepruneError, match="stable"):
        PruneConfig(stable_fraction=0).validate()
