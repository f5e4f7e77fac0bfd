"""The frozen CLIP image tower as a batched frame encoder.

The stored vector is ``image_embeds``: the pooled output through the visual projection, not
L2-normalised (what OpenAI's ``encode_image`` and ``CLIPModel.get_image_features`` return),
so downstream code can normalise or not as the method requires.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

import torch

from anomalyclip import backbone
from anomalyclip.backbone import DEFAULT_CLIP, load_vision
from anomalyclip.extract.preprocess import normalize

log = logging.getLogger(__name__)

Precision = Literal["auto", "fp32", "fp16", "bf16"]
_AUTOCAST = {"fp16": torch.float16, "bf16": torch.bfloat16}


class ImageEncoder:
    """uint8 CLIP crops (B, 3, 224, 224) -> float32 embeddings (B, D) on the CPU.

    ``precision="auto"`` is fp16 autocast on CUDA and fp32 elsewhere (CPU half precision is
    slower than fp32 on most CPUs and buys nothing in accuracy).
    """

    def __init__(
        self, model: str | Path = DEFAULT_CLIP, device: str = "cpu", precision: Precision = "auto"
    ) -> None:
        self.device = torch.device(device)
        if precision == "auto":
            precision = "fp16" if self.device.type == "cuda" else "fp32"
        if precision not in ("fp32", *_AUTOCAST):
            raise ValueError(f"unknown precision {precision!r}")
        self.precision = precision
        self.model = model
        self.vision = load_vision(model).to(self.device)
        self.dim = int(self.vision.config.projection_dim)
        self._description: dict | None = None

    def describe(self) -> dict:
        """The backbone's provenance (hashing local weights once per encoder, not per run)."""
        if self._description is None:
            self._description = backbone.describe(self.model)
        return self._description

    @torch.inference_mode()
    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        x = pixels.to(self.device, non_blocking=True)  # (B, 3, 224, 224) uint8
        x = normalize(x)  # (B, 3, 224, 224) float32
        with torch.autocast(
            self.device.type,
            dtype=_AUTOCAST.get(self.precision, torch.float32),
            enabled=self.precision != "fp32",
        ):
            out = self.vision(pixel_values=x).image_embeds  # (B, D)
        return out.float().cpu()
