"""Target files: every file follows the schema, every figure has its source, and the facts agree
with each other (peak = cores x 2 x clock, int8 only where the GPU has it, containers match)."""

import copy
import re

import pytest
from edgeprune.errors import EdgepruneError
from edgeprune.precision import resolve_precision
from edgeprune.targets import list_targets, load_target, load_target_file, validate_target
from edgeprune.tensorrt_caps import for_target, parse_version

JETSONS = ["jetson-nano", "jetson-tx2", "jetson-xavier-nx", "jetson-agx-xavier",
           "jetson-orin-nano", "jetson-orin-nx", "jetson-agx-orin"]


def test_all_jetsons_present():
    assert set(JETSONS) <= set(list_targets())


@pytest.mark.parametrize("name", list_targets())
def test_every_target_follows_the_schema(name):
    t = load_target(name)  # validates
    validate_target(t.raw, t.path)
    assert t.name == t.raw["name"] == name
    assert t.runtime in ("tensorrt", "onnxruntime-cpu")
    assert t.bandwidth_bytes_per_s > 0 and t.on_chip_bytes > 0
    assert t.peak_ops_per_s["fp32"] > 0 and "fp32" in t.fast_precisions


@pytest.mark.parametrize("name", JETSONS)
def test_every_figure_has_a_source_comment(name):
    text = load_target(name).path.read_text()
    number = re.compile(r"^\s*\w+\s*=\s*(\[[\d.,\s]*\]|[\d.]+)\s*(#.*)?$")
    for line in text.splitlines():
        m = number.match(line)
        if m and m.group(1) != "[]":
            assert m.group(2) and re.search(r"\[(ds|cc|trt|calc|\?|ngc)\]|assumption",
                                            m.group(2)), f"{name}: no source for {line!r}"
    assert "# Sources:" in text


@pytest.mark.parametrize("name", JETSONS)
def test_peak_fp32_is_cores_times_two_times_clock(name):
    gpu, peak = load_target(name).section("gpu"), load_target(name).section("peak")
    calc = gpu["cuda_cores"] * 2 * gpu["max_clock_mhz"] * 1e6 / 1e12
    assert peak["fp32_tflops"] == pytest.approx(calc, rel=0.02)


@pytest.mark.parametrize("name", JETSONS)
def test_int8_only_on_tensor_core_gpus(name):
    t = load_target(name)
    has_int8 = parse_version(t.section("gpu")["compute_capability"]) >= (7, 2)
    assert ("int8" in t.fast_precisions) == has_int8 == (t.section("peak")["int8_tops"] > 0)
    assert (t.section("gpu")["tensor_cores"] > 0) == has_int8
    assert "fp16" in t.fast_precisions  # every Jetson since Maxwell sm_53 has fast fp16
    if t.section("dla")["cores"]:
        assert set(t.section("dla")["precisions"]) <= {"fp16", "int8"}


@pytest.mark.parametrize("name", JETSONS)
def test_software_stack_matches_its_container(name):
    sw = load_target(name).section("software")
    trt = for_target(load_target(name)).version
    l4t_major = int(sw["l4t"][1:].split(".")[0])
    assert {32: (8, 2), 35: (8, 5), 36: (10, 3)}[l4t_major] == trt[:2]
    tag = sw["container"].split(":")[1]
    if "l4t-tensorrt" in sw["container"]:
        assert tag.startswith(f"r{sw['tensorrt']}")
    else:  # l4t-jetpack / l4t-base tags carry the L4T release: same major as the device's
        assert tag.startswith(f"r{l4t_major}.")


def test_the_marks_of_jetson_md_are_kept():
    nx = load_target("jetson-xavier-nx").path.read_text()
    assert re.search(r"bandwidth_gbps = 59.7 .*\[\?\].*51.2", nx)
    orin_nx = load_target("jetson-orin-nx").path.read_text()
    assert re.search(r"int8_tops = 30.1 .*\[calc\].*\[\?\]", orin_nx)
    for name in ("jetson-nano", "jetson-tx2"):
        assert re.search(r"fp32_tflops = .*\[calc\]", load_target(name).path.read_text())


def test_nano_int8_is_refused_with_its_precisions():
    with pytest.raises(EdgepruneError, match="jetson-nano does not run int8.*fp32, fp16"):
        resolve_precision(load_target("jetson-nano"), "int8")
    assert resolve_precision(load_target("jetson-agx-orin"), "auto").precision == "int8"


def test_schema_names_the_bad_field():
    raw = copy.deepcopy(load_target("jetson-nano").raw)
    del raw["gpu"]["cuda_cores"]
    with pytest.raises(EdgepruneError, match=r"gpu: 'cuda_cores' is a required property"):
        validate_target(raw)
    raw = copy.deepcopy(load_target("jetson-nano").raw)
    raw["gpu"]["compute_capability"] = 5.3  # a float, not "5.3"
    with pytest.raises(EdgepruneError, match="gpu.compute_capability"):
        validate_target(raw)
    raw = copy.deepcopy(load_target("jetson-nano").raw)
    raw["precisions"]["fast"] = ["fp16", "int4"]
    with pytest.raises(EdgepruneError, match="precisions.fast"):
        validate_target(raw)


def test_host_kind_needs_cpu_not_gpu():
    raw = copy.deepcopy(load_target("jetson-nano").raw)
    raw["runtime"] = "onnxruntime-cpu"
    with pytest.raises(EdgepruneError, match="'cpu' is a required property"):
        validate_target(raw)
    raw["cpu"] = {"cores": 2, "clock_ghz": 2.6}
    validate_target(raw)
    with pytest.raises(EdgepruneError, match="not TensorRT"):
        for_target(load_target("host-cpu"))


def test_a_broken_target_file_is_a_one_line_error(tmp_path, monkeypatch):
    text = load_target("jetson-nano").path.read_text().replace("cuda_cores = 128", "")
    (tmp_path / "my-board.toml").write_text(text.replace('"jetson-nano"', '"my-board"'))
    monkeypatch.setenv("EDGEPRUNE_TARGETS_DIR", str(tmp_path))
    with pytest.raises(EdgepruneError, match="my-board.toml: gpu: 'cuda_cores'") as e:
        load_target("my-board")
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("name", ["../../../tmp/x", "/etc/passwd", "jetson-nano.toml",
                                  "targets/jetson-nano", ".", ""])
def test_target_is_a_name_never_a_path(name, tmp_path):
    (tmp_path / "x.toml").write_text(load_target("jetson-nano").path.read_text())
    with pytest.raises(EdgepruneError, match="unknown target"):
        load_target(name)


def test_target_file_is_checked_against_the_schema(tmp_path):
    good = tmp_path / "board.toml"
    good.write_text(load_target("jetson-nano").path.read_text().replace('"jetson-nano"',
                                                                        '"my-board"'))
    assert load_target_file(good).name == "my-board"
    bad = tmp_path / "bad.toml"
    bad.write_text(good.read_text().replace("cuda_cores = 128", "cuda_cores = -1"))
    with pytest.raises(EdgepruneError, match="gpu.cuda_cores"):
        load_target_file(bad)
    with pytest.raises(EdgepruneError, match="does not exist"):
        load_target_file(tmp_path / "none.toml")
