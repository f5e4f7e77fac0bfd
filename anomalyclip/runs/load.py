"""A run folder's network: built from a configuration, or loaded with its weights; the
records ``config.json`` keeps of the run's inputs; the device runs use by default."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from anomalyclip import checks, locations
from anomalyclip.backbone import describe, load_text
from anomalyclip.checks import device_name, is_url
from anomalyclip.datasets import get_dataset
from anomalyclip.errors import AnomalyError
from anomalyclip.model import AnomalyCLIP, ModelConfig
from anomalyclip.runs.checkpoint import load_model_state, load_run
from anomalyclip.runs.config import RunConfig
from anomalyclip.store.meta import StoreMeta, preprocessing_mode

log = logging.getLogger(__name__)


def build_network(mcfg: ModelConfig, clip: str | Path, conv: str = "auto") -> AnomalyCLIP:
    """A fresh network on the text tower of ``clip`` (its projection size must match).
    ``mcfg`` must be bound to a dataset (:meth:`ModelConfig.with_data`).

    ``conv``: the convolution algorithm of the temporal model (auto | direct | winograd;
    ``auto`` takes Winograd where it measured faster: float32 on the CPU from 128 channels).
    """
    if not mcfg.classes:
        raise ValueError("the model configuration has no classes: bind it with with_data()")
    text_model, tokenizer = load_text(clip)
    proj = text_model.config.projection_dim
    if proj != mcfg.feature_dim:
        raise AnomalyError(
            f"{clip}: text embeddings have {proj} dims but the features have {mcfg.feature_dim}"
        )
    return AnomalyCLIP(mcfg, text_model, tokenizer, conv)


def run_inputs(
    features: str | Path | None,
    clip: str | Path,
    run_dir: str | Path,
    meta: StoreMeta | None,
    preprocessing: dict | None = None,
) -> dict[str, Any]:
    """``config.json``'s record of the run's CLIP and store, so the run folder can move, and
    of how the frames of its features were made (``preprocessing``, the store's record).

    ``meta`` is the store's record of the CLIP its features came from: its weight hash is
    reused when the run's CLIP is that one; another local CLIP is hashed here.
    """
    entry = locations.record(clip, run_dir)
    if "absolute" in entry:
        digest = _known_digest(entry["absolute"], clip, meta)
        digest = digest or describe(clip).get("weights_sha256")
        if digest:
            entry["weights_sha256"] = digest
    inputs = {"clip": entry}
    if features is not None:
        inputs["store"] = locations.record(features, run_dir, local=not is_url(str(features)))
    if preprocessing is not None:
        inputs["preprocessing"] = preprocessing
    return inputs


def run_preprocessing(config: RunConfig) -> str:
    """How the frames of a run's training features were made: ``native``, ``authors``, or
    ``unknown`` (a store that does not say, e.g. imported ``.npy``; a run written before this
    was recorded). Imported checkpoints are the authors', trained on their features."""
    recorded = config.inputs.get("preprocessing")
    if recorded is not None:
        return preprocessing_mode(recorded)
    return "authors" if config.imported else "unknown"


def preprocessing_for(run_dir: str | Path, config: RunConfig, asked: str | None) -> str:
    """The frame path to score new video with (``asked``, else the run's own) and one info
    line saying which and why."""
    mode = run_preprocessing(config)
    if asked:
        log.info("preprocessing %s (asked; %s's features: %s)", asked, run_dir, mode)
        return asked
    if mode == "authors":
        try:
            checks.preprocess(mode)
        except AnomalyError:
            raise AnomalyError(
                f"{run_dir}: trained on features made the authors' way, which needs OpenCV: "
                "pip install 'anomalyclip[authors]' (or --preprocess native)"
            ) from None
    if mode in ("native", "authors"):
        log.info("preprocessing %s: %s was trained on features made so (--preprocess to "
                 "change)", mode, run_dir)  # fmt: skip
        return mode
    log.info("preprocessing native: %s does not record how its features were made "
             "(--preprocess authors for the published features)", run_dir)  # fmt: skip
    return "native"


def _known_digest(absolute: str, clip: str | Path, meta: StoreMeta | None) -> str | None:
    """The weight hash the store recorded for ``clip``, if the store's CLIP is that folder."""
    if meta is None:
        return None
    stored = meta.inputs.get("clip") or {}
    if stored.get("absolute") == absolute and stored.get("weights_sha256"):
        return stored["weights_sha256"]
    backbone = meta.backbone or {}
    return backbone.get("weights_sha256") if str(backbone.get("model")) == str(clip) else None


def run_clip(run_dir: str | Path, config: RunConfig) -> str:
    """The CLIP a run was built on (its recorded local folder, or its hub id)."""
    return locations.recorded(run_dir, config, "clip")


def run_store(run_dir: str | Path, config: RunConfig) -> str:
    """The feature store a run was trained on (its recorded location)."""
    return locations.recorded(run_dir, config, "store")


def load_model(
    run_dir: str | Path, clip: str | Path | None = None
) -> tuple[AnomalyCLIP, RunConfig]:
    """The network of a run, in eval mode, with its weights and centroid; and its config.

    ``clip`` replaces the run's CLIP (tokenizer and text tower architecture).
    """
    state = load_run(run_dir)
    config = state.config
    spec = get_dataset(config.dataset)
    if tuple(spec.classes) != tuple(config.model.classes):
        raise AnomalyError(f"{run_dir}: its classes do not match dataset {spec.name!r}")
    model = build_network(config.model, clip or run_clip(run_dir, config))
    load_model_state(model, state.weights, Path(run_dir) / "model.safetensors")
    return model.eval(), config


def default_device(requested: str | None = None) -> torch.device:
    """The device asked for (checked to exist here), or (None or ``auto``) CUDA when there is
    one, else the CPU."""
    if not requested or requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device_name(requested))
    if device.type == "cuda":
        if not torch.cuda.is_available():
            why = "no GPU found" if torch.version.cuda else "this torch is built without CUDA"
            raise AnomalyError(f"--device {requested}: CUDA is not available ({why}); use cpu")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise AnomalyError(f"--device {requested}: this machine has {count} CUDA device(s)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise AnomalyError(f"--device {requested}: MPS is not available; use cpu")
    return device
