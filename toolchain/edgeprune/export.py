"""PyTorch -> ONNX: export, simplify, check, and prove parity with ONNX Runtime.

Opset 13 is fixed: it is the newest opset that TensorRT 8.2's ONNX parser (JetPack 4.6, the last
release for Jetson Nano and TX2, our oldest targets) accepts, and every newer TensorRT reads it.
We use the TorchScript-based exporter (``dynamo=False``): it targets old opsets directly, while
the dynamo exporter starts at opset 18 and down-converts.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edgeprune.atomic import atomic_path
from edgeprune.errors import EdgepruneError

OPSET = 13
INPUT_NAME, OUTPUT_NAME = "input", "logits"
PARITY_TOLERANCE = 1e-4


@dataclass
class ExportReport:
    path: str
    opset: int
    dynamic_batch: bool
    simplified: bool
    nodes: int
    max_abs_diff: float
    output_scale: float  # max |PyTorch output|: the tolerance is relative above 1
    tolerance: float
    checker: str = "passed"

    def to_dict(self) -> dict:
        return asdict(self)


def export_onnx(model: nn.Module, input_shape: tuple[int, ...], path: str | Path, *,
                dynamic_batch: bool = False, simplify: bool = True,
                tolerance: float = PARITY_TOLERANCE, seed: int = 0) -> ExportReport:
    """Export ``model`` (eval mode) to ``path``; raise if ORT disagrees with PyTorch."""
    import onnx

    check_output_path(path)
    model = model.eval().cpu()
    dummy = torch.zeros(1, *input_shape)
    with atomic_path(path) as tmp:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model, (dummy,), str(tmp), dynamo=False, opset_version=OPSET,
                input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}}
                if dynamic_batch else None,
            )
        graph = onnx.load(str(tmp))
        simplified = False
        if simplify:
            graph, simplified = _simplify(graph)
        onnx.checker.check_model(graph, full_check=True)
        onnx.save(graph, str(tmp))
        diff, scale = onnx_parity(model, tmp, input_shape, batch=2 if dynamic_batch else 1,
                                  seed=seed)
        if not np.isfinite(scale):  # the model itself, not the export, is at fault
            raise EdgepruneError("the model's PyTorch output is not finite (NaN or inf) on a "
                                 "random input, so no export can match it; check its weights "
                                 "and normalisation, or retrain")
        # Absolute for outputs of order 1 (trained nets); relative to the output's magnitude for
        # untrained deep nets whose eval-mode logits reach 1e6.
        if not diff <= tolerance * max(1.0, scale):
            raise EdgepruneError(f"ONNX Runtime output differs from PyTorch by {diff:.2e} "
                                 f"(> {tolerance:.0e}); the export is wrong, please report it")
    return ExportReport(str(path), OPSET, dynamic_batch, simplified, len(graph.graph.node), diff,
                        scale, tolerance)


def check_output_path(path: str | Path) -> None:
    """Refuse a file path that cannot be written as a file (a folder, or under a file) before
    any work, instead of failing at the final rename."""
    path = Path(path)
    if path.is_dir():
        raise EdgepruneError(f"{path} is a folder; give the file to write, e.g. "
                             f"{path / 'model.onnx'}")
    above = next((p for p in path.parents if p.exists()), None)
    if above is not None and not above.is_dir():
        raise EdgepruneError(f"cannot write {path}: {above} is a file, not a folder")


def _simplify(graph):
    import onnxsim

    try:
        simple, ok = onnxsim.simplify(graph)
    except Exception:  # onnxsim is best effort: a failure leaves the exported graph as it was
        return graph, False
    return (simple, True) if ok else (graph, False)


def ort_session(path: str | Path, threads: int | None = None):
    """A CPU ONNX Runtime session (the thread count fixed when given)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def onnx_parity(model: nn.Module, path: str | Path, input_shape: tuple[int, ...], *,
                batch: int = 1, seed: int = 0) -> float:
    """Max |PyTorch − ORT| over the outputs for a seeded random input."""
    x = torch.from_numpy(np.random.default_rng(seed).standard_normal(
        (batch, *input_shape)).astype(np.float32))
    with torch.no_grad():
        expected = model.eval()(x).numpy()
    sess = ort_session(path)
    got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    return float(np.max(np.abs(expected - got))), float(np.max(np.abs(expected)))


def onnx_accuracy(path: str | Path, data, split: str = "test", batch_size: int = 256,
                  threads: int | None = None) -> float:
    """Top-1 accuracy of an ONNX model under ONNX Runtime on a split of ``data``.

    Batches of one when the model has a fixed batch dimension of 1.
    """
    sess = ort_session(path, threads)
    inp = sess.get_inputs()[0]
    fixed_one = inp.shape[0] == 1
    correct = n = 0
    for x, y in data.batches(split, 1 if fixed_one else batch_size):
        logits = sess.run(None, {inp.name: x.numpy()})[0]
        correct += int((logits.argmax(1) == y.numpy()).sum())
        n += len(y)
    return correct / n
