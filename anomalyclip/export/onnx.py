"""Graphs to ONNX, and ONNX Runtime sessions that run them.

Export is torch's TorchScript-based exporter (``torch.onnx.export(..., dynamo=False)``):
it traces the module once on an example input, keeps the batch dimension symbolic and folds
every tensor that does not depend on the input (the scorer's directions, the positional
embeddings) into constants. It handles the CLIP attention of ``transformers`` (scaled
dot-product attention becomes MatMul/Softmax at opset 17) and the temporal model's fused
attention alike. Weights are stored in float32, inside the ``.onnx`` file (a ViT-B/16 tower
is ~350 MB, under protobuf's 2 GB).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from anomalyclip.export.manifest import require

log = logging.getLogger(__name__)

OPSET = 17


def export_onnx(
    module: torch.nn.Module,
    example: torch.Tensor,
    path: str | Path,
    input_name: str,
    output_names: Sequence[str],
) -> Path:
    """Write ``module`` (eval mode) as an ONNX graph with a dynamic batch dimension (dim 0 of
    the input and of every output), checked by ``onnx.checker``."""
    onnx = require("onnx")
    path = Path(path)
    axes = {name: {0: "batch"} for name in (input_name, *output_names)}
    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about Python-side shape checks
        torch.onnx.export(
            module.eval(),
            (example,),
            str(path),
            input_names=[input_name],
            output_names=list(output_names),
            dynamic_axes=axes,
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )
    onnx.checker.check_model(str(path))
    log.info("wrote %s (%.1f MB)", path, path.stat().st_size / 1e6)
    return path


def session(path: str | Path, threads: int | None = None):
    """An ONNX Runtime CPU session of ``path`` on ``threads`` threads (default: torch's)."""
    ort = require("onnxruntime")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run(sess, x: np.ndarray) -> list[np.ndarray]:
    """The outputs of a one-input session, in their declared order."""
    return sess.run(None, {sess.get_inputs()[0].name: np.ascontiguousarray(x, np.float32)})
