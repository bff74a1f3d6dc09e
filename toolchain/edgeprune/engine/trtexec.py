"""trtexec command lines per TensorRT version, and the device script that runs them.

Flag names moved between releases (jetson.md, the TensorRT 8.x-to-10.x trtexec migration guide):
8.2 sizes the workspace with ``--workspace=MiB``; 8.4 added ``--memPoolSize=workspace:MiB`` and
deprecated ``--workspace``; 10 removed it. 10 builds QDQ graphs strongly typed
(``--stronglyTyped``), with no precision flags. The rest is common: --onnx, --saveEngine, --fp16,
--int8, --calib, --useDLACore, --allowGPUFallback, --timingCacheFile, --min/opt/maxShapes.

Every command also measures: ``--profilingVerbosity`` as the release spells it (kept in the
engine, so a later ``--loadEngine`` can still list the layers), the timing of each run
(``--exportTimes``), the per-layer profile in a second run that does not slow the first
(``--exportProfile`` with ``--separateProfileRun``) and the layer information
(``--exportLayerInfo``); edgeprune.engine.trt_profile reads the three files.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from edgeprune.atomic import write_text
from edgeprune.engine.plan import (
    ITERATIONS,
    LAYERS_NAME,
    LOG_NAME,
    PROFILE_NAME,
    SCRIPT_NAME,
    STATE_NAME,
    TIMES_NAME,
    WARMUP_MS,
)
from edgeprune.errors import EdgepruneError
from edgeprune.targets import Target
from edgeprune.tensorrt_caps import TensorRT

CONTAINER_ROOT = "/build"  # where the script mounts the plan's root inside the container
MOUNT = f"$ROOT:{CONTAINER_ROOT}"  # docker's -v value; the one word where the shell expands
MOUNT_AT = 6  # its index in docker_command


def trtexec_command(plan: dict, trtexec: str = "trtexec") -> list[str]:
    """The trtexec argv that builds the plan's engine; paths relative to the plan's root."""
    cmd = [trtexec, f"--onnx={plan['onnx']}", f"--saveEngine={plan['engine']}",
           TensorRT.parse(plan["tensorrt"]).workspace_flag(plan["workspace_mib"])]
    if plan["strongly_typed"]:
        cmd.append("--stronglyTyped")
    else:
        cmd += ["--fp16"] if plan["fp16"] else []
        cmd += ["--int8"] if plan["int8"] else []
    if plan["calibration_cache"]:
        cmd.append(f"--calib={plan['calibration_cache']}")
    if plan["dla_core"] is not None:
        cmd.append(f"--useDLACore={plan['dla_core']}")
        cmd += ["--allowGPUFallback"] if plan["gpu_fallback"] else []
    cmd.append(f"--timingCacheFile={plan['timing_cache']}")
    for flag, key in (("--minShapes", "min"), ("--optShapes", "opt"), ("--maxShapes", "max")):
        if plan["shapes"]:
            cmd.append(f"{flag}=" + ",".join(f"{name}:{'x'.join(map(str, s[key]))}"
                                             for name, s in plan["shapes"].items()))
    folder = plan["engine_dir"]
    return cmd + measure_flags(TensorRT.parse(plan["tensorrt"]), times=f"{folder}/{TIMES_NAME}",
                               profile=f"{folder}/{PROFILE_NAME}",
                               layers=f"{folder}/{LAYERS_NAME}")


def measure_flags(caps: TensorRT, *, times: str, profile: str, layers: str,
                  warmup_ms: int = WARMUP_MS, iterations: int = ITERATIONS) -> list[str]:
    """What every trtexec run of ours measures and exports (see the module's docstring). No
    host/device copies: the times are the GPU's, as the estimate's are."""
    flags = [caps.profiling_flag(), f"--warmUp={warmup_ms}", f"--iterations={iterations}",
             "--duration=0", "--noDataTransfers", f"--exportTimes={times}",
             "--separateProfileRun", f"--exportProfile={profile}"]
    return flags + ([f"--exportLayerInfo={layers}"] if caps.exports_layer_info else [])


def docker_command(plan: dict, inner: list[str], image: str | None = None) -> list[str]:
    """``docker run --runtime nvidia`` running ``inner`` in the target's container, with the
    plan's root mounted at /build and used as the working folder (``$ROOT`` in the script)."""
    return ["docker", "run", "--rm", "--runtime", "nvidia", "-v", MOUNT,
            "-w", CONTAINER_ROOT, image or plan["container"], *inner]


# A docker image reference (registry/name:tag@digest): anything else is refused, not quoted,
# since docker would reject it anyway and it must never reach a shell as code.
_IMAGE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/:@-]*")


def _quote(value: str) -> str:
    """One shell word that bash reads back as exactly ``value`` (single-quoted when needed)."""
    if "\0" in value:
        raise EdgepruneError(f"{value!r} holds a NUL byte; it cannot be passed to a program")
    return shlex.quote(value)


def _shell(argv: list[str], mount_at: int | None = None) -> str:
    # Every word is quoted literally except the mount, where only $ROOT expands (double quotes
    # around the variable alone, so nothing else in the word can reach the shell).
    return " ".join(f'"$ROOT":{_quote(CONTAINER_ROOT)}' if i == mount_at else _quote(a)
                    for i, a in enumerate(argv))


