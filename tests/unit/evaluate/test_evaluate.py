"""Evaluation building blocks: test-time arrangement, the paper's metrics, plots and reports."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import sklearn.metrics as skm
import torch
from PIL import Image
from reference import sequence_index

from anomalyclip.errors import AnomalyError
from anomalyclip.evaluate import metrics as M
from anomalyclip.evaluate.plots import VideoPlot, plot_confusion, plot_pr, plot_roc, plot_video
from anomalyclip.evaluate.report import (
    FrameDecision,
    format_table,
    read_video_csv,
    write_metrics_json,
    write_video_csv,
)
from anomalyclip.model.inference import score_video, score_videos

N, L = 32, 16

# ---------------------------------------------------------------------------------------------
# Test-time arrangement


def test_sequence_index_small_case_by_hand():
    # T=5, N=2, L=2: padded to 8 frames [0 1 2 3 4 0 1 2]; chunks [0 1 2 3] and [4 0 1 2],
    # sequence j takes sub-block j of each chunk.
    idx = sequence_index(5, num_segments=2, seg_length=2)
    expected = [[[0, 1], [4, 0]], [[2, 3], [1, 2]]]
    assert idx.tolist() == expected


@pytest.mark.parametrize("T", [1, 511, 512, 513, 10000])
def test_sequence_index_covers_every_frame(T):
    idx = sequence_index(T, N, L)
    S = math.ceil(T / (N * L))
    assert idx.shape == (S, N, L)
    assert idx.dtype == torch.long
    assert idx.min() >= 0 and idx.max() < T
    assert torch.equal(torch.unique(idx), torch.arange(T))
    # Consecutive frames within a sub-segment (before wrapping).
    if T >= N * L:
        assert torch.equal(idx[0, 0], torch.arange(L))


def _positional_score_fn(x):
    """Encodes the frame (x[..., 0] is its index) AND the slot it sits in, like a real model
    whose output depends on context: a wrapped frame scores differently in its second slot."""
    _, n_seg, seg_len, _ = x.shape
    slot = torch.arange(n_seg * seg_len, dtype=x.dtype).view(1, n_seg, seg_len)
    p = x[..., 0] + 1e6 * slot  # (B, N, L)
    probs = torch.stack([p + c / 8 for c in range(3)], dim=-1)  # (B, N, L, 3)
    return p, probs


def _frame_features(T, D=4):
    x = torch.zeros(T, D, dtype=torch.float64)
    x[:, 0] = torch.arange(T, dtype=torch.float64)
    x[:, 1:] = torch.randn(T, D - 1, dtype=torch.float64)
    return x


@pytest.mark.parametrize("T", [1, 511, 512, 513, 10000])
def test_score_video_gives_each_frame_its_own_first_occurrence_score(T):
    p, probs = score_video(_frame_features(T), _positional_score_fn, N, L, batch_size=4)
    assert p.shape == (T,) and probs.shape == (T, 3)
    # Frame i sits at padded position i: chunk n = i // (S*L), position l = i % L in its block.
    S = math.ceil(T / (N * L))
    i = torch.arange(T, dtype=torch.float64)
    slot = (torch.arange(T) // (S * L)) * L + torch.arange(T) % L
    expected = i + 1e6 * slot.double()
    assert torch.equal(p, expected)
    for c in range(3):
        assert torch.equal(probs[:, c], expected + c / 8)


def test_score_videos_batched_equals_one_at_a_time():
    torch.manual_seed(0)
    D, C = 6, 4
    lengths = [1, 700, 512, 1500, 30, 1025]
    videos = [torch.randn(T, D) for T in lengths]
    head = torch.nn.Linear(D, 1 + C)

    calls = []

    def model(x):  # (B, N, L, D): depends on the whole sequence, like the temporal model
        calls.append(x.shape[0])
        h = head(x + x.mean(dim=(1, 2), keepdim=True))
        return torch.sigmoid(h[..., 0]), torch.softmax(h[..., 1:], dim=-1)

    p_all, probs_all = score_videos(videos, model, N, L, batch_size=3)
    sequences = sum(math.ceil(T / (N * L)) for T in lengths)  # 1+2+1+3+1+3 = 11
    assert calls == [3, 3, 3, 2] and sum(calls) == sequences
    for x, p, probs in zip(videos, p_all, probs_all, strict=True):
        p1, probs1 = score_video(x, model, N, L, batch_size=1)
        assert p.shape == (x.shape[0],) and probs.shape == (x.shape[0], C)
        torch.testing.assert_close(p, p1, rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(probs, probs1, rtol=1e-6, atol=1e-7)

    # The frame-encoding function gives bit-identical results whatever the packing.
    coded = [_frame_features(T) for T in lengths]
    for bs in (1, 2, 5, 64):
        got = score_videos(coded, _positional_score_fn, N, L, batch_size=bs)
        for x, p, probs in zip(coded, *got, strict=True):
            p1, probs1 = score_video(x, _positional_score_fn, N, L, batch_size=7)
            assert torch.equal(p, p1) and torch.equal(probs, probs1)


def test_score_video_rejects_empty_video():
    with pytest.raises(AnomalyError, match="0 frames"):
        score_video(torch.zeros(0, 4), _positional_score_fn, N, L)


# ---------------------------------------------------------------------------------------------
# Metrics against scikit-learn


def _random_case(seed, F=4000, C=6, normal_id=2):
    rng = np.random.default_rng(seed)
    frame_class = rng.choice(C, size=F, p=[0.1, 0.1, 0.5, 0.1, 0.2, 0.0])  # class 5 absent
    # Rounded scores so that ties occur, and informative enough to be away from 0.5.
    p = np.round(np.clip(0.3 * (frame_class != normal_id) + rng.random(F) * 0.7, 0, 1), 2)
    share = rng.dirichlet(np.ones(C - 1), size=F)
    probs = np.insert(share * p[:, None], normal_id, 1 - p, axis=1)
    return p, probs, frame_class, normal_id


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_frame_metrics_and_youden_match_sklearn(seed):
    p, _, frame_class, normal_id = _random_case(seed)
    y = frame_class != normal_id
    got = M.frame_metrics(p, y)
    assert got["auc"] == pytest.approx(skm.roc_auc_score(y, p), abs=1e-12)
    assert got["ap"] == pytest.approx(skm.average_precision_score(y, p), abs=1e-12)
    fpr, tpr, thr = skm.roc_curve(y, p, drop_intermediate=False)
    assert M.youden_threshold(p, y) == thr[np.argmax(tpr - fpr)]
    fpr2, tpr2, thr2 = M.roc_curve(p, y)
    np.testing.assert_allclose(fpr2, fpr, atol=1e-12)
    np.testing.assert_allclose(tpr2, tpr, atol=1e-12)
    np.testing.assert_array_equal(thr2[1:], thr[1:])
    precision, recall, _ = skm.precision_recall_curve(y, p)
    prec2, rec2, _ = M.pr_curve(p, y)  # ours runs from the highest threshold down
    np.testing.assert_allclose(prec2, precision[:-1][::-1], atol=1e-12)
    np.testing.assert_allclose(rec2, recall[:-1][::-1], atol=1e-12)


@pytest.mark.parametrize("seed", [0, 1])
def test_class_metrics_match_sklearn(seed):
    p, probs, frame_class, normal_id = _random_case(seed)
    names = [f"c{c}" for c in range(probs.shape[1])]
    got = M.class_metrics(probs, frame_class, normal_id, names)
    present = sorted(set(frame_class.tolist()))
    assert 5 not in present and sorted(got["per_class"]) == [names[c] for c in present]
    aucs, aps = [], []
    for c in present:
        auc = skm.roc_auc_score(frame_class == c, probs[:, c])
        ap = skm.average_precision_score(frame_class == c, probs[:, c])
        assert got["per_class"][names[c]]["auc"] == pytest.approx(auc, abs=1e-12)
        assert got["per_class"][names[c]]["ap"] == pytest.approx(ap, abs=1e-12)
        if c != normal_id:
            aucs.append(auc)
            aps.append(ap)
    assert len(aucs) == 4
    assert got["mauc"] == pytest.approx(np.mean(aucs), abs=1e-12)
    assert got["map"] == pytest.approx(np.mean(aps), abs=1e-12)


def _topk_oracle(p, probs, frame_class, normal_id, threshold, k):
    """Frame-by-frame reading of the rule in rank_classes' docstring."""
    C = probs.shape[1]
    hits = []
    for i in range(len(p)):
        anomalies = sorted((c for c in range(C) if c != normal_id), key=lambda c: -probs[i, c])
        ranking = [normal_id, *anomalies[:-1]] if p[i] < threshold else anomalies
        hits.append(frame_class[i] in ranking[:k])
    return np.array(hits)


