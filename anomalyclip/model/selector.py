"""The selector (DESIGN.md section 5.2): anomaly directions in the normal-centred CLIP space.

CLIP image embeddings of normal videos sit around a centroid m. Shifting the space to m
makes "how far does this frame move away from normality, towards anomaly c" a scalar
projection onto the unit direction from m to the text feature of c. The A projections are
standardised by an affine-free BatchNorm (batch statistics in training, running statistics
at inference), so classes with far-away prompts do not dominate the softmax over classes.

Parameter names: ``bn_layer.running_mean``, ``bn_layer.running_var`` (A,),
``bn_layer.num_batches_tracked`` (as the authors' ``selector_model.bn_layer``).
"""

from __future__ import annotations

import torch
from torch import nn


def anomaly_directions(text_anomaly: torch.Tensor, centroid: torch.Tensor) -> torch.Tensor:
    """d_c = (t_c - m) / ||t_c - m||: (A, D) text features of the anomaly classes -> (A, D)."""
    shifted = text_anomaly - centroid
    return shifted / shifted.norm(dim=-1, keepdim=True)


def drop_normal(text: torch.Tensor, normal_id: int) -> torch.Tensor:
    """(C, D) class features -> (A, D) without the Normal row."""
    return torch.cat([text[:normal_id], text[normal_id + 1 :]], dim=0)


class Selector(nn.Module):
    def __init__(self, num_anomaly: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.bn_layer = nn.BatchNorm1d(num_anomaly, eps=eps, affine=False)

    def forward(
        self, centred: torch.Tensor, text_anomaly: torch.Tensor, centroid: torch.Tensor
    ) -> torch.Tensor:
        """Similarities s (..., A) of centred frames x - m (..., D) to the A anomaly directions.

        Every frame of the batch is one BatchNorm sample (B*N*L of them in training).
        """
        d = anomaly_directions(text_anomaly, centroid)  # (A, D)
        s = centred @ d.T  # (..., A)
        return self.bn_layer(s.reshape(-1, s.shape[-1])).reshape(s.shape)
