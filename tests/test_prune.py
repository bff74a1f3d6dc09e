"""Policies, the multi-stage loop (outputs, exactness, resume), the baselines and the CLI."""

import itertools
import json

import edgeprune.cli  # noqa: F401  (registers the commands)
import numpy as np
import pytest
import torch
from edgeprune.checkpoint import data_for_model, load_model
from edgeprune.cli.app import app
from edgeprune.errors import EdgepruneError
from edgeprune.prune import PruneConfig, bin_clusters, build_policies, kmeans_clusters, prune_model
from edgeprune.prune.methods import l1_norm
from edgeprune.train import evaluate
from edgeprune.units import list_units
from typer.testing import CliRunner

# ---------------------------------------------------------------- policies


def test_bins_cluster_and_keep_the_first_unit():
    clusters, _ = bin_clusters([0.1, 0.12, 0.5, 0.52, 0.9, 1.0], 0.25)
    assert clusters == [[0, 1], [2, 3], [4], [5]]
    (policy,) = build_policies([0.1, 0.12, 0.5, 0.52, 0.9, 1.0], "bins", [0.25])
    assert policy.removed == (1, 3)  # the unit nearest the input survives in each cluster
    # Order of positions, not of values, decides who is kept.
    (policy,) = build_policies([0.5, 0.1, 0.52, 0.12, 1.0], "bins", [0.25])
    assert policy.removed == (2, 3)


def test_top_value_gets_its_own_bin():
    # 0.95 falls in the last regular bin [0.9, 1.2) with r = 0.3, but the top value stays alone.
    assert bin_clusters([0.0, 0.95, 1.0], 0.3)[0] == [[0], [1], [2]]
    assert bin_clusters([0.0, 0.91, 0.95, 1.0], 0.3)[0] == [[0], [1, 2], [3]]
    assert bin_clusters([0.3, 0.3, 0.3], 0.1)[0] == [[0, 1, 2]]


def test_kmeans_is_optimal_and_keeps_first_units():
    clusters = kmeans_clusters([5.0, 1.0, 9.0, 1.1, 5.2], 3)
    assert clusters == [[0, 4], [1, 3], [2]]
    (policy,) = build_policies([5.0, 1.0, 9.0, 1.1, 5.2], "kmeans", [3])
    assert policy.removed == (3, 4)
    rng = np.random.default_rng(0)
    for _ in range(5):  # brute force over all contiguous splits of the sorted values
        v = list(rng.random(7))
        s = sorted(v)

        def cost(parts):
            return sum(((np.array(p) - np.mean(p)) ** 2).sum() for p in parts)
        best = min(cost([s[a:b] for a, b in zip((0, *cuts), (*cuts, 7))])
                   for cuts in itertools.combinations(range(1, 7), 2))
        got = kmeans_clusters(v, 3)
        assert cost([[v[i] for i in c] for c in got]) == pytest.approx(best, abs=1e-12)


# ---------------------------------------------------------------- the loop

FAST = {"stages": 2, "finetune_epochs": 1, "samples": 300, "max_error_increase": 1.0,
            "resolutions": [0.05, 0.1, 0.2], "batch_size": 128}


@pytest.fixture(scope="module")
def mspic_run(resnet20_digits_path, digits, tmp_path_factory):
    loaded = load_model(resnet20_digits_path)
    data = data_for_model(loaded, digits)
    out = tmp_path_factory.mktemp("mspic")
    return loaded, data, out, prune_model(loaded, data, PruneConfig(**FAST), out)


