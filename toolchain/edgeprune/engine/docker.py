"""The docker commands a person runs on the device, derived from the target file.

docker/README.md shows exactly these lines (tests/test_docker.py checks that), so the
documentation cannot drift from the container names in targets/*.toml. Values from a target
file are shell-quoted (a no-op for ordinary names), so a pasted line runs nothing else.
"""

from __future__ import annotations

import shlex

from edgeprune.targets import Target

JETSON_DOCKERFILE = "docker/Dockerfile.jetson"
HOST_DOCKERFILE = "docker/Dockerfile"
HOST_IMAGE = "edgeprune:host"
# The current folder (a copy of the build output folder) is mounted at /work in the container.
_RUN = 'docker run --rm --runtime nvidia -v "$PWD":/work -w /work'


def image_tag(target: Target) -> str:
    return f"edgeprune:{target.name}"


def image_build_command(target: Target) -> str:
    """Build the device image on the Jetson from the repository root."""
    from edgeprune.engine.trtexec import check_image

    base = check_image(target.section("software")["container"])
    return (f"docker build -f {JETSON_DOCKERFILE} --build-arg "
            f"{shlex.quote('BASE_IMAGE=' + base)} -t {shlex.quote(image_tag(target))} .")


def engine_run_command(target: Target, precision: str = "fp16") -> str:
    """Build the engine from model.onnx (the build folder's) inside the device image."""
    return (f"{_RUN} {shlex.quote(image_tag(target))} engine model.onnx --target "
            f"{shlex.quote(target.name)} --precision {shlex.quote(precision)} --out engine")


def profile_run_command(target: Target) -> str:
    """Time the engine and read the power rails (sysfs is visible in the container)."""
    return (f"{_RUN} {shlex.quote(image_tag(target))} profile model.onnx --target "
            f"{shlex.quote(target.name)} --engine engine/model.engine --no-host --out profile")


def measure_run_command(target: Target) -> str:
    """The device loop in one command: time the engine of the build folder (the current one),
    read the power rails and clocks, and write the figures into its report."""
    return (f"{_RUN} {shlex.quote(image_tag(target))} profile . --engine engine/model.engine")


def host_commands() -> list[str]:
    """Build the host (CPU) image and run the whole pipeline in it."""
    return [f"docker build -f {HOST_DOCKERFILE} -t {HOST_IMAGE} .",
            (f'docker run --rm -v "$PWD":/work -w /work {HOST_IMAGE} build --target jetson-nano '
             "model.pt --data digits --precision fp16 --out build")]
