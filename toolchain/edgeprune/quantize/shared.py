"""Deep Compression's weight sharing and Huffman coding (Han et al., ICLR 2016).

Every Conv/Linear weight tensor is clustered into k = 2^b shared values by 1-D k-means (Lloyd's
algorithm from the paper's *linear* initialisation: k centroids evenly spaced between the
tensor's min and max, which the paper found keeps the rare large weights). The layer then
computes with ``codebook[index]``; fine-tuning trains the codebook only (plus biases and BN), and
autograd's gather backward sums the gradients of all weights in a cluster into its centroid,
which is the paper's ∂L/∂C_k = Σ_ij ∂L/∂W_ij · 1(I_ij = k).

Storage: per shared tensor a float32 codebook, the Huffman code lengths of its k indices
(canonical code, so the lengths define the code) and the bit stream; every other tensor (BN,
biases) as raw float32. :func:`unpack` gives back the exact state dict.

What it buys: a smaller file to store and download. TensorRT (and ONNX Runtime) run the decoded
float weights, so latency and DRAM traffic per inference are those of the float model.

Packed format (little endian)::

    b"EPDC1\\0\\0\\0" | u32 header length | header (JSON: [{name, shape, dtype, kind, ...}])
    then per tensor: shared: codebook <f4[k] | code lengths u8[k] | bit stream (ceil(bits/8));
                     raw:    the tensor's bytes
"""

from __future__ import annotations

import heapq
import json
import struct
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from edgeprune.atomic import write_bytes
from edgeprune.errors import EdgepruneError

MAGIC = b"EPDC1\0\0\0"
MAX_CODE_LENGTH = 20  # the decoder's table has 2^this entries
MAX_BITS = 8  # k ≤ 256 shared values per layer (the paper uses 8 bits for conv, 5 for FC)


# ---------------------------------------------------------------- k-means weight sharing


