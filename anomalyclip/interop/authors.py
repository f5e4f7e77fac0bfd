"""The AnomalyCLIP authors' Lightning checkpoints <-> this project's run directories.

The published ``last.ckpt`` files hold the authors' ``net.*`` state dict (every key, shape and
dtype is listed in ``tests/fixtures/authors/*_state_dict.tsv``): an OpenAI-layout CLIP text
tower, the prompt contexts, the
selector's BatchNorm statistics and the axial temporal model. Their names map one to one onto
this model's, with three real transforms:

- OpenAI's fused attention input ``in_proj_{weight,bias}`` (3W rows) is Hugging Face's
  ``q_proj``, ``k_proj``, ``v_proj``, in that row order;
- OpenAI's ``text_projection`` is used as ``x @ W``; HF's ``text_projection`` is a Linear,
  which stores the transpose;
- the temporal model drops the reversible-layer wrappers (``net.fn.fn.``) of the authors'
  code; ``to_kv`` stays fused (k rows first, then v) on both sides.

ShanghaiTech's temporal input (529 = 17 similarities first, then the 512 centred frame
values) is the order :class:`~anomalyclip.model.AnomalyCLIP` concatenates in, so its input
projection is copied as is. The network's shape (classes, contexts, E, depth, segment grid,
whether the similarities are concatenated) is read from the tensors' shapes and checked
against the dataset; the attention head counts are not visible in any shape, so the temporal
model takes the dataset preset's (8 in every published config) and the text tower OpenAI's
rule, width / 64.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from anomalyclip.backbone import DEFAULT_CLIP, load_vision
from anomalyclip.datasets import DatasetSpec, get_dataset
from anomalyclip.environment import provenance
from anomalyclip.errors import AnomalyError
from anomalyclip.extract.preprocess import preprocessing_attrs
from anomalyclip.interop.safe_pickle import load_torch_file
from anomalyclip.model import AnomalyCLIP, ModelConfig
from anomalyclip.runs import build_network, load_model, run_inputs, save_run
from anomalyclip.train.config import TrainConfig, resolve_config

log = logging.getLogger(__name__)

NET = "net."
TEXT = "prompt_learner.text_encoder."
LIGHTNING_VERSION = "1.8.3"  # what the published checkpoints were written with


# -- key mapping -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Rule:
    """One authors' tensor (name without ``net.``) and the tensor(s) of ours it becomes.

    ``kind``: ``copy``; ``qkv`` (rows split in three, q, k, v); ``transpose`` (2-D).
    """

    authors: str
    ours: tuple[str, ...]
    kind: str = "copy"
    optional: bool = False

    def to_ours(self, t: torch.Tensor) -> list[torch.Tensor]:
        if self.kind == "qkv":
            return [c.clone() for c in t.chunk(3, dim=0)]
        if self.kind == "transpose":
            return [t.T.contiguous()]
        return [t]

    def to_authors(self, ts: list[torch.Tensor]) -> torch.Tensor:
        if self.kind == "qkv":
            return torch.cat(ts, dim=0)
        if self.kind == "transpose":
            return ts[0].T.contiguous()
        return ts[0]

    def authors_shape(self, shapes: list[tuple[int, ...]]) -> tuple[int, ...]:
        if self.kind == "qkv":
            return (3 * shapes[0][0], *shapes[0][1:])
        if self.kind == "transpose":
            return tuple(reversed(shapes[0]))
        return tuple(shapes[0])


def _residual_block_rules(src: str, dst: str) -> list[Rule]:
    """OpenAI ``ResidualAttentionBlock`` ``src`` -> HF ``CLIPEncoderLayer`` ``dst``."""
    rules = [
        Rule(
            f"{src}.attn.in_proj_{p}", tuple(f"{dst}.self_attn.{x}_proj.{p}" for x in "qkv"), "qkv"
        )
        for p in ("weight", "bias")
    ]
    renames = {
        "attn.out_proj": "self_attn.out_proj",
        "ln_1": "layer_norm1",
        "mlp.c_fc": "mlp.fc1",
        "mlp.c_proj": "mlp.fc2",
        "ln_2": "layer_norm2",
    }
    for a, h in renames.items():
        rules += [Rule(f"{src}.{a}.{p}", (f"{dst}.{h}.{p}",)) for p in ("weight", "bias")]
    return rules


def text_rules(layers: int) -> list[Rule]:
    """The text tower (minus the token embedding, saved elsewhere), in the authors' order."""
    emb = f"{TEXT}text_model.embeddings"
    rules = [
        Rule("text_encoder.positional_embedding", (f"{emb}.position_embedding.weight",)),
        Rule("text_encoder.text_projection", (f"{TEXT}text_projection.weight",), "transpose"),
    ]
    for i in range(layers):
        rules += _residual_block_rules(
            f"text_encoder.transformer.resblocks.{i}", f"{TEXT}text_model.encoder.layers.{i}"
        )
    rules += [
        Rule(f"text_encoder.ln_final.{p}", (f"{TEXT}text_model.final_layer_norm.{p}",))
        for p in ("weight", "bias")
    ]
    return rules


