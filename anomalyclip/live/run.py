"""The run a watch scores with: checked from its files before torch is imported, then loaded.

:func:`check_run` reads only ``config.json`` and looks at the files: the folder is a run,
its model file is there, and the values a watch takes from it (the decision threshold, the
features' sampling, the CLIP) are valid, so a wrong ``--checkpoint`` fails in a second with
one line. A watch never opens the run's feature store: the store is where the run was
trained, possibly another machine's or a shared URL, and a monitoring box should contact
only its cameras. A run that does not record its features' sampling is watched at every
frame, with a warning.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from anomalyclip import checks, locations
from anomalyclip.errors import AnomalyError
from anomalyclip.runs.config import RunConfig

if TYPE_CHECKING:
    import torch

    from anomalyclip.extract.decode import Sampling
    from anomalyclip.extract.encoder import ImageEncoder

log = logging.getLogger(__name__)

MODEL_FILE = "model.safetensors"


@dataclass(frozen=True)
class WatchRun:
    """What a watch takes from its run, checked: the decision threshold (``--threshold``,
    else the run's), the features' sampling (``{"mode", "value"}``, None when not recorded)
    and the CLIP its image tower is (``--clip``, else the run's)."""

    path: Path
    config: RunConfig
    threshold: float
    sampling: dict[str, Any] | None
    clip: str


def check_run(checkpoint: str | Path, threshold: float | None, clip: str | None) -> WatchRun:
    """The :class:`WatchRun` of ``checkpoint``; a one-line error naming the file and the
    value that is wrong. Standard library only: runs before torch is imported."""
    config = RunConfig.read(checkpoint)
    path = Path(checkpoint)
    staged = path / ".staging" / MODEL_FILE
    if not (path / MODEL_FILE).is_file() and not staged.is_file():
        raise AnomalyError(f"{path}: no {MODEL_FILE} (an unfinished or damaged run?)")
    return WatchRun(
        path,
        config,
        run_threshold_value(config, checkpoint, threshold),
        config.sampling,
        _clip(clip) or locations.recorded(path, config, "clip"),
    )


def _clip(given: str | None) -> str | None:
    """``--clip`` as given, once a local folder it names is known to exist."""
    if given:
        locations.local_clip(given)
    return given


def run_threshold_value(config: RunConfig, checkpoint: str | Path, given: float | None) -> float:
    """The decision threshold as a probability: ``given`` (``--threshold``), else the value
    of the run's calibrated one (the record with its rule is
    :func:`anomalyclip.evaluate.decisions.run_threshold_record`)."""
    if given is not None:
        if not _probability(given):
            raise AnomalyError(f"--threshold {given}: a probability in [0, 1]")
        return float(given)
    if config.threshold is None:
        raise AnomalyError(
            f"{checkpoint}: the run has no decision threshold (trained without held-out "
            "normal videos?); pass --threshold P"
        )
    return config.threshold.value


def run_sampling(config: RunConfig, checkpoint: str | Path) -> Sampling:
    """The sampling of the features the run was trained on, as ``config.json`` records it;
    every frame (with a warning) when it does not. The store itself is never opened."""
    from anomalyclip.extract.decode import Sampling

    described = config.sampling
    if described is None:
        log.warning(
            "%s: the run does not record its features' sampling; every frame is scored",
            checkpoint,
        )
        return Sampling()
    return Sampling(described["mode"], described.get("value"))


def load_for_watch(
    checkpoint: str | Path,
    clip: str | None,
    device: str | None,
    precision: str = "auto",
    backend: str = "torch",
) -> tuple[torch.nn.Module, ImageEncoder, RunConfig]:
    """The run's model (eval mode, on ``device``), the image tower that makes its features
    (``clip``, default the run's), and the run's config. With another ``backend`` than
    torch, the run's export (``clip``: its folder, default ``RUN/export/<format>``): its
    scorer and image tower, on the CPU."""
    from anomalyclip.extract.encoder import ImageEncoder
    from anomalyclip.runs import default_device, load_model, read_run_config, run_clip

    if backend != "torch":
        from anomalyclip.export.backends import run_export

        export = run_export(checkpoint, backend, clip)
        return export.scorer(), export.image_encoder(), read_run_config(checkpoint)
    dev = default_device(device)
    model, config = load_model(checkpoint, clip)  # a moved run: --clip gives the text tower too
    model.to(dev)
    checks.precision(precision)
    tower = clip or run_clip(checkpoint, config)
    encoder = ImageEncoder(tower, str(dev), precision)
    if encoder.dim != model.cfg.feature_dim:
        raise AnomalyError(
            f"{tower}: image embeddings have {encoder.dim} dims but the run {checkpoint} "
            f"takes {model.cfg.feature_dim}"
        )
    return model, encoder, config


def _probability(value: object) -> bool:
    real = isinstance(value, (int, float)) and not isinstance(value, bool)
    return real and math.isfinite(value) and 0.0 <= value <= 1.0
