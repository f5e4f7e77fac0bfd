"""Reference implementations used only by the tests (never by the package).

- :func:`sequence_index`: which real frame every slot of every test sequence holds, written
  from the arrangement's definition, to check :mod:`anomalyclip.model.inference` against.
- :func:`conv3x3_nhwc`: Winograd's F(m x m, 3 x 3) convolution as plain differentiable tensor
  algebra (autograd derives its backward), the formulation of
  :mod:`anomalyclip.kernels.winograd` without blocking or fusion.
- :func:`winograd_conv3x3`: one blocked Winograd convolution with a hand-written backward,
  built from the package's ``_Grid`` (tiles, transforms and their gradients), so the tests
  reach every transform of the package (both tile sizes, eager and compiled) through a single
  convolution as well as through the fused feed-forward the model uses.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from anomalyclip.kernels.winograd import (
    TILE_SIZES,
    _accumulate,
    _chunk_images,
    _Grid,
    _input_tiles,
    transform_weight,
    transforms,
)


def sequence_index(T: int, num_segments: int = 32, seg_length: int = 16) -> torch.Tensor:
    """Frame index (into the T real frames) of every slot of every test sequence: (S, N, L).

    Slot (j, n, l) is frame ((n * S + j) * L + l) mod T, S = ceil(T / (N * L)): the video
    wrapped around to S * N * L frames, laid out as (N, S, L), sequence j taking sub-block j
    of each of the N chunks.
    """
    N, L = num_segments, seg_length
    S = -(-T // (N * L))
    wrapped = torch.arange(S * N * L) % T  # frame at each padded position
    return wrapped.view(N, S, L).permute(1, 0, 2)  # (S, N, L)


def conv3x3_nhwc(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, m: int = 4
) -> torch.Tensor:
    """Zero-padded (padding 1, stride 1) 3x3 convolution of a channels-last input.

    x: (B, H, W, C); weight: (F, C, 3, 3) as ``nn.Conv2d`` stores it; bias: (F,) or None.
    Returns (B, H, W, F), equal to ``F.conv2d(x.permute(0, 3, 1, 2), weight, bias, padding=1)``
    permuted back, up to floating-point rounding.
    """
    B, H, W, C = x.shape
    r = m + 2
    th, tw = -(-H // m), -(-W // m)  # tiles per axis
    kin, _, kout = transforms(m, x.dtype, x.device)
    # Pad by 1 (the convolution's zero padding) plus whatever completes the last tile.
    xp = F.pad(x, (0, 0, 1, 1 + tw * m - W, 1, 1 + th * m - H))  # (B, Hp, Wp, C)
    mm = torch.bmm(_input_tiles(xp, m, kin), transform_weight(weight, m))  # (r*r, T, F)
    y = kout @ mm.view(r * r, -1)  # (m*m, T*F)
    f = weight.shape[0]
    y = y.view(m, m, B, th, tw, f).permute(2, 3, 0, 4, 1, 5).reshape(B, th * m, tw * m, f)
    if th * m != H or tw * m != W:
        y = y[:, :H, :W]
    return y if bias is None else y + bias


class _WinogradConv3x3(torch.autograd.Function):
    """Blocked over images so every intermediate is block-sized and reused by the allocator.

    Only the input is saved; the backward recomputes its transform per block (one cheap
    GEMM) instead of keeping a (r*r, T, C) tensor per convolution alive. Under CPU autocast
    it computes in float32: in bfloat16 the transforms would amplify rounding.
    """

    @staticmethod
    @torch.amp.custom_fwd(device_type="cpu", cast_inputs=torch.float32)
    def forward(ctx, x, weight, bias, m):  # type: ignore[override]
        B, H, W, C = x.shape
        grid = _Grid(H, W, m, x)
        u = transform_weight(weight, m)  # (r*r, C, F)
        out = x.new_empty(B, H, W, u.shape[-1])
        step = _chunk_images(grid.th * grid.tw, grid.r, max(C, u.shape[-1]), x.element_size())
        for b0 in range(0, B, step):  # cache blocking, not a per-video computation
            grid.conv(x[b0 : b0 + step], u, bias, out[b0 : b0 + step])
        ctx.save_for_backward(x, u)
        ctx.m, ctx.has_bias, ctx.wshape = m, bias is not None, weight.shape
        return out

    @staticmethod
    @torch.amp.custom_bwd(device_type="cpu")
    def backward(ctx, grad):  # type: ignore[override]
        x, u = ctx.saved_tensors
        B, H, W, C = x.shape
        grid = _Grid(H, W, ctx.m, x)
        grad = grad.contiguous()
        need_x, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        gx = x.new_empty(B, H, W, C) if need_x else None
        gu = None
        step = _chunk_images(grid.th * grid.tw, grid.r, max(C, u.shape[-1]), x.element_size())
        for b0 in range(0, B, step):
            gm = grid.grad_output(grad[b0 : b0 + step])  # (r*r, t, F)
            if need_w:
                gu = _accumulate(gu, grid.winograd_input(x[b0 : b0 + step]).transpose(1, 2), gm)
            if need_x:
                grid.grad_input(gm, u, gx[b0 : b0 + step])
        gw = grid.grad_weight(gu, ctx.wshape) if need_w else None
        gbias = grad.sum((0, 1, 2)) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return gx, gw, gbias, None


def winograd_conv3x3(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, m: int = 4
) -> torch.Tensor:
    """Blocked, custom-backward version of :func:`conv3x3_nhwc` (same arguments and result)."""
    if m not in TILE_SIZES:
        raise ValueError(f"Winograd tile size must be one of {TILE_SIZES}, got {m}")
    return _WinogradConv3x3.apply(x.contiguous(), weight, bias, m)
