"""Reports: schema validation, the three files, self-contained HTML, merging, and the CLIs."""

from __future__ import annotations

import copy
import json
import re

import edgeprune.cli  # noqa: F401  (registers the commands)
import jsonschema
import matplotlib
import onnx
import pytest
import torch
from edgeprune import __version__
from edgeprune.cli.app import app
from edgeprune.complexity import model_complexity
from edgeprune.errors import EdgepruneError
from edgeprune.export import export_onnx
from edgeprune.models import create_model
from edgeprune.profile import profile_variant
from edgeprune.report import SCHEMA_PATH, merge_reports, validate, write_reports
from edgeprune.targets import load_target
from typer.testing import CliRunner

runner = CliRunner()
SCHEMA = json.loads(SCHEMA_PATH.read_text())


def _no_external_urls(html: str) -> None:
    assert "http://" not in html and "https://" not in html
    assert not re.search(r"""(src|href)\s*=\s*["']?//""", html)
    assert "<script" not in html and "<link" not in html


@pytest.fixture(scope="module")
def onnx_path(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("onnx") / "resnet20.onnx"
    export_onnx(create_model("resnet20", num_classes=10, in_channels=1), (1, 8, 8), path)
    return path


def _report(onnx_path, target="jetson-nano") -> dict:
    t = load_target(target)
    variants = [profile_variant(onnx_path, t, name="original", precision="fp32", accuracy=0.97,
                                measure_host=False),
                profile_variant(onnx_path, t, name="pruned", precision="fp16", accuracy=0.96,
                                measure_host=False)]
    return {"target": {"name": t.name, "display_name": t.display_name},
            "edgeprune_version": __version__, "variants": variants,
            "pruning": {"method": "mspic", "units_before": 9, "units_after": 6,
                        "params_before": 1000, "params_after": 700,
                        "stages": 1,
                        "stage_log": [{"stage": 1, "removed": 3, "val_error": 0.03}],
                        "removed_units": [{"unit": "layer2.1", "stage": 1},
                                          {"unit": "layer3.2", "stage": 2}]}}


def test_report_names_removed_units_splits_and_estimates(onnx_path, tmp_path):
    md = write_reports(_report(onnx_path), tmp_path)["report.md"].read_text()
    assert "| layer2.1 | 1 |" in md and "| layer3.2 | 2 |" in md
    assert "accuracy (test)" in md and "test split" in md and "maximum clock" in md
    assert "est. dynamic power W (45 nm)" in md and "at 30 fps" in md
    assert "board power W (measured)" not in md  # nothing measured: no such column
    assert "| power W |" not in md
    report = _report(onnx_path) | {"model": {"normalization": {
        "mean": [0.5], "std": [0.25], "source": "the training split's per-channel statistics"}}}
    md = write_reports(report, tmp_path)["report.md"].read_text()
    assert "mean (0.5000), std (0.2500), from the training split's per-channel statistics" in md


def test_board_power_is_shown_only_when_measured(onnx_path, tmp_path):
    report = _report(onnx_path)
    report["variants"][1]["latency_ms"]["target_measured"] = {
        "median": 1.5, "p90": 1.7, "source": "tensorrt", "power_w": 4.25}
    md = write_reports(report, tmp_path)["report.md"].read_text()
    table = [line for line in md.splitlines() if line.startswith("| jetson-nano |")]
    assert "board power W (measured)" in md
    assert table[0].endswith("| — |") and table[1].endswith("| 4.25 |")


def test_plots_cap_accuracy_at_100_and_name_every_layer(onnx_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from edgeprune.report.html import _plot_accuracy, _plot_layers, _plot_pareto

    report = _report(onnx_path)
    report["variants"][0]["accuracy"] = 1.0
    fig = _plot_accuracy(plt, report)
    assert fig.axes[0].get_ylim()[1] == 100.0
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels == ["original (fp32)", "pruned (fp16)"]
    fig = _plot_layers(plt, report)
    names = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    layers = [lay["name"].strip("/").replace("/", ".") for lay in report["variants"][1]["layers"]]
    assert names and all(n in layers for n in names)  # whole names, not cut
    fig = _plot_pareto(plt, report)
    assert "Pareto front" in [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    plt.close("all")


def test_reports_validate_and_write_three_files(onnx_path, tmp_path):
    report = _report(onnx_path)
    (tmp_path / "mspic.png").write_bytes(_png())
    report["mi_plot"] = "mspic.png"
    paths = write_reports(report, tmp_path)
    assert sorted(p.name for p in paths.values()) == ["report.html", "report.json", "report.md"]
    written = json.loads(paths["report.json"].read_text())
    jsonschema.validate(written, SCHEMA)
    md = paths["report.md"].read_text()
    assert "| jetson-nano | pruned | fp16 |" in md and "## Pruning" in md
    html = paths["report.html"].read_text()
    _no_external_urls(html)
    # accuracy vs MACs, accuracy vs latency, latency, energy, per-layer energy, the MI plot
    assert html.count('src="data:image/png;base64,') == 6
    assert not list(tmp_path.glob(".report*"))  # no temporary files left behind


def test_validate_rejects_a_broken_report_and_writes_nothing(onnx_path, tmp_path):
    report = _report(onnx_path)
    broken = copy.deepcopy(report)
    del broken["variants"][1]["energy_mj"]
    with pytest.raises(EdgepruneError, match="variants/1"):
        validate(broken)
    with pytest.raises(EdgepruneError):
        write_reports(broken, tmp_path / "out")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    broken = copy.deepcopy(report)
    broken["variants"][0]["accuracy"] = 97.0  # a percentage where a fraction belongs
    with pytest.raises(EdgepruneError, match="accuracy"):
        validate(broken)


def test_merge_gives_one_row_per_target_and_variant(onnx_path, tmp_path):
    write_reports(_report(onnx_path, "jetson-nano"), tmp_path / "nano")
    write_reports(_report(onnx_path, "host-cpu"), tmp_path / "host")
    merged = merge_reports([tmp_path / "nano", tmp_path / "host"])
    validate(merged)
    assert [(v["target"], v["name"]) for v in merged["variants"]] == [
        ("jetson-nano", "original"), ("jetson-nano", "pruned"),
        ("host-cpu", "original"), ("host-cpu", "pruned")]
    # each target's estimate comes from its own file
    lat = {(v["target"], v["name"]): v["latency_ms"]["target_estimated"]
           for v in merged["variants"]}
    assert lat[("host-cpu", "original")] != lat[("jetson-nano", "original")]

    result = runner.invoke(app, ["report", str(tmp_path / "nano"), str(tmp_path / "host"),
                                 "--out", str(tmp_path / "cmp")])
    assert result.exit_code == 0, result.output
    _no_external_urls((tmp_path / "cmp" / "report.html").read_text())
    md = (tmp_path / "cmp" / "report.md").read_text()
    assert "| host-cpu | original |" in md and "| jetson-nano | pruned |" in md
    assert "edgeprune comparison: jetson-nano, host-cpu" in result.output
    assert "edgeprune profile" not in result.output and "jetso…" not in result.output


def test_report_cli_rejects_a_missing_build_in_one_line(tmp_path):
    result = runner.invoke(app, ["report", str(tmp_path / "nope"), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert "report.json does not exist" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "o").exists()


def test_profile_cli_on_a_trained_checkpoint(resnet20_digits_path, resnet20_digits, tmp_path):
    out = tmp_path / "prof"
    result = runner.invoke(app, ["profile", str(resnet20_digits_path), "--target", "host-cpu",
                                 "--data", "digits", "--out", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    jsonschema.validate(report, SCHEMA)
    v = report["variants"][0]
    ref = model_complexity(resnet20_digits.model, tuple(resnet20_digits.info.input_shape))
    assert v["accuracy"] > 0.9 and v["params"] == ref.params
    assert abs(v["macs"] - ref.macs) / ref.macs < 0.01
    assert v["latency_ms"]["host_measured"]["median"] > 0
    _no_external_urls((out / "report.html").read_text())
    assert (out / "report.md").is_file() and (out / "model.onnx").is_file()


def test_profile_cli_on_onnx_for_a_jetson(onnx_path, tmp_path):
    result = runner.invoke(app, ["profile", str(onnx_path), "--target", "jetson-nano",
                                 "--no-host", "--out", str(tmp_path / "p")])
    assert result.exit_code == 0, result.output
    v = json.loads((tmp_path / "p" / "report.json").read_text())["variants"][0]
    assert v["latency_ms"]["host_measured"] is None and v["latency_ms"]["target_estimated"] > 0


@pytest.mark.parametrize("args, message", [
    (["profile", "missing.onnx", "--target", "host-cpu"], "does not exist"),
    (["profile", "{onnx}", "--target", "no-such-board"], "unknown target"),
    (["profile", "{junk}", "--target", "host-cpu"], "not a readable ONNX model"),
    (["profile", "{onnx}", "--target", "host-cpu", "--engine", "missing.engine"],
     "engine file"),
    (["profile", "{empty}", "--target", "host-cpu"], "is empty (0 bytes)"),
    (["profile", "{external}", "--target", "jetson-nano"], "external data files"),
    (["profile", "{pt_renamed}", "--target", "host-cpu"], "is a PyTorch checkpoint"),
])
def test_profile_cli_bad_input_exits_2_in_one_line(args, message, onnx_path, tmp_path):
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not onnx")
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    external = tmp_path / "external.onnx"
    model = onnx.load(str(onnx_path))
    onnx.save(model, str(external), save_as_external_data=True, location="w.bin",
              size_threshold=0)
    pt_renamed = tmp_path / "model.onnx"
    torch.save({"w": torch.zeros(2)}, pt_renamed)
    out = tmp_path / "out"
    args = [a.format(onnx=onnx_path, junk=junk, empty=empty, external=external,
                     pt_renamed=pt_renamed) for a in args] + ["--out", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not (out / "report.json").exists()


def _png() -> bytes:
    import io

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(2, 2))
    ax.bar([0, 1], [1, 2])
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()