def vision_rules(layers: int) -> list[Rule]:
    """The image tower, authors' ``image_encoder.*`` <-> HF ``CLIPVisionModelWithProjection``."""
    emb = "vision_model.embeddings"
    rules = [
        Rule("image_encoder.class_embedding", (f"{emb}.class_embedding",)),
        Rule("image_encoder.positional_embedding", (f"{emb}.position_embedding.weight",)),
        Rule("image_encoder.proj", ("visual_projection.weight",), "transpose"),
        Rule("image_encoder.conv1.weight", (f"{emb}.patch_embedding.weight",)),
    ]
    rules += [
        Rule(f"image_encoder.ln_pre.{p}", (f"vision_model.pre_layrnorm.{p}",))
        for p in ("weight", "bias")
    ]
    for i in range(layers):
        rules += _residual_block_rules(
            f"image_encoder.transformer.resblocks.{i}", f"vision_model.encoder.layers.{i}"
        )
    rules += [
        Rule(f"image_encoder.ln_post.{p}", (f"vision_model.post_layernorm.{p}",))
        for p in ("weight", "bias")
    ]
    return rules


def temporal_rules(depth: int) -> list[Rule]:
    """The axial temporal model and its head (see :mod:`anomalyclip.model.temporal`)."""
    src, dst = "temporal_model.axial_attn", "temporal_model"
    rules = [
        Rule(f"temporal_model.projection.{p}", (f"{dst}.projection.{p}",))
        for p in ("weight", "bias")
    ]
    rules += [
        Rule(f"{src}.pos_emb.param_0", (f"{dst}.pos_emb_n",)),
        Rule(f"{src}.pos_emb.param_1", (f"{dst}.pos_emb_l",)),
    ]
    attn = ["fn.to_q.weight", "fn.to_kv.weight", "fn.to_out.weight", "fn.to_out.bias"]
    attn += ["norm.weight", "norm.bias"]
    ff = ["0.g", "0.b", "1.weight", "1.bias", "3.weight", "3.bias"]
    for d in range(depth):
        a, b = 2 * d, 2 * d + 1  # attention coupling, convolution coupling
        for branch in "fg":
            rules += [
                Rule(f"{src}.layers.blocks.{a}.{branch}.net.fn.{n}",
                     (f"{dst}.blocks.{a}.{branch}.{n.removeprefix('fn.')}",))
                for n in attn
            ]  # fmt: skip
        for branch in "fg":
            rules += [
                Rule(f"{src}.layers.blocks.{b}.{branch}.net.{n}",
                     (f"{dst}.blocks.{b}.{branch}.net.{n}",))
                for n in ff
            ]  # fmt: skip
    rules += [
        Rule(f"temporal_model.classifier.{m}.{p}", (f"{dst}.classifier.{m}.{p}",))
        for m in ("layer_norm", "linear")
        for p in ("weight", "bias")
    ]
    return rules


def model_rules(cfg: ModelConfig, text_layers: int) -> list[Rule]:
    """Every tensor of ours but the centroid, in the order the authors' state dict saves them."""
    bn = "selector_model.bn_layer"
    return [
        Rule("prompt_learner.ctx", ("prompt_learner.ctx",)),
        *text_rules(text_layers),
        Rule("token_embedding.weight", (f"{TEXT}text_model.embeddings.token_embedding.weight",)),
        Rule(f"{bn}.running_mean", (f"{bn}.running_mean",)),
        Rule(f"{bn}.running_var", (f"{bn}.running_var",)),
        Rule(f"{bn}.num_batches_tracked", (f"{bn}.num_batches_tracked",), optional=True),
        *temporal_rules(cfg.depth),
    ]


