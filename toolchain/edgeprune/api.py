"""The Python API: every stage of the pipeline as a function, for notebooks and scripts.

    import edgeprune as ep

    model = ep.load("resnet20.pt")
    data = ep.load_data("digits", model)
    pruned = ep.prune_model(model, data, "out/prune", ep.PruneConfig(stages=1))
    ep.export_onnx(pruned.loaded, "out/model.onnx")
    row = ep.profile_onnx("out/model.onnx", "jetson-nano", precision="fp32")
    result = ep.build_model(ep.BuildConfig(target="jetson-nano", model="resnet20.pt",
                                           data="digits"))

The functions are named ``prune_model``, ``build_model`` and so on, not ``prune`` and
``build``, because those names are the stages' own modules (``edgeprune.prune``, ...).

Progress goes to the ``edgeprune`` logger (``logging.basicConfig(level=logging.INFO)`` shows
it), and, where a function takes ``on_progress``, to a callback called as
``on_progress(task, done, total)``. Nothing here prints. The CLI calls these same functions.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from edgeprune.build import (
    BuildConfig,
    BuildState,
    Checked,
    EnginePlan,
    Exported,
    Loaded,
    Profiled,
    Pruned,
    Quantized,
)
from edgeprune.errors import EdgepruneError

if TYPE_CHECKING:
    import torch.nn as nn

    from edgeprune.checkpoint import LoadedModel
    from edgeprune.data import Dataset
    from edgeprune.export import ExportReport
    from edgeprune.prune import PruneConfig, PruneResult
    from edgeprune.quantize import QuantizeConfig

logger = logging.getLogger("edgeprune")

Progress = Callable[[str, float, float], None]  # (task, done, total)


class CallbackProgress:
    """The part of rich's Progress the stages use (add_task, update, advance), forwarding each
    change to ``on_progress(task, done, total)``; with no callback, to the logger at DEBUG."""

    def __init__(self, on_progress: Progress | None = None):
        self._tasks: dict[int, list] = {}
        self._on = on_progress or (lambda t, d, n: logger.debug("%s: %s/%s", t, d, n))

    def add_task(self, description: str, total: float | None = None, **_fields) -> int:
        self._tasks[len(self._tasks)] = [description, 0.0, total or 0.0]
        return len(self._tasks) - 1

    def update(self, task: int, *, completed: float | None = None, **_fields) -> None:
        if completed is not None:
            self._set(task, completed)

    def advance(self, task: int, advance: float = 1) -> None:
        self._set(task, self._tasks[task][1] + advance)

    def _set(self, task: int, done: float) -> None:
        entry = self._tasks[task]
        entry[1] = done
        self._on(entry[0], done, entry[2])


def _log(message: str) -> None:
    logger.info("%s", message)


# ---------------------------------------------------------------- single stages


def load(path: str | Path, *, trust_model: bool = False, arch: str | None = None,
         num_classes: int | None = None, input_size: str | None = None,
         mean: str | list[float] | None = None,
         std: str | list[float] | None = None) -> LoadedModel:
    """A checkpoint, checked and in eval mode (``.model`` is the nn.Module, ``.info`` its
    architecture, input shape, normalization and class names). ``trust_model`` allows a pickled
    nn.Module, whose unpickling can run code from the file. A torch.export archive (.pt2) loads
    without unpickling (see :mod:`edgeprune.pt2`). A plain state_dict needs ``arch``
    (a zoo name or ``tv:<torchvision builder>``, see ``edgeprune models``), and may need
    ``num_classes`` and ``input_size`` ("C,H,W"). ``mean``/``std`` (one value per channel)
    normalize inputs of a model whose file stores no normalization; values that differ from
    the file's are refused (see ``edgeprune.normalization``)."""
    from edgeprune import normalization
    from edgeprune.checkpoint import arch_spec, load_model

    mean, std = normalization.parse_pair(mean, std)  # before the file is read
    loaded = load_model(path, trust_model=trust_model,
                        arch=arch_spec(arch, num_classes, input_size))
    normalization.apply_to_model(loaded, mean, std)
    return loaded


