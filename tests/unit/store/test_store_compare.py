"""``anomaly store compare`` on cases whose answer is known.

The features are real: frames of the real test videos (a surveillance street scene, and
``tree.avi`` with its dropped frames) through the package's extractor and a random CLIP of
real input and output sizes. Each case changes one known thing (nothing, the file format, a
shift of k frames, every other frame, the frame path, the weights), so the offset, distance
and verdict it must give are known.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from cli_helper import call_cli

from anomalyclip.backbone import build_clip
from anomalyclip.datasets.registry import DEMO, VideoEntry
from anomalyclip.extract.decode import Sampling
from anomalyclip.extract.pipeline import extract
from anomalyclip.store import VideoRecord, open_store
from anomalyclip.store.compare import JPEG, RESIZE, SAME, align, compare, format_comparison

VIDEOS = {"vtest": ("vtest.avi", 4), "tree": ("tree.avi", 1)}  # id -> (file, stride)


def extracted(folder, videos, clip, mode="native", dtype="float16"):
    entries = [
        VideoEntry(vid, videos / name, "Normal", "test") for vid, (name, _) in VIDEOS.items()
    ]
    stores = []
    for vid, (_, stride) in VIDEOS.items():  # one sampling per store: one store per video
        path = folder / f"{mode}-{vid}.zarr"
        extract([e for e in entries if e.video_id == vid], path, clip, dataset="demo",
                sampling=Sampling("stride", stride), preprocess=mode, dtype=dtype,
                progress=False)  # fmt: skip
        stores.append(path)
    return stores


@pytest.fixture(scope="module")
def stores(tmp_path_factory, shared_videos, tiny_clip):
    """Each video's native and authors store (float16, as ``anomaly features`` writes)."""
    tmp = tmp_path_factory.mktemp("compare")
    return {mode: extracted(tmp, shared_videos, tiny_clip, mode) for mode in ("native", "authors")}


def rewritten(src, dst, change, **attrs):
    """A copy of the store ``src`` whose every video's rows are ``change(rows)``."""
    with open_store(src) as s, open_store(dst, "w") as d:
        d.init({**s.attrs, **attrs})
        for vid in s.video_ids():
            rows, rec = change(s.features(vid)), s.record(vid)
            d.write_video(VideoRecord(vid, label=rec.label, split=rec.split, fps=rec.fps), rows)
    return dst


@pytest.mark.slow
@pytest.mark.parametrize("which", [0, 1])
def test_a_store_against_itself_is_the_same_pipeline(stores, which):
    store = stores["native"][which]
    result = compare(store, store)
    s = result.summary()
    assert [v.offset for v in result.videos] == [0] and s["distance"] == 0.0
    assert s["cos_min"] == pytest.approx(1.0, abs=1e-9) and s["only_a"] == s["only_b"] == 0
    verdict = result.to_dict()["verdict"]
    assert verdict["same"] and verdict["cause"] is None
    assert verdict["line"] == "same pipeline: content distance 0.00 % (<= 0.02 %)"


def test_a_store_against_its_own_npy_export(stores, tmp_path):
    store = stores["native"][0]
    folder = tmp_path / "release" / "Street"  # nested, as releases are
    folder.mkdir(parents=True)
    with open_store(store) as st:
        for vid in st.video_ids():  # float32, as papers publish them
            np.save(folder / f"{vid}.npy", st.features(vid).astype(np.float32))
    np.save(folder / "unlisted.npy", np.zeros((3, 512), np.float32))
    result = compare(store, tmp_path / "release")
    assert result.b_kind == "npy" and result.dtype_b == "float32"
    assert [(v.rows_a, v.rows_b, v.offset) for v in result.videos] == [(199, 199, 0)]
    assert result.summary()["distance"] == 0.0 and result.only_b == ["Street/unlisted"]
    assert result.to_dict()["verdict"]["same"]


@pytest.mark.parametrize("k", [3, -2])
def test_a_shift_of_k_frames_is_found_as_offset_k(stores, tmp_path, k):
    """B holds the same video starting k frames earlier (k > 0) or later (k < 0)."""
    store = stores["native"][0]
    with open_store(store) as st:
        full = st.features("vtest")
    a = rewritten(store, tmp_path / "a.zarr", lambda r: r[max(k, 0) : len(r) + min(k, 0)])
    b = rewritten(store, tmp_path / "b.zarr", lambda r: r[max(-k, 0) : len(r) + min(-k, 0)])
    result = compare(a, b)
    (video,) = result.videos
    assert video.offset == k and video.distance == 0.0 and video.pairs == len(full) - 2 * abs(k)
    verdict = result.to_dict()["verdict"]
    assert not verdict["same"] and verdict["cause"] == "offset"
    assert verdict["line"].startswith(f"differs: B is {k:+d} frames from A in 1 of 1 videos")
    # without room to search, the same pair reads as far apart
    assert align(full[3:], full[:-3], max_offset=0).distance > JPEG / 4


def test_every_other_frame_is_a_sampling_difference(stores, tmp_path):
    store = stores["native"][0]
    half = rewritten(store, tmp_path / "half.zarr", lambda r: r[::2])
    verdict = compare(store, half).to_dict()["verdict"]
    assert verdict["cause"] == "sampling" and "row counts differ in 1 of 1" in verdict["line"]


def test_native_against_authors_is_the_jpeg_step(stores):
    measured = []
    for native, authors in zip(stores["native"], stores["authors"], strict=True):
        result = compare(authors, native)
        d = result.summary()["distance"]
        measured.append(d)
        verdict = result.to_dict()["verdict"]
        assert verdict["cause"] == "jpeg", (d, verdict)
        assert verdict["line"].startswith(f"differs: content distance {d:.2f} %: most likely")
        assert result.summary()["rounding_floor"] * 1.5 < d  # float16 storage does not explain it
    assert min(measured) > RESIZE and max(measured) <= JPEG