# -- reading the authors' files --------------------------------------------------------------
@dataclass
class AuthorsCheckpoint:
    """The parts of a ``last.ckpt`` this project uses: tensors and a few plain integers."""

    path: Path
    state: dict[str, torch.Tensor]  # ``net.`` stripped
    epoch: int
    global_step: int
    num_classes: int | None  # hyper_parameters.num_classes
    normal_id: int | None  # datamodule_hyper_parameters.normal_id
    lightning_version: str | None
    locations: set[str]

    def need(self, key: str, ndim: int | None = None) -> torch.Tensor:
        t = self.state.get(key)
        if t is None:
            raise AnomalyError(f"{self.path}: key {NET}{key} is missing")
        if not isinstance(t, torch.Tensor):
            raise AnomalyError(f"{self.path}: key {NET}{key} is not a tensor")
        if ndim is not None and t.dim() != ndim:
            raise AnomalyError(
                f"{self.path}: key {NET}{key} has shape {_fmt(t.shape)}, expected {ndim} dims"
            )
        return t


def _fmt(shape: Any) -> str:
    return "x".join(str(s) for s in shape) or "scalar"


def _int(d: Any, key: str) -> int | None:
    v = d.get(key) if isinstance(d, dict) else None
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def read_authors_checkpoint(path: str | Path) -> AuthorsCheckpoint:
    """Load a published ``last.ckpt`` safely (:mod:`.safe_pickle`); keep only its tensors."""
    path = Path(path)
    archive = load_torch_file(path)
    obj = archive.obj
    sd = obj.get("state_dict") if isinstance(obj, dict) else None
    if not isinstance(sd, dict):
        raise AnomalyError(f"{path}: not a PyTorch Lightning checkpoint (no state_dict)")
    state = {
        k.removeprefix(NET): v for k, v in sd.items() if isinstance(k, str) and k.startswith(NET)
    }
    if not state:
        raise AnomalyError(f"{path}: state_dict has no '{NET}*' keys; not an AnomalyCLIP model")
    version = obj.get("pytorch-lightning_version")
    return AuthorsCheckpoint(
        path=path,
        state=state,
        epoch=_int(obj, "epoch") or 0,
        global_step=_int(obj, "global_step") or 0,
        num_classes=_int(obj.get("hyper_parameters"), "num_classes"),
        normal_id=_int(obj.get("datamodule_hyper_parameters"), "normal_id"),
        lightning_version=version if isinstance(version, str) else None,
        locations=archive.locations,
    )


def read_centroid(path: str | Path, dim: int) -> torch.Tensor:
    """``ncentroid.pt``: a saved (D,) tensor, usually a CUDA one; read on the CPU, float32."""
    obj = load_torch_file(path).obj
    if not isinstance(obj, torch.Tensor) or tuple(obj.shape) != (dim,):
        what = _fmt(obj.shape) if isinstance(obj, torch.Tensor) else type(obj).__name__
        raise AnomalyError(f"{path}: expected a centroid tensor of shape {dim}, found {what}")
    if not obj.is_floating_point() or not torch.isfinite(obj).all():
        raise AnomalyError(f"{path}: the centroid is not a finite floating-point vector")
    return obj.float().clone()


def _block_indices(state: dict[str, torch.Tensor], pattern: str) -> list[int]:
    rx = re.compile(pattern)
    return sorted({int(m.group(1)) for k in state if (m := rx.match(k))})


def text_layers(ck: AuthorsCheckpoint) -> int:
    found = _block_indices(ck.state, r"text_encoder\.transformer\.resblocks\.(\d+)\.")
    if not found or found != list(range(len(found))):
        raise AnomalyError(f"{ck.path}: no text_encoder.transformer.resblocks.0..N keys")
    return len(found)


