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


@dataclasses.dataclass
class _Run:
    """One training run as it moves through its epochs: the parts :func:`_init` builds (fixed
    for the run) and the state each epoch leaves (what a resume restores)."""

    cfg: TrainConfig
    d: distributed.Dist
    store: FeatureStore
    dataset: str
    data: TrainingSet  # the trained videos: the held-out normal ones are not in it
    held_out: list[VideoRecord]  # normal videos kept aside to calibrate the threshold
    model: AnomalyCLIP
    optimizer: torch.optim.AdamW
    clip: str | Path
    positions: Any = None  # this process's rows of each global batch (None: one process)
    net: torch.nn.Module | None = None  # the model, wrapped for DDP under torchrun
    gather: Callable | None = None  # the loss's all-gather under torchrun
    config: dict[str, Any] = dataclasses.field(default_factory=dict)  # config.json's fixed part
    # the state
    start_epoch: int = 0  # epochs completed before this call
    metrics: dict[str, Any] | None = None  # the last test-split metrics
    history: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # one per epoch
    decision: dict[str, Any] = dataclasses.field(default_factory=dict)  # calibration, threshold


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
        run = _init(features, cfg, clip, d)
        if resume:
            _resume(run, out)
        else:
            _set_centroid(run, features)
        _place(run)
        run.config = _run_config(run, features, out)
        has_test = evaluate is not None and bool(run.store.records(split="test"))
        end = cfg.epochs if stop_after is None else min(cfg.epochs, run.start_epoch + stop_after)
        for epoch in range(run.start_epoch, end):
            epoch_log = _run_epoch(run, epoch, progress and d.is_main)
            evaluate_now = cfg.eval_every and (
                (epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs
            )
            if d.is_main and has_test and evaluate_now:
                _evaluate(run, evaluate, epoch_log)
            run.history.append(epoch_log)
            _save(run, out, epoch + 1, last=epoch + 1 == end)
        return _finish(run, ran=end > run.start_epoch)
    finally:
        distributed.teardown(d)


def _init(features: str | Path, cfg: TrainConfig, clip: str | None, d: distributed.Dist) -> _Run:
    """Open the store, hold out the calibration videos, build the seeded network and its
    optimizer; refuse too few videos before any work."""
    store = open_store(features)
    spec = get_dataset(store.dataset)
    data = TrainingSet.from_store(store)
    trained_normal, held_out = split_held_out(data.normal, cfg.calibration_share, cfg.seed)
    data = dataclasses.replace(data, normal=trained_normal)
    try:
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
    return _Run(cfg, d, store, spec.name, data, held_out, model, optimizer, clip, positions)


def _resume(run: _Run, out: str | Path) -> None:
    """Continue the run in ``out``: its weights, optimizer, random state, metrics, history."""
    state = load_run(out, with_optimizer=True)
    if state.config.dataset != run.dataset:
        raise AnomalyError(
            f"{out}: checkpoint is for dataset {state.config.dataset!r}, "
            f"the store holds {run.dataset!r}"
        )
    if state.config.model.to_dict() != run.model.cfg.to_dict():
        raise AnomalyError(f"{out}: checkpoint model configuration differs from this run's")
    load_model_state(run.model, state.weights, Path(out) / "model.safetensors")
    if state.optimizer is None:
        raise AnomalyError(f"{out}: no optimizer state to resume from")
    run.optimizer.load_state_dict(state.optimizer)
    if state.rng is not None:
        torch.set_rng_state(state.rng)
    # epochs completed; runs of format version 1 stored the 0-based index of the last one
    run.start_epoch = state.config.epoch + (state.config.version < 2)
    run.metrics = state.config.metrics
    run.history = list(state.config.history)
    log.info("resuming %s at epoch %d", out, run.start_epoch + 1)


def _set_centroid(run: _Run, features: str | Path) -> None:
    """A fresh run's normal centroid: the mean of the trained normal videos' frames (summed
    over every process's share under torchrun)."""
    d = run.d
    total, count = centroid_sums(run.store, run.data.normal[d.rank :: d.world])
    total = distributed.all_sum(total, d)
    count = int(distributed.all_sum(torch.tensor([count], dtype=torch.float64), d).item())
    if not count:
        raise AnomalyError(f"{features}: no frames to compute the normal centroid from")
    run.model.set_centroid((total / count).float())


def _place(run: _Run) -> None:
    """The model on its device; wrapped for DistributedDataParallel under torchrun."""
    device = run.d.device
    run.model.to(device)
    run.net = run.model
    if run.d.enabled:
        from torch.nn.parallel import DistributedDataParallel

        ids = [device] if device.type == "cuda" else None
        run.net = DistributedDataParallel(run.model, device_ids=ids)
        run.gather = distributed.gather_cat


def _run_config(run: _Run, features: str | Path, out: str | Path) -> dict[str, Any]:
    """What every checkpoint's ``config.json`` says besides its metrics and history."""
    meta = run.store.meta
    return {
        "dataset": run.dataset,
        "clip": str(run.clip),
        "model": run.model.cfg.to_dict(),
        "train": run.cfg.to_dict(),
        "store": {
            "location": str(features),
            "backbone": meta.backbone,
            "sampling": meta.sampling,  # what live scoring samples at
        },
        "inputs": run_inputs(features, run.clip, out, meta, meta.preprocessing or {}),
        "provenance": provenance(),
    }


def _run_epoch(run: _Run, epoch: int, progress: bool) -> dict[str, Any]:
    """One epoch (0-based ``epoch``) of steps; its log: the mean loss terms, the first step's
    loss, the lr, the seconds."""
    cfg, d, model, mcfg, device = run.cfg, run.d, run.model, run.model.cfg, run.d.device
    model.train()
    factor = warmup_cosine(cfg.warmup_epochs, cfg.epochs)(epoch)
    for group in run.optimizer.param_groups:  # the schedule is a function of the epoch alone
        group["lr"] = group["base_lr"] * factor
    plan = epoch_plan(run.data, cfg.batch_size, cfg.seed, epoch)
    gen = torch.Generator().manual_seed(cfg.seed * 1000 + epoch)
    sampler = SegmentSampler(mcfg.num_segments, mcfg.seg_length, cfg.sampler)
    batches = iterate_batches(
        run.store, run.data, plan, sampler, cfg.seed, epoch, cfg.workers, positions=run.positions,
    )  # fmt: skip
    desc = f"epoch {epoch + 1}/{cfg.epochs}"
    bar = progress_bar(batches, total=len(plan), desc=desc, unit="step", enabled=progress)
    t0, sums = time.perf_counter(), {}
    for batch in bar:
        # one global dropout mask, each process taking its videos' rows
        keep = segment_keep_mask(cfg.batch_size, mcfg.num_segments, mcfg.segment_dropout, gen)
        keep = keep if run.positions is None else keep[run.positions]
        out_ = run.net(batch.features.to(device))
        loss, terms = model.loss(
            out_, batch.labels.to(device), keep=keep.to(device), gather=run.gather
        )
        if not torch.isfinite(loss):
            raise AnomalyError(f"non-finite loss at epoch {epoch + 1}: {terms}")
        run.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        run.optimizer.step()
        values = torch.stack([loss.detach(), *(v.detach() for v in terms.values())]).cpu()
        values = distributed.all_sum(values.double(), d) / d.world
        for k, v in zip(["loss", *terms], values.tolist(), strict=True):
            sums.setdefault(k, []).append(v)
        bar.set_postfix(loss=f"{values[0].item():.4f}")
    epoch_log: dict[str, Any] = {k: sum(v) / len(v) for k, v in sums.items()}
    epoch_log.update(
        epoch=epoch + 1,
        first_step_loss=sums["loss"][0],
        lr=run.optimizer.param_groups[0]["lr"],
        seconds=time.perf_counter() - t0,
    )
    return epoch_log


def _evaluate(run: _Run, evaluate: Evaluator, epoch_log: dict[str, Any]) -> None:
    """The test-split metrics of the model now, kept as the run's and added to the epoch's log."""
    found = evaluate(run.model, run.store, run.d.device)
    if found:
        run.metrics = found
        epoch_log[found["primary"]] = found["primary_value"]
        log.info(
            "epoch %d: loss %.4f, test %s %.4f",
            epoch_log["epoch"],
            epoch_log["loss"],
            found["primary"],
            found["primary_value"],
        )


def _save(run: _Run, out: str | Path, epochs: int, last: bool) -> None:
    """The checkpoint after ``epochs`` epochs (the main process writes it); the last one also
    holds the run's decision record."""
    d = run.d
    if d.is_main and last:  # the weights this run ends with
        run.decision = decision_record(
            run.model, run.store, run.held_out or run.data.normal, run.cfg, d.device
        )
        if not run.held_out and run.decision["calibration"]:
            run.decision["calibration"]["source"] = SEEN_SOURCE
    if d.is_main:
        config = {
            **run.config,
            "metrics": run.metrics,
            "history": run.history,
            "world_size": d.world,
        }
        if last:
            config.update(run.decision)
        save_run(out, run.model, config, epochs, run.optimizer)  # epochs completed
    distributed.barrier(d)


def _finish(run: _Run, ran: bool) -> dict[str, Any]:
    """Close the store; the run's config (with its decision record where this call trained)."""
    run.store.close()
    result = {**run.config, "metrics": run.metrics, "history": run.history}
    return {**result, **run.decision} if run.d.is_main and ran else result


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
