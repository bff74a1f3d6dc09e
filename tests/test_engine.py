"""Engine plans and trtexec scripts per TensorRT version; the device script really runs (with a
stand-in docker); the TensorRT Python API build where tensorrt imports."""

import json
import os
import re
import stat
import subprocess

import numpy as np
import pytest
from edgeprune.engine import make_engine
from edgeprune.engine.plan import batch_shapes
from edgeprune.engine.trtexec import measure_flags, trtexec_command
from edgeprune.errors import EdgepruneError
from edgeprune.precision import check_precision
from edgeprune.targets import list_targets, load_target
from edgeprune.tensorrt_caps import TensorRT, parse_version
from edgeprune.tensorrt_caps import version_from_log as trtexec_version
from onnx_graphs import conv_relu, qdq_conv

JETSONS = [n for n in list_targets() if load_target(n).runtime == "tensorrt"]
TRTEXEC = "/usr/src/tensorrt/bin/trtexec"


def _measure(version: str) -> list[str]:
    """What every build command also measures and exports (test_trt_profile.py checks them)."""
    return measure_flags(TensorRT.parse(version), times="engine/trtexec.times.json",
                         profile="engine/trtexec.profile.json",
                         layers="engine/trtexec.layers.json")


def _engine(tmp_path, target, precision, onnx=None, **kw):
    onnx = onnx or conv_relu(tmp_path / "model.onnx")
    return make_engine(onnx, load_target(target), precision, tmp_path / "engine", **kw)


def test_jetson_nano_tensorrt_8_2_fp16(tmp_path):
    result = _engine(tmp_path, "jetson-nano", "fp16")
    assert result.kind == "script" and result.path == tmp_path / "engine" / "build_engine.sh"
    assert result.plan["trtexec"] == [
        TRTEXEC, "--onnx=model.onnx", "--saveEngine=engine/model.engine", "--workspace=512",
        "--fp16", "--timingCacheFile=engine/timing.cache", *_measure("8.2.1")]
    assert result.plan["docker"][:8] == ["docker", "run", "--rm", "--runtime", "nvidia", "-v",
                                         "$ROOT:/build", "-w"]
    assert "nvcr.io/nvidia/l4t-tensorrt:r8.2.1-runtime" in result.plan["docker"]


def test_jetson_agx_orin_tensorrt_10_int8_qdq_is_strongly_typed(tmp_path):
    result = _engine(tmp_path, "jetson-agx-orin", "int8", onnx=qdq_conv(tmp_path / "q.onnx"))
    assert result.plan["trtexec"] == [
        TRTEXEC, "--onnx=q.onnx", "--saveEngine=engine/model.engine",
        "--memPoolSize=workspace:4096", "--stronglyTyped",
        "--timingCacheFile=engine/timing.cache", *_measure("10.3.0")]
    assert result.plan["int8_mode"] == "explicit-qdq"


def test_jetson_agx_orin_fp16_and_dla(tmp_path):
    cmd = _engine(tmp_path, "jetson-agx-orin", "fp16", dla_core=1).plan["trtexec"]
    assert cmd[3:] == ["--memPoolSize=workspace:4096", "--fp16", "--useDLACore=1",
                       "--allowGPUFallback", "--timingCacheFile=engine/timing.cache",
                       *_measure("10.3.0")]
    assert not any(a.startswith("--workspace") for a in cmd)


def test_xavier_tensorrt_8_5_int8_routes(tmp_path):
    explicit = _engine(tmp_path, "jetson-xavier-nx", "int8", onnx=qdq_conv(tmp_path / "q.onnx"))
    assert explicit.plan["trtexec"][3:6] == ["--memPoolSize=workspace:1024", "--fp16", "--int8"]
    with pytest.raises(EdgepruneError, match="needs a calibration cache"):
        _engine(tmp_path, "jetson-xavier-nx", "int8")
    cache = tmp_path / "calib.cache"
    cache.write_text("TRT-8502-EntropyCalibration2\ninput: 3c010204\n")
    implicit = _engine(tmp_path, "jetson-xavier-nx", "int8", calib_cache=cache).plan
    assert "--calib=calib.cache" in implicit["trtexec"] and "--int8" in implicit["trtexec"]
    assert implicit["int8_mode"] == "implicit-calibration"


def test_refusals_are_clear(tmp_path):
    with pytest.raises(EdgepruneError, match="jetson-nano does not run int8.*fp32, fp16"):
        check_precision(load_target("jetson-nano"), "int8")
    with pytest.raises(EdgepruneError, match="jetson-nano has 0 DLA cores"):
        _engine(tmp_path, "jetson-nano", "fp16", dla_core=0)
    with pytest.raises(EdgepruneError, match="DLA runs fp16, int8 only, not fp32"):
        _engine(tmp_path, "jetson-xavier-nx", "fp32", dla_core=0)
    with pytest.raises(EdgepruneError, match="runs onnxruntime-cpu, not TensorRT"):
        _engine(tmp_path, "host-cpu", "fp32")
    assert not (tmp_path / "engine").exists()  # nothing written when the plan fails