def infer_config(ck: AuthorsCheckpoint, spec: DatasetSpec) -> tuple[ModelConfig, TrainConfig]:
    """The network's shape, read from the checkpoint's tensors and checked against ``spec``."""
    p = ck.path
    num_classes, n_ctx, _ = ck.need("prompt_learner.ctx", 3).shape
    feature_dim = ck.need("text_encoder.text_projection", 2).shape[1]
    emb_dim, in_dim = ck.need("temporal_model.projection.weight", 2).shape
    pos_n = ck.need("temporal_model.axial_attn.pos_emb.param_0", 4).shape  # (1, E, N, 1)
    pos_l = ck.need("temporal_model.axial_attn.pos_emb.param_1", 4).shape  # (1, E, 1, L)
    num_anomaly = ck.need("selector_model.bn_layer.running_mean", 1).shape[0]
    blocks = _block_indices(ck.state, r"temporal_model\.axial_attn\.layers\.blocks\.(\d+)\.")
    if not blocks or blocks != list(range(len(blocks))) or len(blocks) % 2:
        raise AnomalyError(
            f"{p}: temporal_model.axial_attn.layers.blocks.* should number 2 per layer, "
            f"found indices {blocks}"
        )
    if num_classes != spec.num_classes or ck.num_classes not in (None, spec.num_classes):
        raise AnomalyError(
            f"{p}: {NET}prompt_learner.ctx has {num_classes} classes, dataset {spec.name!r} "
            f"has {spec.num_classes}"
        )
    if num_anomaly != num_classes - 1:
        raise AnomalyError(
            f"{p}: {NET}selector_model.bn_layer.running_mean has {num_anomaly} values, "
            f"expected {num_classes - 1} (one per anomaly class)"
        )
    if ck.normal_id not in (None, spec.normal_id):
        raise AnomalyError(
            f"{p}: the checkpoint's normal_id is {ck.normal_id}, dataset {spec.name!r} has "
            f"{spec.normal_id} ({spec.normal})"
        )
    if in_dim not in (feature_dim, feature_dim + num_anomaly):
        raise AnomalyError(
            f"{p}: {NET}temporal_model.projection.weight takes {in_dim} inputs, expected "
            f"{feature_dim} (features) or {feature_dim + num_anomaly} (similarities + features)"
        )
    try:
        tcfg = resolve_config(spec.name).updated(
            emb_dim=emb_dim,
            depth=len(blocks) // 2,
            n_ctx=n_ctx,
            num_segments=pos_n[2],
            seg_length=pos_l[3],
            concat_similarity=in_dim != feature_dim,
        )
        mcfg = tcfg.model.with_data(spec.classes, spec.normal_id, feature_dim)
    except (AnomalyError, ValueError) as exc:
        raise AnomalyError(f"{p}: {exc}") from exc
    return mcfg, tcfg


# -- import ------------------------------------------------------------------------------------
def authors_to_state(
    ck: AuthorsCheckpoint, rules: list[Rule], model: AnomalyCLIP, clip: str
) -> dict[str, torch.Tensor]:
    """Our state dict (centroid aside) from the authors' tensors, every shape checked."""
    expected = model.state_dict()
    out: dict[str, torch.Tensor] = {}
    for rule in rules:
        t = ck.state.get(rule.authors)
        if t is None and rule.optional:
            continue
        t = ck.need(rule.authors)
        want = rule.authors_shape([tuple(expected[k].shape) for k in rule.ours])
        if tuple(t.shape) != want:
            where = f" (the text tower of {clip})" if rule.ours[0].startswith(TEXT) else ""
            raise AnomalyError(
                f"{ck.path}: key {NET}{rule.authors} has shape {_fmt(t.shape)}, expected "
                f"{_fmt(want)}{where}"
            )
        out.update(zip(rule.ours, rule.to_ours(t), strict=True))
    return out


def _authors_prompt_tokens(model: AnomalyCLIP) -> torch.Tensor:
    """(C, 77, D_text) frozen embeddings of the prompts as the authors tokenize them.

    Their tokenizer pads with id 0 where Hugging Face's pads with EOS; the causal text model
    never looks past EOS, so only the stored buffers see the difference.
    """
    pl = model.prompt_learner
    ids = pl.input_ids.clone()
    ids[torch.arange(ids.shape[1]) > pl.eos_position[:, None]] = 0
    return pl.text_encoder.text_model.embeddings.token_embedding.weight[ids]


def check_prompt_tokens(ck: AuthorsCheckpoint, model: AnomalyCLIP, clip: str) -> None:
    """The stored prompt buffers must equal our tokenizer's prompts embedded (up to EOS).

    They are the frozen token embeddings of the authors' tokenized prompts, so a mismatch
    means the tokenizer of ``clip`` splits a class name differently from theirs, and the
    imported model would compute other text features than the published one.
    """
    n, eos = model.cfg.n_ctx, model.prompt_learner.eos_position
    tokens = _authors_prompt_tokens(model)  # (C, 77, D)
    for key, ours, positions in (
        ("prompt_learner.token_prefix", tokens[:, :1], torch.arange(1)),
        ("prompt_learner.token_suffix", tokens[:, 1 + n :], torch.arange(1 + n, tokens.shape[1])),
    ):
        if key not in ck.state:
            continue
        stored = ck.need(key, 3)
        if stored.shape != ours.shape:
            raise AnomalyError(
                f"{ck.path}: key {NET}{key} has shape {_fmt(stored.shape)}, expected "
                f"{_fmt(ours.shape)}"
            )
        live = positions[None, :] <= eos[:, None]  # (C, P): positions up to EOS
        differs = ((stored != ours).any(-1) & live).any(-1)  # (C,)
        if differs.any():
            name = model.cfg.classes[int(differs.nonzero()[0])]
            raise AnomalyError(
                f"{ck.path}: {NET}{key} differs from the prompt of class {name!r} as the "
                f"tokenizer of {clip} gives it; use the CLIP the checkpoint was trained with"
            )


