"""Causal scoring arrangement, queues, clocks and lag statistics of ``anomaly watch``, without
I/O: each piece checked against a direct computation."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch

from anomalyclip.live.sources import FrameItem, FrameQueue, Notice, StreamClock
from anomalyclip.live.stats import LagHistogram, SourceStats
from anomalyclip.live.window import CausalWindow, score_windows
from anomalyclip.model.inference import score_video

N, L = 4, 8  # a 32-row grid keeps the test fast; the arrangement is the same at 32 x 16


def context_score(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A score that depends on every row of its sequence and on where each row sits in the
    grid, as the temporal model's does: any wrong arrangement or window changes it."""
    _, n, length, _ = x.shape
    context = x[..., 1].mean(dim=(1, 2), keepdim=True)  # (B, 1, 1)
    slot = torch.arange(n * length, dtype=x.dtype).view(1, n, length) / (n * length)
    p = torch.sigmoid(x[..., 0] + 2 * context + slot)  # (B, N, L)
    probs = torch.stack([p, 1 - p, x[..., 2].sigmoid()], -1)  # (B, N, L, 3)
    return p, probs


def live_scores(feats: np.ndarray, hop: int) -> tuple[np.ndarray, list[int]]:
    """Rows pushed in uneven chunks; returns the scores and the end row of every window."""
    window = CausalWindow(feats.shape[1], N * L, hop)
    frames = np.arange(len(feats))
    windows, i = [], 0
    for size in [1, 7, 3, 20, 50, 2] * 50:
        if i >= len(feats):
            break
        windows += window.push(feats[i : i + size], frames[i : i + size], frames[i : i + size] / 15)
        i += size
    last = window.flush()
    windows += [last] if last is not None else []
    ends = [int(w.frames[-1]) + 1 for w in windows]
    scores = score_windows(windows, context_score, N, L, batch_size=4)
    assert [len(w.frames) for w in windows[:-1]] == [hop] * (len(windows) - 1)
    return np.concatenate([s[0] for s in scores]), ends


@pytest.mark.parametrize("T, hop", [(5, 2), (32, 32), (45, 4), (200, 7), (131, 32)])
def test_each_hop_is_scored_on_the_window_that_ends_at_it(T, hop):
    feats = np.random.default_rng(T).standard_normal((T, 6)).astype(np.float32)
    p, ends = live_scores(feats, hop)
    assert len(p) == T and ends[-1] == T
    expected, start = [], 0
    for end in ends:
        # offline scoring of a video made of the newest (at most N*L) rows up to ``end``
        window = torch.from_numpy(feats[max(0, end - N * L) : end])
        pw, _ = score_video(window, context_score, N, L)
        expected.append(pw[-(end - start) :].numpy())
        start = end
    np.testing.assert_array_equal(p, np.concatenate(expected))


def test_a_short_video_scored_in_one_hop_is_the_offline_curve():
    """Up to N*L rows, a window that ends at the last row *is* the whole video."""
    feats = np.random.default_rng(0).standard_normal((29, 6)).astype(np.float32)
    p, _ = live_scores(feats, hop=29)
    offline, _ = score_video(torch.from_numpy(feats), context_score, N, L)
    np.testing.assert_array_equal(p, offline.numpy())
    # with smaller hops the earlier rows lack their future: scores differ, the last hop not
    p_small, _ = live_scores(feats, hop=5)
    assert not np.allclose(p_small[:20], offline.numpy()[:20])
    np.testing.assert_array_equal(p_small[-4:], offline.numpy()[-4:])


def test_window_reset_starts_a_new_context():
    window = CausalWindow(3, 8, 2)
    rows = np.arange(30, dtype=np.float32).reshape(10, 3)
    window.push(rows[:5], np.arange(5), np.arange(5.0))
    window.reset()
    (w,) = window.push(rows[5:7], np.arange(5, 7), np.arange(5.0, 7.0))
    np.testing.assert_array_equal(w.features.numpy(), rows[5:7])  # nothing of before the reset


