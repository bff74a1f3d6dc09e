"""``edgeprune build``: the whole pipeline for one target, stage by stage.

load → export (fp32 ONNX, simplified, parity-checked) → report. Each stage reads the previous
stage's artifacts and writes its own into the build directory.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from edgeprune import __version__
from edgeprune.atomic import write_json
from edgeprune.checkpoint import data_for_model, load_model
from edgeprune.complexity import model_complexity
from edgeprune.errors import EdgepruneError
from edgeprune.export import export_onnx
from edgeprune.targets import load_target


@dataclass
class BuildConfig:
    target: str
    model: Path
    data: str | None = None
    out: Path = Path("out")
    trust_model: bool = False
    seed: int = 0
    extra: dict = field(default_factory=dict)


def run_build(cfg: BuildConfig, log=print) -> dict:
    """Run the pipeline; return the report dict (also written to out/report.json)."""
    target = load_target(cfg.target)
    loaded = load_model(cfg.model, trust_model=cfg.trust_model)
    if cfg.data:
        from edgeprune.data import load_dataset

        data_for_model(loaded, load_dataset(cfg.data))
    shape = loaded.info.input_shape
    if shape is None:
        raise EdgepruneError(f"{cfg.model} does not record its input shape; pass --data so "
                             "edgeprune can take it from the data set")
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    export = export_onnx(loaded.model, tuple(shape), out / "model.onnx")
    log(f"exported {out / 'model.onnx'} (opset {export.opset}, {export.nodes} nodes, "
        f"max |ORT − PyTorch| = {export.max_abs_diff:.1e})")
    size = model_complexity(loaded.model, tuple(shape))
    report = {
        "target": {"name": target.name, "display_name": target.display_name},
        "edgeprune_version": __version__,
        "model": {"path": str(cfg.model), "arch": loaded.info.arch,
                  "input_shape": list(shape), "num_classes": loaded.info.num_classes},
        "export": export.to_dict(),
        "variants": [{"name": "original", "precision": "fp32", "params": size.params,
                      "macs": size.macs, "onnx": "model.onnx"}],
        "pruning": None,
    }
    write_json(out / "report.json", report)
    return report


def read_report(out: Path) -> dict:
    return json.loads((Path(out) / "report.json").read_text())
