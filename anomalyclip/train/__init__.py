"""Stage 2: training AnomalyCLIP on a feature store."""

from anomalyclip.train.config import PRESETS, TrainConfig, resolve_config
from anomalyclip.train.loop import train

__all__ = ["PRESETS", "TrainConfig", "resolve_config", "train"]