def test_mspic_removes_units_and_writes_its_record(mspic_run, resnet20_digits_path):
    loaded, data, out, result = mspic_run
    s = result.summary
    assert s["units_after"] < s["units_before"] == 9
    assert s["params_after"] < s["params_before"] and s["macs_after"] < s["macs_before"]
    assert len(loaded.info.removed_units) == 0  # the input is left alone
    for name in ("pruned.pt", "mspic.json", "mspic.png", "stages/stage_0.pt"):
        assert (out / name).is_file()
    assert (out / "pruned.pt").stat().st_size < resnet20_digits_path.stat().st_size
    record = json.loads((out / "mspic.json").read_text())
    stage = record["stages"][0]
    assert set(stage["scores"]) == {u.name for u in list_units(loaded.model)}
    assert len(set(stage["scores"].values())) == 9  # the scores differ across units
    chosen = stage["policies"][stage["chosen"]]
    assert chosen["qualifies"] and chosen["removed"] == stage["removed"]
    assert max(len(p["removed"]) for p in stage["policies"] if p["qualifies"]) == \
        len(stage["removed"])
    # Surgery is exact inside the loop: the removed model scores what the gates promised.
    assert stage["val_error_removed"] == pytest.approx(stage["gated_val_error"], abs=1e-12)
    pruned = load_model(out / "pruned.pt")  # loads without the original file
    assert pruned.info.removed_units == s["removed_units"]
    assert evaluate(pruned.model, data, "val").accuracy == pytest.approx(
        s["val_accuracy_after"])
    assert not list(out.rglob(".*"))  # no temporaries left


def test_resume_gives_the_uninterrupted_result(mspic_run, tmp_path):
    loaded, data, _, full = mspic_run
    first = prune_model(loaded, data, PruneConfig(**{**FAST, "stages": 1}), tmp_path)
    stage0 = (tmp_path / "stages" / "stage_0.pt").stat().st_mtime_ns
    resumed = prune_model(loaded, data, PruneConfig(**FAST, resume=True), tmp_path)
    assert (tmp_path / "stages" / "stage_0.pt").stat().st_mtime_ns == stage0  # not redone
    assert first.summary["stages_run"] == 1
    assert resumed.summary == {**full.summary, "file_size_bytes":
                               resumed.summary["file_size_bytes"]}
    a, b = full.loaded.model.state_dict(), resumed.loaded.model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_baselines_remove_the_same_count(mspic_run, tmp_path):
    loaded, data, _, full = mspic_run
    count = len(full.record["stages"][0]["removed"])
    one = {**FAST, "stages": 1, "finetune_epochs": 0}
    rand = prune_model(loaded, data, PruneConfig(**one, method="random"), tmp_path / "r")
    assert len(rand.summary["removed_units"]) == count  # MSPIC's count at that stage
    l1 = prune_model(loaded, data, PruneConfig(**one, method="l1", counts=[3]), tmp_path / "l")
    norms = {u.name: l1_norm(u) for u in list_units(loaded.model)}
    assert sorted(l1.summary["removed_units"]) == sorted(sorted(norms, key=norms.get)[:3])
    again = prune_model(loaded, data, PruneConfig(**one, method="random", counts=[3], seed=5),
                        tmp_path / "r2")
    other = prune_model(loaded, data, PruneConfig(**one, method="random", counts=[3], seed=5),
                        tmp_path / "r3")
    assert again.summary["removed_units"] == other.summary["removed_units"]
    assert len(again.summary["removed_units"]) == 3


def test_target_reduction_stops_early(mspic_run, tmp_path):
    loaded, data, _, _ = mspic_run
    config = PruneConfig(**{**FAST, "stages": 3, "finetune_epochs": 0}, method="l1",
                         counts=[1], target_reduction=0.01, target_metric="units")
    assert prune_model(loaded, data, config, tmp_path).summary["stages_run"] == 1


@pytest.mark.parametrize("change", [{"method": "magic"}, {"resolutions": [0.0]},
                                    {"variant": "fancy"}, {"keep": "last"},
                                    {"epsilon_mode": "relative"}, {"score": "entropy"},
                                    {"clustering": "dbscan"}, {"stages": 0},
                                    {"target_reduction": 1.5}])
