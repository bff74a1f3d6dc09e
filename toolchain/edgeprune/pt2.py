"""torch.export archives (.pt2): a model that loads without its Python class and without
unpickling, in and out.

edgeprune writes ``pruned.pt2`` beside ``pruned.pt``: ``torch.export.save`` of the model in eval
mode, with a dynamic batch dimension, and edgeprune's metadata (the checkpoint's fields without
the weights) as the archive's extra file ``edgeprune.json``. :func:`load_pt2` reads such an
archive, or any ``torch.export.save`` archive of a classifier (one image in, logits out).

Safety. ``torch.export.load`` (torch 2.14) is *not* free of pickles, and its docstring says to
never load untrusted files: it unpickles with ``weights_only=False`` any weight or constant whose
payload config says ``use_pickle`` (tensor subclasses), ``pickle.loads`` opaque-object constants,
unpickles TorchScript custom objects, loads the sample inputs with ``weights_only=True`` but falls
back to ``weights_only=False`` when that fails, reads legacy ``data/weights/<model>.pt`` files and
a pre-2.8 layout the same way, and ``sympy.sympify`` (an ``eval``) every symbolic shape
expression in the graph. So before torch sees the bytes, :func:`screen` reads the zip itself and
refuses all of these: only raw tensor payloads, sample inputs that the weights-only unpickler
accepts, and shape expressions made of sympy's symbol and arithmetic names pass. The archive is
read into memory once and both the screen and torch read that copy, so the file cannot change
in between.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import operator
import re
import zipfile
from pathlib import Path

import torch
from torch import nn

from edgeprune import __version__
from edgeprune.errors import EdgepruneError, first_line

logger = logging.getLogger("edgeprune")

META_FILE = "edgeprune.json"
FORMAT = "edgeprune-pt2"
MAX_BATCH = 65536


# ---------------------------------------------------------------- the loaded model


class ExportedModel(nn.Module):
    """An exported program's module (``ExportedProgram.module()``) as edgeprune runs it.

    Its graph holds ATen operations in eval mode, not the model's layers, so it cannot be
    fine-tuned (``train()`` refuses) and edgeprune cannot find skip-units on it. A program
    exported with a fixed batch size ``batch`` runs larger batches in slices of that size."""

    edgeprune_exported = True

    def __init__(self, program: nn.Module, batch: int | None) -> None:
        super().__init__()
        self.program, self.batch = program, batch
        self.training = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_tracing() or self.batch is None or x.shape[0] == self.batch:
            return self.program(x)
        if x.shape[0] % self.batch:
            raise ValueError(f"the program was exported for batches of {self.batch}; got "
                             f"{x.shape[0]}")
        return torch.cat([self.program(part) for part in x.split(self.batch)])

    def train(self, mode: bool = True) -> ExportedModel:
        if mode:
            raise EdgepruneError(
                "a torch.export program (.pt2) runs in eval mode only and cannot be trained or "
                "fine-tuned; use the original architecture (a .pt checkpoint, or --arch NAME "
                "with its state_dict) to train")
        self.training = False
        return self


def is_exported(model: nn.Module) -> bool:
    return bool(getattr(model, "edgeprune_exported", False))


def no_layers_hint(model: nn.Module) -> str:
    """For an error about missing layers: why a torch.export program has none."""
    return (" (a torch.export program (.pt2) holds ATen operations, not layers; quantize its "
            "original architecture for this precision)") if is_exported(model) else ""


# ---------------------------------------------------------------- writing


def save_pt2(path: str | Path, model: nn.Module, info) -> Path:
    """``model`` (eval mode, dynamic batch) and ``info`` as a .pt2 archive, atomically."""
    from edgeprune.atomic import atomic_path

    shape = tuple(info.input_shape)
    model = model.eval().cpu()
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    program = torch.export.export(model, (torch.zeros(2, *shape),), dynamic_shapes=({0: batch},))
    with atomic_path(path) as tmp:
        torch.export.save(program, tmp, extra_files={META_FILE: json.dumps(metadata(info))})
    return Path(path)


def metadata(info) -> dict:
    """The checkpoint's fields (see :mod:`edgeprune.checkpoint`) without the weights."""
    return {
        "format": FORMAT, "edgeprune_version": __version__,
        "arch": info.arch, "num_classes": info.num_classes,
        "input_shape": list(info.input_shape) if info.input_shape else None,
        "normalization": ({"mean": list(info.mean), "std": list(info.std)}
                          if info.mean is not None else None),
        "class_names": info.class_names, "removed_units": list(info.removed_units),
    }


