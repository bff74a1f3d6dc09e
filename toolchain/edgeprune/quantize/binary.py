"""Binary (1-bit) weights, XNOR-Net style, trained with the straight-through estimator.

Every Conv and Linear except the first conv and the classifier (the usual practice, both
options) computes with W_b = sign(W) · α, α = mean |W| per output channel; optionally the inputs
of those layers are binarized too (sign). Fine-tuning keeps the float weights W as the latent
parameters: the forward pass uses W_b, the backward pass hands W_b's gradient to W where
|W| ≤ 1 and zero elsewhere (the clipped straight-through estimator).

The ONNX model computes with the binarized values (the exporter folds BatchNorm into them, which
keeps one magnitude per output channel), so ONNX Runtime and TensorRT run it with float kernels.
The packed file stores what a device would: the signs at 1 bit per weight (numpy.packbits) and
one float32 scale per output channel; :func:`load_packed` unpacks it to the ONNX initializers bit
for bit.

Packed format (little endian)::

    b"EPBIN1\\0\\0" | u32 index length | index (JSON: [[name, shape], ...])
    then per tensor: float32 scales (shape[0] of them) | packbits(signbit(W).ravel())
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from edgeprune.atomic import write_bytes
from edgeprune.errors import EdgepruneError

MAGIC = b"EPBIN1\0\0"


# ---------------------------------------------------------------- binarization with STE


def binarize_weight(w: torch.Tensor) -> torch.Tensor:
    """sign(W) · mean|W| per output channel (sign(0) = +1, so every weight is ±α)."""
    alpha = w.abs().mean(dim=tuple(range(1, w.dim())), keepdim=True)
    return torch.where(w >= 0, alpha, -alpha)


def ste(x: torch.Tensor, forward: torch.Tensor) -> torch.Tensor:
    """``forward`` in the forward pass; the gradient of x clipped to |x| ≤ 1 in the backward."""
    passes = (x.abs() <= 1.0).to(x.dtype)
    return forward.detach() + (x - x.detach()) * passes


class BinaryWeight(nn.Module):
    """A parametrization: the module's weight is binarized on every access."""

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return ste(w, binarize_weight(w)) if torch.is_grad_enabled() else binarize_weight(w)


def _binary_input(module: nn.Module, args: tuple) -> tuple:
    x = args[0]
    return (ste(x, torch.sign(x)) if module.training else torch.sign(x), *args[1:])


def binarizable_layers(model: nn.Module, *, skip_first: bool = True,
                       skip_classifier: bool = True) -> list[str]:
    """Qualified names of the Conv/Linear layers to binarize, in module order."""
    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    convs = [n for n, m in layers if isinstance(m, nn.Conv2d)]
    linears = [n for n, m in layers if isinstance(m, nn.Linear)]
    skip = set()
    if skip_first and convs:
        skip.add(convs[0])
    if skip_classifier and linears:
        skip.add(linears[-1])
    return [n for n, _ in layers if n not in skip]


def binarize_model(model: nn.Module, names: list[str], *,
                   activations: bool = False) -> nn.Module:
    """Binarize the named layers in place (weights, and inputs when ``activations``)."""
    modules = dict(model.named_modules())
    for name in names:
        parametrize.register_parametrization(modules[name], "weight", BinaryWeight())
        if activations:
            modules[name].register_forward_pre_hook(_binary_input)
    return model


def freeze_binary(model: nn.Module, names: list[str]) -> nn.Module:
    """Replace the latent weights by their binarized values (for export): plain tensors."""
    modules = dict(model.named_modules())
    for name in names:
        with torch.no_grad():
            parametrize.remove_parametrizations(modules[name], "weight", leave_parametrized=True)
    return model


# ---------------------------------------------------------------- ONNX side: find, pack, unpack


def binary_initializers(model, expected: int | None = None) -> list[str]:
    """Names of the Conv/Gemm weight initializers that hold ±scale values (one magnitude per
    output channel, exactly): the binarized layers after BatchNorm folding."""
    from onnx import numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    found = []
    for node in model.graph.node:
        if node.op_type in ("Conv", "Gemm") and len(node.input) > 1 and node.input[1] in inits:
            w = numpy_helper.to_array(inits[node.input[1]])
            mag = np.abs(w.reshape(w.shape[0], -1))
            if w.size > w.shape[0] and np.all(mag == mag[:, :1]):
                found.append(node.input[1])
    if expected is not None and len(found) != expected:
        raise EdgepruneError(f"found {len(found)} binarized weight tensors in the ONNX model, "
                             f"expected {expected}; please report it")
    return found


def pack(tensors: dict[str, np.ndarray]) -> bytes:
    """Signs at 1 bit per weight plus float32 per-output-channel scales (see the module doc)."""
    index, body = [], []
    for name, w in tensors.items():
        w = np.asarray(w, np.float32)
        flat = w.reshape(w.shape[0], -1)
        scales = np.abs(flat[:, 0]).astype("<f4")
        if not np.all(np.abs(flat) == scales[:, None]):
            raise EdgepruneError(f"{name} is not binarized (more than one magnitude per "
                                 "output channel); it cannot be packed")
        index.append([name, list(w.shape)])
        body += [scales.tobytes(), np.packbits(np.signbit(flat).ravel()).tobytes()]
    head = json.dumps(index, separators=(",", ":")).encode()
    return MAGIC + struct.pack("<I", len(head)) + head + b"".join(body)


def unpack(data: bytes) -> dict[str, np.ndarray]:
    """The float32 tensors of :func:`pack`, bit for bit."""
    if data[:8] != MAGIC:
        raise EdgepruneError("not an edgeprune packed binary file (bad magic)")
    (n,) = struct.unpack("<I", data[8:12])
    index, pos, out = json.loads(data[12:12 + n]), 12 + n, {}
    for name, shape in index:
        rows, count = shape[0], int(np.prod(shape))
        scales = np.frombuffer(data, "<f4", rows, pos).astype(np.float32)
        pos += 4 * rows
        nbytes = -(-count // 8)
        neg = np.unpackbits(np.frombuffer(data, np.uint8, nbytes, pos), count=count).astype(bool)
        pos += nbytes
        mag = np.repeat(scales, count // rows)
        out[name] = np.where(neg, -mag, mag).astype(np.float32).reshape(shape)
    return out


def write_packed(path: str | Path, tensors: dict[str, np.ndarray]) -> int:
    data = pack(tensors)
    write_bytes(path, data)
    return len(data)


def load_packed(path: str | Path) -> dict[str, np.ndarray]:
    """Unpack a ``.packed`` file to ``{initializer name: float32 array}``."""
    return unpack(Path(path).read_bytes())


def apply_packed(onnx_model, tensors: dict[str, np.ndarray]):
    """Put unpacked tensors into ``onnx_model``'s initializers (what a device loader does)."""
    from onnx import numpy_helper

    for init in onnx_model.graph.initializer:
        if init.name in tensors:
            init.CopyFrom(numpy_helper.from_array(tensors[init.name], init.name))
    return onnx_model
