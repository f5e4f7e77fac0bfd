"""The axial temporal Transformer (docs/model.md): p(A) for every frame of a sequence.

A sequence of N segments x L frames is a 2-D grid. Each layer is two residual couplings on
a duplicated stream (a1 = a2 = x): attention along the segment axis then along the frame
axis, and two 3x3-convolution feed-forwards over the grid; the output is (a1 + a2) / 2.
The published model runs these couplings as reversible layers, whose forward values are
exactly these plain residual values; here activations are simply kept for the backward,
which costs memory but saves the ~1/3 extra compute of recomputing the forward.

Layout. The stream is kept as (B, N, L, E) in memory. Linear layers and LayerNorms read it
directly; an attention's LayerNorm writes its input with the attended axis third, so q, k
and v reach PyTorch's fused (flash) attention kernel as 4-D views without copies (it keeps
no attention matrix for the backward; in bfloat16 on the CPU its backward is replaced by
:mod:`anomalyclip.kernels.attention`'s, ~4x faster at these sequence lengths); and
``x.permute(0, 3, 1, 2)`` is a zero-copy (B, E, N, L) view in channels-last memory format
that oneDNN's convolutions take as is (and return in the same format), so no layout copies
sit between the blocks. The convolutions are ~93% of the FLOPs at the paper's shape; they
run at the CPU's matrix-multiply rate in either memory format.

Convolution algorithm. The ``conv`` argument (of :class:`TemporalModel`, passed down to
every :class:`ConvFeedForward`) picks how the feed-forward 3x3 convolutions are computed,
without touching parameters, state dict or config: ``"direct"`` (``nn.Conv2d``: oneDNN on
CPU, cuDNN on CUDA; the default) or ``"winograd"`` (:mod:`anomalyclip.kernels.winograd`: the
same convolution with ~4x fewer multiplies, as batched matrix multiplies). ``"auto"`` (what
``anomaly train`` and the run loaders use) takes Winograd for float32/float64 CPU tensors of
at least ``WINOGRAD_MIN_CHANNELS`` channels outside autocast, and direct everywhere else:
cuDNN picks its own algorithms; in bfloat16 the Winograd transforms would amplify rounding;
below 128 channels the transforms cost more than the multiplies they save (the measurements
are in docs/performance.md; ``anomaly bench train --conv both`` re-measures the whole step).

Parameter names (``depth`` layers, layer d owning blocks 2d and 2d+1)::

    projection.{weight,bias}                      (E, in_dim), (E,)
    pos_emb_n                                     (1, E, N, 1)   segment axis
    pos_emb_l                                     (1, E, 1, L)   frame axis
    blocks.{2d}.f.norm.{weight,bias}              attention along N (pre-LayerNorm over E)
    blocks.{2d}.f.to_q.weight                     (E, E), no bias
    blocks.{2d}.f.to_kv.weight                    (2E, E), rows [0, E) k, [E, 2E) v
    blocks.{2d}.f.to_out.{weight,bias}            (E, E), (E,)
    blocks.{2d}.g.*                               the same, attention along L
    blocks.{2d+1}.f.net.0.{g,b}                   (1, E, 1, 1) channel LayerNorm
    blocks.{2d+1}.f.net.1.{weight,bias}           Conv2d E -> 4E, 3x3
    blocks.{2d+1}.f.net.3.{weight,bias}           Conv2d 4E -> E, 3x3
    blocks.{2d+1}.g.net.*                         the same, second feed-forward
    classifier.layer_norm.{weight,bias}, classifier.linear.{weight,bias}   (1, E), (1,)

The authors' ``temporal_model.*`` keys map onto these by: ``axial_attn.pos_emb.param_0`` ->
``pos_emb_n``, ``param_1`` -> ``pos_emb_l``, drop the ``axial_attn.layers.`` prefix, and in
attention blocks ``f|g.net.fn.fn.X`` -> ``f|g.X``, ``f|g.net.fn.norm`` -> ``f|g.norm``
(feed-forward blocks keep ``f|g.net.{0,1,3}``).
"""

from __future__ import annotations

import torch
from torch import nn

