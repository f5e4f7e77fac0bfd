"""Every choice of an extraction run in one place, filled by ``anomaly features``, the demo,
``predict`` and the benchmark."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from anomalyclip import checks
from anomalyclip.errors import AnomalyError
from anomalyclip.extract.decode import Sampling
from anomalyclip.extract.encoder import ATTENTIONS, PRECISIONS, Attention, Precision
from anomalyclip.extract.zone import Zone

ROOT_WAIT_S = 600.0  # how long ranks > 0 wait for rank 0 to write a store's root attributes
STALL_S = 120.0  # seconds without a decoded frame after which a video is given up as failed


@dataclass(frozen=True)
class ExtractConfig:
    """How videos become rows of a feature store.

    Model side: ``device``, ``precision`` (the fp32 reference by default; ``auto`` picks the
    fastest of the device, see :func:`~anomalyclip.extract.encoder.resolve_precision`, as
    ``anomaly features`` does), ``attention`` (the image tower's
    attention kernel: ``sdpa`` or ``eager``, same numbers to float rounding) and
    ``batch_size`` (frames per forward pass; a batch holds frames of one video).
    Input side: ``sampling``, ``workers`` (decoder threads), ``folder_fps`` (the rate of
    folders of frames), ``stall_timeout`` (seconds without a decoded frame before a video is
    given up as failed), ``zone`` (a :class:`~anomalyclip.extract.zone.Zone`: only that part
    of every frame is shown to CLIP), ``preprocess`` (the frame path: ``native``, or
    ``authors``, the way the published features were made; see
    :mod:`anomalyclip.extract.preprocess`). Store side: ``dataset``, ``dtype`` (stored
    float16 or float32), ``root`` (stored source paths are relative to it), ``strict`` (a
    truncated source is a failure, not a flagged video). Scale-out: ``shard=(rank, world)``,
    ``coordinated`` (the
    ranks were launched together: rank 0 writes the root attributes, the others wait up to
    ``root_timeout`` seconds for them).
    """

    dataset: str
    device: str = "cpu"
    precision: Precision = "fp32"
    attention: Attention = "sdpa"
    batch_size: int = 64
    sampling: Sampling = Sampling()
    workers: int = 2
    folder_fps: float | None = None
    stall_timeout: float = STALL_S
    preprocess: str = "native"
    dtype: str = "float16"
    root: str | Path | None = None
    strict: bool = False
    shard: tuple[int, int] = (0, 1)
    coordinated: bool = False
    root_timeout: float = ROOT_WAIT_S
    progress: bool = True
    zone: Zone | None = None

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.workers < 1:
            raise AnomalyError(
                f"batch size and workers must be >= 1 (got {self.batch_size}, {self.workers})"
            )
        if self.precision not in PRECISIONS:
            raise AnomalyError(f"precision {self.precision!r}: expected one of {PRECISIONS}")
        if self.attention not in ATTENTIONS:
            raise AnomalyError(f"attention {self.attention!r}: expected one of {ATTENTIONS}")
        checks.preprocess(self.preprocess)
