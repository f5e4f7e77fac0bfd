"""Smoke tests of the training / evaluation benchmarks at tiny shapes: the reported numbers
must be consistent with each other (rates and ratios are quotients of the reported times and
counts). No timing is asserted."""

from __future__ import annotations

import math

import pytest
import torch
from bench_sizes import TINY, tiny_train_bench

from anomalyclip.bench import eval as bench_eval
from anomalyclip.bench import train as bench_train
from anomalyclip.bench.peak import matmul_gflops


def test_matmul_peak_counts_2n3_flops_over_the_best_time(monkeypatch):
    """On a clock that says how long each multiply took (no real timing): an n x n by n x n
    product is 2 n^3 FLOPs, read over the fastest of the repeats (1 s here: a busy host only
    slows a multiply down), after an untimed warm-up."""
    from anomalyclip.bench import peak

    durations = iter([3.0, 9.0, 1.0])
    ticks = {"now": 0.0, "start": True}

    def clock() -> float:
        if not ticks["start"]:
            ticks["now"] += next(durations)
        ticks["start"] = not ticks["start"]
        return ticks["now"]

    monkeypatch.setattr(peak.time, "perf_counter", clock)
    assert matmul_gflops(torch.float32, n=100, repeats=3) == pytest.approx(2 * 100**3 / 1 / 1e9)


def test_the_peak_is_the_better_of_mkl_and_onednn(monkeypatch):
    from anomalyclip.bench import peak

    monkeypatch.setattr(
        peak, "matmul_gflops", lambda dtype, n, r: 183.0 if dtype == torch.float32 else 700.0
    )
    monkeypatch.setattr(
        peak, "conv_gemm_gflops", lambda dtype, n, r: 320.0 if dtype == torch.float32 else 650.0
    )
    assert peak.peaks(64, 1) == {"fp32": 320.0, "fp32_mm": 183.0, "bf16": 700.0}


def test_a_conv_gemm_counts_the_product_it_computes():
    """The 1x1 convolution is the n x n by n x n product: checked against torch.mm."""
    from anomalyclip.bench.peak import conv_gemm_gflops

    n = 128
    conv = torch.nn.Conv2d(n, n, 1, bias=False)
    x = torch.randn(1, 2, n // 2, n)  # the layout conv_gemm_gflops uses
    y = conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1).reshape(-1, n)
    torch.testing.assert_close(y, x.reshape(-1, n) @ conv.weight.view(n, n).T)
    assert conv_gemm_gflops(torch.float32, n, 1) > 0


def test_no_bench_prints_a_share_of_peak_above_one():
    """307 GFLOP/s against a measured peak of 183 (the README's old fp32 training row): the
    raw numbers and a note, never "1.68 of peak"; a possible share is still printed."""
    from anomalyclip.bench import all as bench_all
    from anomalyclip.bench import extract as bench_extract
    from anomalyclip.bench.peak import of_peak, share_text

    assert of_peak(307.0, 183.0) is None and of_peak(150.0, 183.0) == pytest.approx(150 / 183)
    assert share_text(307.0, 183.0, "fp32 matmul peak") == (
        "307 GFLOP/s, above the fp32 matmul peak measured in this run (183 GFLOP/s): no share "
        "(the peak was measured low)"
    )
    assert (
        share_text(150.0, 183.0, "fp32 matmul peak") == "150 GFLOP/s = 0.82 of the fp32 matmul peak"
    )
    row = {"conv": "direct", "bf16": False, "step_s": 6.62, "executed_gflops": 307.0,
           "peak_rss_mb": 2458, "speedup_vs_published": 2.65, "executed_fraction_of_peak": None,
           "peak_fp32": 183.0, "load_avg": 1.0, "forward_s": 2.0, "backward_s": 4.62,
           "nominal_gflop_fwd": 677, "nominal_gflop_bwd": 1354, "executed_gflop_fwd": 677,
           "executed_gflop_bwd": 1354, "effective_gflops": 307.0, "published_equivalent_s": 17.5,
           "kept_memory": True}  # fmt: skip
    ok = {**row, "conv": "winograd", "executed_gflops": 127.0, "executed_fraction_of_peak": 0.69}
    train = {"peak_gflops": {"fp32": 183.0, "bf16": 717.0}, "rows": [row, ok],
             "loading_batches_per_s": 1.0, "fastest_step_per_s": 0.2,
             "loading_over_step_rate": 5.0, "memory": "-"}  # fmt: skip
    rows = bench_all._train_rows(train)
    assert "no share" in rows[0] and "1.68" not in rows[0] and "307 GFLOP/s executed" in rows[0]
    assert "127 GFLOP/s executed = 0.69 of the fp32 matmul peak" in rows[1]
    text = bench_train.table(train)
    assert "168%" not in text and "*: above the matmul peak" in text and "69%" in text
    extract = {"frames": 8, "input": "-", "batch_size": 8, "workers": 1, "threads": 2,
               "gflop_per_frame": 17.6, "peak_fp32_gflops": 100.0, "peak_bf16_gflops": 400.0,
               "profile": {f"{s}_{k}": 0.1 for s in ("decode", "preprocess", "model", "write")
                           for k in ("ms_per_frame", "share")},
               "rows": [{"setup": "fp32 sdpa", "model_fps": 8.0, "pipeline_fps": 7.0, "ratio": 0.9,
                         "speedup": 1.0, "pipeline_speedup": 1.0, "gflops": 141.0,
                         "of_peak": None}]}  # fmt: skip
    assert "*: above the matmul peak" in bench_extract.table(extract)


