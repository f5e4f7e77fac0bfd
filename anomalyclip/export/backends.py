"""Running an export folder: the image tower and the scorer on ONNX Runtime or OpenVINO.

An :class:`Export` opens a folder written by ``anomaly export`` (its manifest checked) and
hands out the two pieces the torch path is made of, with the same interfaces:

- :meth:`Export.image_encoder`: an :class:`ExportedImageEncoder`, which takes the uint8 crops
  the decode pipeline makes and returns float32 embeddings, as
  :class:`~anomalyclip.extract.encoder.ImageEncoder` does (the same normalisation in torch,
  then the exported graph instead of the CLIP forward), so extraction, ``predict`` and
  ``watch`` run unchanged around it;
- :meth:`Export.scorer`: an :class:`ExportedScorer`, whose :meth:`~ExportedScorer.score` is a
  ``score_fn`` of :mod:`anomalyclip.model.inference` (batches of windows in, p(A) and class
  probabilities out) and whose ``cfg`` is the run's model configuration.

Neither needs the CLIP folder or the run's weights: what they hold is in the graphs.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from anomalyclip.export import onnx as onnx_runtime
from anomalyclip.export import openvino
from anomalyclip.export.manifest import FORMAT_OF, check_run, find_export, read_manifest
from anomalyclip.extract.preprocess import normalize
from anomalyclip.model.config import ModelConfig

Runner = Callable[[np.ndarray], list[np.ndarray]]


def runner(path: Path, backend: str, precision: str = "fp32", threads: int | None = None) -> Runner:
    """A function running the one-input graph at ``path`` on ``backend``: array in, its
    outputs out. ``precision``: what OpenVINO computes in (fp32, bf16; int8 graphs: int8)."""
    if backend == "onnxruntime":
        sess = onnx_runtime.session(path, threads)
        return lambda x: onnx_runtime.run(sess, x)
    if backend == "openvino":
        compiled = openvino.compile_ir(path, precision, threads)
        return lambda x: openvino.run(compiled, x)
    raise ValueError(f"no exported graphs run on backend {backend!r}")


class ExportedImageEncoder:
    """uint8 CLIP crops (B, 3, 224, 224) -> float32 embeddings (B, D) on the CPU, through the
    exported image tower; the attributes of an ``ImageEncoder`` (``dim``, ``device``,
    ``precision``, ``attention``, ``backend``, :meth:`describe`)."""

    def __init__(self, export: Export, threads: int | None = None, precision: str | None = None):
        graph = export.manifest["graphs"]["image_tower"]
        self.export = export
        self.backend = export.backend
        self.device = torch.device("cpu")
        self.precision = precision or graph["precision"]
        self.attention = graph.get("attention", "sdpa")
        self.dim = int(export.manifest["clip"]["dim"])
        self._run = runner(export.folder / graph["file"], self.backend, self.precision, threads)

    def describe(self) -> dict:
        """The store's ``backbone``: the CLIP the graph was exported from (so features
        from it fit the run, by weight hash) and how it was run."""
        return {**self.export.manifest["clip"], "export": self.export.describe(self.precision)}

    @torch.inference_mode()
    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        x = normalize(pixels.cpu())  # (B, 3, 224, 224) float32
        return torch.from_numpy(self._run(x.numpy())[0])  # (B, D)


class ExportedScorer:
    """The exported scorer as a ``score_fn``; ``cfg`` is the run's :class:`ModelConfig`."""

    def __init__(self, export: Export, threads: int | None = None) -> None:
        graph = export.manifest["graphs"]["scorer"]
        self.cfg = ModelConfig.from_dict(export.manifest["model"])
        self._run = runner(export.folder / graph["file"], export.backend, "fp32", threads)

    def score(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, N, L, D) windows -> p(A) (B, N, L), class probabilities (B, N, L, C)."""
        p, probs = self._run(x.float().cpu().numpy())
        return torch.from_numpy(p), torch.from_numpy(probs)


class Export:
    """An export folder for ``backend`` (onnxruntime runs ``onnx`` exports, openvino
    ``openvino`` ones); with ``run_dir``, checked to come from the run's current weights."""

    def __init__(self, folder: str | Path, backend: str, run_dir: str | Path | None = None):
        if backend not in FORMAT_OF:
            raise ValueError(f"backend {backend!r} runs no export")
        self.folder, self.backend = Path(folder), backend
        self.manifest = read_manifest(self.folder, backend, run_dir)
        if run_dir is not None:
            check_run(self.manifest, self.folder, run_dir)

    def image_encoder(
        self, threads: int | None = None, precision: str | None = None
    ) -> ExportedImageEncoder:
        return ExportedImageEncoder(self, threads, precision)

    def scorer(self, threads: int | None = None) -> ExportedScorer:
        return ExportedScorer(self, threads)

    def describe(self, precision: str | None = None) -> dict:
        """What stores and outputs record of the backend: its name, the export's format and
        package version, the image tower's precision and the SHA-256 of its graph (the same
        export anywhere it is copied to)."""
        m = self.manifest
        tower = m["graphs"]["image_tower"]
        return {
            "backend": self.backend,
            "format": m["format"],
            "precision": precision or tower["precision"],
            "image_tower_sha256": m["files"][tower["file"]]["sha256"],
            "package": m.get("package"),
        }


def run_export(run_dir: str | Path, backend: str, folder: str | Path | None = None) -> Export:
    """The run's export for ``backend``: ``folder`` (an export folder, or a run whose
    ``export/<format>`` is one), else ``RUN/export/<format>``; checked against the run."""
    return Export(find_export(backend, folder, run_dir), backend, run_dir)
