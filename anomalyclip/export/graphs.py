"""The two graphs a run exports, as torch modules that compute exactly what the torch path does.

- :class:`ImageTower`: normalised frames (B, 3, 224, 224) float32 -> ``image_embeds`` (B, D),
  the CLIP image tower with its projection, as :class:`~anomalyclip.extract.encoder.ImageEncoder`
  runs it in fp32 (the uint8 -> float normalisation stays outside, in the decode pipeline).
- :class:`Scorer`: a batch of windows of stored features (B, N, L, D) -> p(A) (B, N, L) and the
  class probabilities (B, N, L, C), what :meth:`AnomalyCLIP.forward` returns in eval mode. The
  learned prompts' text features, the anomaly directions, the normal centroid and the
  selector's BatchNorm statistics are fixed by the weights: they become constants of the
  graph, so the CLIP text tower is not part of it. The temporal model is the run's, with its
  feed-forward convolutions computed directly (``conv="direct"``: the same function as the
  Winograd path, and one every runtime has).

Both keep the batch dimension free (one export serves any batch size).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from anomalyclip.model import AnomalyCLIP
from anomalyclip.model.anomalyclip import class_probabilities
from anomalyclip.model.selector import anomaly_directions, drop_normal
from anomalyclip.model.temporal import ConvFeedForward

IMAGE_INPUT, IMAGE_OUTPUT = "frames", "features"
SCORER_INPUT, SCORER_OUTPUTS = "features", ("p_abnormal", "probs")


class ImageTower(nn.Module):
    """Normalised frames (B, 3, 224, 224) -> projected, not normalised embeddings (B, D)."""

    def __init__(self, vision: nn.Module) -> None:
        super().__init__()
        self.vision = vision

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.vision(pixel_values=frames).image_embeds  # (B, D)


class Scorer(nn.Module):
    """(B, N, L, D) windows -> p(A) (B, N, L), probabilities (B, N, L, C); see the module
    docstring. Built from a run's model in eval mode; the model itself is left as it was."""

    def __init__(self, model: AnomalyCLIP) -> None:
        super().__init__()
        cfg = model.cfg
        self.normal_id, self.concat = cfg.normal_id, cfg.concat_similarity
        self.window = (cfg.num_segments, cfg.seg_length)
        with torch.inference_mode():
            text = drop_normal(model.text_features(), cfg.normal_id)  # (A, D)
            directions = anomaly_directions(text, model.centroid)  # (A, D)
        bn = model.selector_model.bn_layer
        self.register_buffer("centroid", model.centroid.detach().clone())  # (D,)
        self.register_buffer("directions", directions.clone())
        self.register_buffer("bn_mean", bn.running_mean.detach().clone())  # (A,)
        self.register_buffer("bn_var", bn.running_var.detach().clone())  # (A,)
        self.bn_eps = bn.eps
        self.temporal = copy.deepcopy(model.temporal_model).eval()
        for module in self.temporal.modules():
            if isinstance(module, ConvFeedForward):
                module.algorithm = "direct"

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        centred = x - self.centroid  # (B, N, L, D)
        s = centred @ self.directions.T  # (B, N, L, A)
        s = (s - self.bn_mean) / torch.sqrt(self.bn_var + self.bn_eps)  # eval BatchNorm
        feats = torch.cat([s, centred], -1) if self.concat else centred
        p = torch.sigmoid(self.temporal(feats))  # (B, N, L)
        return p, class_probabilities(s, p, self.normal_id)  # (B, N, L), (B, N, L, C)
