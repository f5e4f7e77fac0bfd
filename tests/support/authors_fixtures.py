"""Builders of the AnomalyCLIP authors' Lightning checkpoints, shared by the interop tests.

The checkpoints are built from the state-dict tables (``fixtures/authors/*.tsv``: every key,
shape and dtype of a real ``last.ckpt``) with random weights, and saved the way Lightning 1.8
saves them: hyper-parameters holding objects of classes from modules that exist only while
saving (the authors' ``src.*`` and omegaconf), and every storage tagged ``cuda:0``. The text
tower has OpenAI ViT-B/16's real shape (512 wide, 12 layers, 8 heads, 49,408 tokens); the
tokenizer is the byte-level one of :mod:`anomalyclip.backbone` (real token ids do not matter
here, only that the checkpoint's prompt buffers were made with the same tokenizer). The image
tower, which the importer skips, is saved as zero-stride views of one random value per tensor
(right shapes, small files). :func:`openai_text_features` is CLIP's text encoder written
from its definition, in float64, the reference the imported text tower is held to.
"""

from __future__ import annotations

import functools
import math
import pickle
import sys
import types
import typing
from collections import OrderedDict
from pathlib import Path

import torch
import torch.nn.functional as F
from paths import FIXTURES
from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

from anomalyclip.backbone import write_byte_tokenizer
from anomalyclip.datasets import get_dataset
from anomalyclip.model.prompt import prompt_text

REFERENCE = FIXTURES / "authors"
TABLES = {"ucf": "ucfcrime", "xd": "xdviolence", "sht": "shanghaitech"}


def read_table(dataset: str) -> list[tuple[str, tuple[int, ...], str]]:
    """(key, shape, dtype) of every state_dict entry of the dataset's ``last.ckpt``."""
    lines = (REFERENCE / f"{TABLES[dataset]}_state_dict.tsv").read_text().splitlines()[1:]
    rows = []
    for line in lines:
        key, shape, dtype, _ = line.split("\t")
        dims = () if shape == "scalar" else tuple(int(s) for s in shape.split("x"))
        rows.append((key, dims, dtype))
    return rows


# -------------------------------------------------------------------- a CLIP of OpenAI's text shape
def openai_text_clip(out: Path) -> Path:
    """HF CLIP: OpenAI ViT-B/16's text tower shape, a tiny image tower, a byte tokenizer."""
    out.mkdir(parents=True, exist_ok=True)
    n = write_byte_tokenizer(out)
    text = dict(
        vocab_size=49408, hidden_size=512, intermediate_size=2048, num_hidden_layers=12,
        num_attention_heads=8, max_position_embeddings=77, projection_dim=512,
        hidden_act="quick_gelu", bos_token_id=n - 2, eos_token_id=n - 1, pad_token_id=n - 1,
    )  # fmt: skip
    vision = dict(
        hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=2,
        image_size=224, patch_size=32, projection_dim=512, hidden_act="quick_gelu",
    )  # fmt: skip
    cfg = CLIPConfig(text_config=text, vision_config=vision, projection_dim=512)
    torch.manual_seed(0)
    CLIPModel(cfg).save_pretrained(out)
    return out