@pytest.mark.slow
def test_live_scores_are_the_models_own_and_follow_its_weights(tiny_clip):
    """Live scoring reuses the prompts' text features through the model's own memo
    (model/memo.py): the outputs are the model's, the model object is left as it was, and
    a change of the prompt weights (a run reloaded in place) is seen by the next score."""
    from anomalyclip.datasets import get_dataset
    from anomalyclip.live.window import live_score_fn
    from anomalyclip.model.inference import score_fn
    from anomalyclip.runs import build_network
    from anomalyclip.train.config import resolve_config

    torch.manual_seed(0)
    cfg = resolve_config("demo")
    spec = get_dataset("demo")
    model = build_network(cfg.model.with_data(spec.classes, spec.normal_id, 512), tiny_clip)
    model.eval()
    x = torch.randn(2, cfg.model.num_segments, cfg.model.seg_length, 512)
    live = live_score_fn(model)
    with torch.inference_mode():
        p0, probs0 = score_fn(model)(x)
        p1, probs1 = live(x)
    torch.testing.assert_close(p1, p0, rtol=0, atol=0)
    torch.testing.assert_close(probs1, probs0, rtol=0, atol=0)
    assert "text_features" not in vars(model)  # no instance attribute shadows the method
    with torch.no_grad():
        model.prompt_learner.ctx.add_(0.5)
    with torch.inference_mode():
        p2, probs2 = live(x)
        text = model.prompt_learner()
        expected = model(x, text=text)
    assert not torch.equal(probs2, probs1)
    torch.testing.assert_close(p2, expected.p_abnormal, rtol=0, atol=0)
    torch.testing.assert_close(probs2, expected.probs, rtol=0, atol=0)


def frame(i: int) -> FrameItem:
    return FrameItem(i, i / 15, torch.zeros(3, 2, 2, dtype=torch.uint8), time.monotonic())


def test_queue_drops_the_oldest_frames_and_never_a_notice():
    stats, stop = SourceStats(), threading.Event()
    q = FrameQueue(3, drop_oldest=True, wake=threading.Event(), stats=stats)
    q.put(Notice("connected", {"fps": 15}), stop)
    for i in range(5):
        q.put(frame(i), stop)
    q.put(Notice("lost"), stop)
    q.put(frame(5), stop)
    assert stats.dropped == 3  # 0, 1, 2 went to make room; the notices stayed
    first = q.take(10)
    assert [type(i).__name__ for i in first] == ["Notice"]  # a notice ends a take
    second = q.take(10)
    assert [i.index for i in second[:-1]] == [3, 4] and second[-1].kind == "lost"
    assert [i.index for i in q.take(10)] == [5]


def test_queue_without_drops_makes_the_reader_wait():
    stats, stop = SourceStats(), threading.Event()
    q = FrameQueue(2, drop_oldest=False, wake=threading.Event(), stats=stats)
    done = []
    reader = threading.Thread(target=lambda: [done.append(q.put(frame(i), stop)) for i in range(5)])
    reader.start()
    deadline = time.monotonic() + 60
    while len(done) < 2 and time.monotonic() < deadline:  # however slowly the reader starts
        time.sleep(0.01)
    reader.join(0.3)
    # two frames put, the third waits for room however long we wait: memory bounded
    assert reader.is_alive() and len(done) == 2 and len(q) == 2
    got = []
    while len(got) < 5:
        got += [i.index for i in q.take(1)]
    reader.join(2)
    assert got == [0, 1, 2, 3, 4] and stats.dropped == 0 and done == [True] * 5
    # a stopped watch releases a waiting reader
    q.put(frame(5), stop), q.put(frame(6), stop)
    stop.set()
    assert q.put(frame(7), stop) is False


def test_clock_continues_after_a_break_by_the_wall_time_that_passed():
    clock = StreamClock()
    clock.connect(0.1, "wall")
    assert [clock.time(t, 100.0 + t) for t in (0.0, 0.1, 0.2)] == pytest.approx([0, 0.1, 0.2])
    clock.connect(0.1, "wall")  # the sender restarted: its timestamps start again at 5.0
    times = [clock.time(5.0 + t, 103.2 + t) for t in (0.0, 0.1)]
    assert times == pytest.approx([0.2 + 3.0, 0.2 + 3.1])  # 3.0 s of wall time in between
    clock.connect(0.1, "next")  # a looping file goes on one period after its last frame
    assert clock.time(0.0, 0.0) == pytest.approx(3.4)
    assert clock.time(0.0, 0.0) == pytest.approx(3.5)  # a repeated timestamp moves forward


def test_lag_percentiles_within_a_bin_of_numpy():
    lags = np.random.default_rng(0).lognormal(-2, 1.5, 20000)
    hist = LagHistogram()
    for chunk in np.array_split(lags, 7):
        hist.add(chunk)
    for q in (50, 90, 99):
        assert hist.percentile(q) == pytest.approx(np.percentile(lags, q), rel=0.03)
    assert np.isnan(LagHistogram().percentile(50))