@pytest.mark.slow
def test_a_resize_kernel_difference_is_told_from_the_jpeg_step(shared_videos, tiny_clip, tmp_path):
    """torch's antialiased bicubic against PIL's, no JPEG: the same frames cropped two ways."""
    import torch
    from PIL import Image

    from anomalyclip.extract.decode import VideoSource
    from anomalyclip.extract.encoder import ImageEncoder
    from anomalyclip.extract.preprocess import pil_resize_crop, resize_crop

    images = [f.image for f in VideoSource(shared_videos / "vtest.avi", Sampling("stride", 4))]
    pil = np.stack([pil_resize_crop(Image.fromarray(im)).transpose(2, 0, 1) for im in images])
    encoder = ImageEncoder(tiny_clip)
    rows = {"torch": encoder(resize_crop(np.stack(images))).numpy(),
            "pil": encoder(torch.from_numpy(pil)).numpy()}  # fmt: skip
    paths = {}
    for name, r in rows.items():  # float32: the rows as computed
        paths[name] = tmp_path / f"{name}.zarr"
        with open_store(paths[name], "w") as st:
            st.init({**_attrs(tiny_clip), "dtype": "float32"})
            st.write_video(VideoRecord("vtest", label="Normal", split="test", fps=10.0), r)
    result = compare(paths["torch"], paths["pil"])
    verdict = result.to_dict()["verdict"]
    assert SAME < result.summary()["distance"] <= RESIZE and verdict["cause"] == "resize", verdict


def test_another_backbone(stores, shared_videos, tmp_path):
    other = build_clip(tmp_path / "other", "tiny", seed=1)
    theirs = extracted(tmp_path, shared_videos, other)[0]
    result = compare(stores["native"][0], theirs)
    assert result.summary()["distance"] > JPEG
    assert result.to_dict()["verdict"]["cause"] == "backbone"
    with open_store(stores["native"][0]) as st:
        narrow = {**st.meta.backbone, "dim": 256}
    wide = rewritten(
        stores["native"][0], tmp_path / "w.zarr", lambda r: r[:, :256], backbone=narrow
    )
    verdict = compare(stores["native"][0], wide).to_dict()["verdict"]
    assert verdict["cause"] == "backbone" and "512-d in A, 256-d in B" in verdict["line"]


def test_cli_text_json_and_max_distance(stores):
    native, authors = stores["native"][0], stores["authors"][0]
    done = call_cli("store", "compare", authors, native)
    assert done.code == 0
    lines = done.out.strip().splitlines()
    assert lines[0] == f"A {authors}" and lines[1] == f"B {native} (store)"
    assert lines[-1].startswith("differs: content distance ") and "JPEG step" in lines[-1]
    done = call_cli("store", "compare", authors, native, "--json")
    data = json.loads(done.out)
    assert done.code == 0 and data["verdict"]["cause"] == "jpeg" and len(data["videos"]) == 1
    d = data["summary"]["distance"]
    assert call_cli("store", "compare", authors, native, "--max-distance", d * 2).code == 0
    done = call_cli("store", "compare", authors, native, "--max-distance", f"{d / 2:g}")
    assert done.code == 1
    assert done.error_line == f"content distance {d:.2f} % is above --max-distance {d / 2:g}"


def test_cli_errors_are_one_line(tmp_path, stores):
    done = call_cli("store", "compare", stores["native"][0], tmp_path / "x")
    assert done.code == 2
    assert done.err.strip() == f"error: {tmp_path / 'x'}: no such store or folder of .npy features"
    done = call_cli("store", "compare", stores["native"][0], tmp_path, "--crop", "centre")
    assert (done.code, done.error_line) == (
        2,
        "error: --crop must be a crop index or 'mean', not 'centre'",
    )


def test_report_lists_the_farthest_videos_first(stores):
    text = format_comparison(compare(stores["authors"][1], stores["native"][1]))
    assert "tree" in text.splitlines()[3] and "differs" in text.splitlines()[-1]


def _attrs(clip) -> dict:
    from anomalyclip.backbone import describe
    from anomalyclip.store import provenance

    return provenance(dataset="demo", classes=DEMO.classes, backbone=describe(clip),
                      preprocessing={"size": 224},
                      sampling={"mode": "stride", "value": 4})  # fmt: skip


def test_float16_storage_is_the_same_pipeline_and_its_floor_is_estimated(stores, tmp_path):
    """A float32 store against its float16 copy: every difference is storage rounding, and the
    floor the verdict allows for (estimated from the rows alone) is that distance."""
    store32 = tmp_path / "f32.zarr"
    with open_store(stores["native"][0]) as st:
        rows = st.features("vtest").astype(np.float32)
    rng = np.random.default_rng(0)
    rows32 = rows + rng.normal(0, 1e-3, rows.shape).astype(np.float32)  # off the float16 grid
    with open_store(stores["native"][0]) as st:
        attrs = {**st.attrs, "dtype": "float32"}
    for path, r, dtype in (
        (store32, rows32, "float32"),
        (tmp_path / "f16.zarr", rows32, "float16"),
    ):
        with open_store(path, "w") as st:
            st.init({**attrs, "dtype": dtype})
            st.write_video(VideoRecord("vtest", label="Normal", split="test", fps=10.0), r)
    result = compare(store32, tmp_path / "f16.zarr")
    s = result.summary()
    assert s["distance"] > SAME  # float16 rounding is visible with random weights
    assert s["rounding_floor"] == pytest.approx(s["distance"], rel=0.05)
    verdict = result.to_dict()["verdict"]
    assert verdict["same"] and "within float16 storage rounding" in verdict["line"]
