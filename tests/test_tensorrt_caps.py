"""TensorRT's version rules in one place: NV_TENSORRT_VERSION, flags and APIs per release."""

import pytest
from edgeprune.errors import EdgepruneError
from edgeprune.quantize.calibration import read_trt_cache, write_trt_cache
from edgeprune.targets import list_targets, load_target
from edgeprune.tensorrt_caps import TensorRT, for_target, parse_version, version_from_log


@pytest.mark.parametrize("text, code", [
    # NvInferRuntimeCommon.h before 10: MAJOR*1000 + MINOR*100 + PATCH
    ("8.2.1", 8201), ("8.5.2", 8502), ("8.6.1", 8601), ("7.1.3", 7103),
    # NvInferRuntimeBase.h from 10 on: MAJOR*10000 + MINOR*100 + PATCH
    ("10.3.0", 100300), ("10.7.0", 100700), ("10.16.1", 101601),
])
def test_version_code_is_nv_tensorrt_version(text, code):
    assert TensorRT.parse(text).code == code
    assert TensorRT.from_code(code).text == text


def test_calibration_cache_header_uses_the_same_code(tmp_path):
    for text, code in (("8.2.1", 8201), ("10.3.0", 100300)):
        path = write_trt_cache(tmp_path / "c.cache", {"x": 1.0}, tensorrt_version=text)
        assert path.read_text().startswith(f"TRT-{code}-EntropyCalibration2\n")
        assert read_trt_cache(path).version == code


def test_trtexec_banner_and_version_line():
    assert version_from_log("[TensorRT v8201] # trtexec") == "8.2.1"
    assert version_from_log("[TensorRT v100300] # trtexec") == "10.3.0"
    assert version_from_log("[I] TensorRT version: 8.5.2") == "8.5.2"
    assert version_from_log("no version here") is None


def test_flags_move_between_releases():
    old, mid, new, next_ = (TensorRT.parse(v) for v in ("8.2.1", "8.5.2", "10.3.0", "11.0"))
    assert old.workspace_flag(512) == "--workspace=512"
    assert mid.workspace_flag(512) == new.workspace_flag(512) == "--memPoolSize=workspace:512"
    assert not mid.strongly_typed_qdq and new.strongly_typed_qdq
    assert mid.needs_explicit_batch_flag and not new.needs_explicit_batch_flag
    assert [t.implicit_int8 for t in (mid, new, next_)] == ["supported", "deprecated",
                                                            "removed"]
    assert TensorRT.parse("10.0.1").implicit_int8 == "supported"


@pytest.mark.parametrize("name", [n for n in list_targets()
                                  if load_target(n).runtime == "tensorrt"])
def test_every_jetson_has_an_op_list_no_newer_than_its_tensorrt(name):
    caps = for_target(load_target(name))
    assert parse_version(caps.ops.tensorrt) <= caps.version[:2]
    assert caps.max_opset >= 13  # what edgeprune exports


def test_bad_versions_are_user_errors():
    with pytest.raises(EdgepruneError, match="not a version"):
        parse_version("8.x")
    with pytest.raises(EdgepruneError, match="not TensorRT"):
        for_target(load_target("host-cpu"))
