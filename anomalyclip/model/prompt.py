"""CoOp prompt learner over the frozen Hugging Face CLIP text tower.

Every class c gets its own learned context ``ctx[c]`` (n_ctx, D_text). The prompt
``"X X X X X X X X <name>."`` is tokenized once; the eight placeholder positions 1..n_ctx
are then overwritten, in embedding space, by the contexts. ``transformers``' CLIP text model
only takes ``input_ids``, so the overwrite is done by a forward hook on the token embedding
that lives only for the duration of :meth:`PromptLearner.forward`: the rest of the tower
(position embedding, causal encoder, final LayerNorm) runs exactly as Hugging Face wrote it.
The EOS state is pooled at the first position equal to the tokenizer's EOS id (what HF does
with a correct ``eos_token_id``; identical to the authors' argmax for these prompts) and goes
through ``text_projection``, the only trainable part of the tower.

The tower is causal, so no position up to the last EOS sees what follows it: the 77-token
sequence is cut to max(EOS) + 1 positions (~13 for UCF-Crime's names), the same features for
~5x less text-tower compute in every training step.

Parameter names: ``ctx`` (C, n_ctx, D_text) and ``text_encoder.*`` (the HF
``CLIPTextModelWithProjection``, e.g. ``text_encoder.text_projection.weight`` (D, D_text)).
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import CLIPTextModelWithProjection, CLIPTokenizer

PLACEHOLDER = "X"


def prompt_text(name: str, n_ctx: int) -> str:
    """The text tokenized for one class, e.g. ``"X X X X X X X X Car accident."``."""
    return " ".join([PLACEHOLDER] * n_ctx) + " " + name.replace("_", " ") + "."


class PromptLearner(nn.Module):
    def __init__(
        self,
        classes: tuple[str, ...] | list[str],
        text_encoder: CLIPTextModelWithProjection,
        tokenizer: CLIPTokenizer,
        n_ctx: int = 8,
    ) -> None:
        super().__init__()
        self.n_ctx = n_ctx
        self.text_encoder = text_encoder
        # Frozen tower, trainable projection; eval() because CLIP's dropout must stay off.
        text_encoder.requires_grad_(False).eval()
        text_encoder.text_projection.weight.requires_grad_(True)

        prompts = [prompt_text(c, n_ctx) for c in classes]
        max_len = text_encoder.config.max_position_embeddings
        ids = tokenizer(prompts, padding="max_length", max_length=max_len, return_tensors="pt")
        ids = ids["input_ids"]  # (C, 77)
        if ids.shape[1] != max_len:
            raise ValueError(f"a class prompt is longer than {max_len} tokens: {prompts}")
        slots = ids[:, 1 : 1 + n_ctx]
        if not (slots == slots[0, 0]).all():
            raise ValueError(f"placeholder {PLACEHOLDER!r} is not one token per context slot")
        eos = (ids == tokenizer.eos_token_id).int().argmax(dim=1)  # first EOS per prompt
        if (eos <= n_ctx).any():
            raise ValueError("a prompt has no EOS token after its context")
        self.register_buffer("input_ids", ids, persistent=False)
        self.register_buffer("eos_position", eos, persistent=False)
        self.seq_len = int(eos.max()) + 1  # causal tower: later positions change nothing

        width = text_encoder.config.hidden_size
        self.ctx = nn.Parameter(torch.empty(len(classes), n_ctx, width))
        nn.init.normal_(self.ctx, std=0.02)

    def train(self, mode: bool = True) -> PromptLearner:
        super().train(mode)
        self.text_encoder.eval()  # frozen CLIP never leaves eval mode
        return self

    def _inject(self, module: nn.Module, args: tuple, tokens: torch.Tensor) -> torch.Tensor:
        # tokens: (C, seq_len, D_text) frozen token embeddings -> contexts at positions 1..n_ctx
        ctx = self.ctx.to(tokens.dtype)
        return torch.cat([tokens[:, :1], ctx, tokens[:, 1 + self.n_ctx :]], dim=1)

    def forward(self) -> torch.Tensor:
        """Text features t_c of every class, (C, D), unnormalised as CLIP projects them."""
        embedding = self.text_encoder.text_model.embeddings.token_embedding
        handle = embedding.register_forward_hook(self._inject)
        try:
            ids = self.input_ids[:, : self.seq_len]  # (C, max EOS + 1)
            hidden = self.text_encoder.text_model(input_ids=ids).last_hidden_state
        finally:
            handle.remove()
        rows = torch.arange(hidden.shape[0], device=hidden.device)
        pooled = hidden[rows, self.eos_position]  # (C, D_text)
        return self.text_encoder.text_projection(pooled)  # (C, D)
