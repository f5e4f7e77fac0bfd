"""The training loop: MIL top-k training on stored features, with checkpoints and resume."""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from anomalyclip import locations
from anomalyclip.datasets import get_dataset
from anomalyclip.environment import provenance
from anomalyclip.errors import AnomalyError
from anomalyclip.model import AnomalyCLIP
from anomalyclip.model.loss import segment_keep_mask
from anomalyclip.progress import bar as progress_bar
from anomalyclip.runs import build_network, load_model_state, load_run, run_inputs, save_run
from anomalyclip.store import DEFAULT_DIM, FeatureStore, VideoRecord, open_store
from anomalyclip.thresholds import ThresholdRule, choose_threshold
from anomalyclip.train import distributed
from anomalyclip.train.calibration import SEEN_SOURCE, calibrate, split_held_out
from anomalyclip.train.config import TrainConfig
from anomalyclip.train.data import (
    SegmentSampler,
    TrainingSet,
    centroid_sums,
    epoch_plan,
    iterate_batches,
    local_positions,
)

log = logging.getLogger(__name__)

# How training measures a model while it trains: the test-split metrics of the model on the
# store (with "primary" and "primary_value"), or None when the store has no test videos.
# Callers above both layers pass anomalyclip.evaluate's metrics_on_test_split; training never
# imports evaluation.
Evaluator = Callable[[AnomalyCLIP, FeatureStore, torch.device], "dict[str, Any] | None"]


def warmup_cosine(warmup_epochs: int, total_epochs: int):
    """lr multiplier of each (0-based) epoch, as the published schedule.

    Warm-up: ``epoch / warmup_epochs``, so epoch 0 runs at lr 0: its steps move no weight
    but still fill AdamW's moment estimates. Then a cosine from 1 at epoch ``warmup_epochs``
    towards 0 at ``total_epochs``.
    """

    def factor(epoch: int) -> float:
        if epoch < warmup_epochs:
            return epoch / warmup_epochs
        span = max(1, total_epochs - warmup_epochs)
        progress = min(1.0, (epoch - warmup_epochs) / span)
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def make_optimizer(model: AnomalyCLIP, cfg: TrainConfig) -> torch.optim.AdamW:
    groups = []
    for name, params in model.trainable_parameters().items():
        ratio = cfg.lr_ratios.get(name, 1.0)
        base = cfg.lr * ratio
        groups.append({"params": list(params), "lr": base, "base_lr": base, "name": name})
    return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)


def _seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % (2**32))


def train(
    features: str | Path,
    out: str | Path,
    cfg: TrainConfig,
    clip: str | None = None,
    resume: bool = False,
    progress: bool = True,
    stop_after: int | None = None,
    evaluate: Evaluator | None = None,
) -> dict[str, Any]:
    """Train AnomalyCLIP on the store at ``features``; write the run to ``out``.

    ``stop_after`` ends the run after that many epochs of the schedule (a time-boxed job);
    ``resume`` continues it, giving the same weights as an uninterrupted run. ``evaluate``
    measures the model on the store's test split every ``cfg.eval_every`` epochs (None:
    no metrics are recorded).

    Returns the config written with the last checkpoint (including the last metrics).
    """
    d = distributed.setup(cfg.device)
    try:
        show = progress and d.is_main
        return _train(features, out, cfg, clip, resume, show, stop_after, d, evaluate)
    finally:
        distributed.teardown(d)


