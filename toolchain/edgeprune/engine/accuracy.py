"""Top-1 accuracy of a TensorRT engine on the device, over the build's own test split.

The build exports the test split as ``testset.npz``: the images as uint8 NCHW at the model's
input size, the labels, and the mean and std the model was trained with, so the device
normalises exactly as the host did (``Dataset.normalize``) with numpy alone: no torch, no data
spec, no original files. The engine runs through the TensorRT Python API (8.2 bindings or the
8.5+ tensor API) with host/device copies through the CUDA runtime (ctypes, as runtime.py).
"""

from __future__ import annotations

import ctypes
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from edgeprune.errors import EdgepruneError

_H2D, _D2H = 1, 2  # cudaMemcpyHostToDevice, cudaMemcpyDeviceToHost


def export_testset(data, path: str | Path) -> Path:
    """Write ``data``'s test split (uint8 images, labels, normalisation) to ``path``."""
    from edgeprune.atomic import atomic_path

    test = data.split("test")
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, x=test.x.astype(np.uint8), y=test.y.astype(np.int64),
                            mean=np.asarray(data.mean, np.float32),
                            std=np.asarray(data.std, np.float32))
    return Path(path)


class ExportedSplit:
    """The exported split; ``batches`` yields normalised float32 NCHW arrays and labels."""

    def __init__(self, path: str | Path):
        path = Path(path)
        if not path.is_file():
            raise EdgepruneError(f"{path} does not exist: `edgeprune build` with --data writes "
                                 "it into the build directory; rebuild with a data spec")
        try:
            with np.load(path, allow_pickle=False) as z:
                self.x, self.y = z["x"], z["y"]
                self.mean, self.std = z["mean"], z["std"]
        except (OSError, ValueError, KeyError) as e:
            raise EdgepruneError(f"{path} is not a test split written by edgeprune ({e}); "
                                 "rebuild") from None
        if self.x.dtype != np.uint8 or self.x.ndim != 4 or len(self.x) != len(self.y):
            raise EdgepruneError(f"{path} does not hold uint8 NCHW images with one label each")

    def __len__(self) -> int:
        return len(self.y)

    def normalize(self, x: np.ndarray) -> np.ndarray:
        # the same arithmetic as edgeprune.data.Dataset.normalize
        mean = self.mean.reshape(1, -1, 1, 1)
        std = self.std.reshape(1, -1, 1, 1)
        return ((x.astype(np.float32) / 255.0) - mean) / std

    def batches(self, size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for start in range(0, len(self), size):
            yield (np.ascontiguousarray(self.normalize(self.x[start:start + size])),
                   self.y[start:start + size])


def top1(logits: np.ndarray, labels: np.ndarray) -> int:
    """How many rows of ``logits`` pick their label."""
    return int((np.asarray(logits).reshape(len(labels), -1).argmax(1) == labels).sum())


def pad(x: np.ndarray, batch: int) -> np.ndarray:
    """``x`` filled up to ``batch`` rows (an engine with a fixed batch needs whole batches)."""
    if len(x) == batch:
        return x
    return np.concatenate([x, np.zeros((batch - len(x), *x.shape[1:]), x.dtype)])


def engine_accuracy(engine_path: str | Path, testset: str | Path, *,
                    max_batch: int = 64) -> dict:
    """Top-1 of the engine over the test split: {"accuracy", "images", "batch"}."""
    from edgeprune.engine import device

    if device.tensorrt_version() is None:
        raise EdgepruneError("engine accuracy needs the tensorrt Python package: run it on the "
                             "device, in the edgeprune Jetson container (docker/README.md)")
    data = ExportedSplit(testset)
    runner = _EngineRunner(Path(engine_path), tuple(data.x.shape[1:]), max_batch)
    correct = 0
    try:
        for x, y in data.batches(runner.batch):
            correct += top1(runner(pad(x, runner.batch))[:len(y)], y)
    finally:
        runner.close()
    return {"accuracy": correct / len(data), "images": len(data), "batch": runner.batch}


class _EngineRunner:
    """One input, one output, float32 or float16 at the I/O (a build's classifier)."""

    def __init__(self, path: Path, image_shape: tuple[int, ...], max_batch: int):
        import tensorrt as trt

        from edgeprune.engine.runtime import _cudart

        self.trt, self.cuda = trt, _cudart()
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = runtime.deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise EdgepruneError(f"TensorRT {trt.__version__} cannot load {path}: it was built "
                                 "with another TensorRT version or for another GPU; rebuild it")
        self.context = self.engine.create_execution_context()
        self.new_api = hasattr(self.engine, "num_io_tensors")  # 8.5+
        self.names = ([self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
                      if self.new_api else
                      [self.engine.get_binding_name(i) for i in range(self.engine.num_bindings)])
        self.batch = self._batch(image_shape, max_batch)
        self.buffers = [self._alloc(i, n) for i, n in enumerate(self.names)]

    def _is_input(self, i: int, name: str) -> bool:
        if self.new_api:
            return self.engine.get_tensor_mode(name) == self.trt.TensorIOMode.INPUT
        return self.engine.binding_is_input(i)

    def _batch(self, image_shape, max_batch: int) -> int:
        """The engine's fixed batch, else the largest its profile allows up to ``max_batch``,
        with the input shape set on the context."""
        name = self.names[0]
        shape = list(self.engine.get_tensor_shape(name) if self.new_api
                     else self.engine.get_binding_shape(0))
        if shape[0] >= 0:
            return shape[0]
        hi = (self.engine.get_tensor_profile_shape(name, 0)[2] if self.new_api
              else self.engine.get_profile_shape(0, 0)[2])
        batch = min(int(hi[0]), max_batch)
        full = [batch, *image_shape]
        if self.new_api:
            self.context.set_input_shape(name, full)
        else:
            self.context.set_binding_shape(0, full)
        return batch

    def _alloc(self, i: int, name: str):
        shape = tuple(self.context.get_tensor_shape(name) if self.new_api
                      else self.context.get_binding_shape(i))
        dtype = np.dtype(self.trt.nptype(self.engine.get_tensor_dtype(name) if self.new_api
                                         else self.engine.get_binding_dtype(i)))
        ptr = ctypes.c_void_p()
        size = int(np.prod(shape)) * dtype.itemsize
        if self.cuda.cudaMalloc(ctypes.byref(ptr), max(size, 1)) != 0:
            raise EdgepruneError(f"cannot allocate {size} bytes on the GPU for {name}")
        if self.new_api:
            self.context.set_tensor_address(name, ptr.value)
        return ptr, shape, dtype

    def __call__(self, x: np.ndarray) -> np.ndarray:
        (inp, _, in_dtype), (out, out_shape, out_dtype) = self.buffers[0], self.buffers[-1]
        x = np.ascontiguousarray(x.astype(in_dtype))
        self.cuda.cudaMemcpy(inp, x.ctypes.data_as(ctypes.c_void_p), ctypes.c_size_t(x.nbytes),
                             _H2D)
        ok = (self.context.execute_v2([p.value for p, _, _ in self.buffers]) if not self.new_api
              else self.context.execute_async_v3(0) and self.cuda.cudaDeviceSynchronize() == 0)
        if not ok:
            raise EdgepruneError("TensorRT failed to run the engine")
        y = np.empty(out_shape, out_dtype)
        self.cuda.cudaMemcpy(y.ctypes.data_as(ctypes.c_void_p), out, ctypes.c_size_t(y.nbytes),
                             _D2H)
        return y.astype(np.float32)

    def close(self) -> None:
        for ptr, _, _ in self.buffers:
            self.cuda.cudaFree(ptr)
