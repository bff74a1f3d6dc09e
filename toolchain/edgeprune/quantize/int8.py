"""Post-training int8: calibrated static quantization of the fp32 ONNX model, in QDQ format.

One int8 format does not serve every runtime, so there are two flavours, each named for its
runtime in the file name and in quantize.json:

- ``tensorrt``: what TensorRT's explicit quantization accepts: signed int8 for weights and
  activations, symmetric (zero point 0), per-channel weights along the output channels of Conv
  and Gemm, per-tensor activations. Weights stay float with a Q/DQ pair on them (TensorRT
  quantizes them at build time; TensorRT before 8.5 accepts only float weights in Q/DQ graphs),
  so this file is as large as the fp32 one: the engine, not the ONNX file, holds the int8 weights.
  Q/DQ sit where TensorRT's guide on Q/DQ placement puts them: on the inputs of Conv, Gemm and
  Add, not on the outputs of weighted layers, so TensorRT fuses Conv+BN+ReLU(+Add) and only the
  tensors it really stores in int8 are rounded. (ONNX Runtime's default placement also rounds
  every pre-ReLU conv output with symmetric ranges, half of which the ReLU throws away; on the
  digits ResNet-20 of the tests that cost 1.4 points of accuracy, this placement none.)
- ``ort-cpu``: ONNX Runtime's fast x86/ARM path: uint8 asymmetric activations, int8 symmetric
  per-channel weights stored as int8 (u8s8 kernels). On the CPU here it is faster than fp32 while
  the tensorrt flavour is slower, so neither flavour's latency stands for the other's.

The activation ranges found by calibration are also written as a TensorRT calibration cache for
TensorRT versions that build int8 engines from the fp32 ONNX by implicit calibration.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeprune.errors import EdgepruneError
from edgeprune.quantize.calibration import CalibrationRecipe, CalibrationSource


@dataclass(frozen=True)
class Flavour:
    name: str
    runtime: str  # the target runtime it is made for
    activations: str  # "int8" | "uint8"
    symmetric_activations: bool
    weights_as_float_qdq: bool  # float weights + Q/DQ pair (TensorRT) vs int8 weights + DQ
    description: str
    op_types: tuple[str, ...] | None = None  # ops whose inputs get Q/DQ (None: all ORT knows)
    unquantized_outputs: tuple[str, ...] = ()  # ops whose outputs get no Q/DQ of their own


FLAVOURS = {
    "tensorrt": Flavour("tensorrt", "tensorrt", "int8", True, True,
                        "s8 activations and weights, symmetric (zero point 0), per-channel "
                        "weights, QDQ on Conv/Gemm/Add inputs: TensorRT explicit quantization",
                        op_types=("Conv", "Gemm", "Add"),
                        unquantized_outputs=("Conv", "Gemm", "Add")),
    "ort-cpu": Flavour("ort-cpu", "onnxruntime-cpu", "uint8", False, False,
                       "u8 asymmetric activations, s8 symmetric per-channel weights, QDQ: "
                       "ONNX Runtime's CPU kernels"),
}


def flavour_for(target, requested: str = "auto") -> Flavour:
    """The flavour a target's runtime wants (``auto``), or the one asked for."""
    if requested == "auto":
        requested = "ort-cpu" if target.runtime == "onnxruntime-cpu" else "tensorrt"
    if requested not in FLAVOURS:
        raise EdgepruneError(f"unknown int8 flavour {requested!r}; choose one of: auto, "
                             f"{', '.join(FLAVOURS)}")
    return FLAVOURS[requested]


@dataclass
class Int8Output:
    path: Path
    flavour: Flavour
    amax: dict[str, float]  # activation tensor name -> calibrated max |x|
    samples: int


def _ort_method(method: str):
    from onnxruntime.quantization import CalibrationMethod

    return {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
            "percentile": CalibrationMethod.Percentile}[method]


def _reader(source: CalibrationSource, input_name: str, on_batch=None):
    """ONNX Runtime's CalibrationDataReader over our re-iterable source (rewinds when done)."""
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self):
            self._it = iter(source)

        def get_next(self):
            batch = next(self._it, None)
            if batch is None:
                self._it = iter(source)  # ready for the next pass
                return None
            if on_batch:
                on_batch()
            return {input_name: batch}

        def __len__(self):
            return source.num_batches

    return Reader()


def calibrate(fp32_onnx: Path, source: CalibrationSource, recipe: CalibrationRecipe,
              flavour: Flavour, workdir: Path, on_batch=None):
    """Run the calibrator over every float tensor of the graph; return ORT's TensorsData."""
    from onnxruntime.quantization.calibrate import create_calibrator

    options = {"symmetric": flavour.symmetric_activations}
    if recipe.method == "percentile":
        options["percentile"] = recipe.percentile
    calibrator = create_calibrator(
        Path(fp32_onnx), None, augmented_model_path=str(workdir / "augmented.onnx"),
        calibrate_method=_ort_method(recipe.method), extra_options=options)
    # The histogram calibrators print their progress to stdout: keep the CLI's output clean.
    with contextlib.redirect_stdout(io.StringIO()):
        calibrator.collect_data(_reader(source, _input_name(fp32_onnx), on_batch))
        return calibrator.compute_data()


