"""trtexec's exported times, per-layer profile and layer information for TensorRT 8.2, 8.6 and
10.3 (tests/fixtures/trtexec/, in each release's layout), joined to edgeprune's estimate."""

import json
from pathlib import Path

import pytest
from edgeprune.engine.plan import LAYERS_NAME, PROFILE_NAME, TIMES_NAME
from edgeprune.engine.trt_profile import (
    join_layers,
    parse_layer_info,
    parse_profile,
    parse_times,
    read_trtexec_dir,
)
from edgeprune.engine.trtexec import measure_flags, trtexec_command
from edgeprune.errors import EdgepruneError
from edgeprune.tensorrt_caps import TensorRT

FIXTURES = Path(__file__).parent / "fixtures" / "trtexec"
# the fixtures' graph, in graph order, with a made-up estimate (ms) per node; 0 = launches nothing
NODES = [("/conv1/Conv", 0.1), ("/relu/Relu", 0.0), ("/layer1/conv1/Conv", 0.1),
         ("/layer1/relu/Relu", 0.0), ("/layer1/conv2/Conv", 0.1), ("/layer1/Add", 0.02),
         ("/layer1/relu_1/Relu", 0.01), ("/pool/GlobalAveragePool", 0.01), ("/Flatten", 0.0),
         ("/fc/Gemm", 0.02)]
ESTIMATE = [{"name": n, "latency_estimated_ms": ms} for n, ms in NODES]


def _read(version: str) -> dict:
    return read_trtexec_dir(FIXTURES / version, ESTIMATE, warmup_ms=2000)


def _by_name(layers: dict) -> dict:
    return {r["name"]: r for r in layers["layers"]}


def test_times_drop_the_warm_up_runs_tensorrt_8_2_lists():
    records = json.loads((FIXTURES / "8.2" / TIMES_NAME).read_text())
    lat = parse_times(records, warmup_ms=2000)
    assert lat["runs"] == 4 and lat["warmup_runs_dropped"] == 2
    assert lat["median"] == pytest.approx(1.25)  # 1.2, 1.3, 1.2, 1.4: not the 1.499 warm-up
    assert lat["wall_s"] == pytest.approx((2005.91 - 2000.66) / 1000)
    assert parse_times(records)["runs"] == 6  # without the warm-up length, nothing is dropped


@pytest.mark.parametrize("version", ["8.6", "10.3"])
def test_times_after_8_5_hold_the_timed_runs_only(version):
    lat = parse_times(json.loads((FIXTURES / version / TIMES_NAME).read_text()), 2000)
    assert lat["runs"] == 4 and lat["warmup_runs_dropped"] == 0
    assert lat["median"] == pytest.approx(0.85) and lat["min"] == pytest.approx(0.8)


def test_profile_formats():
    runs, rows = parse_profile((FIXTURES / "8.2" / PROFILE_NAME).read_text())
    assert runs == 10 and len(rows) == 8
    assert rows[1] == {"name": "/conv1/Conv + /relu/Relu", "total_ms": 3.0, "average_ms": 0.3,
                       "median_ms": None, "percentage": 25.0}  # no medianMs before 8.4
    _, rows = parse_profile((FIXTURES / "8.6" / PROFILE_NAME).read_text())
    assert rows[1]["median_ms"] == 0.21 and rows[1]["average_ms"] == 0.22


def test_profile_with_an_unescaped_quote_is_read_line_by_line():
    # trtexec writes names as they are: a quote in a layer name makes invalid JSON
    text = ('[\n  { "count" : 5 }\n, { "name" : "my "odd" layer", "timeMs" : 1, "averageMs" : '
            '0.2, "medianMs" : 0.19, "percentage" : 100 }\n]\n')
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)
    runs, rows = parse_profile(text)
    assert runs == 5 and rows == [{"name": 'my "odd" layer', "total_ms": 1.0, "average_ms": 0.2,
                                   "median_ms": 0.19, "percentage": 100.0}]
    with pytest.raises(EdgepruneError, match="neither JSON nor trtexec's layout"):
        parse_profile("not a profile")


def test_layer_info_metadata_from_8_6_on():
    old = parse_layer_info(json.loads((FIXTURES / "8.2" / LAYERS_NAME).read_text()))
    assert old["/conv1/Conv + /relu/Relu"]["onnx_nodes"] is None
    assert old["/conv1/Conv + /relu/Relu"]["type"] == "CaskConvolution"
    new = parse_layer_info(json.loads((FIXTURES / "8.6" / LAYERS_NAME).read_text()))
    assert new["/conv1/Conv + /relu/Relu"]["onnx_nodes"] == ["/conv1/Conv", "/relu/Relu"]
    ten = parse_layer_info(json.loads((FIXTURES / "10.3" / LAYERS_NAME).read_text()))
    assert ten["{ForeignNode[/pool/GlobalAveragePool.../fc/Gemm]}"]["onnx_nodes"] == [
        "/pool/GlobalAveragePool", "/Flatten", "/fc/Gemm"]
    names_only = parse_layer_info({"Layers": ["a + b", "c"], "Bindings": ["x"]})
    assert names_only["a + b"] == {"type": None, "onnx_nodes": None, "tactic": None}
    with pytest.raises(EdgepruneError, match='no "Layers"'):
        parse_layer_info({"layers": []})


