"""CLIP's image preprocessing, batched in torch.

The definition (what OpenAI's CLIP does through torchvision on PIL images): resize the
shorter side to 224 with antialiased bicubic filtering (the longer side
becomes ``int(224 * long / short)``), centre-crop 224x224 (offsets ``round((side - 224) / 2)``),
scale to [0, 1], normalise with :data:`~anomalyclip.backbone.CLIP_MEAN` / ``CLIP_STD``.

It is split in two so the heavy part runs in the decoder workers and only a small uint8 tensor
crosses the queue (and the host-to-device link): :func:`resize_crop` does the geometry on uint8
(torch's antialiased uint8 bicubic kernel follows PIL's separable filter and rounds to uint8 as
PIL does), :func:`normalize` does the arithmetic on the model's device.

Tolerance against the PIL reference, measured on frames of the four real test videos
(768x576, 320x240, 720x528): the uint8 crops differ from PIL's by at most 2 grey levels
(measured maximum 2, mean absolute difference 0.001-0.004 levels), i.e. at most
2/255/min(std) = 0.030 after normalisation. ``tests/test_extract.py`` asserts both bounds.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from anomalyclip.backbone import CLIP_IMAGE_SIZE, CLIP_MEAN, CLIP_STD

MAX_LEVEL_DIFF = 2  # grey levels, uint8 crops against PIL (see module docstring)


def resized_shape(height: int, width: int, size: int = CLIP_IMAGE_SIZE) -> tuple[int, int]:
    """(height, width) after resizing the shorter side to ``size`` (torchvision's rounding)."""
    if height <= width:
        return size, int(size * width / height)
    return int(size * height / width), size


def crop_offsets(height: int, width: int, size: int = CLIP_IMAGE_SIZE) -> tuple[int, int]:
    """(top, left) of the centred ``size`` x ``size`` crop (torchvision's rounding)."""
    return int(round((height - size) / 2.0)), int(round((width - size) / 2.0))


def resize_crop(images: np.ndarray | torch.Tensor, size: int = CLIP_IMAGE_SIZE) -> torch.Tensor:
    """(N, H, W, 3) uint8 RGB frames of one size -> (N, 3, size, size) uint8 CLIP crops."""
    x = torch.as_tensor(images)
    if x.dtype != torch.uint8 or x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"expected (N, H, W, 3) uint8 frames, got {tuple(x.shape)} {x.dtype}")
    h, w = x.shape[1:3]
    rh, rw = resized_shape(h, w, size)
    x = x.permute(0, 3, 1, 2)  # (N, 3, H, W), a channels-last view: the fast uint8 layout
    if (rh, rw) != (h, w):
        x = F.interpolate(x, size=(rh, rw), mode="bicubic", antialias=True, align_corners=False)
    top, left = crop_offsets(rh, rw, size)
    return x[:, :, top : top + size, left : left + size].contiguous()  # (N, 3, size, size)


def normalize(pixels: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(N, 3, S, S) uint8 -> (N, 3, S, S) ``dtype``: scaled to [0, 1], then CLIP mean/std."""
    mean = torch.tensor(CLIP_MEAN, dtype=torch.float64)
    std = torch.tensor(CLIP_STD, dtype=torch.float64)
    # (x / 255 - mean) / std as one fused multiply-add: x * scale + shift
    scale = (1.0 / (255.0 * std)).float().view(1, 3, 1, 1).to(pixels.device)
    shift = (-mean / std).float().view(1, 3, 1, 1).to(pixels.device)
    # in place in one float32 copy: a second 38 MB array per batch of 64 took the time of
    # the arithmetic three times over (21 vs 6 ms a batch on the 2-core benchmark host)
    x = torch.empty(pixels.shape, dtype=torch.float32, device=pixels.device).copy_(pixels)
    return torch.addcmul(shift, x, scale, out=x).to(dtype)


def preprocess(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """The whole definition in one call: (N, H, W, 3) uint8 -> (N, 3, 224, 224) float32."""
    return normalize(resize_crop(images))