def _comment(text: str) -> str:
    # A newline would end the comment and turn the rest of the value into a command.
    return re.sub(r"[\x00-\x1f\x7f\u2028\u2029\x85]", " ", str(text))


def check_image(image: str) -> str:
    """The container image, or EdgepruneError when it is not a docker image reference."""
    if not isinstance(image, str) or not _IMAGE.fullmatch(image):
        raise EdgepruneError(f"container image {image!r} in the target file is not a docker image "
                             "reference (letters, digits and ._/:@- only); fix [software] "
                             "container")
    return image


def build_script(plan: dict) -> str:
    """build_engine.sh: run trtexec directly where the target's trtexec exists (on the device),
    else in the target's container; the log goes beside the engine. Every value from the plan
    (paths, file names, target file values) is a single-quoted shell word or a comment."""
    trtexec = plan["trtexec_path"]
    check_image(plan["container"])
    cmd = _shell(trtexec_command(plan, trtexec))
    docker = _shell(docker_command(plan, trtexec_command(plan, trtexec)), mount_at=MOUNT_AT)
    up = Path(plan["engine_dir"]).as_posix().count("/") + 1 if plan["engine_dir"] != "." else 0
    root = '"$HERE"' + "/.." * up
    log = _quote(f"{plan['engine_dir']}/{LOG_NAME}")
    state = _quote(f"{plan['engine_dir']}/{STATE_NAME}")
    return "\n".join([
        "#!/usr/bin/env bash",
        _comment(f"# Build the TensorRT engine for {plan['target']} (TensorRT {plan['tensorrt']}): "
                 "run this on the device."),
        "# Written by `edgeprune engine`; every decision is in plan.json beside it.",
        *(_comment(f"#   {d}") for d in plan["decisions"]),
        "set -euo pipefail",
        # No $(dirname) and a sentinel after pwd: command substitution drops trailing newlines,
        # which a folder name may end with.
        'case "$0" in */*) HERE=${0%/*} ;; *) HERE=. ;; esac',
        f"ROOT=$(cd -- {root} && pwd && echo .)",
        "ROOT=${ROOT%$'\\n.'}",
        'cd -- "$ROOT"',
        # The power mode and clocks every figure depends on, read before the run (no root
        # needed); `edgeprune profile BUILD_DIR --trtexec-dir` reads them back.
        f"{{ nvpmodel -q; grep -H . /sys/class/devfreq/*/*_freq; }} > {state} 2>&1 || true",
        f"if command -v -- {_quote(trtexec)} >/dev/null 2>&1; then",
        f"  {cmd} 2>&1 | tee -- {log}",
        "else",
        # docker -v splits its value at ':', so a folder with one would mount something else
        """  case "$ROOT" in *:*) printf 'build_engine.sh: docker cannot mount %s (a colon """
        """in the path); move the folder\\n' "$ROOT" >&2; exit 2 ;; esac""",
        f"  {docker} 2>&1 | tee -- {log}",
        "fi",
        f'echo "engine: $ROOT/"{_quote(plan["engine"])}',
        "",
    ])


def write_build_script(plan: dict, target: Target, out_dir: Path) -> Path:
    """Write ``out_dir/build_engine.sh`` (executable) and record its commands in the plan."""
    plan["trtexec"] = trtexec_command(plan, plan["trtexec_path"])
    plan["docker"] = docker_command(plan, plan["trtexec"])
    path = write_text(Path(out_dir) / SCRIPT_NAME, build_script(plan))
    path.chmod(0o755)
    return path


def profile_command(engine: str, trtexec: str, *, warmup_ms: int, iterations: int,
                    out_dir: str, tensorrt: str | None = None) -> list[str]:
    """trtexec timing an existing engine: warm-up, then ``iterations`` runs, exporting the
    times into ``out_dir``; nothing else runs in it, so the power sampled meanwhile is the
    timed runs' (the per-layer profile is :func:`layer_profile_command`'s second run)."""
    caps = TensorRT.parse(tensorrt)
    return [trtexec, f"--loadEngine={engine}", caps.profiling_flag(), f"--warmUp={warmup_ms}",
            f"--iterations={iterations}", "--duration=0", "--noDataTransfers",
            f"--exportTimes={out_dir}/{TIMES_NAME}"]


def layer_profile_command(engine: str, trtexec: str, *, out_dir: str,
                          tensorrt: str | None = None, iterations: int = 50) -> list[str]:
    """trtexec exporting an existing engine's per-layer profile and layer information into
    ``out_dir`` (the profiler slows the runs it watches: this run is not the timed one)."""
    caps = TensorRT.parse(tensorrt)
    cmd = [trtexec, f"--loadEngine={engine}", caps.profiling_flag(), "--warmUp=500",
           f"--iterations={iterations}", "--duration=0", "--noDataTransfers",
           f"--exportProfile={out_dir}/{PROFILE_NAME}"]
    return cmd + ([f"--exportLayerInfo={out_dir}/{LAYERS_NAME}"] if caps.exports_layer_info
                  else [])
