"""The names of the AnomalyCLIP authors' tensors and ours, one rule per tensor.

Their names map one to one onto this model's, with three real transforms:

- OpenAI's fused attention input ``in_proj_{weight,bias}`` (3W rows) is Hugging Face's
  ``q_proj``, ``k_proj``, ``v_proj``, in that row order;
- OpenAI's ``text_projection`` is used as ``x @ W``; HF's ``text_projection`` is a Linear,
  which stores the transpose;
- the temporal model drops the reversible-layer wrappers (``net.fn.fn.``) of the authors'
  code; ``to_kv`` stays fused (k rows first, then v) on both sides.

The rules are listed in the order the authors' state dict saves the tensors
(:func:`model_rules`), so an export writes them in that order.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from anomalyclip.model import ModelConfig

NET = "net."
TEXT = "prompt_learner.text_encoder."


@dataclass(frozen=True)
class Rule:
    """One authors' tensor (name without ``net.``) and the tensor(s) of ours it becomes.

    ``kind``: ``copy``; ``qkv`` (rows split in three, q, k, v); ``transpose`` (2-D).
    """

    authors: str
    ours: tuple[str, ...]
    kind: str = "copy"
    optional: bool = False

    def to_ours(self, t: torch.Tensor) -> list[torch.Tensor]:
        if self.kind == "qkv":
            return [c.clone() for c in t.chunk(3, dim=0)]
        if self.kind == "transpose":
            return [t.T.contiguous()]
        return [t]

    def to_authors(self, ts: list[torch.Tensor]) -> torch.Tensor:
        if self.kind == "qkv":
            return torch.cat(ts, dim=0)
        if self.kind == "transpose":
            return ts[0].T.contiguous()
        return ts[0]

    def authors_shape(self, shapes: list[tuple[int, ...]]) -> tuple[int, ...]:
        if self.kind == "qkv":
            return (3 * shapes[0][0], *shapes[0][1:])
        if self.kind == "transpose":
            return tuple(reversed(shapes[0]))
        return tuple(shapes[0])


def _residual_block_rules(src: str, dst: str) -> list[Rule]:
    """OpenAI ``ResidualAttentionBlock`` ``src`` -> HF ``CLIPEncoderLayer`` ``dst``."""
    rules = [
        Rule(
            f"{src}.attn.in_proj_{p}", tuple(f"{dst}.self_attn.{x}_proj.{p}" for x in "qkv"), "qkv"
        )
        for p in ("weight", "bias")
    ]
    renames = {
        "attn.out_proj": "self_attn.out_proj",
        "ln_1": "layer_norm1",
        "mlp.c_fc": "mlp.fc1",
        "mlp.c_proj": "mlp.fc2",
        "ln_2": "layer_norm2",
    }
    for a, h in renames.items():
        rules += [Rule(f"{src}.{a}.{p}", (f"{dst}.{h}.{p}",)) for p in ("weight", "bias")]
    return rules


def text_rules(layers: int) -> list[Rule]:
    """The text tower (minus the token embedding, saved elsewhere), in the authors' order."""
    emb = f"{TEXT}text_model.embeddings"
    rules = [
        Rule("text_encoder.positional_embedding", (f"{emb}.position_embedding.weight",)),
        Rule("text_encoder.text_projection", (f"{TEXT}text_projection.weight",), "transpose"),
    ]
    for i in range(layers):
        rules += _residual_block_rules(
            f"text_encoder.transformer.resblocks.{i}", f"{TEXT}text_model.encoder.layers.{i}"
        )
    rules += [
        Rule(f"text_encoder.ln_final.{p}", (f"{TEXT}text_model.final_layer_norm.{p}",))
        for p in ("weight", "bias")
    ]
    return rules


def vision_rules(layers: int) -> list[Rule]:
    """The image tower, authors' ``image_encoder.*`` <-> HF ``CLIPVisionModelWithProjection``."""
    emb = "vision_model.embeddings"
    rules = [
        Rule("image_encoder.class_embedding", (f"{emb}.class_embedding",)),
        Rule("image_encoder.positional_embedding", (f"{emb}.position_embedding.weight",)),
        Rule("image_encoder.proj", ("visual_projection.weight",), "transpose"),
        Rule("image_encoder.conv1.weight", (f"{emb}.patch_embedding.weight",)),
    ]
    rules += [
        Rule(f"image_encoder.ln_pre.{p}", (f"vision_model.pre_layrnorm.{p}",))
        for p in ("weight", "bias")
    ]
    for i in range(layers):
        rules += _residual_block_rules(
            f"image_encoder.transformer.resblocks.{i}", f"vision_model.encoder.layers.{i}"
        )
    rules += [
        Rule(f"image_encoder.ln_post.{p}", (f"vision_model.post_layernorm.{p}",))
        for p in ("weight", "bias")
    ]
    return rules


def temporal_rules(depth: int) -> list[Rule]:
    """The axial temporal model and its head (see :mod:`anomalyclip.model.temporal`)."""
    src, dst = "temporal_model.axial_attn", "temporal_model"
    rules = [
        Rule(f"temporal_model.projection.{p}", (f"{dst}.projection.{p}",))
        for p in ("weight", "bias")
    ]
    rules += [
        Rule(f"{src}.pos_emb.param_0", (f"{dst}.pos_emb_n",)),
        Rule(f"{src}.pos_emb.param_1", (f"{dst}.pos_emb_l",)),
    ]
    attn = ["fn.to_q.weight", "fn.to_kv.weight", "fn.to_out.weight", "fn.to_out.bias"]
    attn += ["norm.weight", "norm.bias"]
    ff = ["0.g", "0.b", "1.weight", "1.bias", "3.weight", "3.bias"]
    for d in range(depth):
        a, b = 2 * d, 2 * d + 1  # attention coupling, convolution coupling
        for branch in "fg":
            rules += [
                Rule(f"{src}.layers.blocks.{a}.{branch}.net.fn.{n}",
                     (f"{dst}.blocks.{a}.{branch}.{n.removeprefix('fn.')}",))
                for n in attn
            ]  # fmt: skip
        for branch in "fg":
            rules += [
                Rule(f"{src}.layers.blocks.{b}.{branch}.net.{n}",
                     (f"{dst}.blocks.{b}.{branch}.net.{n}",))
                for n in ff
            ]  # fmt: skip
    rules += [
        Rule(f"temporal_model.classifier.{m}.{p}", (f"{dst}.classifier.{m}.{p}",))
        for m in ("layer_norm", "linear")
        for p in ("weight", "bias")
    ]
    return rules


def model_rules(cfg: ModelConfig, text_layers: int) -> list[Rule]:
    """Every tensor of ours but the centroid, in the order the authors' state dict saves them."""
    bn = "selector_model.bn_layer"
    return [
        Rule("prompt_learner.ctx", ("prompt_learner.ctx",)),
        *text_rules(text_layers),
        Rule("token_embedding.weight", (f"{TEXT}text_model.embeddings.token_embedding.weight",)),
        Rule(f"{bn}.running_mean", (f"{bn}.running_mean",)),
        Rule(f"{bn}.running_var", (f"{bn}.running_var",)),
        Rule(f"{bn}.num_batches_tracked", (f"{bn}.num_batches_tracked",), optional=True),
        *temporal_rules(cfg.depth),
    ]
