"""Values derived from weights alone, computed once for inference and kept while the weights
stay the same.

In evaluation the class prompts' text features (a pass of the CLIP text tower) and the
Winograd-domain filters of the feed-forward depend on the weights, not on the input, so
recomputing them for every batch repeats the same work. A :class:`Memo` keeps one such value
together with a key of the tensors it was computed from: every tensor's storage address,
version counter, dtype, device and shape. PyTorch bumps a tensor's version counter on every
in-place change (an optimiser step, ``load_state_dict``, ``copy_``, ``normal_``) and ``.to()``
or ``.data =`` give new storage, so a changed weight always changes the key and the value is
recomputed. Writes that bypass the version counter (through ``.data``, or a fused
optimiser kernel) are not seen by the key; the users of a memo therefore also clear it
whenever the module is put in training mode or runs with autograd on, which every training
step does, and only use it with autograd off (training must differentiate through the
computation).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch


def tensor_versions(tensors: Iterable[torch.Tensor]) -> tuple | None:
    """A key that changes whenever one of ``tensors`` is modified, replaced, moved or cast;
    None when one of them has no version counter (an inference-mode tensor)."""
    try:
        return tuple((t.data_ptr(), t._version, t.dtype, t.device, t.shape) for t in tensors)
    except RuntimeError:  # "Inference tensors do not track version counter"
        return None


class Memo:
    """One value computed from some tensors, recomputed when any of them changes."""

    def __init__(self) -> None:
        self.key: tuple | None = None
        self.value: Any = None

    def clear(self) -> None:
        self.key = self.value = None

    def get(self, tensors: Iterable[torch.Tensor], compute: Callable[[], Any], *extra: Any) -> Any:
        """``compute()``, or the value it returned last time if ``tensors`` and ``extra`` (other
        things the value depends on, e.g. the autocast state) are the same as then."""
        versions = tensor_versions(tensors)
        if versions is None:
            self.clear()
            return compute()
        key = (versions, extra)
        if key != self.key:
            self.clear()  # the old value is freed before the new one is computed
            self.value, self.key = compute(), key
        return self.value


def autocast_state(device_type: str) -> tuple[bool, torch.dtype]:
    """Whether autocast is on for ``device_type``, and its dtype: part of a memo's key."""
    return torch.is_autocast_enabled(device_type), torch.get_autocast_dtype(device_type)
