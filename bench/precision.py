"""Precisions of an export: the graph that ships, converted by ONNX Runtime's own tools (no quantizer here).

fp32 is the exported graph; fp16 runs the network in half precision with float32 inputs and outputs
(`onnxruntime.transformers.float16`, keeping the sampler's schedule arithmetic and the sinusoidal time
embedding in float32); int8_dynamic quantizes MatMul/Gemm/Conv weights and quantizes activations at run time
(`onnxruntime.quantization.quantize_dynamic`); int8_static is QDQ with int8 weights and activations (S8S8,
per-tensor or per-channel) whose activation ranges come from calibration data (`quantize_static`, MinMax,
Entropy or Percentile). A sampler is converted one step at a time, before the step is composed into the
whole loop, so its calibration covers the sampler's own steps (see `bench.parts`). This module converts a
graph and reports the facts of the conversion; it judges nothing (`bench.parity` measures the result).
"""
from __future__ import annotations

import contextlib
import importlib.metadata
import io
import logging
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import onnx

from genlib.precisions import CALIBRATION_METHODS, PRECISIONS

QUANTIZED_OPS = ("MatMul", "Gemm", "Conv")

# The quantizer's own option for values its shape inference leaves untyped (the composed sampler's renamed
# intermediates): every float value here is float32.
EXTRA_OPTIONS = {"DefaultTensorType": onnx.TensorProto.FLOAT}
# Calibration: a list of feed dicts (input name -> array) for the graph being converted.
Calibration = Callable[[], list[dict[str, np.ndarray]]]


class PrecisionError(RuntimeError):
    """A conversion the installed ONNX Runtime cannot do (or failed on this graph); the message says which."""


def available() -> tuple[str, ...]:
    """The precisions the installed ONNX Runtime can produce (all four where its quantization tools import)."""
    out = ["fp32"]
    try:
        import onnxruntime.transformers.float16  # noqa: F401
        out.append("fp16")
    except ImportError:
        pass
    try:
        import onnxruntime.quantization  # noqa: F401
        out += ["int8_dynamic", "int8_static"]
    except ImportError:
        pass
    return tuple(out)


def check_available(precision: str) -> None:
    """Refuse, before any export, a precision this ONNX Runtime cannot produce."""
    if precision not in PRECISIONS:
        raise PrecisionError(f"unknown precision '{precision}' (expected one of: {', '.join(PRECISIONS)})")
    if precision not in available():
        raise PrecisionError(f"precision '{precision}' needs ONNX Runtime's "
                             f"{'float16 converter' if precision == 'fp16' else 'quantization tools'}, which the "
                             f"installed onnxruntime {_ort_version()} does not provide")


def _ort_version() -> str:
    import onnxruntime

    return onnxruntime.__version__


def convert(model: onnx.ModelProto, precision: str, *, keep_fp32_nodes: Iterable[str] = (),
            calibration: Calibration | None = None, calibration_method: str = "minmax", per_channel: bool = False,
            reduce_range: bool = False) -> tuple[onnx.ModelProto, dict[str, Any]]:
    """(the converted model, the facts recorded beside it). keep_fp32_nodes: node names fp16 leaves in float32.
    calibration: the feeds int8_static collects activation ranges from (required there)."""
    check_available(precision)
    facts: dict[str, Any] = {"precision": precision, "onnxruntime": _ort_version()}
    if precision == "fp32":
        return model, facts
    if precision == "fp16":
        from onnxruntime.transformers.float16 import convert_float_to_float16

        blocked = list(keep_fp32_nodes)
        converted = convert_float_to_float16(model, keep_io_types=True, node_block_list=blocked,
                                             disable_shape_infer=False)
        from bench.onnx_graph import drop_repeated_nodes, toposort

        toposort(drop_repeated_nodes(converted))  # it appends the casts it inserts, some of them twice
        facts.update(converter="onnxruntime.transformers.float16.convert_float_to_float16",
                     keep_io_types=True, fp32_nodes=len(blocked))
        return converted, facts
    facts.update(method="dynamic" if precision == "int8_dynamic" else "static (QDQ)", ops=list(QUANTIZED_OPS),
                 weight_type="int8", per_channel=per_channel, reduce_range=reduce_range,
                 quantizer=f"onnxruntime.quantization {_ort_version()}")
    with tempfile.TemporaryDirectory(prefix="genbench-quant-") as tmp:
        src, dst = Path(tmp) / "in.onnx", Path(tmp) / "out.onnx"
        clean = onnx.ModelProto()
        clean.CopyFrom(model)
        del clean.graph.value_info[:]  # the exporter's intermediate shapes; the quantizer infers its own
        onnx.save(clean, src)
        quiet = logging.getLogger()  # the quantizer logs advice at WARNING on the root logger
        level = quiet.level
        quiet.setLevel(logging.ERROR)
        try:
            if precision == "int8_dynamic":
                _dynamic(src, dst, per_channel, reduce_range)
            else:
                if calibration is None:
                    raise PrecisionError("int8_static needs calibration data")
                feeds = calibration()
                facts.update(activation_type="int8", calibration_method=calibration_method,
                             calibration_batches=len(feeds),
                             calibration_rows=int(sum(next(iter(f.values())).shape[0] for f in feeds)) if feeds else 0)
                with contextlib.redirect_stdout(io.StringIO()):  # the calibrators print their progress
                    _static(src, dst, feeds, calibration_method, per_channel, reduce_range)
        except PrecisionError:
            raise
        except Exception as exc:  # the quantizer raises many types on a graph it does not handle
            raise PrecisionError(f"{precision} quantization failed: {type(exc).__name__}: "
                                 f"{str(exc).splitlines()[0][:200] if str(exc) else ''}") from None
        finally:
            quiet.setLevel(level)
        return onnx.load(dst), facts


def _dynamic(src: Path, dst: Path, per_channel: bool, reduce_range: bool) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(src, dst, op_types_to_quantize=list(QUANTIZED_OPS), per_channel=per_channel,
                     reduce_range=reduce_range, weight_type=QuantType.QInt8, extra_options=EXTRA_OPTIONS)


class _Reader:
    """onnxruntime.quantization's CalibrationDataReader over a list of feed dicts."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]) -> None:
        self._it = iter(feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)

    def rewind(self) -> None:  # not needed for one pass; present for the interface
        pass


def _static(src: Path, dst: Path, feeds: list[dict[str, np.ndarray]], method: str, per_channel: bool,
            reduce_range: bool) -> None:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    if method not in CALIBRATION_METHODS:
        raise PrecisionError(f"unknown calibration method '{method}' (expected one of: {', '.join(CALIBRATION_METHODS)})")
    if not feeds:
        raise PrecisionError("int8_static got no calibration data")
    calibrate = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                 "percentile": CalibrationMethod.Percentile}[method]
    quantize_static(src, dst, _Reader(feeds), quant_format=QuantFormat.QDQ, op_types_to_quantize=list(QUANTIZED_OPS),
                    per_channel=per_channel, reduce_range=reduce_range, activation_type=QuantType.QInt8,
                    weight_type=QuantType.QInt8, calibrate_method=calibrate, extra_options=EXTRA_OPTIONS)


def package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


__all__ = ["CALIBRATION_METHODS", "PRECISIONS", "PrecisionError", "available", "check_available", "convert"]
