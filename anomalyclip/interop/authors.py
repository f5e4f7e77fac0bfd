"""The AnomalyCLIP authors' Lightning checkpoints <-> this project's run directories.

The published ``last.ckpt`` files hold the authors' ``net.*`` state dict (every key, shape and
dtype is listed in ``tests/fixtures/authors/*_state_dict.tsv``): an OpenAI-layout CLIP text
tower, the prompt contexts, the selector's BatchNorm statistics and the axial temporal model.
Their names map one to one onto this model's (:mod:`.authors_keys`: one rule per tensor, three
real transforms); :mod:`.authors_checkpoint` reads the files.

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
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch

from anomalyclip.backbone import DEFAULT_CLIP, load_vision
from anomalyclip.datasets import DatasetSpec, get_dataset
from anomalyclip.environment import provenance
from anomalyclip.errors import AnomalyError
from anomalyclip.extract.preprocess import preprocessing_attrs
from anomalyclip.interop.authors_checkpoint import (
    AuthorsCheckpoint,
    fmt_shape,
    infer_config,
    read_authors_checkpoint,
    read_centroid,
    text_layers,
)
from anomalyclip.interop.authors_keys import NET, TEXT, Rule, model_rules, text_rules, vision_rules
from anomalyclip.model import AnomalyCLIP, ModelConfig
from anomalyclip.runs import build_network, load_model, run_inputs, save_run

log = logging.getLogger(__name__)

LIGHTNING_VERSION = "1.8.3"  # what the published checkpoints were written with


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
                f"{ck.path}: key {NET}{rule.authors} has shape {fmt_shape(t.shape)}, expected "
                f"{fmt_shape(want)}{where}"
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
                f"{ck.path}: key {NET}{key} has shape {fmt_shape(stored.shape)}, expected "
                f"{fmt_shape(ours.shape)}"
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


def _authors_model(
    ck: AuthorsCheckpoint, rules: list[Rule], mcfg: ModelConfig, clip: str | Path
) -> AnomalyCLIP:
    """The network of ``mcfg`` on the text tower of ``clip``, holding the checkpoint's tensors
    (all but the centroid), its text heads and prompt buffers checked."""
    model = build_network(mcfg, clip)
    _check_text_heads(model, str(clip))
    state = authors_to_state(ck, rules, model, str(clip))
    result = model.load_state_dict(state, strict=False)
    if result.unexpected_keys or set(result.missing_keys) != {"centroid"}:
        raise RuntimeError(f"key mapping incomplete: {result}")  # a bug here, not a bad file
    check_prompt_tokens(ck, model, str(clip))
    return model


def _imported_record(
    ckpt: str | Path,
    ck: AuthorsCheckpoint,
    centroid: str | Path | None,
    features: str | Path | None,
) -> dict[str, Any]:
    """``config.json``'s ``imported``: where the weights and the centroid came from."""
    return {
        "checkpoint": str(Path(ckpt).resolve()),
        "centroid": str(Path(centroid).resolve()) if centroid else f"computed from {features}",
        "lightning_version": ck.lightning_version,
        "epoch": ck.epoch,
        "global_step": ck.global_step,
        "saved_on": sorted(ck.locations),
    }


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

    model = _authors_model(ck, rules, mcfg, clip)
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
        "imported": _imported_record(ckpt, ck, centroid, features),
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
    spec = get_dataset(config.dataset)
    ckpt = {
        "epoch": max(0, config.epoch - 1),  # Lightning's 0-based index
        "global_step": int((config.imported or {}).get("global_step", 0)),
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
