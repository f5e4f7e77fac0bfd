"""The benches at tiny sizes, for the tests that check their numbers (no timing asserted)."""

from __future__ import annotations

from anomalyclip.bench import train as bench_train

# a UCF-shaped temporal model, shrunk, over the tiny random CLIP
TINY = bench_train.Shape(
    bench_train.ucf_model(512, num_segments=4, seg_length=4, emb_dim=128, heads=4),
    batch=4,
    clip="tiny",
)


def tiny_train_bench(**changes) -> bench_train.TrainBench:
    """Both convolutions, fp32 and bf16, a small random store, all in this process."""
    settings = dict(convs=("direct", "winograd"), bf16=(False, True), steps=2, threads=None,
                    store_videos=6, store_frames=(20, 80), load_batches=3, subprocess=False,
                    peak_n=64)  # fmt: skip
    return bench_train.TrainBench(TINY, **{**settings, **changes})