from anomalyclip.kernels import CONV_ALGORITHMS
from anomalyclip.kernels.attention import attention
from anomalyclip.kernels.winograd import TILE_SIZES, transform_weight
from anomalyclip.kernels.winograd_ffn import winograd_feedforward, winograd_feedforward_inference
from anomalyclip.model.memo import Memo

WINOGRAD_MIN_CHANNELS = 128  # "auto": below this width direct convolutions measured faster


def _use_winograd(conv: str, x: torch.Tensor) -> bool:
    """Whether ``conv`` (auto | direct | winograd) computes this (B, N, L, E) input by Winograd."""
    if conv == "auto":
        return (
            x.device.type == "cpu"
            and x.dtype in (torch.float32, torch.float64)
            and x.shape[-1] >= WINOGRAD_MIN_CHANNELS
            and not torch.is_autocast_enabled("cpu")
        )
    return conv == "winograd"


class AxialAttention(nn.Module):
    """Pre-LayerNorm multi-head self-attention along one axis of a (B, N, L, E) grid.

    ``axis`` 1 attends across the N segments for every frame position, 2 across the L frames
    of every segment; the other axis is folded into the batch.
    """

    def __init__(self, dim: int, heads: int, axis: int) -> None:
        super().__init__()
        if axis not in (1, 2):
            raise ValueError(f"axis must be 1 (segments) or 2 (frames), got {axis}")
        self.axis = axis
        self.heads = heads
        self.norm = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_kv = nn.Linear(dim, 2 * dim, bias=False)
        self.to_out = nn.Linear(dim, dim)

    def _split(self, t: torch.Tensor) -> torch.Tensor:
        # (B, other, T, E) -> (B*other, heads, T, E/heads): 4-D, the last dimension dense, as
        # the fused (flash) attention kernels take it
        return t.flatten(0, 1).unflatten(-1, (self.heads, -1)).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # the norm reads the grid with the attended axis third and writes it contiguous in
        # that order, so the projections and the heads below are views, never copies
        h = self.norm(x.movedim(self.axis, 2))  # (B, other, T, E)
        k, v = self.to_kv(h).chunk(2, dim=-1)
        q, k, v = self._split(self.to_q(h)), self._split(k), self._split(v)
        out = attention(q, k, v)  # softmax(q k^T / sqrt(head size)) v
        out = self.to_out(out.transpose(1, 2).flatten(-2))  # (B*other, T, E)
        return out.unflatten(0, (x.shape[0], -1)).movedim(2, self.axis)  # (B, N, L, E)


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channels of an NCHW tensor, in the authors' form.

    (x - mean) / (std + eps) * g + b with the biased variance: eps is added to the standard
    deviation, not to the variance as ``nn.LayerNorm`` does, hence a module of its own.
    """

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.g = nn.Parameter(torch.ones(1, dim, 1, 1))
        self.b = nn.Parameter(torch.zeros(1, dim, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        var, mean = torch.var_mean(x, dim=1, correction=0, keepdim=True)
        scale = 1 / (var.sqrt() + self.eps)  # (B, 1, H, W): small, so divide once per pixel
        return torch.addcmul(self.b, (x - mean) * scale, self.g)


class ConvFeedForward(nn.Module):
    """Channel LayerNorm -> 3x3 conv E->4E -> LeakyReLU(0.01) -> 3x3 conv 4E->E on the grid.

    ``conv``: the convolution algorithm (auto | direct | winograd, see the module docstring);
    ``tile``: Winograd's output tile m of F(m x m, 3 x 3), 4 (fewest multiplies) or 2
    (smaller float32 rounding error). Neither changes the parameters or the result.
    """

    def __init__(self, dim: int, mult: int = 4, conv: str = "direct", tile: int = 4) -> None:
        super().__init__()
        if conv not in CONV_ALGORITHMS:
            raise ValueError(f"conv algorithm must be one of {CONV_ALGORITHMS}, got {conv!r}")
        if tile not in TILE_SIZES:
            raise ValueError(f"Winograd tile must be one of {TILE_SIZES}, got {tile}")
        self.algorithm, self.tile = conv, tile
        self._filters = Memo()  # Winograd-domain filters of the current weights, for inference
        self.net = nn.Sequential(
            ChannelLayerNorm(dim),
            nn.Conv2d(dim, mult * dim, 3, padding=1),
            nn.LeakyReLU(0.01, inplace=True),  # its backward needs only its output
            nn.Conv2d(mult * dim, dim, 3, padding=1),
        )

    def extra_repr(self) -> str:
        return f"conv={self.algorithm!r}, tile={self.tile}"

    def train(self, mode: bool = True) -> ConvFeedForward:
        self._filters.clear()
        return super().train(mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (B, N, L, E) -> channels-last (B, E, N, L) view -> back to (B, N, L, E), no copies
        if not _use_winograd(self.algorithm, x):
            return self.net(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        norm, conv1, act, conv2 = self.net
        norm_args = (norm.g.view(-1), norm.b.view(-1), norm.eps)
        if torch.is_grad_enabled():
            self._filters.clear()
            return winograd_feedforward(  # the norm too, block by block: (B, N, L, E) -> same
                x,
                conv1.weight,
                conv1.bias,
                conv2.weight,
                conv2.bias,
                act.negative_slope,
                self.tile,
                norm=norm_args,
            )
        weights = (conv1.weight, conv2.weight)
        u1, u2 = self._filters.get(  # (r*r, E, 4E), (r*r, 4E, E), transformed once
            weights, lambda: tuple(transform_weight(w, self.tile) for w in weights), self.tile
        )
        slope = act.negative_slope
        return winograd_feedforward_inference(
            x, u1, conv1.bias, u2, conv2.bias, slope, self.tile, norm_args
        )


class Coupling(nn.Module):
    """One residual coupling of the two streams: a1 += f(a2); a2 += g(a1)."""

    def __init__(self, f: nn.Module, g: nn.Module) -> None:
        super().__init__()
        self.f = f
        self.g = g

    def forward(self, a1: torch.Tensor, a2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a1 = a1 + self.f(a2)
        a2 = a2 + self.g(a1)
        return a1, a2


class Head(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.layer_norm = nn.LayerNorm(dim)
        self.linear = nn.Linear(dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.layer_norm(x)).squeeze(-1)


class TemporalModel(nn.Module):
    def __init__(
        self,
        in_dim: int,
        emb_dim: int = 256,
        depth: int = 1,
        heads: int = 8,
        num_segments: int = 32,
        seg_length: int = 16,
        conv: str = "direct",
    ) -> None:
        super().__init__()
        if emb_dim % heads:
            raise ValueError(f"emb_dim {emb_dim} is not divisible by heads {heads}")
        self.num_segments, self.seg_length = num_segments, seg_length
        self.projection = nn.Linear(in_dim, emb_dim)
        self.pos_emb_n = nn.Parameter(torch.randn(1, emb_dim, num_segments, 1))
        self.pos_emb_l = nn.Parameter(torch.randn(1, emb_dim, 1, seg_length))
        blocks = []
        for _ in range(depth):
            attn_n = AxialAttention(emb_dim, heads, axis=1)
            attn_l = AxialAttention(emb_dim, heads, axis=2)
            blocks.append(Coupling(attn_n, attn_l))
            ff_n, ff_l = ConvFeedForward(emb_dim, conv=conv), ConvFeedForward(emb_dim, conv=conv)
            blocks.append(Coupling(ff_n, ff_l))
        self.blocks = nn.ModuleList(blocks)
        self.classifier = Head(emb_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, N, L, in_dim) -> logits of p(A), (B, N, L)."""
        if x.shape[1:3] != (self.num_segments, self.seg_length):
            raise ValueError(
                f"expected (B, {self.num_segments}, {self.seg_length}, D) input, got "
                f"{tuple(x.shape)}"
            )
        pos = (self.pos_emb_n + self.pos_emb_l).permute(0, 2, 3, 1)  # (1, N, L, E)
        a1 = a2 = self.projection(x) + pos  # (B, N, L, E)
        for block in self.blocks:
            a1, a2 = block(a1, a2)
        return self.classifier((a1 + a2) / 2)
