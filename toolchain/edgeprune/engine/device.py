"""What GPU, CUDA and Jetson this machine has: read without torch or pycuda (ctypes on the CUDA
runtime and driver libraries, /proc and /etc files), so it works in the slim device image."""

from __future__ import annotations

import ctypes
import ctypes.util
from functools import cache
from pathlib import Path

_CUDART_NAMES = ("cudart", "libcudart.so", "libcudart.so.13", "libcudart.so.12",
                 "libcudart.so.11.0", "libcudart.so.10.2")
_ATTR_CC_MAJOR, _ATTR_CC_MINOR = 75, 76  # cudaDevAttrComputeCapabilityMajor / Minor


@cache
def _cudart():
    for name in _CUDART_NAMES:
        path = ctypes.util.find_library(name) if "." not in name else name
        if not path:
            continue
        try:
            return ctypes.CDLL(path)
        except OSError:
            continue
    return None


def _int_call(fn, *args) -> int | None:
    value = ctypes.c_int(0)
    return value.value if fn(ctypes.byref(value), *args) == 0 else None


def gpu_info() -> dict | None:
    """{"compute_capability": "8.7", "cuda_runtime": "12.6", "driver": "12.6"} of GPU 0, or None
    when there is no CUDA runtime library or no GPU."""
    lib = _cudart()
    if lib is None or not _int_call(lib.cudaGetDeviceCount):
        return None
    major = _int_call(lib.cudaDeviceGetAttribute, _ATTR_CC_MAJOR, 0)
    minor = _int_call(lib.cudaDeviceGetAttribute, _ATTR_CC_MINOR, 0)
    runtime, driver = _int_call(lib.cudaRuntimeGetVersion), _int_call(lib.cudaDriverGetVersion)
    return {"compute_capability": f"{major}.{minor}", "cuda_runtime": _cuda_version(runtime),
            "cuda_driver": _cuda_version(driver), "name": _gpu_name()}


def _cuda_version(v: int | None) -> str | None:
    return f"{v // 1000}.{v % 1000 // 10}" if v else None


def _gpu_name() -> str | None:
    try:
        lib = ctypes.CDLL("libcuda.so.1")
        name = ctypes.create_string_buffer(256)
        dev = ctypes.c_int(0)
        if lib.cuInit(0) or lib.cuDeviceGet(ctypes.byref(dev), 0):
            return None
        return name.value.decode() if lib.cuDeviceGetName(name, 256, dev) == 0 else None
    except OSError:
        return None


def jetson_info() -> dict:
    """The board model (device tree) and L4T release (/etc/nv_tegra_release); {} off a Jetson."""
    out = {}
    model = Path("/proc/device-tree/model")
    if model.is_file():
        out["model"] = model.read_bytes().rstrip(b"\0").decode(errors="replace")
    release = Path("/etc/nv_tegra_release")
    if release.is_file():
        out["l4t"] = release.read_text(errors="replace").splitlines()[0].lstrip("# ").strip()
    return out


def tensorrt_version() -> str | None:
    """The importable tensorrt's version, or None (the import is what decides the build path)."""
    try:
        import tensorrt
    except ImportError:
        return None
    return tensorrt.__version__
