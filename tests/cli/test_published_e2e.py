"""From the authors' published files to per-frame scores, through the command line.

A published model arrives as ``last.ckpt`` + ``ncentroid.pt`` and its features as one
float32 ``.npy`` per video in the dataset's own layout. This test builds such files (the
checkpoint from the reference tables, :mod:`authors_fixtures`), runs

    anomaly store import-npy FEATURES --lists LISTS --dtype float32 --out STORE ...
    anomaly import-checkpoint last.ckpt --centroid ncentroid.pt --features STORE --out RUN ...
    anomaly eval --checkpoint RUN --out DIR

and holds the per-frame CSVs to a direct float64 computation written here from the
equations of docs/model.md, straight from the checkpoint's raw tensors (``net.*`` names,
OpenAI layout):
nothing of the package's model, importer or inference code is used for the reference.
"""

from __future__ import annotations

import csv
import json
import math
import sys
from collections import OrderedDict
from pathlib import Path, PurePosixPath

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from authors_fixtures import (
    CUDA_PICKLE,
    build_state_dict,
    openai_text_clip,
    openai_text_features,
    save_lightning,
    text_tower_tensors,
)
from sklearn.metrics import roc_auc_score
from transformers import CLIPTokenizer

from anomalyclip.cli import main
from anomalyclip.datasets import get_dataset
from anomalyclip.names import safe_name

pytestmark = pytest.mark.slow

N, L, HEADS, EPS = 32, 16, 8, 1e-5  # segments, frames per segment, heads, every norm's eps
TOL = 1e-5
FPS = 30  # UCF-Crime's frame rate

# The datasets' official layouts; the authors' features sit at <dir>/<list path>.npy.
# UCF-Crime: lists with the original video paths, annotations with inclusive frame ranges.
UCF_TRAIN = {  # list entry -> frames
    "Abuse/Abuse001_x264.mp4": 45,
    "Training_Normal_Videos_Anomaly/Normal_Videos001_x264.mp4": 80,
}
UCF_TEST = {  # list entry -> (frames, class, inclusive anomalous ranges)
    "Shooting/Shooting008_x264.mp4": (37, "Shooting", [(5, 20)]),
    "Testing_Normal_Videos_Anomaly/Normal_Videos_003_x264.mp4": (513, "Normal", []),
    "Abuse/Abuse028_x264.mp4": (700, "Abuse", [(165, 240)]),
    "Arrest/Arrest001_x264.mp4": (1300, "Arrest", [(100, 399), (900, 1000)]),
}
# ShanghaiTech (Zhong et al. split): id lists, classes of the anomalous videos, frame masks.
SHT_TRAIN = {"01_001": 60}
SHT_TEST = {
    "01_0015": (37, "throwing object", [(10, 25)]),
    "05_003": (513, "normal", []),
}


def write_ucf_lists(lists: Path) -> tuple[dict, dict]:
    (lists / "Anomaly_Train.txt").write_text("".join(f"{v}\n" for v in UCF_TRAIN))
    (lists / "Anomaly_Test.txt").write_text("".join(f"{v}\n" for v in UCF_TEST))
    rows = []
    for entry, (_, label, ranges) in UCF_TEST.items():
        numbers = [n for r in ranges for n in r] + [-1, -1] * (2 - len(ranges))
        rows.append("  ".join([Path(entry).name, label, *map(str, numbers)]))
    (lists / "Temporal_Anomaly_Annotation_for_Testing_Videos.txt").write_text("\n".join(rows))
    return UCF_TRAIN, UCF_TEST


def write_sht_lists(lists: Path) -> tuple[dict, dict]:
    (lists / "SH_Train.txt").write_text("".join(f"{v}\n" for v in SHT_TRAIN))
    (lists / "SH_Test.txt").write_text("".join(f"{v}\n" for v in SHT_TEST))
    (lists / "SH_Classes.txt").write_text(
        "".join(f"{v} {label}\n" for v, (_, label, _) in SHT_TEST.items() if label != "normal")
    )
    (lists / "test_frame_mask").mkdir()
    for v, (t, _, ranges) in SHT_TEST.items():
        mask = np.zeros(t, np.int64)
        for s, e in ranges:
            mask[s : e + 1] = 1
        np.save(lists / "test_frame_mask" / f"{v}.npy", mask)
    return SHT_TRAIN, SHT_TEST


