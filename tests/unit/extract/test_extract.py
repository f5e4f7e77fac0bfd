"""Preprocessing, the image encoder, and the extraction pipeline into a feature store."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import CLIPModel
from typer.testing import CliRunner

from anomalyclip.backbone import CLIP_MEAN, CLIP_STD
from anomalyclip.cli import app
from anomalyclip.datasets.registry import VideoEntry
from anomalyclip.extract.decode import Sampling, VideoSource
from anomalyclip.extract.encoder import ImageEncoder
from anomalyclip.extract.pipeline import extract
from anomalyclip.extract.preprocess import (
    MAX_LEVEL_DIFF,
    crop_offsets,
    normalize,
    resize_crop,
    resized_shape,
)
from anomalyclip.store import open_store
from anomalyclip.synthetic import encode_video, render_scene

# the stated tolerance (preprocess.py): <= 2 grey levels, so <= 2 / 255 / min(std) normalised
NORMALISED_TOL = MAX_LEVEL_DIFF / 255 / min(CLIP_STD) + 1e-6


def reference_preprocess(image: np.ndarray) -> np.ndarray:
    """CLIP's definition with PIL: bicubic shorter side to 224, centre crop, mean/std."""
    h, w = image.shape[:2]
    scale = 224 / min(h, w)
    size = (224, int(w * scale)) if h <= w else (int(h * scale), 224)  # (height, width)
    resized = np.asarray(Image.fromarray(image).resize((size[1], size[0]), Image.BICUBIC))
    top, left = round((size[0] - 224) / 2), round((size[1] - 224) / 2)
    crop = resized[top : top + 224, left : left + 224].astype(np.float64) / 255
    return ((crop - CLIP_MEAN) / CLIP_STD).transpose(2, 0, 1)  # (3, 224, 224)


def test_geometry_numbers():
    assert resized_shape(576, 768) == (224, 298) and crop_offsets(224, 298) == (0, 37)
    assert resized_shape(240, 320) == (224, 298)
    assert resized_shape(528, 720) == (224, 305) and crop_offsets(224, 305) == (0, 40)
    assert resized_shape(640, 360) == (398, 224)  # portrait


def _compare(images: np.ndarray) -> tuple[float, float, float]:
    ours = resize_crop(images)  # (N, 3, 224, 224) uint8
    ref = np.stack([reference_preprocess(im) for im in images])
    ref_levels = np.rint((ref.transpose(0, 2, 3, 1) * CLIP_STD + CLIP_MEAN) * 255)
    level_diff = np.abs(ours.permute(0, 2, 3, 1).numpy().astype(float) - ref_levels)
    norm_diff = np.abs(normalize(ours).numpy() - ref)
    return level_diff.max(), level_diff.mean(), norm_diff.max()


def test_normalize_maps_every_grey_level_as_the_float64_definition():
    # all 256 levels in each channel, in a batch of two: (x / 255 - mean) / std
    levels = torch.arange(256, dtype=torch.uint8).view(1, 1, 16, 16).expand(2, 3, 16, 16)
    levels = levels.contiguous()
    kept = levels.clone()
    got = normalize(levels)
    mean, std = np.asarray(CLIP_MEAN).reshape(3, 1, 1), np.asarray(CLIP_STD).reshape(3, 1, 1)
    ref = (levels.numpy().astype(np.float64) / 255 - mean) / std
    assert got.dtype == torch.float32 and got.shape == (2, 3, 16, 16)
    assert np.abs(got.numpy() - ref).max() < 2e-6  # a few float32 steps at |x| <= 2.2
    assert torch.equal(normalize(levels, torch.bfloat16), got.to(torch.bfloat16))
    assert torch.equal(levels, kept)  # the input is left as it was


def test_preprocessing_matches_pil_reference_on_real_frames(shared_videos):
    for name in ("vtest.avi", "tree.avi", "Megamind.avi"):
        images = np.stack(
            [f.image for f in VideoSource(shared_videos / name, Sampling("stride", 40))]
        )
        worst, mean, normalised = _compare(images)
        assert worst <= MAX_LEVEL_DIFF, name
        assert mean < 0.01, name  # measured 0.001-0.004 grey levels
        assert normalised <= NORMALISED_TOL, name