def test_bad_config_is_a_user_error(change):
    with pytest.raises(EdgepruneError):
        PruneConfig(**change).validate()


# ---------------------------------------------------------------- CLI

runner = CliRunner()


def test_cli_prunes(resnet20_digits_path, tmp_path):
    out = tmp_path / "p"
    r = runner.invoke(app, ["prune", str(resnet20_digits_path), "--data", "digits", "--out",
                            str(out), "--stages", "1", "--finetune-epochs", "0", "--samples",
                            "200", "--max-error-increase", "0.3", "--clustering", "kmeans",
                            "--clusters", "3,5"])
    assert r.exit_code == 0, r.output
    assert "units" in r.output and (out / "pruned.pt").is_file()
    record = json.loads((out / "mspic.json").read_text())
    assert [p["parameter"] for p in record["stages"][0]["policies"]] == [3, 5]


def test_cli_prunes_a_trained_model_within_epsilon(resnet20_digits_converged_path, tmp_path):
    """The issue's acceptance run, with the demo's settings: a ResNet-20 trained on digits to
    convergence (15 epochs) loses units stage by stage, each stage's choice within ε, and the
    pruned, fine-tuned model stays within ε of the start on the validation split."""
    model = resnet20_digits_converged_path
    out, eps = tmp_path / "p", 0.1
    r = runner.invoke(app, ["prune", str(model), "--data", "digits", "--out", str(out),
                            "--stages", "2", "--finetune-epochs", "3",
                            "--max-error-increase", str(eps)])
    assert r.exit_code == 0, r.output
    record = json.loads((out / "mspic.json").read_text())
    stages = [st for st in record["stages"] if st["removed"]]
    assert stages, "no stage removed anything"
    for st in stages:
        assert st["policies"][st["chosen"]]["error_increase"] <= eps
    start = record["stages"][0]["val_error_start"]
    assert record["stages"][-1]["val_error_finetuned"] <= start + eps
    pruned = load_model(out / "pruned.pt")
    assert len(list_units(pruned.model)) < 9
    assert (out / "pruned.pt").stat().st_size < model.stat().st_size


@pytest.mark.parametrize("args,msg", [
    (["--method", "magic"], "unknown pruning method"),
    (["--resolutions", "a,b"], "--resolutions"),
    (["--resolutions", "0,0.1"], "resolutions"),
])
def test_cli_bad_input_exits_2_in_one_line(resnet20_digits_path, tmp_path, args, msg):
    out = tmp_path / "p"
    r = runner.invoke(app, ["prune", str(resnet20_digits_path), "--data", "digits", "--out",
                            str(out), *args])
    assert r.exit_code == 2
    assert msg in r.output and len(r.output.strip().splitlines()) == 1
    assert not out.exists()


def test_cli_missing_model_exits_2(tmp_path):
    r = runner.invoke(app, ["prune", str(tmp_path / "nope.pt"), "--data", "digits", "--out",
                            str(tmp_path / "o")])
    assert r.exit_code == 2 and "does not exist" in r.output


# ---------------------------------------------------------------- variants, ε, stopping, resume


def test_keep_rules_choose_which_unit_a_cluster_keeps():
    values = [0.1, 0.12, 0.5, 0.52, 0.9]
    first, by_score, by_cost = (
        build_policies(values, "bins", [0.25], p)[0]
        for p in (None, values, [0.0, 0.3, 0.2, 0.1, 0.0]))
    assert first.removed == (1, 3)       # the paper: the earliest unit stays
    assert by_score.removed == (0, 2)    # the highest score stays
    assert by_cost.removed == (0, 3)     # the unit whose removal costs most stays


def test_mspic_with_a_count_removes_exactly_that_many(mspic_run, tmp_path):
    loaded, data, _, _ = mspic_run
    one = {**FAST, "stages": 1, "finetune_epochs": 0}
    for keep in ("first", "cost"):
        r = prune_model(loaded, data, PruneConfig(**one, counts=[3], keep=keep), tmp_path / keep)
        assert len(r.summary["removed_units"]) == 3