def write_release(
    dataset: str, root: Path, centroid: np.ndarray, seed: int
) -> tuple[Path, Path, dict]:
    """Lists and ground truth in ``root/lists``, features in ``root/features``.

    Returns both folders and, per test video id, its (T, 512) float32 features and (T,) true
    class ids as the ground truth defines them.
    """
    lists, feats = root / "lists", root / "features"
    lists.mkdir(parents=True)
    train, test = {"ucf": write_ucf_lists, "sht": write_sht_lists}[dataset](lists)
    spec = get_dataset(dataset)
    rng = np.random.default_rng(seed)
    truth = {}
    for entry, t in {**train, **{v: t for v, (t, _, _) in test.items()}}.items():
        x = (centroid + 0.5 * rng.standard_normal((t, centroid.size))).astype(np.float32)
        vid = str(PurePosixPath(entry).with_suffix(""))
        (feats / vid).parent.mkdir(parents=True, exist_ok=True)
        np.save(feats / f"{vid}.npy", x)
        if entry in test:
            _, label, ranges = test[entry]
            abnormal = np.zeros(t, bool)
            for s, e in ranges:
                abnormal[s : e + 1] = True
            truth[vid] = (x, abnormal, np.where(abnormal, spec.class_id(label), spec.normal_id))
    return lists, feats, truth


def anomaly(*args: str | Path) -> None:
    """``anomaly ARGS`` in this process; fails the test on a non-zero exit."""
    argv = sys.argv
    sys.argv = ["anomaly", *map(str, args)]
    try:
        with pytest.raises(SystemExit) as exc:
            main()
    finally:
        sys.argv = argv
    assert exc.value.code == 0, f"anomaly {' '.join(map(str, args))} exited {exc.value.code}"


# -------------------------------------------------------------- docs/model.md's equations, directly
def layer_norm(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + EPS) * w + b


def softmax(x: torch.Tensor) -> torch.Tensor:
    e = torch.exp(x - x.max(-1, keepdim=True).values)
    return e / e.sum(-1, keepdim=True)


