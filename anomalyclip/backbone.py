"""Loading CLIP through `transformers`, and building small random CLIPs for offline use.

Real use loads ``openai/clip-vit-base-patch16`` from the hub (or any local directory in
Hugging Face format). Tests and the demo cannot download anything, so :func:`build_clip`
writes a random CLIP (config, safetensors weights and a byte-level tokenizer) with
``save_pretrained`` and everything downstream loads it through the very same
``from_pretrained`` path as the real model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
import transformers
from transformers import (
    CLIPConfig,
    CLIPModel,
    CLIPTextConfig,
    CLIPTextModelWithProjection,
    CLIPTokenizer,
    CLIPVisionConfig,
    CLIPVisionModelWithProjection,
)

from anomalyclip.errors import AnomalyError
from anomalyclip.locations import DEFAULT_CLIP, RANDOM_CLIP_MARK, local_clip, weights_sha256
from anomalyclip.permissions import make_shareable

# CLIP's image normalisation (OpenAI's constants), used by the extractor and recorded in stores.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
CLIP_IMAGE_SIZE = 224


@dataclass(frozen=True)
class ClipShape:
    """Sizes of a CLIP model; ``tiny`` for tests and the demo, ``vit-b-16`` for benchmarks."""

    vision_hidden: int
    vision_layers: int
    vision_heads: int
    patch_size: int
    text_hidden: int
    text_layers: int
    text_heads: int
    projection_dim: int = 512


CLIP_SHAPES = {
    "tiny": ClipShape(64, 2, 2, 32, 64, 2, 2),
    # the demo's: a wider image tower, so its random features keep what the events change
    "demo": ClipShape(256, 2, 4, 32, 64, 2, 2),
    "vit-b-16": ClipShape(768, 12, 12, 16, 512, 12, 8),
}


def _byte_symbols() -> list[str]:
    """GPT-2/CLIP's reversible map from the 256 bytes to printable unicode characters."""
    keep = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    codes = keep[:]
    extra = 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            codes.append(256 + extra)
            extra += 1
    return [chr(c) for c in codes]


def write_byte_tokenizer(out_dir: Path) -> int:
    """Write a CLIP tokenizer with no merges: every word splits into single characters.

    It has CLIP's byte alphabet (so any text tokenizes), CLIP's special tokens and pad
    convention, and 514 entries. Returns the vocabulary size.
    """
    symbols = _byte_symbols()
    vocab = symbols + [s + "</w>" for s in symbols] + ["<|startoftext|>", "<|endoftext|>"]
    (out_dir / "vocab.json").write_text(json.dumps({tok: i for i, tok in enumerate(vocab)}))
    (out_dir / "merges.txt").write_text("#version: 0.2\n")
    CLIPTokenizer(
        vocab=str(out_dir / "vocab.json"), merges=str(out_dir / "merges.txt")
    ).save_pretrained(out_dir)
    return len(vocab)


def build_clip(out_dir: str | Path, shape: str = "tiny", seed: int = 0) -> Path:
    """Write a randomly initialised CLIP in Hugging Face format to ``out_dir``, marked as
    random (:data:`~anomalyclip.locations.RANDOM_CLIP_MARK`: ``predict`` and ``watch`` warn
    that its scores mean nothing on real footage).

    The image side is real-sized (224x224 input, 512-d projected embedding), so features have
    the shape of ViT-B/16's; ``shape`` picks the width and depth of the towers.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    s = CLIP_SHAPES[shape]
    vocab_size = write_byte_tokenizer(out)
    text = CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=s.text_hidden,
        intermediate_size=4 * s.text_hidden,
        num_hidden_layers=s.text_layers,
        num_attention_heads=s.text_heads,
        max_position_embeddings=77,
        projection_dim=s.projection_dim,
        hidden_act="quick_gelu",
        bos_token_id=vocab_size - 2,
        eos_token_id=vocab_size - 1,
        pad_token_id=vocab_size - 1,
    )
    vision = CLIPVisionConfig(
        hidden_size=s.vision_hidden,
        intermediate_size=4 * s.vision_hidden,
        num_hidden_layers=s.vision_layers,
        num_attention_heads=s.vision_heads,
        image_size=CLIP_IMAGE_SIZE,
        patch_size=s.patch_size,
        projection_dim=s.projection_dim,
        hidden_act="quick_gelu",
    )
    config = CLIPConfig(
        text_config=text.to_dict(), vision_config=vision.to_dict(), projection_dim=s.projection_dim
    )
    torch.manual_seed(seed)
    CLIPModel(config).save_pretrained(out)
    mark = {"shape": shape, "seed": seed, "weights": "random: a stand-in for tests and the demo"}
    (out / RANDOM_CLIP_MARK).write_text(json.dumps(mark) + "\n")
    make_shareable(*out.glob("*.safetensors"))  # safetensors writes 0600
    return out


def _from_pretrained(cls, where: str, source: str, **kwargs):
    try:
        return cls.from_pretrained(where, **kwargs)
    except OSError as exc:
        text = str(exc).strip()
        first = text.splitlines()[0] if text else type(exc).__name__
        raise AnomalyError(f"{source}: cannot load CLIP ({first})") from exc


def _load(cls, model: str | Path, **kwargs):
    """``cls.from_pretrained(model)``: a local folder never goes to the hub, and a hub id is
    looked up in the local Hugging Face cache before the network is tried."""
    transformers.logging.set_verbosity_error()  # the load report lists the other tower's keys
    transformers.logging.disable_progress_bar()
    source = str(model)
    folder = local_clip(source)
    if folder is not None:
        return _from_pretrained(cls, str(folder), source, local_files_only=True, **kwargs)
    try:
        return cls.from_pretrained(source, local_files_only=True, **kwargs)  # the HF cache
    except OSError:
        pass  # not cached here: ask the hub
    return _from_pretrained(cls, source, source, **kwargs)


def load_vision(
    model: str | Path = DEFAULT_CLIP, attention: str = "sdpa"
) -> CLIPVisionModelWithProjection:
    """The frozen image tower with its projection, in eval mode. ``attention``: ``sdpa``
    (torch's fused attention) or ``eager`` (transformers' explicit softmax(QK^T)V)."""
    tower = _load(CLIPVisionModelWithProjection, model, attn_implementation=attention)
    return tower.eval().requires_grad_(False)


def load_text(
    model: str | Path = DEFAULT_CLIP,
) -> tuple[CLIPTextModelWithProjection, CLIPTokenizer]:
    """The text tower with its projection, and the matching tokenizer."""
    return _load(CLIPTextModelWithProjection, model), _load(CLIPTokenizer, model)


def describe(model: str | Path) -> dict:
    """Provenance of a backbone for store attributes: id, weight hash and embedding size.

    A local directory is hashed (its weight files), so two stores made from different random
    or fine-tuned weights never pass for compatible.
    """
    path = Path(model)
    info: dict = {"model": str(model), "output": "image_embeds (projected, not normalised)"}
    if path.is_dir():
        info["weights_sha256"] = weights_sha256(path)
        cfg = json.loads((path / "config.json").read_text())
        info["dim"] = int(cfg.get("projection_dim", 512))
    else:
        info["dim"] = 512
    return info
