"""Winograd 3x3 convolutions as a few large matrix multiplies (same result, ~4x fewer FLOPs).

The feed-forward couplings of the temporal model are four zero-padded 3x3 convolutions on a
(N, L) = (32, 16) grid with 256 <-> 1024 channels: ~93% of the model's FLOPs. Winograd's
minimal filtering F(m x m, 3 x 3) computes an m x m output tile from an (m+2) x (m+2) input
tile with (m+2)^2 multiplies per channel pair instead of 9 m^2: 4x fewer for m = 4, 2.25x
for m = 2. Laid out for a CPU, a convolution becomes

    input tiles   D  (r*r, T, C)      gathered with ``unfold`` from the padded NHWC input
    V = Kin @ D      (r*r, T, C)      input transform, one GEMM: Kin = kron(B^T, B^T)
    U = Kw  @ w      (r*r, C, F)      filter transform, one small GEMM: Kw = kron(G, G)
    M = V @ U        (r*r, T, F)      r*r batched GEMMs: where the FLOPs are
    Y = Kout @ M     (m*m, T, F)      output transform, one GEMM: Kout = kron(A^T, A^T)

with r = m + 2 and T the number of tiles. The backward has the same structure (batched GEMMs
in the Winograd domain for the input and the weight gradient), so it gets the same reduction.

Two forms: :func:`conv3x3_nhwc` is the formulation above in plain differentiable tensor
algebra (autograd derives its backward); :func:`winograd_conv3x3`, what the model uses, runs
it in blocks of images with a hand-written backward. On a CPU the GEMMs are cheap next to
moving big tensors through memory (every fresh 100 MB tensor costs page faults), so the
blocked form keeps each intermediate a few MB, saves only its input for the backward, and
writes the output tiles straight into place.

It is exact arithmetic (checked against ``F.conv2d`` to ~1e-12 in float64); in float32 the
transforms amplify rounding, more for m = 4 (interpolation points 0, +-1, +-2, inf) than for
m = 2; the tests state the error at the paper's shape.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

# Transforms (Lavin & Gray 2016), as B^T, G, A^T.
_TRANSFORMS: dict[int, tuple[list[list[float]], list[list[float]], list[list[float]]]] = {
    2: (
        [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]],
        [[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]],
        [[1, 1, 1, 0], [0, 1, -1, -1]],
    ),
    4: (
        [
            [4, 0, -5, 0, 1, 0],
            [0, -4, -4, 1, 1, 0],
            [0, 4, -4, -1, 1, 0],
            [0, -2, -1, 2, 1, 0],
            [0, 2, -1, -2, 1, 0],
            [0, 4, 0, -5, 0, 1],
        ],
        [
            [1 / 4, 0, 0],
            [-1 / 6, -1 / 6, -1 / 6],
            [-1 / 6, 1 / 6, -1 / 6],
            [1 / 24, 1 / 12, 1 / 6],
            [1 / 24, -1 / 12, 1 / 6],
            [0, 0, 1],
        ],
        [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]],
    ),
}
TILE_SIZES = tuple(_TRANSFORMS)
CHUNK_BYTES = 32 << 20  # Winograd-domain block size: cache-sized, below malloc's mmap threshold


@functools.cache
def _kron_transforms(m: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(Kin (r*r, r*r), Kw (r*r, 9), Kout (m*m, r*r)) in float64, on the CPU."""
    bt, g, at = (torch.tensor(t, dtype=torch.float64) for t in _TRANSFORMS[m])
    return torch.kron(bt, bt), torch.kron(g, g), torch.kron(at, at)


@functools.cache
def transforms(m: int, dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, ...]:
    """The Kronecker transforms of F(m x m, 3 x 3), cached per dtype and device."""
    if m not in _TRANSFORMS:
        raise ValueError(f"Winograd tile size must be one of {TILE_SIZES}, got {m}")
    return tuple(k.to(device=device, dtype=dtype) for k in _kron_transforms(m))


def transform_weight(weight: torch.Tensor, m: int = 4) -> torch.Tensor:
    """(F, C, 3, 3) filters -> (r*r, C, F) Winograd-domain filters U = kron(G, G) @ w."""
    f, c = weight.shape[:2]
    _, kw, _ = transforms(m, weight.dtype, weight.device)
    w = weight.permute(2, 3, 1, 0).reshape(9, c * f)  # (9, C*F), tap-major
    return (kw @ w).view(-1, c, f)


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