@pytest.mark.parametrize("seed", [0, 1])
def test_topk_and_confusion_match_oracles(seed):
    p, probs, frame_class, normal_id = _random_case(seed, F=1500)
    y = frame_class != normal_id
    thr = M.youden_threshold(p, y)
    got = M.topk_accuracy(p, probs, frame_class, normal_id, thr, ks=(1, 3, 5))
    pred = M.predict_classes(p, probs, normal_id, thr)
    # Top-1 per class is the per-class recall of the top-1 prediction.
    recall = skm.recall_score(frame_class, pred, labels=range(6), average=None, zero_division=0)
    for k in (1, 3, 5):
        hits = _topk_oracle(p, probs, frame_class, normal_id, thr, k)
        per = {str(c): hits[frame_class == c].mean() for c in np.unique(frame_class)}
        for c, v in per.items():
            assert got["per_class"][c][f"top{k}"] == pytest.approx(v, abs=1e-12)
        assert got[f"top{k}"] == pytest.approx(
            np.mean([v for c, v in per.items() if int(c) != normal_id]), abs=1e-12
        )
    for c in np.unique(frame_class):
        assert got["per_class"][str(c)]["top1"] == pytest.approx(recall[c], abs=1e-12)
    cm = M.confusion_matrix(frame_class, pred, 6)
    np.testing.assert_array_equal(cm, skm.confusion_matrix(frame_class, pred, labels=range(6)))
    assert cm.sum() == len(p)
    # Frames called normal are exactly those under the threshold.
    np.testing.assert_array_equal(pred == normal_id, p < thr)