def test_preprocessing_matches_pil_reference_on_synthetic_shapes():
    rng = np.random.default_rng(0)
    for h, w in [(120, 160), (300, 200), (224, 224), (224, 400)]:
        frames, _ = render_scene("Explosion", rng, 3, (w, h))
        worst, mean, normalised = _compare(frames)
        assert worst <= MAX_LEVEL_DIFF and mean < 0.05 and normalised <= NORMALISED_TOL, (h, w)


def test_embedding_equals_get_image_features(tiny_clip):
    encoder = ImageEncoder(tiny_clip)
    pixels = torch.randint(0, 256, (5, 3, 224, 224), dtype=torch.uint8)
    ours = encoder(pixels)
    clip = CLIPModel.from_pretrained(tiny_clip).eval()
    with torch.no_grad():
        ref = clip.get_image_features(pixel_values=normalize(pixels))
    ref = ref if torch.is_tensor(ref) else ref.pooler_output  # transformers 5 wraps it
    assert ours.shape == (5, 512) and ours.dtype == torch.float32
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(ours.norm(dim=1), torch.ones(5))  # projected, not normalised


def _entries(paths) -> list[VideoEntry]:
    return [VideoEntry(Path(p).stem, Path(p), "Normal", "test") for p in paths]


@pytest.mark.slow
def test_real_videos_and_broken_files(shared_videos, tiny_clip, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "empty.mp4").write_bytes(b"")
    (broken / "notes.mp4").write_text("meeting notes, not a video\n" * 50)
    (broken / "vtest_cut.avi").write_bytes((shared_videos / "vtest.avi").read_bytes()[:4_000_000])
    real = sorted(shared_videos.glob("*.avi"))
    entries = _entries(real + sorted(broken.iterdir()))
    store = tmp_path / "real.zarr"
    summary = extract(entries, store, tiny_clip, dataset="demo", batch_size=48, workers=2,
                      root=shared_videos, progress=False)  # fmt: skip

    expected = {"vtest": 795, "tree": 68, "Megamind": 270, "Megamind_bugy": 270}
    assert summary.extracted == 4 and summary.frames == sum(expected.values())
    assert set(summary.failed) == {"empty", "notes", "vtest_cut"}
    assert "empty file" in summary.failed["empty"]
    assert "not a readable video" in summary.failed["notes"]
    assert "corrupt packet" in summary.failed["vtest_cut"]
    with open_store(store) as st:
        assert sorted(st.video_ids()) == sorted(expected)
        for vid, n in expected.items():
            rec = st.record(vid)
            assert rec.num_frames == n and st.features(vid).shape == (n, 512)
            assert st.features(vid).dtype == np.float16
            np.testing.assert_array_equal(st.frames(vid), np.arange(n))
            assert np.all(np.diff(st.times(vid)) > 0)
            assert rec.source == f"{vid}.avi" and rec.fingerprint
        assert st.record("Megamind_bugy").fps == 30.0 and st.record("tree").fps == pytest.approx(
            15, abs=1e-3
        )
        assert set(st.failures()) == {"empty", "notes", "vtest_cut"}
        assert st.verify() == {}
        assert st.attrs["sampling"] == {"mode": "all", "value": None}
        assert st.attrs["preprocessing"]["mean"] == list(CLIP_MEAN)

    # the same real frame through the pipeline and through encoder(preprocess) by hand
    frame = next(iter(VideoSource(shared_videos / "tree.avi"))).image
    by_hand = ImageEncoder(tiny_clip)(resize_crop(frame[None]))[0].numpy().astype(np.float16)
    with open_store(store) as st:
        np.testing.assert_allclose(st.features("tree")[0], by_hand, rtol=2e-3, atol=2e-3)

    again = extract(entries, store, tiny_clip, dataset="demo", progress=False)
    assert again.skipped == 4 and again.extracted == 0 and len(again.failed) == 3


