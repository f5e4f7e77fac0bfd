"""The axial attention's bfloat16 backward (kernels/attention.py) against float64.

Inputs are laid out as the model makes them ((B, T, H, Dh) memory seen as (B, H, T, Dh)) and
scaled as a LayerNorm'd grid through random projections gives them (scores of a few units),
so the softmax is neither flat nor one-hot, as on trained weights."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from anomalyclip.kernels.attention import BLOCK_BYTES, attention


def inputs(B: int, T: int, dtype: torch.dtype, seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    H, Dh = 8, 32
    q, k, v = (torch.randn(B, T, H, Dh, generator=gen) for _ in range(3))
    q = q * 1.5
    return [t.to(dtype).transpose(1, 2).requires_grad_() for t in (q, k, v)]


def outputs_and_grads(fn, tensors, grad) -> list[torch.Tensor]:
    out = fn(*tensors)
    out.backward(grad.to(out.dtype))
    result = [out.detach()] + [t.grad for t in tensors]
    for t in tensors:
        t.grad = None
    return [r.double() for r in result]


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


@pytest.mark.slow
@pytest.mark.parametrize("T", [16, 32])
def test_bf16_backward_is_closer_to_float64_than_the_fused_one(T):
    B = 2 * BLOCK_BYTES // (8 * T * T * 4) + 3  # three blocks, the last one short
    low = inputs(B, T, torch.bfloat16)
    exact = [t.detach().double().requires_grad_() for t in low]  # the same bf16 values
    grad = torch.randn(B, 8, T, 32, generator=torch.Generator().manual_seed(1))
    reference = outputs_and_grads(F.scaled_dot_product_attention, exact, grad)
    fused = outputs_and_grads(F.scaled_dot_product_attention, low, grad)
    ours = outputs_and_grads(attention, low, grad)
    assert torch.equal(ours[0], fused[0])  # the same forward, bit for bit
    for name, o, f, r in zip(("dq", "dk", "dv"), ours[1:], fused[1:], reference[1:], strict=True):
        # measured (T = 16 and 32): ours 2.3-2.8e-3, the fused backward's 2.9-3.3e-3
        assert relative(o, r) <= 3.5e-3, (name, relative(o, r), relative(f, r))
        assert relative(o, r) < relative(f, r), (name, relative(o, r), relative(f, r))


def test_float32_and_inference_keep_pytorch_s_attention():
    q, k, v = inputs(4, 16, torch.float32)
    out = attention(q, k, v)
    assert torch.equal(out, F.scaled_dot_product_attention(q, k, v))
    assert out.grad_fn.name() == "ScaledDotProductFlashAttentionForCpuBackward0"
    low = inputs(4, 16, torch.bfloat16)
    assert attention(*low).grad_fn.name() == "_AttentionBackward"
    with torch.no_grad():
        assert torch.equal(attention(*low), F.scaled_dot_product_attention(*low))