def test_evaluate_arrays_agrees_with_parts_and_is_strict_json():
    p, probs, frame_class, normal_id = _random_case(3)
    names = ["Abuse", "Arrest", "Normal", "Arson", "Assault", "Burglary"]
    out = M.evaluate_arrays(p, probs, frame_class, names, normal_id, primary="ap")
    y = frame_class != normal_id
    assert out["primary"] == "ap" and out["primary_value"] == out["ap"]
    assert out["auc"] == pytest.approx(skm.roc_auc_score(y, p), abs=1e-12)
    assert out["mauc"] == pytest.approx(
        np.mean([skm.roc_auc_score(frame_class == c, probs[:, c]) for c in (0, 1, 3, 4)]),
        abs=1e-12,
    )
    assert out["threshold_rule"] == "youden"
    assert "Burglary" not in out["per_class"]  # absent from the test set
    assert sum(map(sum, out["confusion"])) == len(p)
    assert json.loads(json.dumps(out, allow_nan=False)) == out


# ---------------------------------------------------------------------------------------------
# Tiny hand-computed cases

# Classes A, B, Normal, D (D never occurs). Anomaly shares (A, B, D) per frame, times p(A).
HAND_CLASS = np.array([2, 2, 0, 0, 1, 2])
HAND_P = np.array([0.1, 0.3, 0.9, 0.6, 0.8, 0.7])
HAND_SHARE = np.array(
    [[0.2, 0.5, 0.3], [0.6, 0.3, 0.1], [0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [0.2, 0.5, 0.3]]
    + [[0.3, 0.3, 0.4]]
)
HAND_PROBS = np.insert(HAND_SHARE * HAND_P[:, None], 2, 1 - HAND_P, axis=1)
HAND_NAMES = ["A", "B", "Normal", "D"]


def test_hand_case_with_a_class_absent():
    out = M.evaluate_arrays(HAND_P, HAND_PROBS, HAND_CLASS, HAND_NAMES, 2)
    # Abnormal scores 0.9, 0.6, 0.8 vs normal 0.1, 0.3, 0.7: 8 of 9 pairs ordered.
    assert out["auc"] == pytest.approx(8 / 9)
    # Ranked: 0.9 P, 0.8 P, 0.7 N, 0.6 P -> precisions 1, 1, 3/4 at the positives.
    assert out["ap"] == pytest.approx((1 + 1 + 0.75) / 3)
    # TPR - FPR: 0.9 -> 1/3, 0.8 -> 2/3, 0.7 -> 1/3, 0.6 -> 2/3: the higher of the tied wins.
    assert out["threshold"] == 0.8
    # Class A column .02 .18 .63 .06 .16 .21, positives .63 and .06: AUC 5/8, AP (1 + 2/5)/2.
    assert out["per_class"]["A"]["auc"] == pytest.approx(5 / 8)
    assert out["per_class"]["A"]["ap"] == pytest.approx(0.7)
    assert out["per_class"]["B"]["auc"] == 1.0 and out["per_class"]["B"]["ap"] == 1.0
    assert out["per_class"]["Normal"]["auc"] == pytest.approx(8 / 9)
    assert "D" not in out["per_class"]
    assert out["mauc"] == pytest.approx((5 / 8 + 1) / 2)
    assert out["map"] == pytest.approx((0.7 + 1) / 2)
    # Called normal (p < 0.8): frames 0, 1, 3, 5. Frame 3 (class A) ranks [Normal, D, B]: a
    # miss even at top-5 (k is capped at the 3 anomaly classes). Frame 2 (A) and 4 (B) hit.
    assert out["per_class"]["A"]["top1"] == 0.5 and out["per_class"]["A"]["top5"] == 0.5
    assert out["per_class"]["B"]["top1"] == 1.0
    assert out["per_class"]["Normal"]["top1"] == 1.0 and out["per_class"]["Normal"]["frames"] == 3
    assert out["top1"] == 0.75 and out["top5"] == 0.75
    assert out["confusion"] == [[1, 0, 1, 0], [0, 1, 0, 0], [0, 0, 3, 0], [0, 0, 0, 0]]


def test_hand_case_all_normal_video():
    p = np.array([0.2, 0.7, 0.4, 0.1])
    probs = np.insert(np.full((4, 3), 1 / 3) * p[:, None], 2, 1 - p, axis=1)
    out = M.evaluate_arrays(p, probs, np.full(4, 2), HAND_NAMES, 2)
    assert out["auc"] is None and out["ap"] is None  # undefined without abnormal frames
    assert out["mauc"] is None and out["map"] is None and out["top1"] is None
    assert out["threshold"] == 0.5 and out["threshold_rule"].startswith("default")
    assert out["per_class"]["Normal"]["top1"] == 0.75  # 0.7 is called abnormal
    assert list(out["per_class"]) == ["Normal"]
    assert math.isnan(M.youden_threshold(p, np.zeros(4, bool)))
    assert "AUC* -" in format_table(out) and "top-1 -" in format_table(out)


def test_hand_case_single_frame_video():
    (p,), (probs,) = score_videos(
        [torch.tensor([[0.0, 1.0]])],
        lambda x: (torch.sigmoid(x[..., 1]), torch.softmax(x, dim=-1)),
        N,
        L,
    )
    assert p.shape == (1,) and probs.shape == (1, 2)
    assert p.item() == pytest.approx(1 / (1 + math.exp(-1)))
    probs3 = np.array([[0.6, 0.1, 0.3]])  # classes A, Normal, B; p(A) = 0.9
    out = M.evaluate_arrays([0.9], probs3, [2], ["A", "Normal", "B"], 1)
    assert out["auc"] is None and out["ap"] == 1.0  # a lone positive ranks first
    assert out["threshold"] == 0.5
    assert out["per_class"]["B"] == {"auc": None, "ap": 1.0, "frames": 1, "top1": 0.0, "top5": 1.0}


def test_metrics_reject_mismatched_inputs():
    with pytest.raises(AnomalyError, match="3 scores but 2 labels"):
        M.frame_metrics(np.zeros(3), np.zeros(2))
    with pytest.raises(AnomalyError, match="frame classes"):
        M.class_metrics(np.zeros((2, 3)), np.array([0, 3]), 1)
    with pytest.raises(AnomalyError, match="primary"):
        M.evaluate_arrays(HAND_P, HAND_PROBS, HAND_CLASS, HAND_NAMES, 2, primary="f1")


# ---------------------------------------------------------------------------------------------
# Plots and reports


def _png_size(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as im:
        im.load()
        pixels = np.asarray(im.convert("RGB").resize((64, 64))).reshape(-1, 3)
        colours = len(np.unique(pixels, axis=0))
        return len(data), im.size, colours


def test_plots_write_real_pngs(tmp_path):
    p, probs, frame_class, normal_id = _random_case(0, F=800)
    y = frame_class != normal_id
    names = ["Abuse", "Arrest", "Normal", "Arson", "Assault", "Burglary"]
    out = M.evaluate_arrays(p, probs, frame_class, names, normal_id)
    files = [
        plot_roc(p, y, tmp_path / "roc.png"),
        plot_pr(p, y, tmp_path / "pr.png"),
        plot_confusion(np.array(out["confusion"]), names, tmp_path / "plots" / "confusion.png"),
    ]
    T = 300
    times = np.arange(T) / 30
    video = VideoPlot(times, p[:T], probs[:T], names, normal_id, "Arson001 (Arson)",
                      [(2.0, 4.5), (7.0, 8.0)], threshold=out["threshold"])  # fmt: skip
    files.append(plot_video(video, tmp_path / "video.png"))
    one = VideoPlot([0.0], p[:1], probs[:1], names, normal_id, "one frame")
    files.append(plot_video(one, tmp_path / "one.png"))
    for f in files:
        size, (w, h), colours = _png_size(f)
        assert size > 10_000, f
        assert w >= 500 and h >= 500, f
        assert colours > 5, f  # not a blank canvas


def test_video_csv_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    T, names = 37, ["Abuse", "Car accident", "Normal"]
    frames = np.arange(T) * 2
    times = frames / 25.0
    p = rng.random(T)
    probs = rng.dirichlet(np.ones(3), size=T)
    labels = rng.integers(0, 3, T)
    path = write_video_csv(tmp_path / "v.csv", frames, times, p, probs, names, labels)
    back = read_video_csv(path)
    assert path.read_text().splitlines()[0] == (
        "frame,time,p_abnormal,p_Abuse,p_Car accident,p_Normal,abnormal,predicted_class,gt_label"
    )
    assert path.read_text().splitlines()[1].endswith(",,," + names[labels[0]])  # no decision
    assert b"\r" not in path.read_bytes()  # plain LF line endings
    np.testing.assert_array_equal(back["frame"], frames)
    np.testing.assert_allclose(back["time"], times, atol=5e-5)
    np.testing.assert_allclose(back["p_abnormal"], p, atol=5e-7)
    np.testing.assert_allclose(back["probs"], probs, atol=5e-7)
    assert back["class_names"] == names
    np.testing.assert_array_equal(back["labels"], labels)

    write_video_csv(tmp_path / "u.csv", frames, times, p, probs, names)  # no ground truth
    assert read_video_csv(tmp_path / "u.csv")["labels"] is None
    assert back["abnormal"] is None and back["predicted"] is None

    # with a decision threshold: abnormal at p >= t, then the likeliest non-Normal class
    rule = FrameDecision(0.5, 2)
    decided = read_video_csv(
        write_video_csv(tmp_path / "d.csv", frames, times, p, probs, names, labels, decision=rule)
    )
    np.testing.assert_array_equal(decided["abnormal"], (p >= 0.5).astype(int))
    for t in range(T):
        want = names[int(np.argmax(probs[t, :2]))] if p[t] >= 0.5 else "Normal"
        assert decided["predicted"][t] == want
    with pytest.raises(AnomalyError, match="one row per frame"):
        write_video_csv(tmp_path / "w.csv", frames, times, p[:-1], probs, names)


def test_metrics_json_and_table(tmp_path):
    out = M.evaluate_arrays(HAND_P, HAND_PROBS, HAND_CLASS, HAND_NAMES, 2)
    metrics = {**out, "note": float("nan")}
    path = write_metrics_json(tmp_path / "run" / "metrics.json", metrics)
    back = json.loads(path.read_text())
    assert back["note"] is None and back["auc"] == out["auc"] and back["per_class"]["A"]["ap"]
    assert not list(path.parent.glob("*.tmp"))
    table = format_table(out)
    assert "AUC* 88.89" in table and "AP 91.67" in table and "mAUC 81.25" in table
    row_a = next(line for line in table.splitlines() if line.startswith("A "))
    assert row_a.split() == ["A", "2", "62.50", "70.00", "50.00", "50.00"]


def test_video_plot_without_presentation_times_uses_frame_numbers(tmp_path):
    """Features imported from .npy without --fps have NaN times; the plot falls back to frames."""
    from anomalyclip.evaluate.evaluation import VideoResult, write_outputs

    rng = np.random.default_rng(0)
    T, names = 40, ("A", "Normal")
    p = rng.random(T)
    probs = np.stack([p, 1 - p], 1)
    labels = np.where(np.arange(T) >= 30, 0, 1)
    result = VideoResult("v/one", np.arange(T), np.full(T, np.nan), p, probs, labels, [[30, 40]])
    metrics = {"threshold": 0.5, "confusion": [[10, 0], [0, 30]]}
    out = write_outputs(tmp_path, metrics, [result], names, 1)
    png = out / "videos" / "v" / "one.png"  # an id with "/" keeps its folder
    assert png.is_file() and png.stat().st_size > 10_000


def _pixels_of(path, rgb, tol=40):
    """(rows, cols) of the pixels within ``tol`` of colour ``rgb`` (anti-aliased lines keep
    their own colour along their middle)."""
    with Image.open(path) as im:
        a = np.asarray(im.convert("RGB")).astype(int)
    return np.nonzero(np.abs(a - np.array(rgb)).sum(-1) <= tol)


def test_roc_plot_draws_the_curve_of_the_data(tmp_path):
    """The ROC picture, read back by colour. Scores [0.9, 0.7, 0.5, 0.3] for labels
    [abnormal, normal, abnormal, normal] give the curve (0, 0) -> (0, .5) -> (.5, .5) ->
    (.5, 1) -> (1, 1): two horizontal blue runs, at TPR 0.5 over FPR 0..0.5 and at TPR 1 over
    FPR 0.5..1, meeting in the middle of the axes' width; the axes are square (equal aspect),
    so the runs lie half that width apart vertically. Another curve, swapped axes or a
    stretched plot break these relations."""
    scores, labels = np.array([0.9, 0.7, 0.5, 0.3]), np.array([True, False, True, False])
    path = plot_roc(scores, labels, tmp_path / "roc.png")
    rows, cols = _pixels_of(path, (0x1F, 0x77, 0xB4))
    counts = np.bincount(rows)
    long_rows = np.flatnonzero(counts > 100)  # curve segments; the legend's sample is short
    groups = np.split(long_rows, np.flatnonzero(np.diff(long_rows) > 1) + 1)
    assert len(groups) == 2, groups
    (upper, lower) = [(g.mean(), cols[np.isin(rows, g)]) for g in groups]
    (r_one, upper_cols), (r_half, lower_cols) = upper, lower
    left, step, right = lower_cols.min(), lower_cols.max(), upper_cols.max()
    assert abs(upper_cols.min() - step) <= 3  # the rise at FPR 0.5 joins the two runs
    width = right - left  # FPR 0 .. 1
    assert width > 300
    assert abs((step - left) - width / 2) <= 3  # FPR 0.5 midway
    assert abs((r_half - r_one) - width / 2) <= 3  # TPR 1 - 0.5 = half the (square) axes
    rise = cols == step
    assert rows[rise].min() <= r_one + 2 and rows[rise].max() >= r_half - 2


@pytest.mark.parametrize(("frames", "step", "xlabel"), [(1001, 1 / 25, "time (s)"),
                                                        (200_001, 100, "frame")])  # fmt: skip
def test_video_plot_keeps_every_label_inside_the_picture(tmp_path, monkeypatch, frames, step,
                                                         xlabel):  # fmt: skip
    """plot_video's margins are fixed: the title, axis labels, legends and tick labels (a last
    tick at the right edge, six-digit frame numbers) all lie inside the figure."""
    from anomalyclip.evaluate import plots

    rng = np.random.default_rng(0)
    times = np.arange(0, frames, max(1, int(step))) * (step if step < 1 else 1)
    n = len(times)
    names = ["Normal", "Abuse", "Arrest", "Road accident", "Arson"]
    video = plots.VideoPlot(times, rng.random(n), rng.dirichlet(np.ones(5), n), names, 0,
                            "a_long_camera_name_2026-12-02.mp4", [(3, 8)], threshold=0.5,
                            threshold_label="far@1 threshold", xlabel=xlabel)  # fmt: skip
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig = plots.video_figure(video)
    canvas = FigureCanvasAgg(fig)  # what savefig draws a PNG with
    canvas.draw()
    renderer = canvas.get_renderer()
    width, height = canvas.get_width_height()
    for ax in fig.axes:  # everything each axes draws: title, labels, legend, tick labels
        box = ax.get_tightbbox(renderer)
        assert box.x0 >= 0 and box.y0 >= 0 and box.x1 <= width and box.y1 <= height, box