@pytest.mark.parametrize("version", ["8.2", "8.6", "10.3"])
def test_every_node_is_joined_once(version):
    data = _read(version)
    layers = data["layers"]
    claimed = [n for r in layers["layers"] if r["kind"] == "layer" for n in r["nodes"]]
    # every node that costs time is claimed by a device layer (the Flatten only in 10.3's
    # Myelin region: 8.x runs it as an unnamed shuffle)
    assert set(claimed) >= {n for n, ms in NODES if ms > 0}
    assert layers["summary"]["nodes_not_found"] == []
    assert layers["summary"]["estimated_joined_ms"] == pytest.approx(sum(ms for _, ms in NODES))
    reformat = [r for r in layers["layers"] if r["kind"] == "reformat"]
    assert len(reformat) == 1 and reformat[0]["nodes"] == []  # its name holds node names


def test_join_by_name_before_8_6_and_by_metadata_after():
    old = _by_name(_read("8.2")["layers"])
    assert old["/layer1/conv2/Conv + /layer1/Add"]["nodes"] == ["/layer1/conv2/Conv",
                                                               "/layer1/Add"]
    assert old["/layer1/conv2/Conv + /layer1/Add"]["estimated_ms"] == pytest.approx(0.12)
    assert old["/layer1/conv2/Conv + /layer1/Add"]["measured_ms"] == 0.25  # averageMs (8.2)
    assert old["PWN(/layer1/relu_1/Relu)"]["nodes"] == ["/layer1/relu_1/Relu"]
    assert old["(Unnamed Layer* 11) [Shuffle]"]["kind"] == "other"
    new = _by_name(_read("8.6")["layers"])
    assert new["/layer1/conv2/Conv + /layer1/Add"]["measured_ms"] == 0.19  # medianMs
    # 8.6 names the shuffle's ONNX node in its metadata
    assert new["(Unnamed Layer* 11) [Shuffle]"]["nodes"] == ["/Flatten"]


def test_foreign_node_range_without_metadata_expands_along_the_graph():
    profile = [{"name": "{ForeignNode[/layer1/Add.../Flatten]}", "median_ms": 0.5,
                "average_ms": 0.5}]
    joined = join_layers(profile, {}, ESTIMATE)
    assert joined["layers"][0]["nodes"] == ["/layer1/Add", "/layer1/relu_1/Relu",
                                            "/pool/GlobalAveragePool", "/Flatten"]
    assert joined["summary"]["nodes_not_found"] == ["/conv1/Conv", "/layer1/conv1/Conv",
                                                    "/layer1/conv2/Conv", "/fc/Gemm"]


def test_versions_read_from_the_logs():
    assert [_read(v)["tensorrt"] for v in ("8.2", "8.6", "10.3")] == ["8.2.1", "8.6.2", "10.3.0"]


def test_a_folder_without_times_is_a_clear_error(tmp_path):
    with pytest.raises(EdgepruneError, match="--exportTimes"):
        read_trtexec_dir(tmp_path, ESTIMATE, warmup_ms=0)
    (tmp_path / TIMES_NAME).write_text("[{")
    with pytest.raises(EdgepruneError, match="not the JSON trtexec writes"):
        read_trtexec_dir(tmp_path, ESTIMATE, warmup_ms=0)


@pytest.mark.parametrize(("version", "flag", "layer_info"), [
    ("8.0.1", "--nvtxMode=verbose", False),
    ("8.2.1", "--profilingVerbosity=detailed", True),
    ("8.5.2", "--profilingVerbosity=detailed", True),
    ("10.3.0", "--profilingVerbosity=detailed", True)])
def test_measure_flags_per_release(version, flag, layer_info):
    flags = measure_flags(TensorRT.parse(version), times="t.json", profile="p.json",
                          layers="l.json")
    assert flags[0] == flag
    assert "--exportTimes=t.json" in flags and "--exportProfile=p.json" in flags
    assert "--separateProfileRun" in flags  # the profiler does not slow the timed runs
    assert ("--exportLayerInfo=l.json" in flags) == layer_info


def test_build_command_exports_beside_the_engine(tmp_path):
    from edgeprune.engine import make_engine
    from edgeprune.targets import load_target
    from onnx_graphs import conv_relu

    plan = make_engine(conv_relu(tmp_path / "m.onnx"), load_target("jetson-nano"), "fp16",
                       tmp_path / "engine", build=False).plan
    cmd = trtexec_command(plan, "trtexec")
    assert "--profilingVerbosity=detailed" in cmd and "--warmUp=2000" in cmd
    assert f"--exportTimes=engine/{TIMES_NAME}" in cmd
    assert f"--exportLayerInfo=engine/{LAYERS_NAME}" in cmd


def test_device_profile_times_and_profiles_in_separate_runs():
    """Power is sampled over the timing run alone: the profiler's run comes after it."""
    from edgeprune.engine.trtexec import layer_profile_command, profile_command

    timed = profile_command("m.engine", "trtexec", warmup_ms=2000, iterations=200, out_dir="d",
                            tensorrt="8.2.1")
    assert f"--exportTimes=d/{TIMES_NAME}" in timed
    assert not any(a.startswith(("--exportProfile", "--exportLayerInfo")) for a in timed)
    layers = layer_profile_command("m.engine", "trtexec", out_dir="d", tensorrt="10.3.0")
    assert f"--exportProfile=d/{PROFILE_NAME}" in layers
    assert f"--exportLayerInfo=d/{LAYERS_NAME}" in layers
    old = layer_profile_command("m.engine", "trtexec", out_dir="d", tensorrt="8.0.1")
    assert "--nvtxMode=verbose" in old and not any("LayerInfo" in a for a in old)


def test_warm_up_read_from_trtexec_logs():
    from edgeprune.engine.measure import _warmup_ms

    assert _warmup_ms((FIXTURES / "8.2" / "trtexec.log").read_text()) == 2000
    assert _warmup_ms("[I] Duration: 0s (+ 500ms warm up)") == 500
    assert _warmup_ms("no options here") is None