def _check_text_heads(model: AnomalyCLIP, clip: str) -> None:
    cfg = model.prompt_learner.text_encoder.config
    if cfg.hidden_size % 64 or cfg.num_attention_heads != cfg.hidden_size // 64:
        raise AnomalyError(
            f"{clip}: its text tower has {cfg.num_attention_heads} heads for width "
            f"{cfg.hidden_size}; OpenAI's CLIP (the authors') has width / 64"
        )


def _centroid_from_store(features: str | Path, spec: DatasetSpec) -> torch.Tensor:
    from anomalyclip.store import open_store
    from anomalyclip.train.data import TrainingSet, centroid_sums

    with open_store(features) as store:
        if store.dataset != spec.name:
            raise AnomalyError(f"{features}: store holds {store.dataset!r}, not {spec.name!r}")
        total, count = centroid_sums(store, TrainingSet.from_store(store).normal)
    if not count:
        raise AnomalyError(f"{features}: no frames to compute the normal centroid from")
    return (total / count).float()


def _decision_from_store(model: AnomalyCLIP, features: str | Path, rule: str) -> dict[str, Any]:
    """Calibration for an imported model: the authors trained on every normal training
    video, so none is held out; the threshold comes from all of them, which the model has
    seen (on new normal video it raises somewhat more alarms than the rule says)."""
    from anomalyclip.store import open_store
    from anomalyclip.thresholds import ThresholdRule, choose_threshold
    from anomalyclip.train.calibration import calibrate

    cfg = model.cfg
    with open_store(features) as store:
        normal = [r for r in store.records(split="train") if r.label == cfg.classes[cfg.normal_id]]
        if not normal:
            log.warning("%s: no normal training videos, so no decision threshold", features)
            return {"calibration": None, "threshold": None}
        calib = calibrate(model, store, normal)
    calib["source"] = f"normal training videos of {features} (seen in training)"
    parsed = ThresholdRule.parse(rule)
    threshold = choose_threshold(parsed, calib).to_dict() if not parsed.needs_labels else None
    return {"calibration": calib, "threshold": threshold}


def _store_info(features: str | Path | None) -> dict[str, Any]:
    if features is None:
        return {"location": None, "backbone": None}
    from anomalyclip.store import open_store

    with open_store(features) as store:
        return {"location": str(features), "backbone": store.meta.backbone}


def import_checkpoint(
    ckpt: str | Path,
    dataset: str,
    out: str | Path,
    clip: str | Path = DEFAULT_CLIP,
    centroid: str | Path | None = None,
    features: str | Path | None = None,
) -> Path:
    """Turn a published ``last.ckpt`` into a run directory that eval/predict/train take.

    The run keeps the checkpoint's own text tower; ``clip`` supplies the tokenizer and the
    tower's architecture (and, for ``predict``, the image tower). The centroid comes from
    ``centroid`` (the authors' ``ncentroid.pt``) or else from the normal training videos of
    the store ``features``.
    """
    from anomalyclip.train import make_optimizer

    spec = get_dataset(dataset)
    if centroid is None and features is None:
        raise AnomalyError(
            f"{ckpt}: the normal centroid is needed; pass --centroid ncentroid.pt or "
            "--features STORE (its normal training videos)"
        )
    ck = read_authors_checkpoint(ckpt)
    mcfg, tcfg = infer_config(ck, spec)
    rules = model_rules(mcfg, text_layers(ck))
    m = read_centroid(centroid, mcfg.feature_dim) if centroid is not None else None

    model = build_network(mcfg, clip)
    _check_text_heads(model, str(clip))
    state = authors_to_state(ck, rules, model, str(clip))
    result = model.load_state_dict(state, strict=False)
    if result.unexpected_keys or set(result.missing_keys) != {"centroid"}:
        raise RuntimeError(f"key mapping incomplete: {result}")  # a bug here, not a bad file
    check_prompt_tokens(ck, model, str(clip))
    model.set_centroid(m if m is not None else _centroid_from_store(features, spec))

    config = {
        "dataset": spec.name,
        "clip": str(clip),
        "model": mcfg.to_dict(),
        "train": tcfg.to_dict(),
        "store": _store_info(features),
        # trained on the authors' features: predict and watch make theirs the same way
        "inputs": run_inputs(features, clip, out, None, preprocessing_attrs("authors")),
        "provenance": provenance(),
        "metrics": None,
        "history": [],
        "imported": {
            "checkpoint": str(Path(ckpt).resolve()),
            "centroid": str(Path(centroid).resolve()) if centroid else f"computed from {features}",
            "lightning_version": ck.lightning_version,
            "epoch": ck.epoch,
            "global_step": ck.global_step,
            "saved_on": sorted(ck.locations),
        },
    }
    if features is not None:
        config.update(_decision_from_store(model, features, tcfg.threshold_rule))
    # fresh AdamW moments: ``--resume`` continues from the authors' epoch with new statistics
    optimizer = make_optimizer(model, tcfg)
    # Lightning's "epoch" is the last epoch's 0-based index; a run counts epochs completed
    run = save_run(out, model, config, ck.epoch + 1, optimizer, with_text_tower=True)
    log.debug("imported %s (%s, epoch %d) into %s", ckpt, spec.name, ck.epoch, run)
    return run