def test_dynamic_batch_profile_flags(tmp_path):
    onnx = conv_relu(tmp_path / "model.onnx", batch="batch")
    with pytest.raises(EdgepruneError, match="needs an optimization profile"):
        _engine(tmp_path, "jetson-orin-nx", "fp16", onnx=onnx)
    shapes = batch_shapes(onnx, "1,4,16")
    cmd = _engine(tmp_path, "jetson-orin-nx", "fp16", onnx=onnx, shapes=shapes).plan["trtexec"]
    measure = _measure("10.3.0")
    assert cmd[-len(measure):] == measure
    assert cmd[-len(measure) - 3:-len(measure)] == [
        "--minShapes=input:1x3x8x8", "--optShapes=input:4x3x8x8", "--maxShapes=input:16x3x8x8"]
    with pytest.raises(EdgepruneError, match="MIN,OPT,MAX"):
        batch_shapes(onnx, "4,2,1")


@pytest.mark.parametrize("name", JETSONS)
def test_every_target_gets_a_valid_script(tmp_path, name):
    target = load_target(name)
    result = _engine(tmp_path, name, "fp16")
    script = result.path.read_text()
    assert script.startswith("#!/usr/bin/env bash\n") and "\nset -euo pipefail\n" in script
    assert os.stat(result.path).st_mode & stat.S_IXUSR
    subprocess.run(["bash", "-n", str(result.path)], check=True)
    cmd = " ".join(result.plan["trtexec"])
    assert cmd in script and f"{target.section('software')['container']} {cmd}" in script
    new = parse_version(target.section("software")["tensorrt"]) >= (8, 4)
    assert ("--memPoolSize=workspace:" in cmd) == new and ("--workspace=" in cmd) != new
    plan = json.loads((tmp_path / "engine" / "plan.json").read_text())
    assert plan["trtexec"] == result.plan["trtexec"] and plan["built_here"] is None
    assert any("not built here" in d for d in plan["decisions"])
    assert sorted(p.name for p in (tmp_path / "engine").iterdir()) == [
        "build_engine.sh", "engine_accuracy.py", "plan.json"]


def test_script_runs_the_docker_line(tmp_path):
    """Run build_engine.sh with a stand-in `docker` that records its arguments and writes the
    engine where trtexec would: the script finds its root, mounts it, and tees the log."""
    (tmp_path / "build").mkdir()
    result = _engine(tmp_path / "build", "jetson-agx-orin", "fp16")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "docker"
    fake.write_text('#!/usr/bin/env bash\nprintf "%s\\n" "$@" > "$ARGS_FILE"\n'
                    'echo "TensorRT version: 10.3.0"\ntouch engine/model.engine\n')
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}",
           "ARGS_FILE": str(tmp_path / "args.txt")}
    out = subprocess.run([str(result.path)], cwd="/", env=env, capture_output=True, text=True,
                         check=False)
    assert out.returncode == 0, out.stderr
    args = (tmp_path / "args.txt").read_text().splitlines()
    root = tmp_path / "build"
    assert args[:8] == ["run", "--rm", "--runtime", "nvidia", "-v", f"{root}:/build", "-w",
                        "/build"]
    assert args[8:] == ["nvcr.io/nvidia/l4t-jetpack:r36.4.0", *result.plan["trtexec"]]
    assert (root / "engine" / "model.engine").is_file()
    assert trtexec_version((root / "engine" / "trtexec.log").read_text()) == "10.3.0"


def test_trtexec_version_from_logs():
    assert trtexec_version("&&&& RUNNING TensorRT.trtexec [TensorRT v8201] # ...") == "8.2.1"
    assert trtexec_version("[I] TensorRT version: 10.3.0") == "10.3.0"
    assert trtexec_version("[TensorRT v100300] # trtexec") == "10.3.0"
    assert trtexec_version("nothing") is None


def test_commands_are_pure_functions_of_the_plan(tmp_path):
    plan = _engine(tmp_path, "jetson-tx2", "fp16").plan
    assert trtexec_command(plan, plan["trtexec_path"]) == plan["trtexec"]
    assert trtexec_command(plan)[0] == "trtexec"