def write_beside(checkpoint: Path, model: nn.Module, info) -> Path | None:
    """``checkpoint`` with the suffix .pt2 written from ``model``; a model torch.export cannot
    export is logged as a warning and skipped (the .pt checkpoint is the build's model)."""
    path = Path(checkpoint).with_suffix(".pt2")
    try:
        return save_pt2(path, model, info)
    except Exception as e:  # torch.export fails in many ways; never fail the build for it
        logger.warning("did not write %s: torch.export cannot export this model (%s: %s)",
                       path.name, type(e).__name__, first_line(e))
        return None


# ---------------------------------------------------------------- reading


def is_pt2(path: Path) -> bool:
    """A torch.export archive by name (.pt2) or content (a zip with ``<root>/archive_format``,
    which torch.save's zips lack)."""
    if path.suffix.lower() == ".pt2":
        return True
    with contextlib.suppress(zipfile.BadZipFile, OSError, ValueError), zipfile.ZipFile(path) as z:
        return any(n.endswith("/archive_format") for n in z.namelist())
    return False


def load_pt2(path: Path):
    """The archive's model and its :class:`~edgeprune.checkpoint.ModelInfo`, after
    :func:`screen` (the caller checks that the model runs)."""
    from edgeprune.checkpoint import LoadedModel

    try:
        data = path.read_bytes()
    except OSError as e:
        raise EdgepruneError(f"cannot read model file {path} ({e.strerror})") from None
    extra = screen(path, data)
    meta = _metadata(path, extra.get(META_FILE))  # checked before torch reads the program
    program = _load_program(path, data)
    _check_program(path, program)
    batch = _static_batch(path, program)
    module = program.module(check_guards=False)
    # The input check torch hangs on the module cannot be traced (ONNX export); a wrong input
    # fails in the program's first operation instead, and check_runs reports that in one line.
    module._forward_pre_hooks.clear()
    model = ExportedModel(module, batch)
    info = _info(path, meta, program)
    return LoadedModel(model, info)


# Entries (below the archive's root folder) an archive of one exported program may hold; all
# others (AOTInductor and ExecuTorch payloads, legacy pickled weights, custom and opaque objects)
# are refused.
_ALLOWED = re.compile(
    r"(archive_format|archive_version|byteorder|\.data/version|\.data/serialization_id"
    r"|models/model\.json|data/sample_inputs/model\.pt"
    r"|data/weights/model_weights_config\.json|data/weights/weight_\d+"
    r"|data/constants/model_constants_config\.json|data/constants/tensor_\d+"
    r"|extra/[\w.\-]+)")
_PAYLOAD = {"data/weights/model_weights_config.json": "weight_",
            "data/constants/model_constants_config.json": "tensor_"}


