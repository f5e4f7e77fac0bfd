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

The model uses :func:`anomalyclip.kernels.winograd_ffn.winograd_feedforward`: the
feed-forward's conv -> LeakyReLU -> conv in one pass over blocks of images, built from the
tiling, transforms and scratch buffers of this module (the plain formulation above, and a
single blocked convolution, are references in the tests). On a CPU the transforms and tile
moves, not the GEMMs, are the cost to watch, so each intermediate is kept to a block of
images (reused memory), only inputs are saved for the backward, and output tiles are written
straight into place. For F(4x4, 3x3) in float32/float64 on a CPU, the gather + transform,
the transform + bias + LeakyReLU + scatter, and their two gradients run as the small C
kernels of :mod:`anomalyclip.kernels.native` (each tile read and written once); elsewhere,
or without a C compiler, as the Kronecker GEMMs below. Both are tested against ``F.conv2d``.

It is exact arithmetic (checked against ``F.conv2d`` to ~1e-12 in float64); in float32 the
transforms amplify rounding, more for m = 4 (interpolation points 0, +-1, +-2, inf) than for
m = 2; the tests state the error at the paper's shape.
"""

from __future__ import annotations

import functools
import math
import threading

import torch
import torch.nn.functional as F

from anomalyclip.kernels import native

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
# Winograd-domain bytes per block of images, in training and in inference: smaller blocks
# mean more passes over the filter gradient, larger ones more memory (docs/performance.md).
CHUNK_BYTES = 32 << 20


@functools.cache
def _kron_transforms(m: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(Kin (r*r, r*r), Kw (r*r, 9), Kout (m*m, r*r)) in float64, on the CPU."""
    bt, g, at = (torch.tensor(t, dtype=torch.float64) for t in _TRANSFORMS[m])
    return torch.kron(bt, bt), torch.kron(g, g), torch.kron(at, at)


@functools.cache
def transforms(m: int, dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, ...]:
    """The Kronecker transforms of F(m x m, 3 x 3), cached per dtype and device.

    Built outside inference mode even when first asked for inside it (scoring runs under
    ``torch.inference_mode``): a cached inference tensor could never enter a later autograd
    computation (training, gradient checks)."""
    if m not in _TRANSFORMS:
        raise ValueError(f"Winograd tile size must be one of {TILE_SIZES}, got {m}")
    with torch.inference_mode(False):
        return tuple(k.to(device=device, dtype=dtype) for k in _kron_transforms(m))


def transform_weight(weight: torch.Tensor, m: int = 4) -> torch.Tensor:
    """(F, C, 3, 3) filters -> (r*r, C, F) Winograd-domain filters U = kron(G, G) @ w."""
    f, c = weight.shape[:2]
    _, kw, _ = transforms(m, weight.dtype, weight.device)
    w = weight.permute(2, 3, 1, 0).reshape(9, c * f)  # (9, C*F), tap-major
    return (kw @ w).view(-1, c, f)


