"""Attention over many short sequences, with its backward by batched matrix multiplies.

The temporal model attends along one axis of its grid: sequences of 16 or 32 positions, tens
of thousands of them per batch (1,024 x 8 heads of 32 positions at the paper's UCF-Crime
shape). PyTorch's fused CPU attention (flash) computes the forward well, but its backward
at these lengths is slow in bfloat16: at (1024, 8, 32, 32), 436 ms against 38 ms for the
forward on the 2-core benchmark host (a fifth of a bf16 training step for the two axial
attentions together).

:func:`attention` keeps the fused forward (the same output, bit for bit, and the same saved
tensors: q, k, v, the output and the per-row log-sum-exp of the scores) and computes the
backward in float32 with batched matrix multiplies, a block of sequences at a time. With
S = q k^T * scale, the probabilities P = exp(S - lse) are recomputed from the saved
log-sum-exp, then

    dV = P^T dO,   dP = dO V^T,   dS = P * (dP - rowsum(dO * O)),
    dQ = dS K * scale,   dK = dS^T Q * scale.

In bfloat16 the gradients are closer to float64 than the fused backward's (float32 inside,
one rounding at the end); ``tests/unit/kernels/test_attention.py`` states both errors.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

BLOCK_BYTES = 4 << 20  # float32 bytes of one block's (n, H, T, T) probabilities


class _Attention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v):  # type: ignore[override]
        # q, k, v: (B, H, T, Dh) -> out (B, H, T, Dh), lse (B, H, T) float32
        out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v)
        ctx.save_for_backward(q, k, v, out, lse)
        return out

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        q, k, v, out, lse = ctx.saved_tensors
        B, H, T, Dh = q.shape
        scale = Dh**-0.5
        gq, gk, gv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
        step = max(1, BLOCK_BYTES // (H * T * T * 4))
        f32 = torch.float32
        with torch.autocast("cpu", enabled=False):
            for b0 in range(0, B, step):
                rows = slice(b0, b0 + step)
                qb, kb, vb = q[rows].to(f32), k[rows].to(f32), v[rows].to(f32)
                ob, gb = out[rows].to(f32), grad[rows].to(f32)
                p = torch.matmul(qb, kb.transpose(-1, -2)).mul_(scale)  # (n, H, T, T)
                p = p.sub_(lse[rows].unsqueeze(-1)).exp_()  # the forward's probabilities
                gv[rows] = torch.matmul(p.transpose(-1, -2), gb)
                dp = torch.matmul(gb, vb.transpose(-1, -2))  # (n, H, T, T)
                delta = (gb * ob).sum(-1, keepdim=True)  # (n, H, T, 1) = rowsum(P * dP)
                ds = p.mul_(dp.sub_(delta)).mul_(scale)  # (n, H, T, T)
                gq[rows] = torch.matmul(ds, kb)
                gk[rows] = torch.matmul(ds.transpose(-1, -2), qb)
        return gq, gk, gv


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(Dh)) v for (B, H, T, Dh) inputs: ``F.scaled_dot_product_attention``,
    with the backward above for bfloat16 and float16 on the CPU.

    In float32 the fused backward is as fast (within 10 % either way at these shapes) and
    stays in use."""
    low = q.dtype in (torch.bfloat16, torch.float16)
    if q.device.type != "cpu" or not low or not torch.is_grad_enabled():
        return F.scaled_dot_product_attention(q, k, v)
    return _Attention.apply(q, k, v)
