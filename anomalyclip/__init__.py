"""AnomalyCLIP: weakly supervised video anomaly detection and recognition on CLIP features.

The Python API (docs/api.md): :class:`Run` (a trained run: ``Run.load(path).predict(video)``),
the :class:`Prediction` it returns, and ``FeatureStore.open(path)`` (or :func:`open_store`) to
list and read the videos of a feature store. They are imported on first use, so ``import
anomalyclip`` stays light (no torch).
"""

from __future__ import annotations

__version__ = "0.1.0"

_LAZY = {
    "Run": "anomalyclip.api",
    "Prediction": "anomalyclip.api",
    "PredictConfig": "anomalyclip.api",
    "open_store": "anomalyclip.store",
    "FeatureStore": "anomalyclip.store",
}
__all__ = ["FeatureStore", "PredictConfig", "Prediction", "Run", "open_store"]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'anomalyclip' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
