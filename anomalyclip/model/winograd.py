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

with r = m + 2 and T the number of tiles. All of it is plain differentiable tensor algebra,
so autograd's backward is the same structure (batched GEMMs in the Winograd domain for both
the input and the weight gradient): the backward gets the same reduction in FLOPs.

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
    tiles = xp.unfold(1, r, m).unfold(2, r, m)  # (B, th, tw, C, r, r) view
    d = tiles.permute(4, 5, 0, 1, 2, 3).reshape(r * r, -1)  # (r*r, T*C): the one gather copy
    v = (kin @ d).view(r * r, B * th * tw, C)  # (r*r, T, C)
    mm = torch.bmm(v, transform_weight(weight, m))  # (r*r, T, F)
    y = kout @ mm.view(r * r, -1)  # (m*m, T*F)
    f = weight.shape[0]
    y = y.view(m, m, B, th, tw, f).permute(2, 3, 0, 4, 1, 5).reshape(B, th * m, tw * m, f)
    if th * m != H or tw * m != W:
        y = y[:, :H, :W]
    return y if bias is None else y + bias
