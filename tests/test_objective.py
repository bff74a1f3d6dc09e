"""--objective latency (per-unit estimated latency on a target) and bootstrap-stable clusters."""


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