def load_data(spec: str, model: LoadedModel | None = None, *,
              input_size: int | tuple[int, int] | None = None) -> Dataset:
    """A data set by its spec (``digits``, ``npz:FILE``, ``cifar10:DIR``, ``imagefolder:DIR``);
    with ``model``, checked against it (classes, input shape) and normalized as it was
    trained. ``imagefolder`` images are resized and cropped to ``input_size`` (H, W, or one
    side), else to the model's input size, else to the folder's common size."""
    from edgeprune.checkpoint import data_for_model
    from edgeprune.data import load_dataset

    data = load_dataset(spec)
    if input_size is not None:
        size = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
        data = data.resized(size)
    return data_for_model(model, data) if model is not None else data


def prune_model(model: LoadedModel, data: Dataset, out: str | Path,
          config: PruneConfig | None = None, *,
          on_progress: Progress | None = None, progress=None) -> PruneResult:
    """Remove skip-units stage by stage (MSPIC by default), fine-tuning after each stage.
    Writes ``out/pruned.pt`` (and ``pruned.pt2``, the same model as a torch.export archive),
    ``mspic.json``, ``mspic.png`` and ``stages/``; the result holds
    the pruned model (``.loaded``), its file (``.path``) and a ``.summary``. ``progress``: any
    object with rich Progress's add_task/update/advance, instead of ``on_progress``."""
    from edgeprune.prune import PruneConfig
    from edgeprune.prune import prune_model as _prune

    config = config or PruneConfig()
    config.validate()
    result = _prune(model, data, config, Path(out),
                         progress=progress or CallbackProgress(on_progress))
    s = result.summary
    if not s:  # under torchrun only rank 0 writes and summarises
        return result
    _log(f"pruned with {s['method']}: {s['units_before']} → {s['units_after']} units, "
         f"{s['params_before']:,} → {s['params_after']:,} params")
    return result


def export_onnx(model: LoadedModel | nn.Module, path: str | Path, *,
           input_shape: tuple[int, ...] | None = None) -> ExportReport:
    """ONNX for ``model`` (simplified, and checked against PyTorch with ONNX Runtime). A bare
    nn.Module needs ``input_shape`` (C, H, W)."""
    from edgeprune.export import export_onnx as _export

    module, shape = _module_and_shape(model, input_shape)
    report = _export(module, shape, Path(path))
    _log(f"exported {path} (opset {report.opset}, {report.nodes} nodes)")
    return report


def _module_and_shape(model, input_shape):
    info = getattr(model, "info", None)
    shape = input_shape or (info.input_shape if info is not None else None)
    if shape is None:
        raise EdgepruneError("the model does not record its input shape; pass input_shape=(C, "
                             "H, W)")
    return getattr(model, "model", model), tuple(shape)


def profile_onnx(onnx: str | Path, target: str, *, precision: str = "fp32",
                 name: str | None = None, accuracy: float | None = None,
                 measure_host: bool = True, fps: float = 30.0) -> dict:
    """Costs of one ONNX model on a target (by name, see ``edgeprune targets``): per-layer
    MACs, memory, estimated energy and latency, host latency measured with ONNX Runtime. The
    same dict as one ``variants`` entry of report.json."""
    from edgeprune.profile import profile_variant
    from edgeprune.targets import pick_target

    onnx = Path(onnx)
    if not onnx.is_file():
        raise EdgepruneError(f"ONNX file {onnx} does not exist")
    row = profile_variant(onnx, pick_target(target, None), name=name or onnx.stem,
                          precision=precision, accuracy=accuracy, measure_host=measure_host,
                          fps=fps)
    _log(f"profiled {row['name']} ({precision}) for {target}")
    return row