# -- export ------------------------------------------------------------------------------------
def model_to_authors(
    model: AnomalyCLIP, vision: torch.nn.Module | None = None
) -> OrderedDict[str, torch.Tensor]:
    """The authors' ``state_dict`` (``net.*`` names, their shapes and order) of ``model``."""
    ours = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    layers = model.prompt_learner.text_encoder.config.num_hidden_layers
    rules = model_rules(model.cfg, layers)
    tokens = _authors_prompt_tokens(model).detach().cpu()  # (C, 77, D)
    n = model.cfg.n_ctx

    def emit(rule_list: list[Rule], source: dict[str, torch.Tensor]) -> None:
        for r in rule_list:
            sd[NET + r.authors] = r.to_authors([source[k] for k in r.ours]).contiguous()

    sd: OrderedDict[str, torch.Tensor] = OrderedDict()
    emit(rules[:1], ours)  # ctx
    sd[f"{NET}prompt_learner.token_prefix"] = tokens[:, :1].contiguous()
    sd[f"{NET}prompt_learner.token_suffix"] = tokens[:, 1 + n :].contiguous()
    text_end = 1 + len(text_rules(layers))
    emit(rules[1:text_end], ours)
    if vision is not None:
        vstate = {k: v.detach().cpu() for k, v in vision.state_dict().items()}
        emit(vision_rules(vision.config.num_hidden_layers), vstate)
    emit(rules[text_end : text_end + 1], ours)  # token embedding
    # unused by the model, present in the authors' module: their strict load wants it
    sd[f"{NET}selector_model.logit_scale"] = torch.tensor(math.log(1 / 0.07))
    emit(rules[text_end + 1 :], ours)
    return sd


def export_checkpoint(run: str | Path, out: str | Path, clip: str | Path | None = None) -> Path:
    """Write a run as a checkpoint in the authors' layout, ``ncentroid.pt`` beside it.

    The image tower is included only when ``clip`` is given (from that CLIP); without it the
    file serves the authors' feature-based code paths, and this importer.
    """
    model, config = load_model(run, clip)
    vision = load_vision(clip) if clip is not None else None
    spec = get_dataset(config["dataset"])
    ckpt = {
        "epoch": max(0, int(config.get("epoch", 0)) - 1),  # Lightning's 0-based index
        "global_step": int(config.get("imported", {}).get("global_step", 0)),
        "pytorch-lightning_version": LIGHTNING_VERSION,
        "state_dict": model_to_authors(model, vision),
        "loops": {},
        "callbacks": {},
        "optimizer_states": [],
        "lr_schedulers": [],
        "hparams_name": "kwargs",
        "hyper_parameters": {"num_classes": spec.num_classes},
        "datamodule_hparams_name": "kwargs",
        "datamodule_hyper_parameters": {
            "normal_id": spec.normal_id,
            "num_segments": model.cfg.num_segments,
            "seg_length": model.cfg.seg_length,
        },
    }
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for path, obj in ((out, ckpt), (out.with_name("ncentroid.pt"), model.centroid.detach().cpu())):
        tmp = path.with_name(f".{path.name}.tmp")
        torch.save(obj, tmp)
        os.replace(tmp, path)
    return out