@pytest.fixture(scope="module")
def train_result():
    return bench_train.measure(tiny_train_bench())


@pytest.mark.slow
def test_train_bench_numbers_are_consistent(train_result):
    r = train_result
    assert {(row["conv"], row["bf16"]) for row in r["rows"]} == {
        ("direct", False),
        ("winograd", False),
        ("direct", True),
        ("winograd", True),
    }
    fwd = {row["nominal_gflop_fwd"] for row in r["rows"]}
    assert len(fwd) == 1  # the nominal model FLOPs do not depend on the configuration
    for row in r["rows"]:
        assert math.isclose(row["step_s"], row["forward_s"] + row["backward_s"])
        nominal = row["nominal_gflop_fwd"] + row["nominal_gflop_bwd"]
        executed = row["executed_gflop_fwd"] + row["executed_gflop_bwd"]
        assert row["nominal_gflop_bwd"] > row["nominal_gflop_fwd"] > 0
        assert math.isclose(row["effective_gflops"], nominal / row["step_s"])
        assert math.isclose(row["executed_gflops"], executed / row["step_s"])
        assert row["peak_fp32"] > 0 and row["peak_bf16"] > 0
        used_peak = row["peak_bf16"] if row["bf16"] else row["peak_fp32"]
        share = row["executed_gflops"] / used_peak  # none above 1 (a peak measured low)
        assert row["executed_fraction_of_peak"] == (pytest.approx(share) if share <= 1 else None)
        assert 0 < row["temporal_gflop_fwd"] < row["nominal_gflop_fwd"]
        assert math.isclose(row["published_tflop"], 4 * row["temporal_gflop_fwd"] / 1e3)
        published_s = row["published_tflop"] * 1e3 / (0.84 * row["peak_fp32_mm"])
        assert 0 < row["peak_fp32_mm"] <= row["peak_fp32"]  # torch.mm is one of the two
        assert math.isclose(row["published_equivalent_s"], published_s)
        assert math.isclose(row["speedup_vs_published"], published_s / row["step_s"])
        assert row["peak_rss_mb"] > 0
        if row["conv"] == "winograd" and not row["bf16"]:
            assert executed < nominal  # fewer multiplies for the same convolution
        if row["conv"] == "direct":
            assert math.isclose(executed, nominal)
    # every rate is the counted FLOPs over the measured time of the same row
    for row in r["rows"]:
        assert math.isclose(row["effective_gflops"] * row["step_s"], nominal)
    fastest = min(row["step_s"] for row in r["rows"])
    assert math.isclose(r["fastest_step_per_s"], 1 / fastest)
    assert math.isclose(r["loading_over_step_rate"], r["loading_batches_per_s"] * fastest)
    assert r["loading_batches_per_s"] > 0
    assert "direct fp32" in bench_train.table(r) and "batches/s" in bench_train.table(r)


def test_train_bench_flops_are_torchs_count_of_the_trainers_step(train_result, tiny_clip):
    """The bench's FLOPs against torch's counter run here on the network the trainer builds
    at the same shape (not the bench's own model): forward (prompts, selector, temporal
    model and loss), the temporal model's share, and a backward of 1 to 2 forwards (every
    matrix product needs its weight gradient, all but the first also the input's)."""
    from anomalyclip.bench.flops import flop_counter
    from anomalyclip.runs import build_network

    model = build_network(TINY.model, tiny_clip, "direct").train()
    m = TINY.model
    x = torch.randn(TINY.batch, m.num_segments, m.seg_length, m.feature_dim)
    abnormal = [c for c in range(m.num_classes) if c != m.normal_id]
    labels = torch.tensor(abnormal[:2] + [m.normal_id] * 2)
    with flop_counter() as counter:
        loss, _ = model.loss(model(x), labels, generator=torch.Generator().manual_seed(0))
    forward = counter.get_total_flops() / 1e9
    with flop_counter() as only_temporal:
        model.temporal_model(
            torch.randn(TINY.batch, m.num_segments, m.seg_length, m.temporal_in_dim)
        )
    temporal = only_temporal.get_total_flops() / 1e9
    for row in train_result["rows"]:
        assert math.isclose(row["nominal_gflop_fwd"], forward, rel_tol=1e-9)
        assert math.isclose(row["temporal_gflop_fwd"], temporal, rel_tol=1e-9)
        assert forward < row["nominal_gflop_bwd"] <= 2 * forward


