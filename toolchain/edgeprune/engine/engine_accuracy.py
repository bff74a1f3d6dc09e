"""Top-1 of a TensorRT engine over a build's testset.npz, run with the Jetson's system Python.

The TensorRT Python bindings of JetPack are built for the system Python (3.6 on JetPack 4.6,
3.8 on 5.x, 3.10 on 6.x), older than edgeprune's 3.11, so this file stands alone: Python 3.6+,
numpy, tensorrt and the CUDA runtime through ctypes, no edgeprune import. `edgeprune build`
copies it beside build_engine.sh; on the device:

    python3 engine/engine_accuracy.py engine/model.engine testset.npz --out engine/accuracy.json

and `edgeprune profile BUILD_DIR --trtexec-dir engine` reads accuracy.json back. Where edgeprune
itself imports tensorrt, ``edgeprune profile BUILD_DIR --engine`` runs the same code in-process.

testset.npz holds the test images as uint8 NCHW at the model's input size, the labels, and the
mean and std the model was trained with: the normalisation below is the host's
(edgeprune.data.Dataset.normalize), so the engine sees what ONNX Runtime saw.
"""

import argparse
import ctypes
import ctypes.util
import json
import sys

import numpy as np

H2D, D2H = 1, 2  # cudaMemcpyHostToDevice, cudaMemcpyDeviceToHost
CUDART = ("cudart", "libcudart.so", "libcudart.so.12", "libcudart.so.11.0", "libcudart.so.10.2")


def load_split(path):
    """(x uint8 NCHW, y, mean, std) from testset.npz."""
    with np.load(str(path), allow_pickle=False) as z:
        return z["x"], z["y"], z["mean"], z["std"]


def normalize(x, mean, std):
    """uint8 NCHW -> float32, exactly as edgeprune.data.Dataset.normalize."""
    mean = np.asarray(mean, np.float32).reshape(1, -1, 1, 1)
    std = np.asarray(std, np.float32).reshape(1, -1, 1, 1)
    return ((x.astype(np.float32) / 255.0) - mean) / std


def top1(logits, labels):
    """How many rows of ``logits`` pick their label."""
    return int((np.asarray(logits).reshape(len(labels), -1).argmax(1) == labels).sum())


def pad(x, batch):
    """``x`` filled up to ``batch`` rows (an engine with a fixed batch takes whole batches)."""
    if len(x) == batch:
        return x
    return np.concatenate([x, np.zeros((batch - len(x), *x.shape[1:]), x.dtype)])


def cudart():
    for name in CUDART:
        path = ctypes.util.find_library(name) if "." not in name else name
        if path:
            try:
                return ctypes.CDLL(path)
            except OSError:
                continue
    raise RuntimeError("the CUDA runtime library (libcudart) is not on this machine")


class EngineRunner:
    """One input, one output (a build's classifier); the 8.2 bindings API or the 8.5+ tensor
    API, whichever this TensorRT has."""

    def __init__(self, path, image_shape, max_batch=64):
        import tensorrt as trt

        self.trt, self.cuda = trt, cudart()
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        with open(str(path), "rb") as f:
            self.engine = runtime.deserialize_cuda_engine(f.read())
        if self.engine is None:
            raise RuntimeError(f"TensorRT {trt.__version__} cannot load {path}: it was built "
                               "with another TensorRT version or for another GPU; rebuild it")
        self.context = self.engine.create_execution_context()
        self.new_api = hasattr(self.engine, "num_io_tensors")
        e = self.engine
        self.names = ([e.get_tensor_name(i) for i in range(e.num_io_tensors)] if self.new_api
                      else [e.get_binding_name(i) for i in range(e.num_bindings)])
        self.batch = self._batch(tuple(image_shape), max_batch)
        self.buffers = [self._alloc(i, n) for i, n in enumerate(self.names)]

    def _batch(self, image_shape, max_batch):
        """The engine's fixed batch, else the largest its profile allows up to ``max_batch``,
        set on the context."""
        name, e = self.names[0], self.engine
        shape = list(e.get_tensor_shape(name) if self.new_api else e.get_binding_shape(0))
        if shape[0] >= 0:
            return shape[0]
        hi = (e.get_tensor_profile_shape(name, 0) if self.new_api
              else e.get_profile_shape(0, 0))[2]
        batch = min(int(hi[0]), max_batch)
        if self.new_api:
            self.context.set_input_shape(name, (batch, *image_shape))
        else:
            self.context.set_binding_shape(0, (batch, *image_shape))
        return batch

    def _alloc(self, i, name):
        e = self.engine
        shape = tuple(self.context.get_tensor_shape(name) if self.new_api
                      else self.context.get_binding_shape(i))
        dtype = np.dtype(self.trt.nptype(e.get_tensor_dtype(name) if self.new_api
                                         else e.get_binding_dtype(i)))
        ptr = ctypes.c_void_p()
        size = max(int(np.prod(shape)) * dtype.itemsize, 1)
        if self.cuda.cudaMalloc(ctypes.byref(ptr), ctypes.c_size_t(size)) != 0:
            raise RuntimeError(f"cannot allocate {size} bytes on the GPU for {name}")
        if self.new_api:
            self.context.set_tensor_address(name, ptr.value)
        return ptr, shape, dtype

    def __call__(self, x):
        (inp, _, in_dtype), (out, out_shape, out_dtype) = self.buffers[0], self.buffers[-1]
        x = np.ascontiguousarray(x.astype(in_dtype))
        self.cuda.cudaMemcpy(inp, x.ctypes.data_as(ctypes.c_void_p), ctypes.c_size_t(x.nbytes),
                             H2D)
        if self.new_api:
            ok = self.context.execute_async_v3(0) and self.cuda.cudaDeviceSynchronize() == 0
        else:
            ok = self.context.execute_v2([p.value for p, _, _ in self.buffers])
        if not ok:
            raise RuntimeError("TensorRT failed to run the engine")
        y = np.empty(out_shape, out_dtype)
        self.cuda.cudaMemcpy(y.ctypes.data_as(ctypes.c_void_p), out, ctypes.c_size_t(y.nbytes),
                             D2H)
        return y.astype(np.float32)

    def close(self):
        for ptr, _, _ in self.buffers:
            self.cuda.cudaFree(ptr)


def run(engine, testset, max_batch=64):
    """{"accuracy", "images", "batch", "tensorrt"} of ``engine`` over ``testset``."""
    import tensorrt as trt

    x, y, mean, std = load_split(testset)
    runner = EngineRunner(engine, x.shape[1:], max_batch)
    correct = 0
    try:
        for start in range(0, len(y), runner.batch):
            xb = normalize(x[start:start + runner.batch], mean, std)
            yb = y[start:start + runner.batch]
            correct += top1(runner(pad(xb, runner.batch))[:len(yb)], yb)
    finally:
        runner.close()
    return {"accuracy": correct / len(y), "images": len(y), "batch": int(runner.batch),
            "tensorrt": trt.__version__}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("engine")
    p.add_argument("testset")
    p.add_argument("--out", help="write the result as JSON here (accuracy.json)")
    p.add_argument("--max-batch", type=int, default=64)
    args = p.parse_args(argv)
    try:
        result = run(args.engine, args.testset, args.max_batch)
    except (ImportError, RuntimeError, OSError, KeyError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    text = json.dumps(result, indent=2)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