def axial_attention(x: torch.Tensor, w: dict[str, torch.Tensor], axis: int) -> torch.Tensor:
    """Pre-LN multi-head attention along ``axis`` (1: segments, 2: frames) of x (B, N, L, E)."""
    e = x.shape[-1]
    h = layer_norm(x, w["norm.weight"], w["norm.bias"])
    kv = h @ w["fn.to_kv.weight"].T  # (B, N, L, 2E): k rows first, then v
    q, k, v = h @ w["fn.to_q.weight"].T, kv[..., :e], kv[..., e:]
    # attended axis second to last, heads split off: (B, other, heads, T, E/heads)
    q, k, v = (t.movedim(axis, -2).unflatten(-1, (HEADS, -1)).transpose(-2, -3) for t in (q, k, v))
    att = softmax(q @ k.transpose(-1, -2) / math.sqrt(e // HEADS))  # (B, other, heads, T, T)
    out = (att @ v).transpose(-2, -3).flatten(-2).movedim(-2, axis)  # (B, N, L, E)
    return out @ w["fn.to_out.weight"].T + w["fn.to_out.bias"]


def conv_feed_forward(x: torch.Tensor, w: dict[str, torch.Tensor]) -> torch.Tensor:
    """Channel LN (eps on the std) -> 3x3 conv E->4E -> LeakyReLU(0.01) -> 3x3 conv 4E->E."""
    y = x.permute(0, 3, 1, 2)  # (B, E, N, L)
    mean = y.mean(1, keepdim=True)
    std = ((y - mean) ** 2).mean(1, keepdim=True).sqrt()
    y = (y - mean) / (std + EPS) * w["0.g"] + w["0.b"]
    y = F.conv2d(y, w["1.weight"], w["1.bias"], padding=1)  # (B, 4E, N, L)
    y = torch.where(y > 0, y, 0.01 * y)
    y = F.conv2d(y, w["3.weight"], w["3.bias"], padding=1)  # (B, E, N, L)
    return y.permute(0, 2, 3, 1)


def temporal_logits(sd: OrderedDict, x: torch.Tensor) -> torch.Tensor:
    """The authors' temporal model and head as plain residual couplings.

    x (B, N, L, in) -> logits (B, N, L).
    """

    def params(prefix: str) -> dict[str, torch.Tensor]:
        p = f"net.temporal_model.{prefix}"
        return {k.removeprefix(p): v.double() for k, v in sd.items() if k.startswith(p)}

    proj, head = params("projection."), params("classifier.")
    pos = params("axial_attn.pos_emb.")
    grid = (pos["param_0"] + pos["param_1"]).permute(0, 2, 3, 1)  # (1, N, L, E)
    a1 = a2 = x @ proj["weight"].T + proj["bias"] + grid
    depth = len({k.split(".")[5] for k in sd if ".axial_attn.layers.blocks." in k}) // 2
    for d in range(depth):
        attn, ff = f"axial_attn.layers.blocks.{2 * d}.", f"axial_attn.layers.blocks.{2 * d + 1}."
        a1 = a1 + axial_attention(a2, params(attn + "f.net.fn."), axis=1)  # along the segments
        a2 = a2 + axial_attention(a1, params(attn + "g.net.fn."), axis=2)  # along the frames
        a1 = a1 + conv_feed_forward(a2, params(ff + "f.net."))
        a2 = a2 + conv_feed_forward(a1, params(ff + "g.net."))
    y = layer_norm((a1 + a2) / 2, head["layer_norm.weight"], head["layer_norm.bias"])
    return (y @ head["linear.weight"].T + head["linear.bias"]).squeeze(-1)


def authors_prompt_ids(tokenizer: CLIPTokenizer, classes: tuple[str, ...]) -> torch.Tensor:
    """(C, 77): ``"X X X X X X X X <name>."`` tokenized, SOS ... EOS, zero padded."""
    ids = torch.zeros(len(classes), 77, dtype=torch.long)
    for c, name in enumerate(classes):
        row = tokenizer(" ".join(["X"] * 8) + " " + name.replace("_", " ") + ".")["input_ids"]
        ids[c, : len(row)] = torch.tensor(row)
    return ids


def arrange(x: torch.Tensor, contiguous: bool = False) -> torch.Tensor:
    """(T, D) -> (S, N, L, D) test sequences: wrap to T' = S*N*L; sequence j is sub-segment j
    of every one of the N chunks (``contiguous``: frames [jNL, (j+1)NL), a negative control)."""
    s = -(-x.shape[0] // (N * L))
    padded = x[torch.arange(s * N * L) % x.shape[0]]  # (T', D)
    if contiguous:
        return padded.reshape(s, N, L, -1)
    return padded.reshape(N, s, L, -1).transpose(0, 1)


def unarrange(y: torch.Tensor, t: int, contiguous: bool = False) -> torch.Tensor:
    """(S, N, L, ...) per-slot values -> (T, ...) in frame order (the inverse of arrange)."""
    if not contiguous:
        y = y.transpose(0, 1)  # (N, S, L, ...)
    return y.reshape(-1, *y.shape[3:])[:t]


def direct_outputs(
    sd: OrderedDict,
    centroid: torch.Tensor,
    text: torch.Tensor,
    videos: list[np.ndarray],
    normal_id: int,
    batchnorm: bool = True,
    contiguous: bool = False,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per video, p(A) (T,) and the C-way probabilities (T, C), all in float64."""
    m = centroid.double()
    anomaly_text = torch.cat([text[:normal_id], text[normal_id + 1 :]])  # (A, D)
    d = (anomaly_text - m) / (anomaly_text - m).norm(dim=-1, keepdim=True)
    seqs = [arrange(torch.from_numpy(v).double(), contiguous) for v in videos]
    x = torch.cat(seqs) - m  # (sum S, N, L, D), centred
    s = x @ d.T  # (sum S, N, L, A)
    if batchnorm:
        bn = "net.selector_model.bn_layer."
        s = (s - sd[bn + "running_mean"].double()) / torch.sqrt(
            sd[bn + "running_var"].double() + EPS
        )
    concat = sd["net.temporal_model.projection.weight"].shape[1] != x.shape[-1]
    logits = temporal_logits(sd, torch.cat([s, x], -1) if concat else x)
    p = 1 / (1 + torch.exp(-logits))  # (sum S, N, L)
    abnormal = softmax(s) * p[..., None]
    probs = torch.cat([abnormal[..., :normal_id], 1 - p[..., None], abnormal[..., normal_id:]], -1)
    out, start = [], 0
    for v, seq in zip(videos, seqs, strict=True):
        sl = slice(start, start + len(seq))
        start += len(seq)
        t = v.shape[0]
        out.append(
            (unarrange(p[sl], t, contiguous).numpy(), unarrange(probs[sl], t, contiguous).numpy())
        )
    return out


def read_csv(path: Path) -> dict[str, np.ndarray]:
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    header, body = rows[0], rows[1:]
    cols = {h: [r[i] for r in body] for i, h in enumerate(header)}
    return {
        "frame": np.array(cols["frame"], dtype=np.int64),
        "time": np.array(cols["time"], dtype=np.float64),
        "p": np.array(cols["p_abnormal"], dtype=np.float64),
        "probs": np.array([cols[h] for h in header[3:-3]], dtype=np.float64).T,
        "classes": [h.removeprefix("p_") for h in header[3:-3]],
        "label": np.array(cols["gt_label"]),
    }


# -------------------------------------------------------------------- the chain, through the CLI
@pytest.fixture(scope="module")
def clip_and_text(tmp_path_factory) -> tuple[Path, dict[str, torch.Tensor]]:
    """A CLIP of OpenAI's text shape (tokenizer, tower architecture) and one text tower."""
    return openai_text_clip(tmp_path_factory.mktemp("clip")), text_tower_tensors(seed=3)


@pytest.fixture(scope="module", params=["ucf", "sht"])
def release(request, tmp_path_factory, clip_and_text):
    """A published model and its features, through the README's three commands."""
    dataset = request.param
    root = tmp_path_factory.mktemp(f"published_{dataset}")
    clip, text_tower = clip_and_text
    tokenizer = CLIPTokenizer.from_pretrained(clip)
    sd = build_state_dict(dataset, text_tower, tokenizer, seed=4)
    ckpt = root / "release" / "last.ckpt"
    ckpt.parent.mkdir()
    save_lightning(ckpt, sd)
    centroid = torch.randn(512, generator=torch.Generator().manual_seed(5))
    torch.save(centroid, root / "release" / "ncentroid.pt", pickle_module=CUDA_PICKLE)
    lists, feats, test = write_release(dataset, root / dataset, centroid.numpy(), seed=6)

    # the README's commands ("Using the published models"), with a local CLIP for the tokenizer
    run, store, out = root / "runs" / dataset, root / "store.zarr", root / "eval"
    anomaly(
        "store", "import-npy", feats, "--dataset", dataset, "--lists", lists,
        "--dtype", "float32", "--fps", FPS, "--out", store,
    )  # fmt: skip
    anomaly(
        "import-checkpoint", ckpt, "--dataset", dataset,
        "--centroid", ckpt.with_name("ncentroid.pt"), "--features", store, "--clip", clip,
        "--out", run,
    )  # fmt: skip
    anomaly("eval", "--checkpoint", run, "--out", out)  # the store is the run's default
    spec = get_dataset(dataset)
    text = openai_text_features(sd, authors_prompt_ids(tokenizer, spec.classes))  # (C, 512)
    return {"spec": spec, "sd": sd, "centroid": centroid, "text": text, "test": test, "out": out}


def test_eval_equals_direct_computation(release):
    r = release
    spec, sd, test, out = r["spec"], r["sd"], r["test"], r["out"]
    videos = [x for x, _, _ in test.values()]
    direct = direct_outputs(sd, r["centroid"], r["text"], videos, spec.normal_id)

    lengths = sorted(len(v) for v in videos)
    assert lengths == ([37, 513, 700, 1300] if spec.name == "ucf" else [37, 513])
    all_p, all_truth = [], []
    for (vid, (x, abnormal, labels)), (p, probs) in zip(test.items(), direct, strict=True):
        got = read_csv(out / "videos" / f"{safe_name(vid)}.csv")
        t = len(x)
        assert got["classes"] == list(spec.classes)
        assert np.array_equal(got["frame"], np.arange(t))
        assert np.abs(got["time"] - np.arange(t) / FPS).max() < 1e-4
        assert list(got["label"]) == [spec.classes[c] for c in labels]
        assert np.abs(got["p"] - p).max() < TOL, vid
        assert np.abs(got["probs"] - probs).max() < TOL, vid
        # the scores are real, not saturated: p(A) spreads over the frames
        assert p.std() > 0.02 and 0.02 < p.mean() < 0.98, vid
        assert np.abs(probs.sum(-1) - 1).max() < 1e-12
        all_p.append(p)
        all_truth.append(abnormal)

    metrics = json.loads((out / "metrics.json").read_text())
    auc = roc_auc_score(np.concatenate(all_truth), np.concatenate(all_p))
    assert metrics["videos"] == len(test)
    assert abs(metrics["auc"] - auc) < 1e-4, (metrics["auc"], auc)


def test_direct_computation_is_sensitive(release):
    """Negative controls: the arrangement and the BatchNorm statistics each matter >> TOL."""
    r = release
    by_length = sorted(r["test"], key=lambda v: len(r["test"][v][0]))
    for vid, control in (
        (by_length[1], {"contiguous": True}),  # 513 frames: two sequences
        (by_length[0], {"batchnorm": False}),
    ):
        got = read_csv(r["out"] / "videos" / f"{safe_name(vid)}.csv")
        ((p, probs),) = direct_outputs(
            r["sd"], r["centroid"], r["text"], [r["test"][vid][0]], r["spec"].normal_id, **control
        )
        worst = max(np.abs(got["p"] - p).max(), np.abs(got["probs"] - probs).max())
        assert worst > 1e-3, control