def quantize_int8(fp32_onnx: Path, out_path: Path, source: CalibrationSource,
                  recipe: CalibrationRecipe, flavour: Flavour, on_batch=None, *,
                  workdir: Path | None = None) -> Int8Output:
    """Calibrate on ``source`` and write the ``flavour`` QDQ model to ``out_path``; scratch
    files go into a folder under ``workdir`` (the build directory's, so nothing leaks outside
    it after a kill; None: the system's temporary folder)."""
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.calibrate import save_tensors_data

    act = QuantType.QInt8 if flavour.activations == "int8" else QuantType.QUInt8
    extra = {"ActivationSymmetric": flavour.symmetric_activations, "WeightSymmetric": True,
             "AddQDQPairToWeight": flavour.weights_as_float_qdq,
             # An int32 bias behind a DequantizeLinear is outside TensorRT's int8-only Q/DQ;
             # TensorRT quantizes biases itself. The ort-cpu flavour keeps ORT's int32 biases.
             "QuantizeBias": not flavour.symmetric_activations,
             "OpTypesToExcludeOutputQuantization": list(flavour.unquantized_outputs)}
    if recipe.method == "percentile":
        extra["CalibPercentile"] = recipe.percentile
    with tempfile.TemporaryDirectory(prefix="edgeprune-int8-", dir=workdir) as tmp:
        tmp = Path(tmp)
        ranges = calibrate(fp32_onnx, source, recipe, flavour, tmp, on_batch)
        # Calibrate once: quantize_static reads the ranges back from its JSON cache.
        save_tensors_data(ranges, tmp / "ranges.json")
        with _quiet_root_logger():  # ORT logs pre-processing advice through the root logger
            quantize_static(str(fp32_onnx), str(out_path), None,
                            quant_format=QuantFormat.QDQ,
                            per_channel=True, activation_type=act,
                            op_types_to_quantize=list(flavour.op_types) if flavour.op_types
                            else None,
                            weight_type=QuantType.QInt8,
                            calibrate_method=_ort_method(recipe.method), extra_options=extra,
                            calibration_cache_path=tmp / "ranges.json")
    if flavour.name == "tensorrt":
        problems = tensorrt_qdq_problems(onnx.load(str(out_path)))
        if problems:
            raise EdgepruneError(f"the int8 model is not TensorRT-style QDQ ({problems[0]}); "
                                 "please report it")
    return Int8Output(Path(out_path), flavour, _amax(ranges), len(source))


@contextlib.contextmanager
def _quiet_root_logger():
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def _input_name(path: Path) -> str:
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    inits = {i.name for i in graph.initializer}
    return next(i.name for i in graph.input if i.name not in inits)


def _amax(ranges) -> dict[str, float]:
    """max |x| per float activation tensor (the symmetric range TensorRT uses)."""
    amax = {}
    for name, data in ranges.data.items():
        lo, hi = data.range_value
        amax[name] = float(max(abs(np.asarray(lo).min()), abs(np.asarray(hi).max())))
    return amax


def tensorrt_qdq_problems(model) -> list[str]:
    """What keeps TensorRT's explicit quantization from taking ``model`` (empty = nothing).

    Checks: QDQ only (no QOperator ops), every QuantizeLinear/DequantizeLinear int8 with zero
    points 0 and positive scales, per-channel only on weights along axis 0 (output channels).
    """
    from onnx import TensorProto, numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    problems = []
    qoperator = {"QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger",
                 "DynamicQuantizeLinear", "QLinearAdd", "QGemm"}
    for node in model.graph.node:
        if node.op_type in qoperator:
            problems.append(f"{node.op_type} node {node.name!r} (QOperator format)")
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        if len(node.input) < 3 or node.input[2] not in inits:
            problems.append(f"{node.name!r} has no constant zero point")
            continue
        zp = inits[node.input[2]]
        if zp.data_type != TensorProto.INT8:
            problems.append(f"{node.name!r} is {TensorProto.DataType.Name(zp.data_type)}, "
                            "not INT8")
        if np.any(numpy_helper.to_array(zp) != 0):
            problems.append(f"{node.name!r} has a non-zero zero point")
        scale = inits.get(node.input[1])
        if scale is None or np.any(numpy_helper.to_array(scale) <= 0):
            problems.append(f"{node.name!r} has a non-constant or non-positive scale")
        elif numpy_helper.to_array(scale).size > 1:
            axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
            if axis != 0 or (node.input[0] not in inits and node.op_type == "QuantizeLinear"):
                problems.append(f"{node.name!r} is per-channel on axis {axis} or on an "
                                "activation")
    return problems
