"""Training: learning on planted features (with a shuffled-label control), exact resume,
frozen weights, sampling, and the errors a user can run into."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from synthetic_stores import planted_store

from anomalyclip.datasets import get_dataset
from anomalyclip.errors import AnomalyError
from anomalyclip.evaluate.evaluation import metrics_on_test_split
from anomalyclip.model.loss import segment_keep_mask
from anomalyclip.runs import build_network
from anomalyclip.store import VideoRecord, open_store
from anomalyclip.train import resolve_config, train
from anomalyclip.train.data import (
    SegmentSampler,
    TrainingSet,
    epoch_plan,
    iterate_batches,
    uniform_indices,
)


@pytest.fixture(scope="module")
def quick_cfg():
    return resolve_config("demo", epochs=2, warmup_epochs=1, workers=1, eval_every=0)


def test_uniform_indices_cover_equal_spans_and_wrap():
    rng = np.random.default_rng(0)
    idx = uniform_indices(1000, 32, 16, rng)
    assert idx.shape == (32, 16)
    assert (np.diff(idx, axis=1) == 1).all()  # consecutive frames
    spans = np.floor(np.arange(33) * 1000 / 32).astype(int)
    assert ((idx[:, 0] >= spans[:-1]) & (idx[:, -1] < spans[1:])).all()  # inside its span
    short = uniform_indices(100, 32, 16, rng)  # shorter than N*L: read modulo the length
    assert short.min() >= 0 and short.max() < 100
    assert ((short[:, 1:] - short[:, :-1]) % 100 == 1).all()
    one = uniform_indices(1, 32, 16, rng)
    assert (one == 0).all()


def test_epoch_plan_pairs_abnormal_first_and_covers_every_video(tmp_path, tiny_clip, quick_cfg):
    path = planted_store(tmp_path / "s.zarr", tiny_clip, quick_cfg, n_abnormal=6, n_normal=10)
    with open_store(path) as st:
        data = TrainingSet.from_store(st)
    plan = epoch_plan(data, 4, seed=1, epoch=0)
    assert len(plan) == 5  # ceil(10 normal / 2 per batch)
    for batch in plan:
        assert [r.label != "Normal" for r in batch] == [True, True, False, False]
    assert {r.video_id for b in plan for r in b[2:]} == {r.video_id for r in data.normal}
    assert {r.video_id for b in plan for r in b[:2]} == {r.video_id for r in data.abnormal}
    assert [r.video_id for b in plan for r in b] == [
        r.video_id for b in epoch_plan(data, 4, seed=1, epoch=0) for r in b
    ]
    assert plan != epoch_plan(data, 4, seed=1, epoch=1)


@pytest.mark.slow
def test_learns_planted_anomalies_and_shuffled_control_does_not(tmp_path, tiny_clip):
    cfg = resolve_config(  # the paper's 32 x 16 grids, which the planted store is made for
        "demo", epochs=6, warmup_epochs=1, workers=1, lr=1e-3, concat_similarity=False,
        num_segments=32, seg_length=16,
    )  # fmt: skip
    real = planted_store(tmp_path / "real.zarr", tiny_clip, cfg)
    control = planted_store(tmp_path / "control.zarr", tiny_clip, cfg, shuffle_labels=True)
    measured = {"progress": False, "evaluate": metrics_on_test_split}
    auc_real = train(real, tmp_path / "run_real", cfg, **measured)["metrics"]["auc"]
    auc_control = train(control, tmp_path / "run_ctl", cfg, **measured)["metrics"]["auc"]
    assert auc_real >= 0.9, auc_real
    assert auc_control <= 0.75, auc_control


@pytest.mark.slow
def test_resume_equals_straight_run(tmp_path, tiny_clip):
    cfg = resolve_config("demo", epochs=4, warmup_epochs=1, workers=2, eval_every=0)
    store = planted_store(tmp_path / "s.zarr", tiny_clip, cfg, n_abnormal=4, n_normal=8)
    train(store, tmp_path / "straight", cfg, progress=False)
    train(store, tmp_path / "resumed", cfg, progress=False, stop_after=2)
    half = load_file(tmp_path / "resumed" / "model.safetensors")
    train(store, tmp_path / "resumed", cfg, progress=False, resume=True)
    straight = load_file(tmp_path / "straight" / "model.safetensors")
    resumed = load_file(tmp_path / "resumed" / "model.safetensors")
    assert straight.keys() == resumed.keys()
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key
    assert not all(torch.equal(half[k], straight[k]) for k in straight)  # it did train on
    # what a run stores: trainable weights, statistics and the centroid, not the frozen tower
    assert "centroid" in straight
    assert any("ctx" in k for k in straight)
    assert not any(".text_model." in k for k in straight)


@pytest.mark.slow
def test_winograd_training_computes_what_direct_convolutions_compute(tmp_path, tiny_clip):
    """``anomaly train``'s CPU default (auto: Winograd at >= 128 channels) trains the same
    model as direct convolutions.

    Checked where the two are comparable: the loss and every gradient of a training step,
    and the loss of every epoch. Weights after training are not compared element-wise:
    AdamW divides each gradient by its own running magnitude, so a parameter whose gradient
    is at rounding level takes a step of about the learning rate in a direction that float32
    rounding decides, and two exact algorithms end up ~lr apart there (weights of 2-epoch
    runs differed by up to 8e-5 on one machine and 5e-4 on another with lr 2e-4: the
    assertion that made a fresh clone's test suite fail)."""
    cfg = resolve_config(
        "demo", epochs=2, warmup_epochs=1, workers=1, eval_every=0, emb_dim=128, batch_size=4
    )
    store = planted_store(tmp_path / "s.zarr", tiny_clip, cfg, n_abnormal=4, n_normal=6)

    with open_store(store) as st:
        data = TrainingSet.from_store(st)
        plan = epoch_plan(data, cfg.batch_size, cfg.seed, 0)
        sampler = SegmentSampler(cfg.model.num_segments, cfg.model.seg_length, cfg.sampler)
        (batch, *_) = iterate_batches(st, data, plan[:1], sampler, cfg.seed, 0, workers=0)
    spec = get_dataset("demo")
    mcfg = cfg.model.with_data(spec.classes, spec.normal_id, 512)
    models = {"direct": build_network(mcfg, tiny_clip, "direct")}
    models["auto"] = build_network(mcfg, tiny_clip, "auto")
    models["auto"].load_state_dict(models["direct"].state_dict())  # the same weights
    n = cfg.model.num_segments
    keep = segment_keep_mask(cfg.batch_size, n, cfg.model.segment_dropout, torch.Generator())
    step = {}
    for algorithm, model in models.items():
        loss, _ = model.loss(model(batch.features), batch.labels, keep=keep)
        loss.backward()
        step[algorithm] = (loss.item(), {n: p.grad.clone() for n, p in model.named_parameters()
                                         if p.grad is not None})  # fmt: skip
    assert step["auto"][0] == pytest.approx(step["direct"][0], rel=1e-5)
    for name, g in step["direct"][1].items():
        scale = g.abs().max().item() or 1.0
        assert torch.allclose(step["auto"][1][name], g, rtol=1e-3, atol=1e-4 * scale), name

    history = {}
    for algorithm in ("auto", "direct"):
        run = train(store, tmp_path / algorithm, cfg.updated(conv=algorithm), progress=False)
        history[algorithm] = run["history"]
    # before the first update the two compute the same loss; after updates the runs drift
    # apart by rounding only (measured: <= 2e-5 relative after two epochs)
    first = history["auto"][0]["first_step_loss"], history["direct"][0]["first_step_loss"]
    assert first[0] == pytest.approx(first[1], rel=1e-5)
    for auto, direct in zip(history["auto"], history["direct"], strict=True):
        assert auto["loss"] == pytest.approx(direct["loss"], rel=1e-3)
    weights = {a: load_file(tmp_path / a / "model.safetensors") for a in ("auto", "direct")}
    # a different algorithm did run (direct twice would be bit-identical: training is seeded)
    assert any(not torch.equal(weights["auto"][k], v) for k, v in weights["direct"].items())


@pytest.mark.slow
def test_resume_refuses_a_run_of_another_dataset_shape(tmp_path, tiny_clip):
    cfg = resolve_config("demo", epochs=2, warmup_epochs=1, workers=1, eval_every=0)
    store = planted_store(tmp_path / "s.zarr", tiny_clip, cfg, n_abnormal=4, n_normal=5)
    train(store, tmp_path / "run", cfg, progress=False, stop_after=1)
    with pytest.raises(AnomalyError, match="model configuration differs"):
        train(store, tmp_path / "run", cfg.updated(emb_dim=64), progress=False, resume=True)
    with pytest.raises(AnomalyError, match="not a run directory"):
        train(store, tmp_path / "nothing", cfg, progress=False, resume=True)


def test_store_without_both_kinds_of_training_videos_is_refused(tmp_path, tiny_clip, quick_cfg):
    path = planted_store(tmp_path / "s.zarr", tiny_clip, quick_cfg, n_abnormal=4, n_normal=4)
    with open_store(path, "a") as st:
        for vid in st.video_ids(split="train"):
            if not vid.startswith("train/Normal"):
                st.delete_video(vid)
    with pytest.raises(AnomalyError, match="found 0 abnormal and 4 normal"):
        train(path, tmp_path / "run", quick_cfg, progress=False)


def test_text_encoder_must_match_the_feature_size(tmp_path, tiny_clip, quick_cfg):
    path = planted_store(tmp_path / "s.zarr", tiny_clip, quick_cfg, n_abnormal=4, n_normal=5)
    with open_store(tmp_path / "narrow.zarr", "w") as dst, open_store(path) as src:
        attrs = src.attrs
        attrs["backbone"] = {**attrs["backbone"], "dim": 256}
        dst.init(attrs)
        for vid in src.video_ids():
            rec = src.record(vid)
            dst.write_video(VideoRecord(**{**rec.__dict__}), src.features(vid)[:, :256])
    with pytest.raises(AnomalyError, match="512 dims but the features have 256"):
        train(tmp_path / "narrow.zarr", tmp_path / "run", quick_cfg, progress=False)


def test_a_batch_laid_out_otherwise_is_refused(tmp_path, tiny_clip, quick_cfg):
    """The loss reads the abnormal and normal halves by position: a batch with a normal video
    in the first half, an abnormal one in the second, or an odd count never reaches it."""
    path = planted_store(tmp_path / "s.zarr", tiny_clip, quick_cfg, n_abnormal=4, n_normal=4)
    sampler = SegmentSampler(4, 2, "uniform")
    with open_store(path) as st:
        data = TrainingSet.from_store(st)
        a, n = data.abnormal, data.normal
        good = [[a[0], a[1], n[0], n[1]]]
        (batch,) = iterate_batches(st, data, good, sampler, seed=0, epoch=0, workers=0)
        normal_id = get_dataset("demo").normal_id
        assert (batch.labels == normal_id).tolist() == [False, False, True, True]
        for bad, layout in [
            ([n[0], a[1], a[0], n[1]], "'naan'"),
            ([a[0], n[1], n[0], a[1]], "'anna'"),
            ([a[0], a[1], n[0]], "'aan'"),
            ([n[0], n[1], a[0], a[1]], "'nnaa'"),
        ]:
            for workers in (0, 2):  # the same refusal from the reading threads
                with pytest.raises(ValueError, match=f"laid out {layout}"):
                    list(iterate_batches(st, data, [bad], sampler, 0, 0, workers=workers))
