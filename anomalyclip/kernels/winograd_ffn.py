"""The temporal model's feed-forward, [channel LayerNorm ->] conv3x3 -> LeakyReLU -> conv3x3,
by Winograd convolutions in one pass over blocks of images: for training (an autograd
function whose backward has the same blocked structure) and for inference (no autograd, the
filters transformed once by the caller). The tiling, transforms and scratch buffers are in
:mod:`anomalyclip.kernels.winograd`; both forms are tested against the direct modules.
"""

from __future__ import annotations

import torch

from anomalyclip.kernels.winograd import (
    _TRANSFORMS,
    _WORKSPACE,
    TILE_SIZES,
    _accumulate,
    _chunk_images,
    _Grid,
    _moments,
    _normalised,
    transform_weight,
)


class _WinogradFeedForward(torch.autograd.Function):
    """[channel LayerNorm ->] conv3x3 -> LeakyReLU -> conv3x3 in one pass over blocks of images.

    Each block is normalised, goes through the first convolution and the activation into
    the second while it is still in cache, and the backward does the same in reverse, so
    the wide (B, H, W, 4E) hidden tensor is written once and read once per direction and
    the normalised input is never stored whole. Saved for the backward: the input, the
    per-pixel mean and standard deviation of the norm, and the hidden activation.

    The norm is the authors' (x - mean) / (std + eps) * g + b over channels, with the
    biased variance; its backward, per pixel with xhat = (x - mean) * s, s = 1 / (std + eps)
    and gy the gradient of the normalised input times g:
    dx = s * (gy - mean(gy)) - xhat * mean(gy * xhat) / std.
    """

    @staticmethod
    @torch.amp.custom_fwd(device_type="cpu", cast_inputs=torch.float32)
    def forward(ctx, x, *params):  # type: ignore[override]
        # autograd wants each tensor it differentiates as an argument of its own: the norm's
        # g and beta (None without the norm), the convolutions' w1, b1, w2, b2, then the spec
        g, beta, w1, b1, w2, b2, spec = params
        eps, slope, m = spec  # floats and the tile size: nothing to differentiate
        B, H, W, C = x.shape
        grid = _Grid(H, W, m, x)
        u1, u2 = transform_weight(w1, m), transform_weight(w2, m)  # (r*r, C, 4E), (r*r, 4E, E)
        hidden, inside = grid.padded(B, u1.shape[-1], x)  # stored padded for the 2nd conv
        out = x.new_empty(B, H, W, u2.shape[-1])
        stats = x.new_empty(2, B, H, W, 1) if g is not None else None  # mean, std
        step = _chunk_images(grid.th * grid.tw, grid.r, u1.shape[-1], x.element_size())
        for b0 in range(0, B, step):  # cache blocking, not a per-video computation
            xb = x[b0 : b0 + step]
            if g is not None:
                mean, std = _moments(xb)
                stats[0, b0 : b0 + step], stats[1, b0 : b0 + step] = mean, std
                xb = _normalised(xb, mean, std, g, beta, eps)[2]
            grid.conv(xb, u1, b1, inside[b0 : b0 + step], slope=slope, work=_WORKSPACE)
            grid.conv(hidden[b0 : b0 + step], u2, b2, out[b0 : b0 + step], True, None, _WORKSPACE)
        # the weights, not their transforms: these are recomputed (cheap) in the backward
        ctx.save_for_backward(x, g, beta, stats, hidden, w1, w2)
        ctx.m, ctx.slope, ctx.eps, ctx.shapes = m, slope, eps, (w1.shape, w2.shape)
        ctx.has_bias = (b1 is not None, b2 is not None)
        return out

    @staticmethod
    @torch.amp.custom_bwd(device_type="cpu")
    def backward(ctx, grad):  # type: ignore[override]
        x, g, beta, stats, hidden, w1, w2 = ctx.saved_tensors
        B, H, W, C = x.shape
        grid = _Grid(H, W, ctx.m, x)
        u1, u2 = transform_weight(w1, ctx.m), transform_weight(w2, ctx.m)
        work = _WORKSPACE
        grad = grad.contiguous()
        need_x = ctx.needs_input_grad[0]
        gx = x.new_empty(B, H, W, C) if need_x else None
        gu1 = gu2 = None
        gb1 = x.new_zeros(u1.shape[-1])
        gg = gbeta = None
        if g is not None:
            gg, gbeta = x.new_zeros(C), x.new_zeros(C)
        step = _chunk_images(grid.th * grid.tw, grid.r, u1.shape[-1], x.element_size())
        inside = hidden[:, 1 : 1 + H, 1 : 1 + W]
        # Two Winograd-domain buffers of the workspace, "v" and "m" (the forward's), take
        # turns: each value below goes into the one whose value is no longer needed.
        for b0 in range(0, B, step):
            hb = inside[b0 : b0 + step]
            gm2 = grid.grad_output(grad[b0 : b0 + step], work, "m")  # (r*r, t, E)
            hp = grid.winograd_input(hidden[b0 : b0 + step], True, work, "v")  # (r*r, t, 4E)
            gu2 = _accumulate(gu2, hp.transpose(1, 2), gm2)
            gh = work.take("gh", hb.shape, hb)  # (b, H, W, 4E)
            grid.grad_input(gm2, u2, gh, work, "v")  # hp is no longer needed
            # LeakyReLU's backward from its output, in place
            torch.ops.aten.leaky_relu_backward.grad_input(gh, hb, ctx.slope, True, grad_input=gh)
            gb1 += gh.sum((0, 1, 2))
            gm1 = grid.grad_output(gh, work, "m")  # (r*r, t, 4E): gm2 is no longer needed
            xb = x[b0 : b0 + step]
            if g is not None:
                mean, std = stats[:, b0 : b0 + step]
                xhat, scale, xb = _normalised(xb, mean, std, g, beta, ctx.eps)
            v1 = grid.winograd_input(xb, work=work, name="v")  # (r*r, t, C)
            gu1 = _accumulate(gu1, v1.transpose(1, 2), gm1)
            if g is None:
                if need_x:
                    grid.grad_input(gm1, u1, gx[b0 : b0 + step], work, "v")
                continue
            gxb = grid.grad_input(gm1, u1, work=work, name="v")  # of the normalised conv input
            gg += (gxb * xhat).sum((0, 1, 2))
            gbeta += gxb.sum((0, 1, 2))
            if need_x:
                gy = gxb * g
                c = (gy * xhat).mean(-1, keepdim=True) / std
                gx[b0 : b0 + step] = (gy - gy.mean(-1, keepdim=True)) * scale - xhat * c
        (w1_shape, w2_shape), (has_b1, has_b2) = ctx.shapes, ctx.has_bias
        return (
            gx,
            gg,
            gbeta,
            grid.grad_weight(gu1, w1_shape),
            gb1 if has_b1 else None,
            grid.grad_weight(gu2, w2_shape),
            grad.sum((0, 1, 2)) if has_b2 else None,
            None,
        )