def _small_videos(folder: Path, n: int, frames: int = 24) -> list[Path]:
    rng = np.random.default_rng(3)
    paths = []
    for k in range(n):
        pixels, _ = render_scene("Intruder" if k % 2 else "Normal", rng, frames + 3 * k, (64, 48))
        paths.append(folder / f"v{k}.mp4")
        encode_video(paths[-1], pixels)
    return paths


@pytest.mark.slow
def test_stride_sampling_and_cross_video_batches(tiny_clip, tmp_path):
    paths = _small_videos(tmp_path, 3)
    entries = _entries(paths)
    # batch 16 over videos of 24, 27, 30 frames: batches straddle videos
    summary = extract(entries, tmp_path / "s.zarr", tiny_clip, sampling=Sampling("stride", 3),
                      batch_size=16, workers=2, dataset="demo", progress=False)  # fmt: skip
    encoder = ImageEncoder(tiny_clip)
    assert summary.ok and summary.frames == 8 + 9 + 10
    with open_store(tmp_path / "s.zarr") as st:
        for path in paths:
            frames = list(VideoSource(path, Sampling("stride", 3)))
            np.testing.assert_array_equal(st.frames(path.stem), [f.index for f in frames])
            ref = encoder(resize_crop(np.stack([f.image for f in frames]))).numpy()
            np.testing.assert_allclose(st.features(path.stem), ref.astype(np.float16), atol=2e-3)
            assert st.record(path.stem).fps == 15.0
        assert st.attrs["sampling"] == {"mode": "stride", "value": 3}


def test_changed_source_is_redone_and_incompatible_store_refused(tiny_clip, tmp_path):
    paths = _small_videos(tmp_path, 2)
    store = tmp_path / "s.zarr"
    extract(_entries(paths), store, tiny_clip, dataset="demo", progress=False)
    pixels, _ = render_scene("Normal", np.random.default_rng(9), 20, (64, 48))
    encode_video(paths[0], pixels)  # the source changed: its fingerprint no longer matches
    summary = extract(_entries(paths), store, tiny_clip, dataset="demo", progress=False)
    assert summary.extracted == 1 and summary.skipped == 1
    with open_store(store) as st:
        assert st.record("v0").num_frames == 20
    from anomalyclip.errors import AnomalyError

    with pytest.raises(AnomalyError, match="sampling"):
        extract(_entries(paths), store, tiny_clip, sampling=Sampling("fps", 5), dataset="demo",
                progress=False)  # fmt: skip


