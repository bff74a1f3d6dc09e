"""Dockerfiles, checked statically (no Docker engine here): they parse, the Jetson image's base
and tools match the target files, and docker/README.md shows exactly the commands the code
derives from the target files."""

import json
import re
import tomllib
from pathlib import Path

import pytest
from edgeprune.engine.docker import (
    engine_run_command,
    host_commands,
    image_build_command,
    measure_run_command,
    profile_run_command,
)
from edgeprune.paths import REPO_ROOT
from edgeprune.targets import list_targets, load_target

DOCKER = REPO_ROOT / "docker"
JETSONS = [load_target(n) for n in list_targets() if load_target(n).runtime == "tensorrt"]
INSTRUCTIONS = {"FROM", "ARG", "ENV", "RUN", "COPY", "WORKDIR", "ENTRYPOINT", "CMD", "LABEL",
                "USER", "EXPOSE", "VOLUME", "SHELL"}


def parse_dockerfile(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per instruction: comments dropped, continuations joined."""
    out, pending = [], ""
    for line in text.splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        pending += line.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        word, _, args = pending.strip().partition(" ")
        out.append((word, " ".join(args.split())))
        pending = ""
    assert not pending, "a continuation runs past the end of the file"
    return out


def _first(instrs, word):
    return [a for w, a in instrs if w == word]


@pytest.mark.parametrize("name", ["Dockerfile", "Dockerfile.jetson"])
def test_dockerfiles_parse(name):
    instrs = parse_dockerfile((DOCKER / name).read_text())
    assert {w for w, _ in instrs} <= INSTRUCTIONS
    assert instrs[-2:] == [("ENTRYPOINT", '["edgeprune"]'), ("CMD", '["--help"]')]
    assert json.loads(_first(instrs, "ENTRYPOINT")[0]) == ["edgeprune"]
    for src in (a.split()[:-1] for a in _first(instrs, "COPY") if not a.startswith("--from")):
        for s in src:
            assert (REPO_ROOT / s).exists(), f"{name} copies {s}, which is not in the repository"
    scripts = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert "edgeprune" in scripts  # the entry point is the installed console script


def test_jetson_image_base_is_a_target_container():
    instrs = parse_dockerfile((DOCKER / "Dockerfile.jetson").read_text())
    arg = next(a for w, a in instrs if w == "ARG" and a.startswith("BASE_IMAGE="))
    assert instrs.index(("ARG", arg)) == 0  # global ARG: usable in FROM
    default = arg.split("=", 1)[1]
    assert default == load_target("jetson-nano").section("software")["container"]
    assert _first(instrs, "FROM")[-1] == "${BASE_IMAGE}"
    env = " ".join(_first(instrs, "ENV"))
    for t in JETSONS:  # the image puts the target's trtexec on PATH
        assert str(Path(t.section("software")["trtexec"]).parent) in env
    assert "EDGEPRUNE_TARGETS_DIR=/opt/edgeprune-src/targets" in env


def test_jetson_image_installs_what_the_device_side_needs_with_the_project_pins():
    text = (DOCKER / "Dockerfile.jetson").read_text()
    deps = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = {re.split(r"[<>=]", d)[0]: d for d in deps}
    installed = re.findall(r'"([a-z_-]+[<>=][^"]+)"', text)
    assert {re.split(r"[<>=]", d)[0] for d in installed} >= {"typer", "rich", "numpy", "onnx",
                                                             "jsonschema"}
    for spec in installed:
        name = re.split(r"[<>=]", spec)[0]
        if name in pins:
            assert spec == pins[name], f"Dockerfile.jetson pins {spec}, pyproject {pins[name]}"
    assert "--no-deps ." in text and "torch" not in re.sub(r"#.*", "", text)


def test_host_image_runs_python_3_11_or_newer():
    instrs = parse_dockerfile((DOCKER / "Dockerfile").read_text())
    image = _first(instrs, "FROM")[0]
    requires = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    m = re.match(r"python:(\d+)\.(\d+)", image)
    assert m and (int(m[1]), int(m[2])) >= (3, 11) and requires["requires-python"] == ">=3.11"


def test_readme_commands_are_the_checked_ones():
    readme = (DOCKER / "README.md").read_text()
    lines = set(readme.splitlines())
    expected = [c for t in JETSONS for c in (image_build_command(t), engine_run_command(t),
                                             profile_run_command(t))] + host_commands()
    expected.append(measure_run_command(load_target("jetson-orin-nano")))  # the device loop
    for cmd in expected:
        assert cmd in lines, f"docker/README.md lacks: {cmd}"
    shown = [ln for ln in lines if ln.startswith("docker ")]
    assert sorted(shown) == sorted(expected)  # no stale command either
    for t in JETSONS:
        assert f"| {t.name} | `{t.section('software')['container']}` |" in readme
