"""Reading an ONNX file a user gave us: one self-contained ONNX model, or a one-line error.

``onnx.load`` accepts a 0-byte file (an empty model with no graph), may parse arbitrary bytes
into an empty model, reads external data files from wherever the model's ``location`` fields
point, and raises a protobuf traceback on a PyTorch checkpoint. ``read_onnx`` refuses each of
these before any work, saying what to do instead.
"""

from __future__ import annotations

from pathlib import Path

from edgeprune.errors import EdgepruneError

# What `torch.save` writes: a zip archive (PyTorch >= 1.6) or a bare pickle (protocol 2+).
_ZIP_MAGIC, _PICKLE_MAGIC = b"PK\x03\x04", b"\x80"
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt", ".pkl")


def is_checkpoint(path: Path) -> bool:
    """A PyTorch checkpoint by its name or its first bytes (whatever its suffix says)."""
    with open(path, "rb") as f:
        head = f.read(4)
    return (path.suffix.lower() in CHECKPOINT_SUFFIXES or head.startswith(_ZIP_MAGIC)
            or head.startswith(_PICKLE_MAGIC))


def read_onnx(path: str | Path):
    """The onnx.ModelProto in ``path``, without external data; raises EdgepruneError when the
    file is missing, empty, a checkpoint, not ONNX, or keeps tensors in external files."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise EdgepruneError(f"ONNX file {path} does not exist; export one with "
                             "`edgeprune export MODEL.pt --out model.onnx`")
    if path.stat().st_size == 0:
        raise EdgepruneError(f"{path} is empty (0 bytes), not an ONNX model; export it again "
                             "with `edgeprune export`")
    if is_checkpoint(path):
        raise EdgepruneError(f"{path} is a PyTorch checkpoint, not an ONNX model; export it "
                             f"first: `edgeprune export {path} --out model.onnx`")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # protobuf's DecodeError and friends: the bytes are not ONNX
        raise EdgepruneError(f"{path} is not a readable ONNX model ({type(e).__name__}); give "
                             "an ONNX file written by `edgeprune export`") from None
    if model.ir_version <= 0 or not model.graph.node:
        raise EdgepruneError(f"{path} is not a readable ONNX model (no graph in it); give an "
                             "ONNX file written by `edgeprune export`")
    _refuse_external_data(model, path)
    return model


def _refuse_external_data(model, path: Path) -> None:
    import onnx

    external = [t.name for t in _tensors(model.graph)
                if t.data_location == onnx.TensorProto.EXTERNAL]
    if external:
        raise EdgepruneError(
            f"{path} keeps {len(external)} tensor(s) in external data files (first: "
            f"{external[0]!r}); edgeprune reads self-contained ONNX files only: save it as one "
            "file (onnx.save(model, path, save_as_external_data=False))")


def _tensors(graph):
    """Initializers and Constant-node tensors, in subgraphs too."""
    yield from graph.initializer
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            if attr.HasField("g"):
                yield from _tensors(attr.g)
            for g in attr.graphs:
                yield from _tensors(g)