def winograd_feedforward(
    x: torch.Tensor,
    w1: torch.Tensor,
    b1: torch.Tensor | None,
    w2: torch.Tensor,
    b2: torch.Tensor | None,
    slope: float,
    m: int = 4,
    norm: tuple[torch.Tensor, torch.Tensor, float] | None = None,
) -> torch.Tensor:
    """``conv3x3(leaky_relu(conv3x3(x, w1, b1), slope), w2, b2)`` on channels-last x (B, H, W, C).

    ``norm`` = (g, b, eps), each of g and b (C,): normalise x first with the authors' channel
    LayerNorm, (x - mean) / (std + eps) * g + b. Same result as the separate modules,
    computed block by block so the normalised input and the wide hidden activation stay in
    cache.
    """
    if m not in _TRANSFORMS:
        raise ValueError(f"Winograd tile size must be one of {TILE_SIZES}, got {m}")
    g, beta, eps = norm if norm is not None else (None, None, 0.0)
    return _WinogradFeedForward.apply(x.contiguous(), g, beta, w1, b1, w2, b2, (eps, slope, m))


def winograd_feedforward_inference(
    x: torch.Tensor,
    u1: torch.Tensor,
    b1: torch.Tensor | None,
    u2: torch.Tensor,
    b2: torch.Tensor | None,
    slope: float,
    m: int = 4,
    norm: tuple[torch.Tensor, torch.Tensor, float] | None = None,
) -> torch.Tensor:
    """The forward of :func:`winograd_feedforward` for inference, without autograd.

    Same arguments, except that the filters come already in the Winograd domain
    (``u = transform_weight(w, m)``, (r*r, C_in, C_out)), so a caller that scores many batches
    with the same weights transforms them once. Nothing is kept for a backward: the
    normalised input, the hidden activation and the Winograd-domain V and M of each block of
    images live in buffers of this thread's :class:`Workspace`, which every block and every
    later call reuse, and only the output is allocated.
    Computes in the filters' dtype (float32 under autocast, as the training form does).
    """
    if m not in _TRANSFORMS:
        raise ValueError(f"Winograd tile size must be one of {TILE_SIZES}, got {m}")
    dtype = u1.dtype
    with torch.autocast(x.device.type, enabled=False):
        x = x.to(dtype).contiguous()
        B, H, W, C = x.shape
        grid = _Grid(H, W, m, x)
        tiles, width, itemsize = grid.th * grid.tw, u1.shape[-1], x.element_size()
        step = min(B, _chunk_images(tiles, grid.r, width, itemsize))
        work = _WORKSPACE
        source = inside = None
        if norm is not None:
            source, inside = grid.padded(step, C, x, (work, "source"))
        hidden, hidden_inside = grid.padded(step, u1.shape[-1], x, (work, "hidden"))
        out = x.new_empty(B, H, W, u2.shape[-1])
        for b0 in range(0, B, step):  # cache blocking, not a per-video computation
            xb = x[b0 : b0 + step]
            b = xb.shape[0]
            if norm is not None:
                g, beta, eps = (t.to(dtype) if torch.is_tensor(t) else t for t in norm)
                mean, std = _moments(xb)
                xhat = (xb - mean) * (1 / (std + eps))  # as _normalised computes it
                torch.addcmul(beta, xhat, g, out=inside[:b])
                grid.conv(source[:b], u1, b1, hidden_inside[:b], True, slope, work)
            else:
                grid.conv(xb, u1, b1, hidden_inside[:b], slope=slope, work=work)
            grid.conv(hidden[:b], u2, b2, out[b0 : b0 + b], padded=True, work=work)
        return out