def test_engine_cli(tmp_path):
    import edgeprune.cli  # noqa: F401
    from edgeprune.cli.app import app
    from typer.testing import CliRunner

    onnx = conv_relu(tmp_path / "model.onnx")
    runner = CliRunner()
    ok = runner.invoke(app, ["engine", str(onnx), "--target", "jetson-xavier-nx", "--precision",
                             "fp16", "--out", str(tmp_path / "engine")])
    assert ok.exit_code == 0, ok.output
    assert "build_engine.sh" in ok.output and "--memPoolSize=workspace:1024" in ok.output
    bad = runner.invoke(app, ["engine", str(onnx), "--target", "jetson-nano", "--precision",
                              "int8", "--out", str(tmp_path / "e2")])
    assert bad.exit_code == 2 and "fp32, fp16" in bad.output
    assert len(bad.output.strip().splitlines()) == 1 and not (tmp_path / "e2").exists()
    missing = runner.invoke(app, ["engine", str(tmp_path / "none.onnx"), "--target",
                                  "jetson-nano", "--out", str(tmp_path / "e3")])
    assert missing.exit_code == 2 and "does not exist" in missing.output


def test_export_cli_checks_the_target(tmp_path):
    import edgeprune.cli  # noqa: F401
    import torch
    from edgeprune.checkpoint import ModelInfo, save_checkpoint
    from edgeprune.cli.app import app
    from edgeprune.models import create_model
    from typer.testing import CliRunner

    torch.manual_seed(0)
    model = create_model("resnet20", num_classes=10, in_channels=1)
    ckpt = save_checkpoint(tmp_path / "m.pt", model, ModelInfo("resnet20", 10, (1, 8, 8)))
    out = CliRunner().invoke(app, ["export", str(ckpt), "--out", str(tmp_path / "m.onnx"),
                                   "--target", "jetson-nano"])
    assert out.exit_code == 0, out.output
    assert "max_abs_diff" in out.output and "TensorRT 8.2.1 (jetson-nano)" in out.output
    bad = CliRunner().invoke(app, ["export", str(ckpt), "--out", str(tmp_path / "x.onnx"),
                                   "--target", "jetson-nanoo"])
    assert bad.exit_code == 2 and "unknown target" in bad.output
    assert not (tmp_path / "x.onnx").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


@pytest.mark.tensorrt
@pytest.mark.gpu
def test_real_tensorrt_build_and_profile(tmp_path):
    pytest.importorskip("tensorrt", reason="the tensorrt Python package is not installed here")
    from edgeprune.engine.builder import build_with_api
    from edgeprune.engine.device import gpu_info
    from edgeprune.engine.plan import plan_engine
    from edgeprune.engine.runtime import profile_engine

    gpu = gpu_info()
    if gpu is None:
        pytest.skip("no CUDA GPU")
    # Build for whichever target matches this GPU's capability, else plan for the Orin and build
    # for this GPU anyway (the plan's flags are what is under test).
    onnx = conv_relu(tmp_path / "model.onnx")
    plan = plan_engine(onnx, load_target("jetson-agx-orin"), "fp16", tmp_path / "engine")
    engine = build_with_api(plan, tmp_path / "engine")
    info = json.loads((tmp_path / "engine" / "engine.json").read_text())
    assert engine.stat().st_size > 0 and info["tensorrt"] and info["compute_capability"]
    prof = profile_engine(engine, warmup_s=0.2, iterations=50)
    assert prof["latency_ms"]["runs"] == 50 and prof["latency_ms"]["median"] > 0
    assert np.isfinite(prof["latency_ms"]["p90"])


def _external_data_onnx(path):
    import onnx

    model = onnx.load(str(conv_relu(path)))
    onnx.save(model, str(path), save_as_external_data=True, location="weights.bin",
              size_threshold=0)
    return path


def _bad_onnx(tmp_path, kind):
    """A file that is not one self-contained ONNX model, and what the error must say."""
    import torch

    path = tmp_path / {"pt": "model.pt", "pt-renamed": "model.onnx"}.get(kind, f"{kind}.onnx")
    if kind == "empty":
        path.write_bytes(b"")
        return path, "is empty (0 bytes)"
    if kind == "junk":
        path.write_text("this is not onnx\n")
        return path, "not a readable ONNX model"
    if kind == "external":
        return _external_data_onnx(path), "external data files"
    torch.save({"w": torch.zeros(2)}, path)
    return path, "is a PyTorch checkpoint, not an ONNX model; export it first: `edgeprune export"


@pytest.mark.parametrize("batch", [[], ["--batch", "1,2,4"]])
@pytest.mark.parametrize("kind", ["empty", "junk", "external", "pt", "pt-renamed"])
def test_engine_cli_refuses_what_is_not_one_onnx_file(tmp_path, kind, batch):
    import edgeprune.cli  # noqa: F401
    from edgeprune.cli.app import app
    from typer.testing import CliRunner

    path, message = _bad_onnx(tmp_path, kind)
    out = tmp_path / "engine"
    result = CliRunner().invoke(app, ["engine", str(path), "--target", "jetson-xavier-nx",
                                      "--out", str(out), *batch])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1 and not out.exists()
    with pytest.raises(EdgepruneError, match=re.escape(message.split(";")[0])):
        make_engine(path, load_target("jetson-xavier-nx"), "fp16", out, build=False)
