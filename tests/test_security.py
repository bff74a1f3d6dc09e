"""Attacks that must fail: hostile names in the generated device script, and report.json fields
that try to pull files from outside the build directories into report.html or to inject
Markdown/HTML into report.md."""

from __future__ import annotations

import copy
import dataclasses
import os
import subprocess
from pathlib import Path

import pytest
from edgeprune.engine import make_engine
from edgeprune.engine.docker import engine_run_command, image_build_command
from edgeprune.errors import EdgepruneError
from edgeprune.targets import load_target
from onnx_graphs import conv_relu

# Each name runs `touch` if any part of the script lets the shell read it as code.
HOSTILE = ["$(touch pwned1)", "`touch pwned2`", "a;touch pwned3;b", "sp ace", "q'uo\"te",
           "new\nline&&touch pwned4", "$ROOT", "-dash", "*", "x|touch pwned5", "tab\tend\n"]


def _hostile_target(base: str, **software) -> object:
    """A real target file's document with hostile values in what the script interpolates."""
    t = load_target(base)
    raw = copy.deepcopy(t.raw)
    raw["software"].update(software)
    return dataclasses.replace(t, name=f"{t.name}$(touch pwned6)\ntouch pwned7", raw=raw)


def _stand_in(path: Path) -> Path:
    """An executable that records its argv (NUL-separated, so newlines survive) and its cwd."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text('#!/usr/bin/env bash\nprintf "%s\\0" "$@" > "$ARGS_FILE"\n'
                    'pwd > "$ARGS_FILE.cwd"\n')
    path.chmod(0o755)
    return path


def _run(script: Path, tmp_path: Path, bin_dir: Path | None = None) -> list[str]:
    """bash -n, then run the script from an unrelated folder; returns the stand-in's argv."""
    subprocess.run(["bash", "-n", str(script)], check=True)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    path = f"{bin_dir}:{os.environ['PATH']}" if bin_dir else os.environ["PATH"]
    env = {**os.environ, "PATH": path, "ARGS_FILE": str(tmp_path / "args")}
    out = subprocess.run(["bash", str(script)], cwd=cwd, env=env, capture_output=True,
                         text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert not list(tmp_path.rglob("pwned?")), "an injected command ran"
    assert not list(cwd.iterdir())
    return (tmp_path / "args").read_bytes().decode().split("\0")[:-1]


def _hostile_build(tmp_path: Path, target, **kw):
    """An ONNX, an out folder and a calibration cache whose names are all hostile."""
    root = tmp_path / "".join(HOSTILE[:6]).replace("/", "_")
    root.mkdir()
    onnx = conv_relu(root / f"m{HOSTILE[0]}{HOSTILE[4]}.onnx")
    cache = root / f"c{HOSTILE[2]}{HOSTILE[1]}.cache"
    cache.write_text("TRT-8502-EntropyCalibration2\ninput: 3c010204\n")
    out = root / f"e{HOSTILE[5]}" / f"{HOSTILE[9]}{HOSTILE[10]}"
    return root, make_engine(onnx, target, "int8", out, calib_cache=cache, build=False, **kw)


def test_script_runs_trtexec_with_exactly_the_hostile_names(tmp_path):
    trtexec = _stand_in(tmp_path / "bin $(touch pwned8)" / "trt`touch pwned9`exec")
    target = _hostile_target("jetson-xavier-nx", trtexec=str(trtexec))
    root, result = _hostile_build(tmp_path, target)
    args = _run(result.path, tmp_path)
    assert args == result.plan["trtexec"][1:]
    assert f"--onnx=m{HOSTILE[0]}{HOSTILE[4]}.onnx" in args
    assert f"--calib=c{HOSTILE[2]}{HOSTILE[1]}.cache" in args
    assert (tmp_path / "args.cwd").read_text()[:-1] == str(root)  # ran in the plan's root


def test_script_runs_docker_with_exactly_the_hostile_names(tmp_path):
    bin_dir = tmp_path / "bin"
    _stand_in(bin_dir / "docker")
    # the device trtexec is absent here, so the script takes the docker branch
    target = _hostile_target("jetson-xavier-nx", trtexec=f"/nonexistent/{HOSTILE[0]}/trtexec")
    root, result = _hostile_build(tmp_path, target)
    args = _run(result.path, tmp_path, bin_dir)
    container = target.section("software")["container"]
    assert args == ["run", "--rm", "--runtime", "nvidia", "-v", f"{root}:/build", "-w",
                    "/build", container, *result.plan["trtexec"]]
    assert result.plan["docker"][6] == "$ROOT:/build"


@pytest.mark.parametrize("image", ["img$(touch pwned)", "img\nrm -rf x", "a b", "`id`", "",
                                   "-v/:/host"])
def test_a_container_image_that_is_not_an_image_reference_is_refused(tmp_path, image):
    target = _hostile_target("jetson-nano", container=image)
    onnx = conv_relu(tmp_path / "model.onnx")
    with pytest.raises(EdgepruneError, match="not a docker image reference"):
        make_engine(onnx, target, "fp16", tmp_path / "engine", build=False)
    assert not (tmp_path / "engine" / "build_engine.sh").exists()
    with pytest.raises(EdgepruneError, match="not a docker image reference"):
        image_build_command(target)


def test_docker_readme_lines_quote_target_values(tmp_path):
    target = _hostile_target("jetson-nano")
    line = engine_run_command(target, precision="fp16;touch pwned")
    out = subprocess.run(["bash", "-c", f"docker() {{ printf '%s\\0' \"$@\"; }}; {line}"],
                         cwd=tmp_path, capture_output=True, text=True, check=True)
    args = out.stdout.split("\0")[:-1]
    assert args[args.index("--target") + 1] == target.name
    assert args[args.index("--precision") + 1] == "fp16;touch pwned"
    assert not list(tmp_path.iterdir())