class Workspace(threading.local):
    """Scratch buffers that the Winograd feed-forward reuses from block to block and from
    call to call, one set per thread.

    A block of images needs a few intermediates of up to :data:`CHUNK_BYTES` each (the
    Winograd-domain input V, the products M, their gradients, the padded hidden activation in
    inference). Allocated afresh each time, every one comes from a new ``mmap`` whose pages
    are faulted in and zeroed again (~20% of a 4096-frame video's scoring time on the 2-core
    benchmark host), or, with :mod:`anomalyclip.kernels.allocator`'s policy, fragments the
    heap that the process keeps.
    Here each named buffer is kept (replaced when a larger one is asked for) and handed out as
    a view. Only for values that do not outlive the call that takes them (nothing saved for a
    backward, nothing returned); :func:`release_workspace` frees them.
    """

    def __init__(self) -> None:
        self.buffers: dict[tuple, torch.Tensor] = {}

    def take(self, name: str, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        """A contiguous (shape) tensor of ``like``'s dtype and device; its contents are left
        from the last use."""
        key, n = (name, like.dtype, like.device), math.prod(shape)
        buf = self.buffers.get(key)
        if buf is None or buf.numel() < n:
            self.buffers.pop(key, None)  # the old one is freed before the new one is made
            with torch.inference_mode(False):  # usable inside and outside inference mode
                buf = self.buffers[key] = torch.empty(n, dtype=like.dtype, device=like.device)
        return buf[:n].view(shape)


_WORKSPACE = Workspace()


def release_workspace() -> None:
    """Free this thread's scratch buffers (:class:`Workspace`); the next call makes new ones."""
    _WORKSPACE.buffers.clear()


def _chunk_images(tiles_per_image: int, r: int, width: int, itemsize: int) -> int:
    """Images per block so the block's Winograd-domain tensors stay about
    :data:`CHUNK_BYTES` each."""
    return max(1, CHUNK_BYTES // (tiles_per_image * r * r * width * itemsize))


def _input_tiles(xp: torch.Tensor, m: int, kin: torch.Tensor) -> torch.Tensor:
    """Padded NHWC block (b, Hp, Wp, C) -> Winograd-domain input V (r*r, t, C)."""
    r = m + 2
    tiles = xp.unfold(1, r, m).unfold(2, r, m)  # (b, th, tw, C, r, r) view
    d = tiles.permute(4, 5, 0, 1, 2, 3).reshape(r * r, -1)  # (r*r, t*C) gather copy
    return (kin @ d).view(r * r, -1, xp.shape[-1])


def _moments(xb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pixel mean and biased standard deviation over the channels of a block (b, H, W, C).

    Two passes: the mean, then the norm of the centred block. ``torch.var_mean`` over the
    last dimension gives the same numbers to float rounding (both ~3e-7 from float64 on
    unit-scale inputs) but is not vectorised on the CPU: 3.1 vs 0.4 ms on a (8, 32, 16, 256)
    block."""
    mean = xb.mean(-1, keepdim=True)
    std = torch.linalg.vector_norm(xb - mean, dim=-1, keepdim=True).mul_(xb.shape[-1] ** -0.5)
    return mean, std


def _normalised(
    xb: torch.Tensor,
    mean: torch.Tensor,
    std: torch.Tensor,
    g: torch.Tensor,
    beta: torch.Tensor,
    eps: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Channel LayerNorm of a block (b, H, W, C) from its per-pixel mean and std, as
    ``ChannelLayerNorm`` computes it: (xhat, scale, xhat * g + beta), scale = 1 / (std + eps).
    The forward and the backward's recomputation both go through here, so they agree."""
    scale = 1 / (std + eps)
    xhat = (xb - mean) * scale
    return xhat, scale, torch.addcmul(beta, xhat, g)


def _accumulate(acc: torch.Tensor | None, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """acc + a @ b (batched) in place; the first block writes instead of adding to zeros.

    ``out=`` rather than ``baddbmm_``: torch's FLOP counter sees only the former.
    """
    return torch.bmm(a, b) if acc is None else torch.baddbmm(acc, a, b, out=acc)


class _Grid:
    """Tiling of an (H, W) grid by m x m output tiles; the transforms for one dtype/device."""

    def __init__(self, H: int, W: int, m: int, like: torch.Tensor) -> None:
        self.H, self.W, self.m, self.r = H, W, m, m + 2
        self.th, self.tw = -(-H // m), -(-W // m)
        self.exact = (self.th * m, self.tw * m) == (H, W)
        self.kin, self.kw, self.kout = transforms(m, like.dtype, like.device)
        # the fused C transforms (F(4x4, 3x3) only) where they are built, else eager torch
        self.native = m == 4 and native.supports(like)

    def padded(
        self, b: int, c: int, like: torch.Tensor, work: tuple[Workspace, str] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """A (b, th*m + 2, tw*m + 2, c) buffer with a zero border, and its (b, H, W, c) inside.

        Writing a tensor into the inside spares the copy that padding it would cost.
        ``work``: take the buffer from this workspace under this name.
        """
        m = self.m
        shape = (b, self.th * m + 2, self.tw * m + 2, c)
        buf = like.new_empty(shape) if work is None else work[0].take(work[1], shape, like)
        buf[:, 0].zero_()
        buf[:, 1 + self.H :].zero_()
        buf[:, :, 0].zero_()
        buf[:, :, 1 + self.W :].zero_()
        return buf, buf[:, 1 : 1 + self.H, 1 : 1 + self.W]

    def winograd_input(
        self, xb: torch.Tensor, padded: bool = False, work: Workspace | None = None,
        name: str = "v",
    ) -> torch.Tensor:  # fmt: skip
        """(b, H, W, C) -> V (r*r, t, C): zero padding of the convolution plus the last tile's.

        ``padded``: xb is already such a block, as :meth:`padded` lays it out; ``work``: the
        native transform writes V into this workspace's buffer ``name``.
        """
        m = self.m
        if not padded:
            xb = F.pad(xb, (0, 0, 1, 1 + self.tw * m - self.W, 1, 1 + self.th * m - self.H))
        if self.native:
            shape = (self.r * self.r, xb.shape[0] * self.th * self.tw, xb.shape[-1])
            out = None if work is None else work.take(name, shape, xb)
            return native.input_transform(xb.contiguous(), self.th, self.tw, out)
        return _input_tiles(xb, m, self.kin)

    def conv(
        self,
        xb: torch.Tensor,
        u: torch.Tensor,
        bias: torch.Tensor | None,
        out: torch.Tensor,
        padded: bool = False,
        slope: float | None = None,
        work: Workspace | None = None,
    ) -> None:
        """out (b, H, W, F) = conv3x3(xb) + bias, with Winograd-domain filters u (r*r, C, F).

        ``slope``: LeakyReLU applied to the result in the same pass; ``work``: V and M are
        taken from this workspace instead of allocated.
        """
        b, m, f = xb.shape[0], self.m, u.shape[-1]
        v = self.winograd_input(xb, padded, work)  # (r*r, t, C)
        if work is None:
            mm = torch.bmm(v, u)  # (r*r, t, F)
        else:
            mm = torch.bmm(v, u, out=work.take("m", (v.shape[0], v.shape[1], f), v))
        if self.native:
            native.output_transform(mm, bias, out, self.th, self.tw, slope)
            return
        y = (self.kout @ mm.view(self.r * self.r, -1)).view(m, m, b, self.th, self.tw, f)
        y = y.permute(2, 3, 0, 4, 1, 5)  # (b, th, m, tw, m, F)
        if self.exact:
            dst = out.view(b, self.th, m, self.tw, m, f)
        else:
            y = y.reshape(b, self.th * m, self.tw * m, f)[:, : self.H, : self.W]
            dst = out
        if bias is None:
            dst.copy_(y)
        else:
            torch.add(y, bias, out=dst)
        if slope is not None:
            F.leaky_relu_(out, slope)

    def grad_output(
        self, gb: torch.Tensor, work: Workspace | None = None, name: str = "m"
    ) -> torch.Tensor:
        """Gradient w.r.t. the output block (b, H, W, F) -> w.r.t. M, (r*r, t, F).

        ``work``: the native kernel writes it into this workspace's buffer ``name``."""
        b, m, f = gb.shape[0], self.m, gb.shape[-1]
        if self.native:
            shape = (self.r * self.r, b * self.th * self.tw, f)
            out = None if work is None else work.take(name, shape, gb)
            return native.grad_output(gb, self.th, self.tw, out)
        if not self.exact:
            gb = F.pad(gb, (0, 0, 0, self.tw * m - self.W, 0, self.th * m - self.H))
        gy = gb.view(b, self.th, m, self.tw, m, f).permute(2, 4, 0, 1, 3, 5).reshape(m * m, -1)
        return (self.kout.T @ gy).view(self.r * self.r, -1, f)

    def grad_input(
        self,
        gm: torch.Tensor,
        u: torch.Tensor,
        out: torch.Tensor | None = None,
        work: Workspace | None = None,
        name: str = "v",
    ) -> torch.Tensor:
        """Gradient w.r.t. the input block (b, H, W, C), from gm (r*r, t, F).

        Written into ``out`` if given, else returned (eager: a view into a padded buffer);
        ``work``: the native path takes its Winograd-domain gradient from this workspace's
        buffer ``name``.
        """
        b, C, m, r = gm.shape[1] // (self.th * self.tw), u.shape[1], self.m, self.r
        th, tw = self.th, self.tw
        if self.native:
            if work is None:
                gv = torch.bmm(gm, u.transpose(1, 2))  # (r*r, t, C)
            else:
                gv = work.take(name, (r * r, gm.shape[1], C), gm)
                torch.bmm(gm, u.transpose(1, 2), out=gv)
            out = gm.new_empty(b, self.H, self.W, C) if out is None else out
            return native.grad_input(gv, out, th, tw)
        gd = (self.kin.T @ torch.bmm(gm, u.transpose(1, 2)).view(r * r, -1)).view(
            r, r, b, th, tw, C
        )
        gxp = gm.new_empty(b, th * m + 2, tw * m + 2, C)
        # The tiles' m x m cores do not overlap: one copy; then add the two-wide overlaps.
        core = gxp[:, : th * m, : tw * m].view(b, th, m, tw, m, C)
        core.copy_(gd[:m, :m].permute(2, 3, 0, 4, 1, 5))
        gxp[:, th * m :].zero_()
        gxp[:, : th * m, tw * m :].zero_()
        for i in range(r):  # scatter-add the overlapping rims, one tap offset at a time
            for j in range(r):
                if i >= m or j >= m:
                    gxp[:, i : i + th * m : m, j : j + tw * m : m].add_(gd[i, j])
        inside = gxp[:, 1 : 1 + self.H, 1 : 1 + self.W]
        return inside if out is None else out.copy_(inside)

    def grad_weight(self, gu: torch.Tensor, shape: torch.Size) -> torch.Tensor:
        """Winograd-domain filter gradient (r*r, C, F) -> (F, C, 3, 3)."""
        r = self.r
        return (self.kw.T @ gu.view(r * r, -1)).view(3, 3, shape[1], shape[0]).permute(3, 2, 0, 1)