def screen(path: Path, data: bytes) -> dict[str, str]:
    """Refuse, in one line, an archive that torch.export.load would unpickle code from (see the
    module's docstring) or that is not one exported program; return its extra files."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            files = _entries(path, z)
            if files.get("archive_format", b"").strip() != b"pt2":
                raise EdgepruneError(f"{path} is a zip archive but not a torch.export archive "
                                     "(no archive_format 'pt2'); write it with "
                                     "torch.export.save")
            for name in ("models/model.json", *_PAYLOAD):
                if name not in files:
                    raise EdgepruneError(f"{path}: the torch.export archive lacks {name} (one "
                                         "program saved with torch.export.save is expected)")
            for name, prefix in _PAYLOAD.items():
                _check_payloads(path, files[name], prefix)
            _check_sample_inputs(path, files.get("data/sample_inputs/model.pt", b""))
            _check_expressions(path, _json(path, files["models/model.json"], "the program"))
            return {n[len("extra/"):]: v.decode("utf-8", "replace")
                    for n, v in files.items() if n.startswith("extra/")}
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, ValueError,
            NotImplementedError, RuntimeError) as e:
        raise EdgepruneError(f"{path} is corrupt or truncated ({first_line(e)}); re-save or "
                             "re-download it") from None


def _entries(path: Path, z: zipfile.ZipFile) -> dict[str, bytes]:
    names = z.namelist()
    roots = {n.split("/", 1)[0] for n in names}
    if len(roots) != 1 or any("/" not in n for n in names) or not any(
            n.split("/", 1)[1] == "archive_format" for n in names):
        raise EdgepruneError(f"{path} is a zip archive but not a torch.export archive (no "
                             "archive_format); write it with torch.export.save")
    if any(i.compress_type != zipfile.ZIP_STORED for i in z.infolist()):
        # torch.export.save stores every entry uncompressed; a compressed one could be a zip bomb
        raise EdgepruneError(f"{path}: the archive has compressed entries, which "
                             "torch.export.save never writes; re-save it with torch.export.save")
    files = {}
    for n in names:
        rel = n.split("/", 1)[1]
        if rel.endswith("/"):
            continue
        if not _ALLOWED.fullmatch(rel):
            raise EdgepruneError(f"{path}: the archive holds {rel!r}, which edgeprune does not "
                                 "load (it reads one exported program of plain tensors, no "
                                 "pickled objects or compiled code)"[:300])
        files[rel] = z.read(n)
    return files


def _json(path: Path, raw: bytes, what: str):
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as e:
        raise EdgepruneError(f"{path}: {what} is not valid JSON ({first_line(e)})") from None


def _check_payloads(path: Path, raw: bytes, prefix: str) -> None:
    config = _json(path, raw, "a payload config")
    entries = config.get("config") if isinstance(config, dict) else None
    if not isinstance(entries, dict):
        raise EdgepruneError(f"{path}: the archive's payload config is malformed")
    for name, meta in entries.items():
        if not isinstance(meta, dict) or meta.get("use_pickle") is not False:
            raise EdgepruneError(f"{path}: tensor {str(name)[:80]!r} is stored as a pickle, "
                                 "which could run code when loaded; edgeprune loads only raw "
                                 "tensors (plain torch.Tensor weights)")
        if not re.fullmatch(re.escape(prefix) + r"\d+", str(meta.get("path_name"))):
            raise EdgepruneError(f"{path}: tensor {str(name)[:80]!r} is not a plain tensor "
                                 "payload; edgeprune loads only raw tensors")


def _check_sample_inputs(path: Path, raw: bytes) -> None:
    """torch retries a failed weights-only load of the sample inputs with full unpickling; one
    that the weights-only unpickler refuses is refused here. One it accepts holds only the
    globals that unpickler allows (tensors, storages, containers), so even torch's retry (say,
    for a CUDA tensor on a machine without CUDA: we map to the CPU, torch does not) runs no code
    beyond rebuilding them."""
    if not raw:
        return
    try:
        torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except Exception as e:  # the weights-only unpickler raises many types on hostile input
        raise EdgepruneError(f"{path}: the archive's sample inputs are not plain tensors "
                             f"({first_line(e)[:100]}); edgeprune does not unpickle "
                             "them") from None


# sympy names a shape expression may use, besides symbols: srepr's constructors and the
# integer functions torch.export writes (torch.utils._sympy.functions)
_SYMPY_NAMES = {
    "Symbol", "Integer", "Rational", "Float", "Add", "Mul", "Pow", "Mod", "Max", "Min",
    "FloorDiv", "ModularIndexing", "CleanDiv", "CeilDiv", "PythonMod", "FloorToInt",
    "CeilToInt", "IntTrueDiv", "TruncToInt", "Eq", "Ne", "Lt", "Le", "Gt", "Ge", "And", "Or",
    "Not", "integer", "positive", "nonnegative", "real", "True", "False", "oo", "int_oo",
}
_TOKEN = re.compile(r"\s*(?:(?P<name>[A-Za-z_]\w*)|(?P<str>'[a-z]+\d+')|(?P<num>\d+(?:\.\d+)?)"
                    r"|(?P<op>[-+*/%(),=<>]|\*\*|//))")


def _check_expressions(path: Path, program) -> None:
    """torch passes every ``expr_str`` of the program to ``sympy.sympify``, which evaluates it
    as Python: allow only symbols, numbers, operators and the names above."""
    stack = [program]
    while stack:
        obj = stack.pop()
        if isinstance(obj, dict):
            for k, v in obj.items():
                if k == "expr_str" and not _safe_expression(v):
                    raise EdgepruneError(f"{path}: the program holds the shape expression "
                                         f"{str(v)[:60]!r}, which edgeprune does not evaluate")
                stack.append(v)
        elif isinstance(obj, list):
            stack.extend(obj)


def _safe_expression(text) -> bool:
    if not isinstance(text, str) or len(text) > 2000:
        return False
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            return text[pos:].strip() == ""
        name = m.group("name")
        if name is not None and name not in _SYMPY_NAMES and not re.fullmatch(r"[a-z]+\d+",
                                                                              name):
            return False
        pos = m.end()
    return True


@contextlib.contextmanager
def _quiet_torch():
    """torch.export.load logs a traceback for a broken archive before trying the old layout;
    the user gets our one line instead."""
    loggers = [logging.getLogger(n) for n in ("torch.export", "torch._export")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _load_program(path: Path, data: bytes):
    try:
        with _quiet_torch():
            return torch.export.load(io.BytesIO(data))
    except EdgepruneError:
        raise
    except Exception as e:  # the deserializer raises many types on a damaged program
        raise EdgepruneError(f"{path}: torch.export cannot load the program "
                             f"({type(e).__name__}: {first_line(e)[:140]}); re-export it "
                             "with this version of torch") from None


def _check_program(path: Path, program) -> None:
    """One image in, a tensor out, only ATen operations, and eval mode (no buffers that a
    forward pass updates, no active dropout)."""
    for node in program.graph.nodes:
        if node.op == "call_function" and not (
                isinstance(node.target, torch._ops.OpOverload)
                or node.target is operator.getitem):
            raise EdgepruneError(f"{path}: the program calls {str(node.target)[:80]!r}, not an "
                                 "ATen operation; edgeprune runs plain ATen programs")
        if node.op == "call_function" and _in_training_mode(node):
            raise EdgepruneError(_TRAINING.format(path=path))
    if program.graph_signature.buffers_to_mutate:
        raise EdgepruneError(_TRAINING.format(path=path))
    user = program.graph_signature.user_inputs
    if len(user) != 1 or len(program.graph_signature.user_outputs) != 1:
        raise EdgepruneError(f"{path}: the program takes {len(user)} inputs and gives "
                             f"{len(program.graph_signature.user_outputs)} outputs; edgeprune "
                             "takes classifiers with one image batch in and logits out")


def _in_training_mode(node) -> bool:
    """Batch norm with ``training`` set (it updates its running statistics in place) or active
    dropout: the program was exported from a model in training mode."""
    target = str(node.target)
    if "batch_norm" in target and "no_training" not in target:
        return len(node.args) > 5 and node.args[5] is True
    return "dropout" in target and any(a is True for a in node.args[1:])


_TRAINING = ("{path} was exported in training mode (batch norm updates its statistics or "
             "dropout is active); call model.eval() before torch.export.export")


def _input_meta(program):
    name = program.graph_signature.user_inputs[0]
    node = next(n for n in program.graph.nodes if n.op == "placeholder" and n.name == name)
    return node.meta.get("val")


def _static_batch(path: Path, program) -> int | None:
    """None for a dynamic batch dimension, else the batch size the program was exported for."""
    val = _input_meta(program)
    if val is None or val.ndim != 4:
        raise EdgepruneError(f"{path}: the program's input is not a batch of images "
                             "(N, C, H, W); edgeprune takes image classifiers")
    n = val.shape[0]
    return int(n) if isinstance(n, int) else None


def _metadata(path: Path, text: str | None):
    """edgeprune.json as a ModelInfo, every field checked as a checkpoint's are; None when the
    archive has none (any torch.export archive)."""
    from edgeprune.checkpoint import _checkpoint_info

    if text is None:
        return None
    meta = _json(path, text.encode(), META_FILE)
    if not isinstance(meta, dict):
        raise EdgepruneError(f"{path}: {META_FILE} must be a JSON object, got "
                             f"{type(meta).__name__}")
    if meta.get("format", FORMAT) != FORMAT:
        raise EdgepruneError(f"{path}: {META_FILE} has format {str(meta.get('format'))[:40]!r}, "
                             f"not {FORMAT!r}")
    return _checkpoint_info(path, meta)


def _info(path: Path, info, program):
    """The metadata's info, agreeing with the program's input; from the program alone when
    there is none (the class count comes from running it, see checkpoint.check_runs)."""
    from edgeprune.checkpoint import ModelInfo, parse_input_shape

    dims = _input_meta(program).shape[1:]
    shape = tuple(int(s) for s in dims) if all(isinstance(s, int) for s in dims) else None
    if info is None:
        return ModelInfo(arch=f"pt2:{path.stem}", num_classes=0,
                         input_shape=parse_input_shape(list(shape) if shape else None,
                                                       f"{path}: the program's input shape"))
    if shape and info.input_shape and tuple(info.input_shape) != shape:
        raise EdgepruneError(f"{path}: {META_FILE} says input shape {tuple(info.input_shape)} "
                             f"but the program takes {shape}")
    info.input_shape = info.input_shape or shape
    return info


# ---------------------------------------------------------------- costs


def layer_macs(model: ExportedModel, input_shape: tuple[int, ...]) -> dict[str, int]:
    """MACs of every convolution and linear map of the program, by node, for one sample (the
    convention of :func:`edgeprune.complexity.layer_macs`)."""
    from torch import fx

    macs: dict[str, int] = {}
    gm = model.program

    class Counting(fx.Interpreter):
        def run_node(self, n):
            out = super().run_node(n)
            target = str(n.target)
            if n.op == "call_function" and target.startswith(
                    ("aten.conv", "aten.linear")) and torch.is_tensor(out):
                weight = self.env[n.args[1]] if isinstance(n.args[1], fx.Node) else None
                if weight is not None:
                    per_in = weight[0].numel() if "conv" in target else weight.shape[-1]
                    macs[n.name] = out.numel() // out.shape[0] * per_in
            return out

    with torch.no_grad():
        Counting(gm).run(torch.zeros(model.batch or 1, *input_shape))
    return macs
