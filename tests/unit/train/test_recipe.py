"""Training as the published recipe: segment sampler, epoch length and cycling, warm-up, and
the ground-truth interval convention of each dataset's files.

Every expected value here is written from the rules of the authors' public training code, not
read back from our implementation:

1. sampler: a training video of F frames gives N=32 segments of L=16 consecutive frames. For
   F < N*L the segments are spaced as if the video had N*L frames, d = (N*L - L + 1) // N = 15,
   with offset 0, and frames are read modulo F. For F >= N*L they are spaced d = (F - L + 1)
   // N apart, segment i starting at i*d plus an offset drawn uniformly from [0, d - L + 1]
   (the published code draws one offset per segment).
2. epoch: abnormal and normal loaders of B/2 videos each, shuffled, incomplete batches dropped,
   iterated Lightning ``max_size_cycle`` style: as many steps as the larger loader has full
   batches; the smaller loader starts over (a fresh shuffle) whenever it runs out.
3. learning rate of epoch e: lr * e / w during the w warm-up epochs, then
   lr * (1 + cos(pi * (e - w) / (T - w))) / 2.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from synthetic_stores import D, planted_store
from torch.optim.optimizer import register_optimizer_step_pre_hook

from anomalyclip.datasets import get_dataset, read_ucf_temporal_annotations, read_xd_annotations
from anomalyclip.datasets.demo import read_demo_annotations
from anomalyclip.errors import AnomalyError
from anomalyclip.runs import build_network, load_model
from anomalyclip.runs.checkpoint import load_run
from anomalyclip.store import VideoRecord, open_store
from anomalyclip.train import resolve_config, train
from anomalyclip.train.config import PRESETS
from anomalyclip.train.data import (
    SegmentSampler,
    TrainingSet,
    epoch_plan,
    iterate_batches,
    published_indices,
)
from anomalyclip.train.loop import _seed_everything

N, L = 32, 16

# ------------------------------------------------------------------------------- 1. sampler


@pytest.mark.parametrize("frames", [1, 15, 16, 100, 481, 511])
def test_published_sampler_short_videos_play_in_order_modulo_their_length(frames):
    """Below 512 frames: segment i is frames 15*i .. 15*i + 15, wrapped modulo F; no chance."""
    expected = np.array([[(15 * i + j) % frames for j in range(L)] for i in range(N)])
    for seed in range(5):
        got = published_indices(frames, N, L, np.random.default_rng(seed))
        np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("frames", [512, 513])
def test_published_sampler_at_512_frames_reads_481_distinct_frames(frames):
    """From 512 frames on, d = (F - 15) // 32 = 15 for F = 512 and 513: offsets in [0, 0]."""
    expected = np.array([[15 * i + j for j in range(L)] for i in range(N)])
    for seed in range(5):
        got = published_indices(frames, N, L, np.random.default_rng(seed))
        np.testing.assert_array_equal(got, expected)
    assert len(np.unique(expected)) == 481  # segments share their boundary frame


@pytest.mark.parametrize("frames", [1000, 50_000])
def test_published_sampler_long_videos_spacing_offsets_and_order(frames):
    d = (frames - 15) // 32  # 30 for 1000 frames, 1562 for 50,000
    high = d - 15  # largest offset
    rng = np.random.default_rng(7)
    draws = np.stack([published_indices(frames, N, L, rng) for _ in range(3000)])  # (K, N, L)
    assert draws.shape == (3000, N, L)
    # consecutive frames inside a segment, never wrapped (the last frame is at most 32d < F)
    np.testing.assert_array_equal(
        draws - draws[..., :1], np.broadcast_to(np.arange(L), draws.shape)
    )
    assert draws.max() < frames
    offsets = draws[..., 0] - d * np.arange(N)  # (K, N): start of segment i minus i*d
    assert offsets.min() == 0 and offsets.max() == high  # both ends of [0, d - 15] reached
    # uniform over the d - 14 values: every value drawn, mean at the middle
    assert len(np.unique(offsets)) == high + 1
    assert abs(offsets.mean() - high / 2) < 0.02 * high
    # in order: each segment starts at least 15 frames after the previous one
    assert (np.diff(draws[..., 0], axis=1) >= 15).all()
    # one offset per segment, as the published code draws them, not one per video
    assert (offsets.std(axis=1) > 0).mean() > 0.99
    # a fixed generator gives the indices of the definition, written out segment by segment
    # with that generator's one draw of N offsets in [0, d - 15] (the published code's draw)
    offsets = np.random.default_rng(3).integers(0, high + 1, size=N)
    expected = [[(i * d + int(offsets[i]) + k) % frames for k in range(L)] for i in range(N)]
    got = published_indices(frames, N, L, np.random.default_rng(3))
    assert got.tolist() == expected and len(set(offsets.tolist())) > 1