def _train(
    features: str | Path,
    out: str | Path,
    cfg: TrainConfig,
    clip: str | None,
    resume: bool,
    progress: bool,
    stop_after: int | None,
    d: distributed.Dist,
    evaluate: Evaluator | None,
) -> dict[str, Any]:
    device = d.device
    store = open_store(features)
    spec = get_dataset(store.dataset)
    data = TrainingSet.from_store(store)
    trained_normal, held_out = split_held_out(data.normal, cfg.calibration_share, cfg.seed)
    data = dataclasses.replace(data, normal=trained_normal)
    try:  # refuse too few videos before any work
        data.steps_per_epoch(cfg.batch_size)
    except AnomalyError as exc:
        if not held_out:
            raise
        raise AnomalyError(
            f"{exc} (after holding out {len(held_out)} normal videos to calibrate the "
            "threshold; --calibration-share 0 keeps them)"
        ) from None
    if not held_out and d.is_main:
        _warn_no_held_out(len(data.normal), cfg)
    meta = store.meta
    dim = meta.dim or DEFAULT_DIM
    clip = clip or locations.store_clip(features, meta.to_attrs())
    positions = local_positions(cfg.batch_size, d.rank, d.world) if d.enabled else None

    _seed_everything(cfg.seed)
    mcfg = cfg.model.with_data(spec.classes, spec.normal_id, dim)
    model = build_network(mcfg, clip, cfg.conv)
    optimizer = make_optimizer(model, cfg)
    start_epoch = 0
    metrics: dict[str, Any] | None = None
    history: list[dict[str, Any]] = []
    if resume:
        state = load_run(out, with_optimizer=True)
        if state.config.get("dataset") != spec.name:
            raise AnomalyError(
                f"{out}: checkpoint is for dataset {state.config.get('dataset')!r}, "
                f"the store holds {spec.name!r}"
            )
        if state.config.get("model") != mcfg.to_dict():
            raise AnomalyError(f"{out}: checkpoint model configuration differs from this run's")
        load_model_state(model, state.weights, Path(out) / "model.safetensors")
        if state.optimizer is None:
            raise AnomalyError(f"{out}: no optimizer state to resume from")
        optimizer.load_state_dict(state.optimizer)
        if state.rng is not None:
            torch.set_rng_state(state.rng)
        # epochs completed; runs of format version 1 stored the 0-based index of the last one
        start_epoch = int(state.config["epoch"]) + (int(state.config.get("version", 1)) < 2)
        metrics = state.config.get("metrics")
        history = list(state.config.get("history", []))
        log.info("resuming %s at epoch %d", out, start_epoch + 1)
    else:
        total, count = centroid_sums(store, data.normal[d.rank :: d.world])
        total = distributed.all_sum(total, d)
        count = int(distributed.all_sum(torch.tensor([count], dtype=torch.float64), d).item())
        if not count:
            raise AnomalyError(f"{features}: no frames to compute the normal centroid from")
        model.set_centroid((total / count).float())
    lr_factor = warmup_cosine(cfg.warmup_epochs, cfg.epochs)
    sampler = SegmentSampler(mcfg.num_segments, mcfg.seg_length, cfg.sampler)
    model.to(device)
    net = model
    gather = None
    if d.enabled:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
        gather = distributed.gather_cat

    run_config = {
        "dataset": spec.name,
        "clip": str(clip),
        "model": mcfg.to_dict(),
        "train": cfg.to_dict(),
        "store": {
            "location": str(features),
            "backbone": meta.backbone,
            "sampling": meta.sampling,  # what live scoring samples at
        },
        "inputs": run_inputs(features, clip, out, meta, meta.preprocessing or {}),
        "provenance": provenance(),
    }
    has_test = evaluate is not None and bool(store.records(split="test"))
    end_epoch = cfg.epochs if stop_after is None else min(cfg.epochs, start_epoch + stop_after)
    for epoch in range(start_epoch, end_epoch):
        model.train()
        for group in optimizer.param_groups:  # the schedule is a function of the epoch alone
            group["lr"] = group["base_lr"] * lr_factor(epoch)
        plan = epoch_plan(data, cfg.batch_size, cfg.seed, epoch)
        gen = torch.Generator().manual_seed(cfg.seed * 1000 + epoch)
        batches = iterate_batches(
            store, data, plan, sampler, cfg.seed, epoch, cfg.workers, positions=positions,
        )  # fmt: skip
        desc = f"epoch {epoch + 1}/{cfg.epochs}"
        bar = progress_bar(batches, total=len(plan), desc=desc, unit="step", enabled=progress)
        t0, sums = time.perf_counter(), {}
        for batch in bar:
            # one global dropout mask, each process taking its videos' rows
            keep = segment_keep_mask(cfg.batch_size, mcfg.num_segments, mcfg.segment_dropout, gen)
            keep = keep if positions is None else keep[positions]
            out_ = net(batch.features.to(device))
            loss, terms = model.loss(
                out_, batch.labels.to(device), keep=keep.to(device), gather=gather
            )
            if not torch.isfinite(loss):
                raise AnomalyError(f"non-finite loss at epoch {epoch + 1}: {terms}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            values = torch.stack([loss.detach(), *(v.detach() for v in terms.values())]).cpu()
            values = distributed.all_sum(values.double(), d) / d.world
            for k, v in zip(["loss", *terms], values.tolist(), strict=True):
                sums.setdefault(k, []).append(v)
            bar.set_postfix(loss=f"{values[0].item():.4f}")
        epoch_log: dict[str, Any] = {k: sum(v) / len(v) for k, v in sums.items()}
        epoch_log.update(
            epoch=epoch + 1,
            first_step_loss=sums["loss"][0],
            lr=optimizer.param_groups[0]["lr"],
            seconds=time.perf_counter() - t0,
        )
        evaluate_now = cfg.eval_every and (
            (epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs
        )
        if d.is_main and has_test and evaluate_now:
            found = evaluate(model, store, device)
            if found:
                metrics = found
                epoch_log[metrics["primary"]] = metrics["primary_value"]
                log.info(
                    "epoch %d: loss %.4f, test %s %.4f",
                    epoch + 1,
                    epoch_log["loss"],
                    metrics["primary"],
                    metrics["primary_value"],
                )
        history.append(epoch_log)
        if d.is_main and epoch + 1 == end_epoch:  # the weights this run ends with
            decision = decision_record(model, store, held_out or data.normal, cfg, device)
            if not held_out and decision["calibration"]:
                decision["calibration"]["source"] = SEEN_SOURCE
        if d.is_main:
            config = {**run_config, "metrics": metrics, "history": history, "world_size": d.world}
            if epoch + 1 == end_epoch:
                config.update(decision)
            save_run(out, model, config, epoch + 1, optimizer)  # epochs completed
        distributed.barrier(d)
    store.close()
    result = {**run_config, "metrics": metrics, "history": history}
    return {**result, **decision} if d.is_main and end_epoch > start_epoch else result


def _warn_no_held_out(normal: int, cfg: TrainConfig) -> None:
    """Say once, before training, that the threshold will come from videos trained on."""
    if ThresholdRule.parse(cfg.threshold_rule).kind != "far":
        return  # fixed@T needs no calibration; youden / best-f1 choose on labelled frames
    why = (
        "--calibration-share 0 holds out no normal video"
        if cfg.calibration_share == 0
        else f"only {normal} normal training video{'s' if normal != 1 else ''}: none can be "
        "held out"
    )
    log.warning(
        "%s, so the %s threshold is set on the normal training videos, which the model has "
        "seen (new normal video will alarm more often than it says); add normal training "
        "videos for an unbiased threshold",
        why,
        cfg.threshold_rule,
    )


def decision_record(
    model: AnomalyCLIP,
    store: FeatureStore,
    held_out: list[VideoRecord],
    cfg: TrainConfig,
    device: torch.device,
) -> dict[str, Any]:
    """What the run keeps to make decisions: the p(A) quantiles of the held-out normal
    videos (the trained normal videos when none could be held out) and the threshold that
    ``cfg.threshold_rule`` picks from them (labelled rules are applied later, by ``eval`` /
    ``predict`` with a validation store)."""
    record: dict[str, Any] = {"calibration": None, "threshold": None}
    if held_out:
        record["calibration"] = calibrate(model, store, held_out, device)
    rule = ThresholdRule.parse(cfg.threshold_rule)
    if rule.kind == "fixed" or (rule.kind == "far" and record["calibration"]):
        record["threshold"] = choose_threshold(rule, record["calibration"]).to_dict()
    elif rule.kind == "far":
        log.warning("no normal training video to set the %s threshold on", rule)
    return record
