"""The frozen CLIP image tower as a batched frame encoder.

The stored vector is ``image_embeds``: the pooled output through the visual projection, not
L2-normalised (what OpenAI's ``encode_image`` and ``CLIPModel.get_image_features`` return),
so downstream code can normalise or not as the method requires.

Precision. ``fp32`` is the reference. ``bf16`` runs the tower under CPU (or CUDA) bfloat16
autocast: matrix multiplies and attention in bf16 with fp32 accumulation, layer norms, softmax
and the output in fp32; ``fp16`` is float16 autocast (CUDA). ``auto`` picks fp16 on CUDA,
bf16 on a CPU with bf16 matrix instructions (AMX or AVX-512 BF16, where a bf16 matrix
multiply runs 2-3x faster than fp32) and fp32 on any other CPU, where bf16 is emulated and
slower. ``tests/unit/extract/test_extract_precision.py`` states the measured distance of bf16
from fp32.

Attention. ``sdpa`` (torch's fused scaled-dot-product attention) or ``eager`` (the explicit
softmax(QK^T)V of ``transformers``): the same function, different rounding.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

import torch

from anomalyclip import backbone
from anomalyclip.backbone import DEFAULT_CLIP, load_vision
from anomalyclip.checks import PRECISIONS
from anomalyclip.environment import cpu_flags
from anomalyclip.extract.preprocess import normalize

log = logging.getLogger(__name__)

Precision = Literal["auto", "fp32", "fp16", "bf16"]
Attention = Literal["sdpa", "eager"]
ATTENTIONS = ("sdpa", "eager")
_AUTOCAST = {"fp16": torch.float16, "bf16": torch.bfloat16}
BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")  # /proc/cpuinfo flags of bf16 matrix instructions


def cpu_has_bf16(flags: frozenset[str] | None = None) -> bool:
    """Whether the CPU multiplies bf16 matrices in hardware (AMX or AVX-512 BF16)."""
    flags = cpu_flags() if flags is None else flags
    return any(f in flags for f in BF16_CPU_FLAGS)


def resolve_precision(precision: Precision, device: torch.device | str) -> str:
    """``auto`` -> fp16 on CUDA, bf16 on a CPU with bf16 matrix units, else fp32."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r} (expected one of {PRECISIONS})")
    if precision != "auto":
        return precision
    kind = torch.device(device).type
    if kind == "cuda":
        return "fp16"
    return "bf16" if kind == "cpu" and cpu_has_bf16() else "fp32"


class ImageEncoder:
    """uint8 CLIP crops (B, 3, 224, 224) -> float32 embeddings (B, D) on the CPU.

    ``precision`` and ``attention`` as in the module docstring; the default is the fp32
    reference, ``"auto"`` the fastest precision of the device. (An exported image tower run
    by ONNX Runtime or OpenVINO has the same interface, ``anomalyclip.export.backends``.)
    """

    backend = "torch"

    def __init__(
        self,
        model: str | Path = DEFAULT_CLIP,
        device: str = "cpu",
        precision: Precision = "fp32",
        attention: Attention = "sdpa",
    ) -> None:
        if attention not in ATTENTIONS:
            raise ValueError(f"unknown attention {attention!r} (expected one of {ATTENTIONS})")
        self.device = torch.device(device)
        self.precision = resolve_precision(precision, self.device)
        self.attention = attention
        self.model = model
        self.vision = load_vision(model, attention).to(self.device)
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