def test_segment_sampler_names(tmp_path):
    rng = np.random.default_rng(0)
    # uniform: 32 equal spans of 100 frames (3 or 4 frames each, too short for a random
    # start), 16 frames from the start of each, wrapped: one time-stretched pass
    uniform = SegmentSampler(N, L, "uniform")(100, rng)
    starts = np.floor(np.arange(N) * 100 / N).astype(int)
    np.testing.assert_array_equal(uniform, (starts[:, None] + np.arange(L)) % 100)
    np.testing.assert_array_equal(
        SegmentSampler(N, L, "published")(100, rng), published_indices(100, N, L, rng)
    )
    with pytest.raises(AnomalyError, match="unknown sampler 'tsn'.*published, uniform"):
        resolve_config("demo", sampler="tsn")
    for name in PRESETS:
        assert resolve_config(name).sampler == "published"


@pytest.mark.slow
def test_batches_hold_the_rows_the_sampler_names(tmp_path, tiny_clip):
    """The loader reads exactly the store rows at the sampler's indices, each video drawing
    from its own generator seeded by (seed, epoch, batch, position)."""
    cfg = resolve_config("demo", batch_size=4, workers=1, eval_every=0)
    path = planted_store(tmp_path / "s.zarr", tiny_clip, cfg, n_abnormal=3, n_normal=5)
    with open_store(path) as st:
        data = TrainingSet.from_store(st)
        plan = epoch_plan(data, 4, seed=5, epoch=2)
        for rule in ("published", "uniform"):
            sampler = SegmentSampler(N, L, rule)
            batches = list(iterate_batches(st, data, plan, sampler, 5, 2, workers=2))
            for b, batch in enumerate(batches):
                for j, rec in enumerate(plan[b]):
                    idx = sampler(rec.num_frames, np.random.default_rng([5, 2, 1, b, j]))
                    want = st.features(rec.video_id)[idx.reshape(-1)].reshape(N, L, D)
                    np.testing.assert_array_equal(batch.features[j].numpy(), want)


# ------------------------------------------------------------------------- 2. epoch length


def _training_set(n_abnormal: int, n_normal: int) -> TrainingSet:
    abnormal = [VideoRecord(f"a{i}", label="Explosion", num_frames=600) for i in range(n_abnormal)]
    normal = [VideoRecord(f"n{i}", label="Normal", num_frames=600) for i in range(n_normal)]
    ids = {**{r.video_id: 0 for r in abnormal}, **{r.video_id: 2 for r in normal}}
    return TrainingSet(abnormal, normal, ids)


@pytest.mark.parametrize(
    "n_abnormal, n_normal, steps",
    [(810, 800, 25), (1905, 2049, 64), (63, 175, 5)],  # UCF-Crime, XD-Violence, ShanghaiTech
)
def test_steps_per_epoch_of_the_paper_datasets(n_abnormal, n_normal, steps):
    plan = epoch_plan(_training_set(n_abnormal, n_normal), 64, seed=1024, epoch=0)
    assert len(plan) == steps
    assert all(len(b) == 64 for b in plan)


def test_smaller_kind_is_cycled_reshuffled_with_its_remainder_dropped():
    """5 abnormal and 13 normal videos, 2 of each per step: 6 steps (13 // 2). The normal
    loader runs once and leaves one video out; the abnormal one has 2 full batches per pass,
    so it runs 3 passes of 4 distinct videos, each from a fresh shuffle, one video left out."""
    data = _training_set(5, 13)
    passes = []
    for epoch in (0, 1):
        plan = epoch_plan(data, 4, seed=11, epoch=epoch)
        assert len(plan) == 6
        assert all([r.video_id[0] for r in b] == ["a", "a", "n", "n"] for b in plan)
        normal = [r.video_id for b in plan for r in b[2:]]
        assert len(set(normal)) == 12  # every normal video at most once, one dropped
        abnormal = [r.video_id for b in plan for r in b[:2]]
        for k in range(3):
            one_pass = abnormal[4 * k : 4 * k + 4]
            assert len(set(one_pass)) == 4  # no video twice within a pass
            passes.append(tuple(one_pass))
        assert plan == epoch_plan(data, 4, seed=11, epoch=epoch)  # a function of (seed, epoch)
    assert len(set(passes)) >= 4  # reshuffled each pass (6 passes of 120 possible orders)
    left_out = {frozenset({f"a{i}" for i in range(5)} - set(p)) for p in passes}
    assert len(left_out) >= 2  # the dropped remainder changes with the shuffle
    assert epoch_plan(data, 4, seed=11, epoch=0) != epoch_plan(data, 4, seed=11, epoch=1)


def test_fewer_videos_than_half_a_batch_is_refused():
    with pytest.raises(AnomalyError, match="at least 2 abnormal and 2 normal.*found 1 abnormal"):
        epoch_plan(_training_set(1, 13), 4, seed=0, epoch=0)


# -------------------------------------------------------------------------------- 3. warm-up


def _expected_factor(epoch: int, warmup: int, total: int) -> float:
    if epoch < warmup:
        return epoch / warmup
    return 0.5 * (1 + math.cos(math.pi * (epoch - warmup) / (total - warmup)))


