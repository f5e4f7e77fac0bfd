"""The AnomalyCLIP model: prompt learner, selector, axial temporal model, loss.

:class:`ModelConfig` is plain data (no torch): a configuration is checked and printed
without importing the network, which is imported on first use of its names.
"""

from anomalyclip.model.config import LossWeights, ModelConfig

__all__ = ["AnomalyCLIP", "LossWeights", "ModelConfig", "ModelOutput", "class_probabilities"]

_FROM_NETWORK = ("AnomalyCLIP", "ModelOutput", "class_probabilities")


def __getattr__(name: str):
    if name in _FROM_NETWORK:
        from anomalyclip.model import anomalyclip

        return getattr(anomalyclip, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