CHILD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from anomalyclip.datasets.registry import VideoEntry
    from anomalyclip.extract import encoder as enc, pipeline
    from anomalyclip.store.store import FeatureStore

    slow = enc.ImageEncoder.__call__
    def call(self, pixels):  # slow the model down so the parent can kill us mid-run
        time.sleep(0.1)
        return slow(self, pixels)
    enc.ImageEncoder.__call__ = call
    write = FeatureStore.write_video
    def write_video(self, record, *args):
        out = write(self, record, *args)
        print("written", record.video_id, flush=True)
        return out
    FeatureStore.write_video = write_video

    clip, store, *paths = sys.argv[1:]
    entries = [VideoEntry(Path(p).stem, Path(p), "Normal", "test") for p in paths]
    pipeline.extract(entries, store, clip, dataset="demo", batch_size=8, workers=2,
                     dtype="float32", progress=False)
    print("finished", flush=True)
    """
)


def _read_store(path: Path) -> dict:
    with open_store(path) as st:
        return {
            vid: (st.features(vid), st.frames(vid), st.times(vid), st.record(vid))
            for vid in st.video_ids()
        }


@pytest.mark.slow
def test_kill_and_resume_equals_uninterrupted_run(tiny_clip, tmp_path):
    paths = _small_videos(tmp_path, 6)
    store = tmp_path / "killed.zarr"
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(tiny_clip), str(store), *map(str, paths)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    written = []
    for line in child.stdout:
        if line.startswith("written"):
            written.append(line.split()[1])
        if len(written) == 2:
            child.send_signal(signal.SIGKILL)  # mid-run, other videos half-embedded
            break
    child.wait()
    assert child.returncode == -signal.SIGKILL and len(written) == 2

    with open_store(store) as st:  # what the killed run left is readable, and only 2 are done
        done = set(st.video_ids())
        assert done == set(written)
        assert st.verify() == {}

    resumed = extract(_entries(paths), store, tiny_clip, dataset="demo", batch_size=8,
                      dtype="float32", progress=False)  # fmt: skip
    assert resumed.skipped == 2 and resumed.extracted == 4 and resumed.ok

    straight = tmp_path / "straight.zarr"
    extract(_entries(paths), straight, tiny_clip, dataset="demo", batch_size=8, dtype="float32",
            progress=False)  # fmt: skip
    a, b = _read_store(store), _read_store(straight)
    assert sorted(a) == sorted(b) == [p.stem for p in paths]
    for vid in a:
        # a resumed run packs videos into batches differently and CPU matmuls round a row
        # differently with the batch shape: equal up to float32 rounding (measured <= 1e-6)
        np.testing.assert_allclose(a[vid][0], b[vid][0], rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(a[vid][1], b[vid][1])
        np.testing.assert_array_equal(a[vid][2], b[vid][2])
        ra, rb = a[vid][3], b[vid][3]
        assert (ra.num_frames, ra.fingerprint, ra.fps) == (rb.num_frames, rb.fingerprint, rb.fps)
    result = CliRunner().invoke(app, ["store", "verify", str(store)])
    assert result.exit_code == 0, result.output


def test_features_cli_exits_nonzero_on_failure(tiny_clip, tmp_path):
    root = tmp_path / "demo"
    (root / "train" / "Normal").mkdir(parents=True)
    (root / "train" / "Explosion").mkdir(parents=True)
    pixels, _ = render_scene("Normal", np.random.default_rng(0), 20, (64, 48))
    encode_video(root / "train" / "Normal" / "ok.mp4", pixels)
    (root / "train" / "Explosion" / "broken.mp4").write_bytes(b"")
    out = tmp_path / "s.zarr"
    args = ["features", "--dataset", "demo", "--videos", str(root), "--out", str(out),
            "--model", str(tiny_clip), "--device", "cpu", "--workers", "1"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1
    assert "1 extracted" in result.output and "train/Explosion/broken: " in result.output
    with open_store(out) as st:
        assert (
            st.video_ids() == ["train/Normal/ok"] and st.record("train/Normal/ok").label == "Normal"
        )
        assert st.record("train/Normal/ok").source == "train/Normal/ok.mp4"


def test_self_referencing_symlink_fails_that_entry_alone(tiny_clip, tmp_path):
    """A symlink pointing at itself (a broken copy of a dataset) is one failed entry; the
    other videos are extracted and the store stays usable."""
    root = tmp_path / "videos"
    root.mkdir()
    good = _small_videos(root, 1)[0]
    loop = root / "loop.mp4"
    loop.symlink_to("loop.mp4")
    entries = _entries([good, loop])
    summary = extract(entries, tmp_path / "s.zarr", tiny_clip, dataset="demo", root=root,
                      progress=False)  # fmt: skip
    assert summary.extracted == 1 and list(summary.failed) == ["loop"]
    assert "loop.mp4: cannot read" in summary.failed["loop"]
    with open_store(tmp_path / "s.zarr") as st:
        assert st.video_ids() == ["v0"] and st.record("v0").source == "v0.mp4"
        assert st.failures()["loop"]["source"] == "loop.mp4"


def test_source_gone_unreadable_replaces_its_rows_with_the_failure(tiny_clip, tmp_path):
    """A video extracted once whose source is gone at the next run is recorded as failed,
    and its old rows no longer read as complete next to that failure."""
    paths = _small_videos(tmp_path, 2)
    store = tmp_path / "s.zarr"
    assert extract(_entries(paths), store, tiny_clip, dataset="demo", progress=False).ok
    paths[0].unlink()
    again = extract(_entries(paths), store, tiny_clip, dataset="demo", progress=False)
    assert list(again.failed) == ["v0"] and again.skipped == 1
    with open_store(store) as st:
        assert st.video_ids() == ["v1"] and list(st.failures()) == ["v0"]
        assert [(v, s) for v, _, s in st.listing()] == [("v1", "ok")]
        assert st.verify() == {}