def quantize_model(model: str | Path, precision: str, out: str | Path, *,
                   target: str | None = "host-cpu", data: str | None = None,
                   config: QuantizeConfig | None = None, seed: int = 0,
                   allow_emulated: bool = False, trust_model: bool = False,
                   target_file: str | Path | None = None, on_progress: Progress | None = None,
                   progress=None, arch: str | None = None, num_classes: int | None = None,
                   input_size: str | None = None, mean: str | list[float] | None = None,
                   std: str | list[float] | None = None) -> BuildResult:
    """``model`` (a checkpoint file) at ``precision`` (fp16, int8, binary, fp32 or auto) for
    ``target``: the build's load, export and quantize stages, so the precision is decided as a
    build decides it. int8 calibrates on ``data``'s train split (or, with
    ``config.calibration_data = "calib:DIR"``, on a folder of unlabeled images, and then
    needs no ``data``), binary fine-tunes on it.
    ``config`` may also be a dict of QuantizeConfig field overrides. The result's
    ``.quantized`` holds the quantized ONNX and its accuracy, ``.loaded.resolution`` why this
    precision."""
    from dataclasses import asdict

    from edgeprune.build import run_build

    if isinstance(config, dict) or config is None:
        overrides = dict(config or {})
    else:
        overrides = {k: v for k, v in asdict(config).items() if k != "seed"}
    cfg = BuildConfig(target=target, target_file=Path(target_file) if target_file else None,
                      model=Path(model), data=data, out=Path(out), precision=precision,
                      method="none", measure_host=False, seed=seed, trust_model=trust_model,
                      allow_emulated=allow_emulated, quantize=overrides, arch=arch,
                      num_classes=num_classes, input_size=input_size, mean=mean, std=std)
    state = run_build(cfg, log=_log, progress=progress or CallbackProgress(on_progress),
                      stages=["load", "prune", "export", "quantize"], clear=False)
    return BuildResult(cfg.out, state)



# ---------------------------------------------------------------- the whole pipeline


@dataclass
class BuildResult:
    """What ``build`` returns: the build directory and each stage's typed result."""

    out: Path
    state: BuildState

    def _get(self, stage: str):
        return self.state.results.get(stage)

    @property
    def loaded(self) -> Loaded:
        return self._get("load")

    @property
    def pruned(self) -> Pruned | None:
        return self._get("prune")

    @property
    def exported(self) -> Exported | None:
        return self._get("export")

    @property
    def quantized(self) -> Quantized | None:
        return self._get("quantize")

    @property
    def checked(self) -> Checked | None:
        return self._get("check")

    @property
    def engine(self) -> EnginePlan | None:
        return self._get("engine")

    @property
    def profiled(self) -> Profiled | None:
        return self._get("profile")

    @property
    def variants(self) -> list[dict]:
        """The report's variants (name, precision, accuracy, params, MACs, latency, energy)."""
        return self.profiled.variants if self.profiled else []

    @property
    def report(self) -> Path | None:
        path = self.out / "report.html"
        return path if path.is_file() else None


def build_model(config: BuildConfig, *, resume: bool = False,
                on_log: Callable[[str], None] | None = None,
                on_progress: Progress | None = None,
                on_stage: Callable[[str], None] | None = None, progress=None) -> BuildResult:
    """The whole pipeline for one target: load → prune → export → quantize → check → engine →
    profile → report, into ``config.out``. Messages go to ``on_log`` (default: the
    ``edgeprune`` logger at INFO), bar updates to ``on_progress`` (or to ``progress``, any
    object with rich Progress's add_task/update/advance), finished stages to ``on_stage``."""
    from edgeprune.build import run_build

    _paths(config)
    state = run_build(config, resume=resume, log=on_log or _log,
                      progress=progress or CallbackProgress(on_progress), on_stage=on_stage)
    return BuildResult(config.out, state)


def build_targets(config: BuildConfig, *, resume: bool = False,
                  on_log: Callable[[str], None] | None = None,
                  on_progress: Progress | None = None,
                  on_stage: Callable[[str], None] | None = None, progress=None):
    """``config.target`` names several targets ("A,B", or a list): the model is pruned once,
    then exported, quantized and profiled for each target into ``config.out/<target>``, and the
    reports are merged into ``config.out/report.*``. Returns a ``MultiResult`` (``.states``:
    target -> BuildState, ``.report``: the merged report)."""
    from edgeprune.multitarget import run_targets

    if isinstance(config.target, (list, tuple)):
        config.target = ",".join(config.target)
    _paths(config)
    return run_targets(config, resume=resume, log=on_log or _log,
                       progress=progress or CallbackProgress(on_progress), on_stage=on_stage)


def _paths(config: BuildConfig) -> None:
    """Strings given for the config's paths become paths; anything else is left for the
    build's own checks to refuse in one line."""
    for name in ("model", "out", "target_file", "reuse_pruning"):
        if isinstance(getattr(config, name), str):
            setattr(config, name, Path(getattr(config, name)))