def test_paper_shape_flops_match_the_reference():
    """The nominal count at the paper's shape is the reference's 663.1 GFLOP forward, without
    running it: the temporal model's FLOPs scale linearly in the batch, so count batch 1."""
    from anomalyclip.bench.flops import flop_counter
    from anomalyclip.model.temporal import TemporalModel

    model = TemporalModel(512, 256, 1, 8, 32, 16, conv="direct")
    x = torch.randn(1, 32, 16, 512)
    with flop_counter() as counter:
        model(x)
    assert math.isclose(64 * counter.get_total_flops() / 1e9, 663.1, rel_tol=2e-3)


@pytest.mark.slow
def test_eval_bench_numbers_are_consistent():
    r = bench_eval.measure(TINY, n_videos=3, frames=(1, 100), batch_size=2, rounds=2, threads=None)
    assert r["videos"] == 3 and r["frames"] >= 3
    for row in r["rows"]:
        assert 0 < row["model_s"] < row["wall_s"]
        assert math.isclose(row["frames_per_s"], r["frames"] / row["wall_s"])
        assert math.isclose(
            row["outside_model_share"], (row["wall_s"] - row["model_s"]) / row["wall_s"]
        )
        assert row["video_4096_s"] > 0
        assert math.isclose(row["speedup"], row["frames_per_s"] / r["rows"][0]["frames_per_s"])
    assert [row["setup"] for row in r["rows"]] == ["reference", "fast fp32", "fast bf16"]
    assert "frames/s" in bench_eval.table(r)


def test_fused_cpu_attention_is_counted_like_the_matrix_products_it_replaces():
    """torch's counter has no formula for the CPU flash-attention ops; ours counts the
    forward as the explicit softmax(q k^T) v is counted, and the backward as the explicit
    one plus the q k^T that the fused kernel recomputes instead of keeping."""
    from anomalyclip.bench.flops import flop_counter

    b, h, s, d = 3, 4, 20, 16
    q, k, v = (torch.randn(b, h, s, d, requires_grad=True) for _ in range(3))
    with flop_counter() as fused:
        out = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    with flop_counter() as fused_back:
        out.sum().backward()
    with flop_counter() as explicit:
        ref = ((q @ k.transpose(-1, -2)) / d**0.5).softmax(-1) @ v
    with flop_counter() as explicit_back:
        ref.sum().backward()
    assert fused.get_total_flops() == explicit.get_total_flops() == 4 * b * h * s * s * d
    assert explicit_back.get_total_flops() == 8 * b * h * s * s * d  # dq, dk, dv, d(scores)
    assert fused_back.get_total_flops() == 10 * b * h * s * s * d  # and q k^T once more


def test_watch_agreement_scores_offline_at_the_runs_own_window(tmp_path, tiny_clip):
    """``bench watch --agreement``'s offline side scores each video at the run's windows (the
    demo preset's are 16 x 8, a test run's here 4 x 4), not the paper's 32 x 16 that it once
    assumed: its scores are those of ``score_video`` at the run's shape, bit for bit."""
    from synthetic_stores import quick_run

    from anomalyclip.bench.watch import _offline_scores
    from anomalyclip.model.inference import score_fn, score_video
    from anomalyclip.runs import load_model
    from anomalyclip.store import open_store

    store, run = quick_run(tmp_path, tiny_clip, epochs=1, n_each=2, grid=(4, 4))
    (tmp_path / "store.zarr").symlink_to(store)  # the layout of an `anomaly demo` folder
    model, _ = load_model(run)
    offline = _offline_scores(tmp_path, model)
    with open_store(store) as st:
        tests = st.records(split="test")
        assert len(offline) == len(tests) > 0
        for rec in tests:
            feats = torch.from_numpy(st.features(rec.video_id).astype("float32"))
            p, _ = score_video(feats, score_fn(model), 4, 4)
            got = offline[str(tmp_path / "videos" / f"{rec.video_id}.mp4")]["p"]
            assert torch.equal(torch.from_numpy(got), p)
