"""Stage 2: training AnomalyCLIP on a feature store."""

from anomalyclip.train.config import PRESETS, TrainConfig, resolve_config
from anomalyclip.train.loop import Evaluator, make_optimizer, train

__all__ = ["PRESETS", "Evaluator", "TrainConfig", "make_optimizer", "resolve_config", "train"]