def kmeans_1d(w: np.ndarray, k: int, iters: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """Exact Lloyd iterations in one dimension from linear initialisation: (codebook, index).

    In 1-D the nearest centroid is found by binary search on the midpoints of the sorted
    centroids, so each iteration is O(n log k). Empty clusters keep their centroid (as
    linear init leaves some empty where the distribution has gaps)."""
    w = np.asarray(w, np.float64).ravel()
    lo, hi = float(w.min()), float(w.max())
    c = np.linspace(lo, hi, k) if hi > lo else np.full(k, lo)
    for _ in range(iters):
        idx = assign(w, c)
        sums = np.bincount(idx, weights=w, minlength=k)
        counts = np.bincount(idx, minlength=k)
        new = np.where(counts > 0, sums / np.maximum(counts, 1), c)
        if np.allclose(new, c, rtol=0, atol=1e-12):
            break
        c = np.sort(new)
    return c.astype(np.float32), assign(w, c)


def assign(w: np.ndarray, codebook: np.ndarray) -> np.ndarray:
    """Index of the nearest centroid (codebook sorted ascending)."""
    mids = (codebook[1:] + codebook[:-1]) / 2
    return np.searchsorted(mids, w).astype(np.int64)


class SharedWeight(nn.Module):
    """A parametrization: the weight is ``codebook[index]``; only the codebook is trained."""

    def __init__(self, codebook: np.ndarray, index: np.ndarray, shape) -> None:
        super().__init__()
        self.codebook = nn.Parameter(torch.from_numpy(np.asarray(codebook, np.float32)))
        self.register_buffer("index", torch.from_numpy(index.astype(np.int64)).view(shape))

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return self.codebook[self.index]


def shareable_layers(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def share_weights(model: nn.Module, bits: int, names: list[str] | None = None) -> list[str]:
    """Cluster each named layer's weight into 2^bits shared values, in place."""
    if not 1 <= bits <= MAX_BITS:
        raise EdgepruneError(f"shared-weight bits must be in 1..{MAX_BITS}, got {bits}")
    names = shareable_layers(model) if names is None else names
    modules = dict(model.named_modules())
    for name in names:
        w = modules[name].weight.detach().cpu()
        codebook, index = kmeans_1d(w.numpy(), 2 ** bits)
        parametrize.register_parametrization(modules[name], "weight",
                                             SharedWeight(codebook, index, w.shape))
    return names


def freeze_shared(model: nn.Module, names: list[str]) -> nn.Module:
    """Replace the parametrizations by the plain tensors they compute (for export): the same
    step as for binary weights."""
    from edgeprune.quantize.binary import freeze_binary

    return freeze_binary(model, names)


def shared_tensors(state: dict[str, torch.Tensor], names: list[str],
                   max_values: int) -> set[str]:
    """The weights among ``state`` that hold at most ``max_values`` distinct values."""
    keys = {f"{n}.weight" for n in names}
    return {k for k in keys if k in state and len(torch.unique(state[k])) <= max_values}


# ---------------------------------------------------------------- canonical Huffman coding
# heapq is enough for k ≤ 256 symbols; no Huffman library on PyPI is both small and clearly
# maintained, and the canonical code needs only the code lengths.


def huffman_lengths(counts: np.ndarray) -> np.ndarray:
    """Code length per symbol (0 for unused symbols; a lone symbol gets length 1)."""
    used = [int(s) for s in np.flatnonzero(counts)]
    lengths = np.zeros(len(counts), np.uint8)
    if len(used) == 1:
        lengths[used[0]] = 1
        return lengths
    heap = [(int(counts[s]), s, [s]) for s in used]
    heapq.heapify(heap)
    while len(heap) > 1:
        c1, t1, s1 = heapq.heappop(heap)
        c2, t2, s2 = heapq.heappop(heap)
        for s in s1 + s2:
            lengths[s] += 1
        heapq.heappush(heap, (c1 + c2, min(t1, t2), s1 + s2))
    return lengths


def canonical_codes(lengths: np.ndarray) -> dict[int, tuple[int, int]]:
    """symbol -> (code, length) of the canonical Huffman code with these lengths."""
    order = sorted((int(n), s) for s, n in enumerate(lengths) if n > 0)
    codes, code, prev = {}, 0, order[0][0] if order else 0
    for n, s in order:
        code <<= n - prev
        codes[s], prev = (code, n), n
        code += 1
    return codes


def huffman_encode(symbols: np.ndarray, k: int) -> tuple[np.ndarray, bytes, int]:
    """(code lengths, packed bit stream, number of bits)."""
    counts = np.bincount(symbols, minlength=k)
    lengths = huffman_lengths(counts)
    while lengths.max() > MAX_CODE_LENGTH:  # flatten very skewed counts: a slightly longer
        counts = np.where(counts > 0, counts // 2 + 1, 0)  # stream, a bounded decode table
        lengths = huffman_lengths(counts)
    codes = canonical_codes(lengths)
    width = int(lengths.max())
    # Each symbol's code as `width` bits, left-aligned; then keep the first `length` bits.
    code_bits = np.zeros((k, width), np.uint8)
    for s, (c, n) in codes.items():
        code_bits[s, :n] = [(c >> (n - 1 - t)) & 1 for t in range(n)]
    keep = np.arange(width)[None, :] < lengths[symbols][:, None]
    bits = code_bits[symbols][keep]
    return lengths, np.packbits(bits).tobytes(), int(bits.size)


def huffman_decode(data: bytes, nbits: int, lengths: np.ndarray, count: int) -> np.ndarray:
    """Decode ``count`` symbols by a lookup table on the next max-length bits."""
    codes = canonical_codes(lengths)
    width = int(lengths.max())
    table_sym = np.zeros(1 << width, np.int64)
    table_len = np.zeros(1 << width, np.int64)
    for s, (c, n) in codes.items():
        lo = c << (width - n)
        table_sym[lo:lo + (1 << (width - n))] = s
        table_len[lo:lo + (1 << (width - n))] = n
    bits = np.unpackbits(np.frombuffer(data, np.uint8), count=nbits).astype(np.int64)
    bits = np.concatenate([bits, np.zeros(width, np.int64)])
    window = np.zeros(nbits, np.int64)
    for t in range(width):  # window[p] = the `width` bits starting at p, as an integer
        window = (window << 1) | bits[t:t + nbits]
    window, sym_of, len_of = window.tolist(), table_sym.tolist(), table_len.tolist()
    out, pos = [0] * count, 0
    for i in range(count):
        v = window[pos]
        out[i] = sym_of[v]
        pos += len_of[v]
    if pos != nbits:
        raise EdgepruneError("the packed shared-weight file is damaged (Huffman stream length)")
    return np.asarray(out, np.int64)


# ---------------------------------------------------------------- the packed file


def pack(state: dict[str, torch.Tensor], shared: set[str]) -> bytes:
    """Shared tensors as codebook + Huffman-coded indices, the rest raw (see the module doc)."""
    header, body = [], []
    for name, t in state.items():
        a = t.detach().cpu().numpy()
        entry = {"name": name, "shape": list(a.shape), "dtype": a.dtype.str}
        if name in shared:
            codebook, index = np.unique(a.astype(np.float32).ravel(), return_inverse=True)
            lengths, stream, nbits = huffman_encode(index.ravel(), len(codebook))
            entry.update(kind="shared", k=len(codebook), nbits=nbits, nbytes=len(stream))
            body += [codebook.astype("<f4").tobytes(), lengths.tobytes(), stream]
        else:
            raw = np.ascontiguousarray(a).tobytes()
            entry.update(kind="raw", nbytes=len(raw))
            body.append(raw)
        header.append(entry)
    head = json.dumps(header, separators=(",", ":")).encode()
    return MAGIC + struct.pack("<I", len(head)) + head + b"".join(body)


def unpack(data: bytes) -> dict[str, torch.Tensor]:
    """The state dict of :func:`pack`, bit for bit."""
    if data[:8] != MAGIC:
        raise EdgepruneError("not an edgeprune shared-weight file (bad magic)")
    (n,) = struct.unpack("<I", data[8:12])
    pos, out = 12 + n, {}
    for e in json.loads(data[12:12 + n]):
        count = int(np.prod(e["shape"], dtype=np.int64))
        if e["kind"] == "shared":
            k = e["k"]
            codebook = np.frombuffer(data, "<f4", k, pos)
            lengths = np.frombuffer(data, np.uint8, k, pos + 4 * k)
            pos += 5 * k
            index = huffman_decode(data[pos:pos + e["nbytes"]], e["nbits"], lengths, count)
            a = codebook[index].astype(np.dtype(e["dtype"]))
        else:
            a = np.frombuffer(data, np.dtype(e["dtype"]), count, pos).copy()
        pos += e["nbytes"]
        out[e["name"]] = torch.from_numpy(a.reshape(e["shape"]))
    return out


def write_packed(path: str | Path, state: dict[str, torch.Tensor], shared: set[str]) -> int:
    data = pack(state, shared)
    write_bytes(path, data)
    return len(data)


def load_packed(path: str | Path) -> dict[str, torch.Tensor]:
    return unpack(Path(path).read_bytes())


def storage_sizes(state: dict[str, torch.Tensor], shared: set[str]) -> dict[str, int]:
    """Bytes of the model's tensors stored as fp32, fp16, int8 (per-tensor scale; BN and
    counters kept fp32) and as this file's weight sharing without and with Huffman coding."""
    fp32 = sum(t.numel() * 4 for t in state.values() if t.is_floating_point())
    shared_n = sum(state[k].numel() for k in shared)
    other = fp32 - 4 * shared_n
    ks = {k: len(torch.unique(state[k])) for k in shared}
    fixed = sum(state[k].numel() * max(1, int(np.ceil(np.log2(ks[k])))) / 8 + 4 * ks[k]
                for k in shared)
    return {"fp32": fp32, "fp16": fp32 // 2, "int8": int(shared_n + 4 * len(shared) + other),
            "shared_fixed_width": int(fixed + other)}
