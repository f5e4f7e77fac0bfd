"""The AnomalyCLIP model: prompt learner, selector, axial temporal model, loss."""

from anomalyclip.model.anomalyclip import AnomalyCLIP, ModelOutput, class_probabilities
from anomalyclip.model.config import LossWeights, ModelConfig

__all__ = ["AnomalyCLIP", "LossWeights", "ModelConfig", "ModelOutput", "class_probabilities"]