def authors_token_ids(tokenizer: CLIPTokenizer, classes: tuple[str, ...]) -> torch.Tensor:
    """(C, 77) ids as the authors' tokenizer lays them out: SOS ... EOS, then zeros."""
    rows = [tokenizer(prompt_text(c, 8))["input_ids"] for c in classes]
    ids = torch.zeros(len(rows), 77, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
    return ids


# -------------------------------------------------------------------- Lightning-style checkpoints
def random_tensor(key: str, shape: tuple[int, ...], dtype: str, g: torch.Generator) -> torch.Tensor:
    if dtype == "int64":
        return torch.tensor(1234, dtype=torch.int64)
    if key.startswith("net.image_encoder."):  # skipped by the importer: right shape, tiny storage
        return torch.randn(1, generator=g).expand(shape) if shape else torch.randn((), generator=g)
    fan_in = shape[-1] if len(shape) >= 2 else 1
    t = torch.randn(shape, generator=g)
    if key.endswith("running_var"):
        return t.abs() + 0.5
    if len(shape) == 1 and ("ln_" in key or "norm" in key) and key.endswith("weight"):
        return 1 + 0.1 * t  # LayerNorm gains
    if key.endswith("text_projection") or "in_proj_weight" in key or "c_fc" in key:
        return t / math.sqrt(shape[0] if key.endswith("text_projection") else fan_in)
    if "c_proj.weight" in key or "out_proj.weight" in key:
        return t / math.sqrt(fan_in)
    return 0.05 * t


class _CudaTaggingPickler(pickle._Pickler):
    """torch.save's pickler with every storage reference saying ``cuda:0``, as on the GPU."""

    def save_pers(self, pid):
        if isinstance(pid, tuple) and pid and pid[0] == "storage":
            pid = (*pid[:3], "cuda:0", *pid[4:])
        super().save_pers(pid)


CUDA_PICKLE = types.ModuleType("cuda_tagging_pickle")
CUDA_PICKLE.Pickler = _CudaTaggingPickler


def _throwaway_modules() -> dict[str, types.ModuleType]:
    """The authors' ``src.*`` and omegaconf, as modules that exist only while saving."""
    mods = {
        name: types.ModuleType(name)
        for name in (
            "src", "src.models", "src.models.components", "src.models.components.loss",
            "src.models.components.scheduler", "omegaconf", "omegaconf.dictconfig",
        )
    }  # fmt: skip
    for modname, cls in (
        ("src.models.components.loss", "ComputeLoss"),
        ("src.models.components.scheduler", "WarmupCosineAnnealingLR"),
        ("omegaconf.dictconfig", "DictConfig"),
    ):
        setattr(mods[modname], cls, type(cls, (), {"__module__": modname, "__qualname__": cls}))
    return mods


def save_lightning(path: Path, state_dict: OrderedDict, extra_hparams: dict | None = None) -> None:
    mods = _throwaway_modules()
    assert not set(mods) & set(sys.modules)
    sys.modules.update(mods)
    try:
        loss = mods["src.models.components.loss"].ComputeLoss()
        loss.__dict__.update(lambda_dir_abn=1.0, smoothing=8e-4, bce=torch.nn.BCELoss())
        solver = mods["omegaconf.dictconfig"].DictConfig()
        solver.__dict__.update(
            _metadata={"ref_type": typing.Any, "object_type": dict},
            _content={"lr": 1e-5, "selector_ratio": 1.0, "temporal_ratio": 1.0},
        )
        sched = mods["src.models.components.scheduler"].WarmupCosineAnnealingLR
        ckpt = {
            "epoch": 49,
            "global_step": 4900,
            "pytorch-lightning_version": "1.8.3",
            "state_dict": state_dict,
            "loops": {"fit_loop": {"epoch_progress": {"total": {"ready": 50, "completed": 49}}}},
            "callbacks": {
                "ModelCheckpoint{'monitor': 'test/AUC'}": {
                    "monitor": "test/AUC",
                    "best_model_score": torch.tensor(0.86),
                    "kth_value": torch.tensor(float("inf")),
                    "best_k_models": {},
                }
            },
            "optimizer_states": [
                {
                    "state": {0: {"step": torch.tensor(7.0), "exp_avg": torch.zeros(3)}},
                    "param_groups": [{"name": "prompt_learner", "initial_lr": 1e-5, "params": [0]}],
                }
            ],  # fmt: skip
            "lr_schedulers": [{"base_lrs": [1e-5], "last_epoch": 49, "_last_lr": [1e-7]}],
            "hparams_name": "kwargs",
            "hyper_parameters": {
                "optimizer": functools.partial(torch.optim.AdamW, weight_decay=0.2),
                "scheduler": functools.partial(sched, warmup_epochs=5, total_epoch=50),
                "loss": loss,
                "solver": solver,
                "num_classes": len(state_dict["net.prompt_learner.ctx"]),
                "save_dir": "/usr/src/app/logs/train/runs/x",
                **(extra_hparams or {}),
            },
            "datamodule_hparams_name": "kwargs",
            "datamodule_hyper_parameters": {
                "num_segments": 32,
                "seg_length": 16,
                "train_val_test_split": (0.8, 0.1, 0.1),
                "tags": {"a", "b"},
            },
        }
        torch.save(ckpt, path, pickle_module=CUDA_PICKLE)
    finally:
        for name in mods:
            del sys.modules[name]


def text_tower_tensors(seed: int = 1) -> dict[str, torch.Tensor]:
    """One random text tower (all three datasets have the same), by checkpoint key."""
    g = torch.Generator().manual_seed(seed)
    return {
        k: random_tensor(k, s, d, g)
        for k, s, d in read_table("ucf")
        if k.startswith(("net.text_encoder.", "net.token_embedding."))
    }


def build_state_dict(dataset: str, shared_text, tokenizer, seed: int) -> OrderedDict:
    g = torch.Generator().manual_seed(seed)
    spec = get_dataset(dataset)
    sd = OrderedDict()
    for key, shape, dtype in read_table(dataset):
        sd[key] = shared_text.get(key)
        if sd[key] is None:
            sd[key] = random_tensor(key, shape, dtype, g)
    # the prompt buffers are the frozen embeddings of the tokenized prompts (zero padded)
    ids = authors_token_ids(tokenizer, spec.classes)
    emb = sd["net.token_embedding.weight"][ids]  # (C, 77, 512)
    sd["net.prompt_learner.token_prefix"] = emb[:, :1].clone()
    sd["net.prompt_learner.token_suffix"] = emb[:, 9:].clone()
    for key, shape, _ in read_table(dataset):
        assert tuple(sd[key].shape) == shape, key
    return sd


# -------------------------------------------------------------------- text features
def openai_text_features(sd: OrderedDict, ids: torch.Tensor) -> torch.Tensor:
    """CLIP's text encoder as OpenAI defines it, with CoOp contexts at positions 1..8.

    tokens -> embeddings + positions -> pre-LN residual blocks (causal attention, QuickGELU
    MLP) -> final LayerNorm -> the EOS token (the largest id) -> ``x @ text_projection``.
    """
    p = "net.text_encoder."
    x = sd["net.token_embedding.weight"][ids].double()  # (C, 77, 512)
    x[:, 1:9] = sd["net.prompt_learner.ctx"][: len(ids)].double()
    x = x + sd[p + "positional_embedding"][: ids.shape[1]].double()
    c, t, w = x.shape
    heads = w // 64
    causal = torch.full((t, t), float("-inf"), dtype=x.dtype).triu(1)
    layers = len({k.split(".")[4] for k in sd if k.startswith(p + "transformer.resblocks.")})
    for i in range(layers):
        blk = {
            k.removeprefix(f"{p}transformer.resblocks.{i}."): v.double()
            for k, v in sd.items()
            if k.startswith(f"{p}transformer.resblocks.{i}.")
        }
        h = F.layer_norm(x, (w,), blk["ln_1.weight"], blk["ln_1.bias"], 1e-5)
        qkv = h @ blk["attn.in_proj_weight"].T + blk["attn.in_proj_bias"]
        q, k, v = (z.reshape(c, t, heads, -1).transpose(1, 2) for z in qkv.chunk(3, -1))
        att = (q @ k.transpose(-1, -2) / math.sqrt(w // heads) + causal).softmax(-1)
        o = (att @ v).transpose(1, 2).reshape(c, t, w)
        x = x + o @ blk["attn.out_proj.weight"].T + blk["attn.out_proj.bias"]
        h = F.layer_norm(x, (w,), blk["ln_2.weight"], blk["ln_2.bias"], 1e-5)
        h = h @ blk["mlp.c_fc.weight"].T + blk["mlp.c_fc.bias"]
        h = h * torch.sigmoid(1.702 * h)  # QuickGELU
        x = x + h @ blk["mlp.c_proj.weight"].T + blk["mlp.c_proj.bias"]
    x = F.layer_norm(x, (w,), sd[p + "ln_final.weight"].double(), sd[p + "ln_final.bias"].double())
    eos = x[torch.arange(c), ids.argmax(-1)]  # (C, 512)
    return eos @ sd[p + "text_projection"].double()
