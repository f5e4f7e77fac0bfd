"""Stage 2: training AnomalyCLIP on a feature store.

The configuration (:mod:`anomalyclip.train.config`) imports neither torch nor numpy, so the
command line checks a TOML file or prints the resolved configuration at once; the loop and
what it needs are imported on first use of :func:`train` or :func:`make_optimizer`.
"""

from anomalyclip.train.config import PRESETS, TrainConfig, resolve_config

__all__ = ["PRESETS", "Evaluator", "TrainConfig", "make_optimizer", "resolve_config", "train"]

_FROM_LOOP = ("Evaluator", "make_optimizer", "train")


def __getattr__(name: str):
    if name in _FROM_LOOP:
        from anomalyclip.train import loop

        return getattr(loop, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
