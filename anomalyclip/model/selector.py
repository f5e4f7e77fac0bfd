"""The selector: anomaly directions in the normal-centred CLIP space.

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
import torch.distributed as dist
from torch import nn


def anomaly_directions(text_anomaly: torch.Tensor, centroid: torch.Tensor) -> torch.Tensor:
    """d_c = (t_c - m) / ||t_c - m||: (A, D) text features of the anomaly classes -> (A, D)."""
    shifted = text_anomaly - centroid
    return shifted / shifted.norm(dim=-1, keepdim=True)


def drop_normal(text: torch.Tensor, normal_id: int) -> torch.Tensor:
    """(C, D) class features -> (A, D) without the Normal row."""
    return torch.cat([text[:normal_id], text[normal_id + 1 :]], dim=0)


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class GlobalBatchNorm(nn.BatchNorm1d):
    """Affine-free BatchNorm whose training statistics span every process of a DDP run.

    ``nn.SyncBatchNorm`` only runs on accelerators; this does the same on any device with
    two differentiable all-reduces (sums and sums of squares), so data-parallel training
    normalises with the statistics of the global batch, exactly as one process would.
    Outside a distributed run it is plain ``BatchNorm1d`` (and has the same state dict).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (samples, A)
        if not (self.training and _distributed()):
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce

        count = torch.tensor([x.shape[0]], dtype=x.dtype, device=x.device)
        stats = all_reduce(torch.cat([x.sum(0), x.square().sum(0), count]))
        a = x.shape[1]
        n = stats[-1]
        mean = stats[:a] / n
        var = stats[a : 2 * a] / n - mean.square()  # biased, as BatchNorm normalises
        with torch.no_grad():
            m = self.momentum
            self.running_mean.mul_(1 - m).add_(m * mean.detach())
            self.running_var.mul_(1 - m).add_(m * var.detach() * n / (n - 1))
            self.num_batches_tracked.add_(1)
        return (x - mean) / torch.sqrt(var + self.eps)


class Selector(nn.Module):
    def __init__(self, num_anomaly: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.bn_layer = GlobalBatchNorm(num_anomaly, eps=eps, affine=False)

    def forward(
        self, centred: torch.Tensor, text_anomaly: torch.Tensor, centroid: torch.Tensor
    ) -> torch.Tensor:
        """Similarities s (..., A) of centred frames x - m (..., D) to the A anomaly directions.

        Every frame of the batch is one BatchNorm sample (B*N*L of them in training).
        """
        d = anomaly_directions(text_anomaly, centroid)  # (A, D)
        s = centred @ d.T  # (..., A)
        return self.bn_layer(s.reshape(-1, s.shape[-1])).reshape(s.shape)