def test_budget_epsilon_bounds_the_drift_from_the_original(mspic_run, tmp_path):
    loaded, data, _, _ = mspic_run
    cfg = PruneConfig(**{**FAST, "max_error_increase": 0.05, "stages": 2},
                      epsilon_mode="budget")
    r = prune_model(loaded, data, cfg, tmp_path)
    original = r.record["stages"][0]["val_error_start"]
    for st in r.record["stages"]:
        assert st["epsilon_reference"] == pytest.approx(original)
        if st["removed"]:
            assert st["gated_val_error"] <= original + 0.05 + 1e-12


def test_paper_variant_fixes_the_papers_choices():
    cfg = PruneConfig(variant="paper", scaling="median", keep="cost").resolved()
    assert (cfg.scaling, cfg.sigma2, cfg.keep, cfg.score, cfg.epsilon_mode) == \
        ("none", None, "first", "mi", "absolute")
    assert cfg.mi_config().effective_sigma2 == 1e-3


def test_a_stage_removing_nothing_ends_the_run_only_if_no_later_stage_can_remove():
    from edgeprune.prune.mspic import _should_stop

    last = {"removed": [], "stage": 0}
    assert _should_stop(last, None, 9, PruneConfig(stages=3))
    assert not _should_stop(last, None, 9, PruneConfig(stages=3,
                                                       max_error_increase=[0.01, 0.05]))
    assert not _should_stop(last, None, 9, PruneConfig(stages=2,
                                                       resolutions=[[0.05], [0.05, 0.3]]))
    assert _should_stop(last, None, 9, PruneConfig(stages=2, max_error_increase=[0.05, 0.01]))


def test_resume_with_other_options_refuses_and_names_them(mspic_run, tmp_path):
    loaded, data, _, _ = mspic_run
    one = {**FAST, "stages": 1, "finetune_epochs": 0}
    prune_model(loaded, data, PruneConfig(**one), tmp_path)
    with pytest.raises(EdgepruneError, match=r"--samples \(was 300, now 200\)"):
        prune_model(loaded, data, PruneConfig(**{**one, "samples": 200}, resume=True), tmp_path)
    # Without --resume it starts over, as before.
    prune_model(loaded, data, PruneConfig(**{**one, "samples": 200}), tmp_path)


def test_objective_picks_the_policy_that_saves_most():
    from edgeprune.prune.methods import _choose

    records = [  # two qualifying policies: more units, or fewer units that cost more MACs
        {"qualifies": True, "removed": ["a", "b"], "val_error": 0.1, "saving": 2.0},
        {"qualifies": True, "removed": ["c"], "val_error": 0.1, "saving": 5.0},
        {"qualifies": False, "removed": ["a", "b", "c"], "val_error": 0.5, "saving": 7.0},
    ]
    assert _choose(records) == 1
    for r in records:
        r["saving"] = float(len(r["removed"]))  # objective = units
    assert _choose(records) == 0


def test_every_k_is_one_policy_per_count():
    from edgeprune.prune.policies import every_k

    assert every_k(9) == [8, 7, 6, 5, 4, 3, 2, 1]
    assert every_k(1) == [1]


def test_cost_method_removes_the_cheapest_units(resnet20_digits, digits):
    from edgeprune.checkpoint import data_for_model
    from edgeprune.prune.evaluate import criterion_set

    data = data_for_model(resnet20_digits, digits)
    removed, ctx = criterion_set(resnet20_digits.model, data,
                                 PruneConfig(method="cost", counts=[2], samples=100))
    costs = ctx.single_costs()
    assert len(removed) == 2
    assert max(costs[i] for i in removed) <= min(
        costs[i] for i in range(len(costs)) if i not in removed)
