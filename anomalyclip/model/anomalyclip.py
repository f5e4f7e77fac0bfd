"""AnomalyCLIP: prompt learner + selector + axial temporal model (docs/model.md).

Input is a batch of stored CLIP frame embeddings arranged as (B, N segments, L frames, D).
The learned class prompts give text features; their directions away from the normal
centroid m score each frame per anomaly class (the similarity s), and the temporal model
turns the centred frames (optionally with s) into p(A). Recognition combines the two:
P(c) = softmax(s)_c * p(A) for anomaly classes and P(Normal) = 1 - p(A).

State-dict layout (mirrors the authors' ``net.*`` where that is free)::

    centroid                                 (D,) normal centroid m (persistent buffer)
    prompt_learner.ctx                       (C, n_ctx, D_text)
    prompt_learner.text_encoder.*            HF CLIPTextModelWithProjection (frozen, except
                                             prompt_learner.text_encoder.text_projection.weight)
    selector_model.bn_layer.*                BatchNorm running statistics (A,)
    temporal_model.*                         see :mod:`anomalyclip.model.temporal`
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from transformers import CLIPTextModelWithProjection, CLIPTokenizer

from anomalyclip.model.config import ModelConfig
from anomalyclip.model.loss import anomalyclip_loss, segment_keep_mask
from anomalyclip.model.memo import Memo, autocast_state
from anomalyclip.model.prompt import PromptLearner
from anomalyclip.model.selector import Selector, drop_normal
from anomalyclip.model.temporal import TemporalModel


@dataclass
class ModelOutput:
    similarity: torch.Tensor  # (B, N, L, A) BatchNorm-ed similarities s
    logits: torch.Tensor  # (B, N, L) head logits z
    p_abnormal: torch.Tensor  # (B, N, L) p(A) = sigmoid(z)
    probs: torch.Tensor  # (B, N, L, C) class distribution per frame


def class_probabilities(
    similarity: torch.Tensor, p_abnormal: torch.Tensor, normal_id: int
) -> torch.Tensor:
    """(..., A) similarities and (...) p(A) -> (..., C): softmax(s) * p(A), 1 - p(A) at Normal."""
    p = p_abnormal.unsqueeze(-1)
    abnormal = similarity.softmax(-1) * p
    return torch.cat([abnormal[..., :normal_id], 1 - p, abnormal[..., normal_id:]], dim=-1)


class AnomalyCLIP(nn.Module):
    def __init__(
        self,
        cfg: ModelConfig,
        text_model: CLIPTextModelWithProjection,
        tokenizer: CLIPTokenizer,
        conv: str = "direct",
    ) -> None:
        """``conv``: how the temporal model computes its feed-forward convolutions (auto |
        direct | winograd, :mod:`anomalyclip.model.temporal`); the result and the state
        dict are the same whichever it is."""
        super().__init__()
        projection_dim = text_model.config.projection_dim
        if projection_dim != cfg.feature_dim:
            raise ValueError(
                f"text encoder projects to {projection_dim} dimensions but the features have "
                f"{cfg.feature_dim}"
            )
        self.cfg = cfg
        self.prompt_learner = PromptLearner(cfg.classes, text_model, tokenizer, cfg.n_ctx)
        self.selector_model = Selector(cfg.num_anomaly)
        self.temporal_model = TemporalModel(
            cfg.temporal_in_dim,
            cfg.emb_dim,
            cfg.depth,
            cfg.heads,
            cfg.num_segments,
            cfg.seg_length,
            conv,
        )
        self.register_buffer("centroid", torch.zeros(cfg.feature_dim))
        self._text = Memo()  # text features of the current weights, kept for inference

    def set_centroid(self, centroid: torch.Tensor) -> None:
        """Install the normal centroid m (mean frame embedding of the normal training videos)."""
        if centroid.shape != self.centroid.shape:
            raise ValueError(
                f"centroid has shape {tuple(centroid.shape)}, expected {tuple(self.centroid.shape)}"
            )
        with torch.no_grad():
            self.centroid.copy_(centroid)

    def train(self, mode: bool = True) -> AnomalyCLIP:
        self._text.clear()
        return super().train(mode)

    def text_features(self) -> torch.Tensor:
        """(C, D) features of the learned class prompts.

        They depend on the weights only, so with autograd off (evaluation, inference) they are
        computed once and reused until a weight of the prompt learner changes, the model moves
        or is cast, the autocast setting changes, or the model trains
        (:mod:`anomalyclip.model.memo`). With autograd on they are computed every time.
        """
        if torch.is_grad_enabled():
            self._text.clear()
            return self.prompt_learner()
        pl = self.prompt_learner
        tensors = [*pl.parameters(), *pl.buffers()]
        return self._text.get(tensors, pl, autocast_state(self.centroid.device.type))

    def forward(self, x: torch.Tensor, text: torch.Tensor | None = None) -> ModelOutput:
        """x: (B, N, L, D) frame embeddings -> every per-frame output of the model.

        ``text``: (C, D) class features to use instead of :meth:`text_features` (a reference
        that recomputes them passes ``self.prompt_learner()``).
        """
        text = self.text_features() if text is None else text
        text = drop_normal(text, self.cfg.normal_id)  # (A, D)
        centred = x - self.centroid  # (B, N, L, D)
        similarity = self.selector_model(centred, text, self.centroid)  # (B, N, L, A)
        feats = torch.cat([similarity, centred], -1) if self.cfg.concat_similarity else centred
        logits = self.temporal_model(feats)  # (B, N, L)
        p_abnormal = torch.sigmoid(logits)
        probs = class_probabilities(similarity, p_abnormal, self.cfg.normal_id)
        return ModelOutput(similarity, logits, p_abnormal, probs)

    def loss(
        self,
        out: ModelOutput,
        labels: torch.Tensor,
        keep: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        gather: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Training loss of a batch (first half abnormal, second half normal).

        ``keep`` is the (B, N) segment-dropout mask; drawn here from ``generator`` when absent.
        """
        if keep is None:
            b, n = out.logits.shape[:2]
            keep = segment_keep_mask(
                b, n, self.cfg.segment_dropout, generator, device=out.logits.device
            )
        return anomalyclip_loss(
            out.similarity,
            out.logits,
            labels,
            self.cfg.normal_id,
            keep,
            self.cfg.topk,
            self.cfg.loss_weights,
            gather,
        )

    def trainable_parameters(self) -> dict[str, list[nn.Parameter]]:
        """The parameter groups the optimiser updates; everything else of CLIP stays frozen."""
        return {
            "prompt": [self.prompt_learner.ctx],
            "text_projection": [self.prompt_learner.text_encoder.text_projection.weight],
            "temporal": list(self.temporal_model.parameters()),
        }
