"""``anomaly export``: a run's image tower and scorer as a self-describing folder for CPU boxes.

:func:`export_run` loads the run (its weights, and the image tower of its CLIP), builds the
two graphs of :mod:`anomalyclip.export.graphs`, traces them to ONNX once, converts them to
OpenVINO IR for ``--format openvino``, quantises the image tower to int8 with ``--int8``
(:mod:`anomalyclip.export.quantize`), and writes the folder
(:mod:`anomalyclip.export.manifest` describes it). The folder is assembled beside its
destination and moved into place whole: an interrupted export never leaves a folder that
reads as complete, and a new export replaces an old one only when it is done.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import torch

import anomalyclip
from anomalyclip.backbone import CLIP_IMAGE_SIZE, describe, load_vision
from anomalyclip.export.graphs import (
    IMAGE_INPUT,
    IMAGE_OUTPUT,
    SCORER_INPUT,
    SCORER_OUTPUTS,
    ImageTower,
    Scorer,
)
from anomalyclip.export.manifest import MIN_COSINE, check_format, default_folder, write_manifest
from anomalyclip.export.onnx import OPSET, export_onnx
from anomalyclip.export.quantize import Calibration, calibration_frames
from anomalyclip.extract.pipeline import preprocessing_attrs
from anomalyclip.runs import RunConfig, load_model, run_clip

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExportConfig:
    """``format`` (onnx | openvino), ``int8`` (quantise the image tower, calibrated on
    ``calibration``, keeping float what the per-frame cosine to fp32 on those frames needs
    to reach ``min_cosine``: :mod:`anomalyclip.export.sensitivity`), ``out`` (default
    ``RUN/export/<format>``)."""

    format: str = "onnx"
    int8: bool = False
    calibration: Calibration = field(default_factory=Calibration)
    out: str | Path | None = None
    min_cosine: float = MIN_COSINE


def _versions(fmt: str, int8: bool) -> dict[str, str | None]:
    names = ["torch", "onnx", "onnxruntime" if fmt == "onnx" else "openvino"]
    names += ["nncf"] if int8 and fmt == "openvino" else []
    found = {}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def _run_weights(run_dir: Path) -> str | None:
    try:
        listed = json.loads((run_dir / "checkpoint.json").read_text())
        return listed["files"]["model.safetensors"]["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _graphs(model, clip: str, work: Path) -> dict[str, Path]:  # noqa: ANN001 - AnomalyCLIP
    """Trace both graphs to ONNX in ``work``."""
    cfg = model.cfg
    tower = ImageTower(load_vision(clip, "sdpa"))
    frames = torch.zeros(2, 3, CLIP_IMAGE_SIZE, CLIP_IMAGE_SIZE)
    window = model.centroid.expand(2, cfg.num_segments, cfg.seg_length, -1).contiguous()
    return {
        "image_tower": export_onnx(tower, frames, work / "image_tower.onnx", IMAGE_INPUT,
                                   [IMAGE_OUTPUT]),
        "scorer": export_onnx(Scorer(model), window, work / "scorer.onnx", SCORER_INPUT,
                              SCORER_OUTPUTS),
    }  # fmt: skip


def _convert(paths: dict[str, Path], cfg: ExportConfig, dataset: str) -> dict | None:
    """To the format asked for, int8 where asked; returns the calibration's description
    and the sensitivity pass's choice."""
    from anomalyclip.export import openvino, quantize

    if cfg.format == "openvino":
        for name, path in paths.items():
            paths[name] = openvino.onnx_to_ir(path, path.with_suffix(".xml"))
            path.unlink()
    if not cfg.int8:
        return None
    frames = calibration_frames(cfg.calibration, dataset)
    fp32 = paths["image_tower"]
    kept = fp32.with_name("fp32-" + fp32.name)
    fp32.rename(kept)
    if cfg.format == "openvino":
        fp32.with_suffix(".bin").rename(kept.with_suffix(".bin"))
        choice = quantize.quantize_openvino(kept, frames, fp32, cfg.min_cosine)
        kept.with_suffix(".bin").unlink()
    else:
        choice = quantize.quantize_onnx(kept, frames, fp32, IMAGE_INPUT, cfg.min_cosine)
    kept.unlink()
    return {**cfg.calibration.describe(), "frames": len(frames), "int8": choice.describe()}


def _manifest(model, run_config: RunConfig, run_dir: Path, clip: str, cfg: ExportConfig,
              paths: dict[str, Path], calibration: dict | None) -> dict:  # fmt: skip
    m = model.cfg
    D, N, L, C = m.feature_dim, m.num_segments, m.seg_length, m.num_classes
    tower = {
        "file": paths["image_tower"].name,
        "precision": "int8" if cfg.int8 else "fp32",
        "attention": "sdpa",
        "inputs": [{"name": IMAGE_INPUT, "shape": ["batch", 3, CLIP_IMAGE_SIZE, CLIP_IMAGE_SIZE],
                    "dtype": "float32", "preprocessing": preprocessing_attrs()}],
        "outputs": [{"name": IMAGE_OUTPUT, "shape": ["batch", D], "dtype": "float32"}],
    }  # fmt: skip
    if calibration:
        tower["int8"] = calibration.pop("int8")
        tower["calibration"] = calibration
    scorer = {
        "file": paths["scorer"].name,
        "inputs": [{"name": SCORER_INPUT, "shape": ["batch", N, L, D], "dtype": "float32"}],
        "outputs": [{"name": SCORER_OUTPUTS[0], "shape": ["batch", N, L], "dtype": "float32"},
                    {"name": SCORER_OUTPUTS[1], "shape": ["batch", N, L, C], "dtype": "float32"}],
    }  # fmt: skip
    return {
        "format": cfg.format,
        "package": f"anomalyclip {anomalyclip.__version__}",
        "versions": _versions(cfg.format, cfg.int8),
        "opset": OPSET,
        "run": {
            "folder": str(run_dir.resolve()),
            "epoch": run_config.epoch,
            "weights_sha256": _run_weights(run_dir),
        },  # fmt: skip
        "dataset": run_config.dataset,
        "classes": list(m.classes),
        "normal_id": m.normal_id,
        "threshold": run_config.to_dict().get("threshold"),
        "sampling": run_config.sampling,
        "model": m.to_dict(),
        "clip": describe(clip),
        "graphs": {"image_tower": tower, "scorer": scorer},
        "extra_files": ["config.json"],
    }


def export_run(run_dir: str | Path, cfg: ExportConfig = ExportConfig()) -> Path:
    """Export the run at ``run_dir`` (module docstring); returns the folder written."""
    check_format(cfg.format)
    run_dir = Path(run_dir)
    folder = Path(cfg.out) if cfg.out else default_folder(run_dir, cfg.format)
    model, run_config = load_model(run_dir)
    clip = run_clip(run_dir, run_config)
    work = folder.with_name(folder.name + ".partial")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        paths = _graphs(model, clip, work)
        calibration = _convert(paths, cfg, run_config.dataset)
        (work / "config.json").write_text(json.dumps(run_config.to_dict(), indent=2) + "\n")
        write_manifest(work, _manifest(model, run_config, run_dir, clip, cfg, paths, calibration))
        if folder.exists():
            shutil.rmtree(folder)
        work.rename(folder)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    log.info("exported %s to %s", run_dir, folder)
    return folder
