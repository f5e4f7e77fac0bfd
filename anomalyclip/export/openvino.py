"""ONNX graphs to OpenVINO IR, and compiled OpenVINO models that run them on the CPU.

The IR (``.xml`` topology + ``.bin`` weights) is converted from the very ONNX graph the ONNX
export writes, so both formats trace the model once, the same way. Weights stay float32
(``ov.save_model`` would halve them to float16 by default, which moves the features by
~1e-4). At run time the CPU plugin is told to compute in float32
(``INFERENCE_PRECISION_HINT``: on CPUs with bf16 units it would otherwise pick bf16), except
where bf16 is asked for explicitly; an int8 IR (NNCF's, :mod:`anomalyclip.export.quantize`)
runs its quantised layers in int8 and the rest in float32.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from anomalyclip.export.manifest import require

log = logging.getLogger(__name__)

PRECISION_HINTS = {"fp32": "f32", "int8": "f32", "bf16": "bf16"}


def onnx_to_ir(onnx_path: str | Path, xml_path: str | Path) -> Path:
    """Convert an ONNX graph to OpenVINO IR at ``xml_path`` (and the ``.bin`` beside it)."""
    ov = require("openvino")
    model = ov.convert_model(str(onnx_path))
    return save_ir(model, xml_path)


def save_ir(model, xml_path: str | Path) -> Path:  # noqa: ANN001 - an openvino.Model
    ov = require("openvino")
    xml_path = Path(xml_path)
    ov.save_model(model, str(xml_path), compress_to_fp16=False)
    log.info(
        "wrote %s (+ %.1f MB of weights)",
        xml_path,
        xml_path.with_suffix(".bin").stat().st_size / 1e6,
    )
    return xml_path


def has_bf16() -> bool:
    """Whether OpenVINO's CPU plugin can compute in bf16 on this CPU."""
    ov = require("openvino")
    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def compile_ir(xml_path: str | Path, precision: str = "fp32", threads: int | None = None):
    """A compiled CPU model of ``xml_path``, computing in ``precision`` (fp32, bf16; an int8
    IR's quantised layers in int8) on ``threads`` threads (default: torch's)."""
    ov = require("openvino")
    config = {
        "INFERENCE_PRECISION_HINT": PRECISION_HINTS[precision],
        "INFERENCE_NUM_THREADS": threads or torch.get_num_threads(),
        "PERFORMANCE_HINT": "LATENCY",
    }
    return ov.Core().compile_model(str(xml_path), "CPU", config)


def run(compiled, x: np.ndarray) -> list[np.ndarray]:  # noqa: ANN001 - an ov.CompiledModel
    """The outputs of a one-input compiled model, in their declared order."""
    result = compiled(np.ascontiguousarray(x, np.float32))
    return [result[out] for out in compiled.outputs]
