"""torch's FLOP counter, taught the CPU's fused attention.

``torch.utils.flop_counter`` has formulas for the CUDA attention kernels but not for
``_scaled_dot_product_flash_attention_for_cpu`` (and its backward), which
``F.scaled_dot_product_attention`` runs on the CPU for 4-D inputs; left alone, the counter
sees no FLOPs there. The same formulas as torch's CUDA entries are mapped onto the CPU ops:
q k^T and the product with v forward (4 b h s_q s_k d); backward five such products, q k^T
being recomputed rather than kept (10 b h s_q s_k d).
"""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

_aten = torch.ops.aten


def _flash_cpu(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:  # noqa: ANN001
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _flash_cpu_backward(grad_shape, query_shape, key_shape, value_shape, *args, out_shape=None,
                        **kwargs) -> int:  # noqa: ANN001  # fmt: skip
    return sdpa_backward_flop_count(grad_shape, query_shape, key_shape, value_shape)


CPU_ATTENTION = {
    _aten._scaled_dot_product_flash_attention_for_cpu: _flash_cpu,
    _aten._scaled_dot_product_flash_attention_for_cpu_backward: _flash_cpu_backward,
}


def flop_counter() -> FlopCounterMode:
    """A silent ``FlopCounterMode`` that also counts the CPU's fused attention."""
    return FlopCounterMode(display=False, custom_mapping=CPU_ATTENTION)
