"""The FLOP count ``anomaly bench extract`` reads its GFLOP/s from, against the count by hand.

No timing is asserted: speed is measured by the bench command only.
"""

from __future__ import annotations

from anomalyclip.bench.extract import frame_flops
from anomalyclip.extract.encoder import ImageEncoder


def vit_flops(hidden: int, layers: int, patch: int, inter: int, proj: int, size: int = 224) -> int:
    """FLOPs of a CLIP ViT on one image (2 per multiply-add): the patch convolution, per layer
    the q/k/v/out projections, QK^T and AV over all heads, the two MLP layers; the output
    projection. Norms, softmax, biases and activations are not multiply-adds and not counted."""
    patches = (size // patch) ** 2
    n = patches + 1  # + the class token
    embed = patches * hidden * 3 * patch * patch
    layer = 4 * n * hidden * hidden + 2 * n * n * hidden + 2 * n * hidden * inter
    return 2 * (embed + layers * layer + hidden * proj)


def test_frame_flops_equal_the_count_by_hand(tiny_clip):
    enc = ImageEncoder(tiny_clip, "cpu", "fp32", "eager")
    c = enc.vision.config
    expected = vit_flops(c.hidden_size, c.num_hidden_layers, c.patch_size,
                         c.intermediate_size, c.projection_dim)  # fmt: skip
    assert frame_flops(enc) == expected
    # ViT-B/16 by the same formula: the 35.1 GFLOP (17.6 G multiply-adds) usually quoted
    assert round(vit_flops(768, 12, 16, 3072, 512) / 1e9, 1) == 35.1