def _chunk_images(tiles_per_image: int, r: int, width: int, itemsize: int) -> int:
    """Images per block so the block's Winograd-domain tensors stay about CHUNK_BYTES each."""
    per_image = tiles_per_image * r * r * width * itemsize
    return max(1, CHUNK_BYTES // per_image)


def _input_tiles(xp: torch.Tensor, m: int, kin: torch.Tensor) -> torch.Tensor:
    """Padded NHWC block (b, Hp, Wp, C) -> Winograd-domain input V (r*r, t, C)."""
    r = m + 2
    tiles = xp.unfold(1, r, m).unfold(2, r, m)  # (b, th, tw, C, r, r) view
    d = tiles.permute(4, 5, 0, 1, 2, 3).reshape(r * r, -1)  # (r*r, t*C) gather copy
    return (kin @ d).view(r * r, -1, xp.shape[-1])


class _WinogradConv3x3(torch.autograd.Function):
    """Blocked over images so every intermediate is cache-sized and recycled by the allocator.

    Only the input is saved; the backward recomputes its transform per block (one cheap
    GEMM) instead of keeping a (r*r, T, C) tensor per convolution alive. Under CPU autocast
    it computes in float32: in bfloat16 the transforms would amplify rounding.
    """

    @staticmethod
    @torch.amp.custom_fwd(device_type="cpu", cast_inputs=torch.float32)
    def forward(ctx, x, weight, bias, m):  # type: ignore[override]
        B, H, W, C = x.shape
        f, r = weight.shape[0], m + 2
        th, tw = -(-H // m), -(-W // m)
        kin, _, kout = transforms(m, x.dtype, x.device)
        u = transform_weight(weight, m)  # (r*r, C, F)
        out = x.new_empty(B, th * m, tw * m, f)
        step = _chunk_images(th * tw, r, max(C, f), x.element_size())
        for b0 in range(0, B, step):  # cache blocking, not a per-video computation
            xb = x[b0 : b0 + step]
            b = xb.shape[0]
            xp = F.pad(xb, (0, 0, 1, 1 + tw * m - W, 1, 1 + th * m - H))
            mm = torch.bmm(_input_tiles(xp, m, kin), u)  # (r*r, t, F)
            y = (kout @ mm.view(r * r, -1)).view(m, m, b, th, tw, f)
            dst = out[b0 : b0 + b].view(b, th, m, tw, m, f)
            y = y.permute(2, 3, 0, 4, 1, 5)  # (b, th, m, tw, m, F)
            if bias is None:
                dst.copy_(y)
            else:
                torch.add(y, bias, out=dst)
        ctx.save_for_backward(x, u)
        ctx.m, ctx.has_bias, ctx.wshape = m, bias is not None, weight.shape
        return out if (th * m, tw * m) == (H, W) else out[:, :H, :W].contiguous()

    @staticmethod
    @torch.amp.custom_bwd(device_type="cpu")
    def backward(ctx, grad):  # type: ignore[override]
        x, u = ctx.saved_tensors
        m = ctx.m
        B, H, W, C = x.shape
        f, r = u.shape[-1], m + 2
        th, tw = -(-H // m), -(-W // m)
        kin, kw, kout = transforms(m, x.dtype, x.device)
        if (th * m, tw * m) != (H, W):
            grad = F.pad(grad, (0, 0, 0, tw * m - W, 0, th * m - H))
        grad = grad.contiguous()
        need_x, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        gx = x.new_empty(B, H, W, C) if need_x else None
        gu = torch.zeros_like(u) if need_w else None
        ut = u.transpose(1, 2)  # (r*r, F, C)
        step = _chunk_images(th * tw, r, max(C, f), x.element_size())
        for b0 in range(0, B, step):
            gb = grad[b0 : b0 + step]
            b = gb.shape[0]
            gy = gb.view(b, th, m, tw, m, f).permute(2, 4, 0, 1, 3, 5).reshape(m * m, -1)
            gm = (kout.T @ gy).view(r * r, -1, f)  # (r*r, t, F)
            if need_w:
                xp = F.pad(x[b0 : b0 + b], (0, 0, 1, 1 + tw * m - W, 1, 1 + th * m - H))
                gu.baddbmm_(_input_tiles(xp, m, kin).transpose(1, 2), gm)  # (r*r, C, F)
            if need_x:
                gd = (kin.T @ torch.bmm(gm, ut).view(r * r, -1)).view(r, r, b, th, tw, C)
                gxp = x.new_zeros(b, th * m + 2, tw * m + 2, C)
                for i in range(r):  # scatter-add the overlapping tiles, one tap offset at a time
                    for j in range(r):
                        gxp[:, i : i + th * m : m, j : j + tw * m : m].add_(gd[i, j])
                gx[b0 : b0 + b] = gxp[:, 1 : 1 + H, 1 : 1 + W]
        gw = None
        if need_w:
            wshape = ctx.wshape
            gw = (kw.T @ gu.view(r * r, -1)).view(3, 3, wshape[1], wshape[0]).permute(3, 2, 0, 1)
        gbias = grad.sum((0, 1, 2)) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return gx, gw, gbias, None


def winograd_conv3x3(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, m: int = 4
) -> torch.Tensor:
    """Blocked, custom-backward version of :func:`conv3x3_nhwc` (same arguments and result)."""
    if m not in _TRANSFORMS:
        raise ValueError(f"Winograd tile size must be one of {TILE_SIZES}, got {m}")
    return _WinogradConv3x3.apply(x.contiguous(), weight, bias, m)