def _record_lr_per_step():
    """Learning rates of every param group at each optimiser step, and the hook's handle."""
    seen: list[list[float]] = []

    def hook(optimizer, args, kwargs):
        seen.append([g["lr"] for g in optimizer.param_groups])

    return seen, register_optimizer_step_pre_hook(hook)


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["ucf", "sht"])
def test_learning_rate_of_every_step_of_the_first_12_epochs(tmp_path, tiny_clip, preset):
    """The preset's lr, warm-up and length; a small model and batch so that 12 epochs of the
    real loop run in seconds (the schedule depends on none of those)."""
    cfg = resolve_config(preset, emb_dim=32, depth=1, batch_size=4, workers=1, eval_every=0)
    lr, warmup, total = PRESETS[preset]["lr"], PRESETS[preset]["warmup_epochs"], cfg.epochs
    assert total == PRESETS[preset]["epochs"]
    store = planted_store(tmp_path / "s.zarr", tiny_clip, cfg, n_abnormal=4, n_normal=7)
    steps = 7 // 2  # 3 full normal batches per epoch
    seen, handle = _record_lr_per_step()
    try:
        train(store, tmp_path / "run", cfg, progress=False, stop_after=12)
    finally:
        handle.remove()
    expected = [lr * _expected_factor(e, warmup, total) for e in range(12) for _ in range(steps)]
    assert len(seen) == len(expected) == 36
    for got, want in zip(seen, expected, strict=True):
        assert got == pytest.approx([want] * len(got), rel=1e-12, abs=0)
    assert seen[0] == [0.0] * len(seen[0])  # epoch 0 runs at lr 0


@pytest.mark.slow
def test_epoch_zero_moves_no_weight_but_fills_adamw_moments(tmp_path, tiny_clip):
    cfg = resolve_config("demo", workers=1, eval_every=0)
    assert cfg.warmup_epochs > 0
    store = planted_store(tmp_path / "s.zarr", tiny_clip, cfg, n_abnormal=8, n_normal=8)
    train(store, tmp_path / "run", cfg, progress=False, stop_after=1)

    _seed_everything(cfg.seed)  # the initial weights, built as training builds them
    spec = get_dataset("demo")
    initial = build_network(cfg.model.with_data(spec.classes, spec.normal_id, D), tiny_clip)
    trained, _ = load_model(tmp_path / "run")
    before, after = initial.trainable_parameters(), trained.trainable_parameters()
    assert before.keys() == after.keys()
    for name in before:
        for p0, p1 in zip(before[name], after[name], strict=True):
            assert torch.equal(p0, p1), name

    state = load_run(tmp_path / "run", with_optimizer=True).optimizer["state"]
    steps = 8 // 4  # two steps of 4 + 4 videos
    assert len(state) == sum(len(v) for v in before.values())
    for s in state.values():
        assert int(s["step"]) == steps
        assert s["exp_avg_sq"].abs().sum() > 0  # gradients were seen and averaged
    assert any(s["exp_avg"].abs().sum() > 0 for s in state.values())


# ------------------------------------------------------------------- ground-truth intervals


def test_interval_ends_of_each_dataset_file(tmp_path):
    """UCF-Crime's and XD-Violence's files give inclusive ends (the published evaluation marks
    frame i abnormal when start <= i <= end); the demo's file gives exclusive ends. Internally
    every interval is half-open, so frames 10..20 inclusive are [10, 21)."""
    ucf = tmp_path / "ucf.txt"
    ucf.write_text("Abuse028_x264.mp4  Abuse  10  20  -1  -1\n")
    assert read_ucf_temporal_annotations(ucf)["Abuse028_x264"].intervals == [(10, 21)]
    xd = tmp_path / "annotations.txt"
    xd.write_text("v=abc__#1_label_B1-0-0 10 20 30 30\n")
    assert read_xd_annotations(xd) == {"v=abc__#1_label_B1-0-0": [(10, 21), (30, 31)]}
    demo = tmp_path / "demo.txt"
    demo.write_text("test/Explosion/e1 10 20\n")
    assert read_demo_annotations(demo) == {"test/Explosion/e1": [(10, 20)]}


@pytest.mark.slow
def test_train_command_takes_the_sampler(tmp_path, tiny_clip):
    from typer.testing import CliRunner

    from anomalyclip.cli import app

    cfg = resolve_config("demo", batch_size=4)
    # three normal videos: one is held out for calibration, two are trained on
    store = planted_store(tmp_path / "s.zarr", tiny_clip, cfg, n_abnormal=2, n_normal=3)
    common = ["train", "--features", str(store), "--epochs", "1", "--batch-size", "4"]
    common += ["--workers", "1", "--eval-every", "0"]
    done = CliRunner().invoke(app, [*common, "--out", str(tmp_path / "u"), "--sampler", "uniform"])
    assert done.exit_code == 0, done.output
    assert load_run(tmp_path / "u").config.train["sampler"] == "uniform"
    done = CliRunner().invoke(app, [*common, "--out", str(tmp_path / "x"), "--sampler", "every"])
    assert done.exit_code != 0
    assert "unknown sampler 'every'; choose one of published, uniform" in str(done.exception)
