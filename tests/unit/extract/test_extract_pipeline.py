"""The extraction pipeline piece by piece (decoders, batcher, writer), its one config, and
the precision choice.

The batcher and writer tests feed the pieces the interleavings a real run produces: chunks
of several videos arriving in turn, a video's end-of-stream note arriving before its last
rows (the decoder runs ahead of the model), batches straddling videos, a video with no
frame, a failure mid-video. Their pixels are real crops of a real video where it matters
(the decoder test), and tagged crops elsewhere so every row can be traced to its frame.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from cli_helper import call_cli, run_cli

from anomalyclip.datasets.registry import DEMO, VideoEntry
from anomalyclip.errors import AnomalyError
from anomalyclip.extract import encoder as encoder_module
from anomalyclip.extract.batching import Batcher
from anomalyclip.extract.config import ExtractConfig
from anomalyclip.extract.decode import Sampling, VideoSource
from anomalyclip.extract.decoder_threads import Chunk, Decoders, Done, Failed
from anomalyclip.extract.encoder import ImageEncoder, cpu_has_bf16, resolve_precision
from anomalyclip.extract.pipeline import extract, preprocessing_attrs
from anomalyclip.extract.preprocess import resize_crop
from anomalyclip.extract.writer import Job, Summary, Writer
from anomalyclip.store import open_store, provenance
from anomalyclip.synthetic import encode_video, render_scene


def _tagged(video: int, start: int, n: int) -> torch.Tensor:
    """(n, 3, 224, 224) uint8 crops whose first two pixels say (video, frame)."""
    x = torch.zeros(n, 3, 224, 224, dtype=torch.uint8)
    x[:, 0, 0, 0] = video
    x[:, 0, 0, 1] = torch.arange(start, start + n)
    return x


def test_batcher_batches_each_video_apart_and_splits_rows_back():
    lengths = {0: 13, 1: 3, 2: 20, 3: 1}  # frames per video
    chunk = 4  # the decoders' chunk size; batches are 6 here
    batcher, batches = Batcher(6), []
    # two decoder threads: videos 0 and 2 arrive interleaved, chunk by chunk
    order = [(0, 0), (2, 0), (0, 4), (2, 4), (2, 8), (0, 8), (2, 12), (0, 12), (2, 16)]
    order += [(1, 0), (3, 0)]
    for video, start in order:
        batches += batcher.add(video, _tagged(video, start, min(chunk, lengths[video] - start)))
    assert all(len(set(b.owner.tolist())) == 1 for b in batches)  # never two videos
    assert len(batcher) == 1 + 3 + 2 + 1  # each video's short remainder waits
    last = batcher.flush(2)
    assert last.owner.tolist() == [2, 2] and batcher.flush(2) is None
    batches += [last, *batcher.flush_all()]
    assert len(batcher) == 0 and batcher.flush_all() == []
    sizes = {v: [len(b.owner) for b in batches if b.owner[0] == v] for v in lengths}
    assert sizes == {0: [6, 6, 1], 1: [3], 2: [6, 6, 6, 2], 3: [1]}

    got: dict[int, list[np.ndarray]] = {v: [] for v in lengths}
    for b in batches:
        rows = b.pixels[:, 0, 0, :2].numpy().astype(np.float32)  # (n, 2) "embeddings"
        for video, part in b.split(rows):
            got[video].append(part)
    for video, n in lengths.items():  # every video's rows complete and in frame order
        rows = np.concatenate(got[video])
        np.testing.assert_array_equal(rows[:, 0], video)
        np.testing.assert_array_equal(rows[:, 1], np.arange(n))
    with pytest.raises(ValueError, match="rows for a batch"):
        batches[0].split(np.zeros((5, 2)))


def test_batcher_drop_forgets_only_that_videos_waiting_crops():
    batcher = Batcher(10)
    assert batcher.add(0, _tagged(0, 0, 4)) == []
    assert batcher.add(1, _tagged(1, 0, 3)) == []
    assert batcher.add(2, _tagged(2, 0, 8)) == []
    batcher.drop(1)
    assert len(batcher) == 12
    full = batcher.add(2, _tagged(2, 8, 5))
    assert len(full) == 1
    assert full[0].pixels[:, 0, 0, :2].tolist() == [[2, i] for i in range(10)]
    assert [b.pixels[:, 0, 0, :2].tolist() for b in batcher.flush_all()] == [
        [[0, i] for i in range(4)], [[2, 10], [2, 11], [2, 12]]
    ]  # fmt: skip
    batcher.drop(5)  # nothing waiting: nothing to do


@pytest.fixture
def store():
    url = f"memory://extract-writer-{uuid.uuid4().hex}"
    with open_store(url, mode="a") as st:
        st.init(
            provenance(dataset="demo", classes=DEMO.classes, backbone={"model": "test", "dim": 4},
                       preprocessing=preprocessing_attrs(), sampling=Sampling().describe(),
                       dtype="float32")
        )  # fmt: skip
        yield st


def _jobs(n: int) -> list[Job]:
    return [
        Job(VideoEntry(f"v{k}", Path(f"/videos/v{k}.mp4"), "Normal", "test"), 100 + k, f"fp{k}")
        for k in range(n)
    ]


def _chunk(video: int, start: int, n: int) -> Chunk:
    frames = np.arange(start, start + n)
    return Chunk(video, torch.zeros(n, 3, 2, 2, dtype=torch.uint8), frames, frames / 15.0)


def test_writer_publishes_a_video_only_once_all_its_rows_arrived(store):
    jobs, summary = _jobs(3), Summary(total=3)
    cfg = ExtractConfig(dataset="demo", dtype="float32", root="/videos")
    writer = Writer(store, jobs, cfg, summary, dim=4)
    rows = np.random.default_rng(0).standard_normal((12, 4)).astype(np.float32)
    writer.chunk(_chunk(0, 0, 5))
    writer.chunk(_chunk(1, 0, 4))
    writer.rows(0, rows[:3])
    writer.chunk(_chunk(0, 5, 3))
    writer.done(Done(0, num_decoded=8, fps=15.0))  # the decoder finished before the model
    writer.rows(0, rows[3:5])
    assert store.video_ids() == [] and writer.pending == [0, 1]  # 5 of 8 rows: not yet
    writer.rows(0, rows[5:8])
    assert store.video_ids() == ["v0"] and writer.published == 1 and writer.pending == [1]
    np.testing.assert_array_equal(store.features("v0"), rows[:8])
    np.testing.assert_array_equal(store.frames("v0"), np.arange(8))
    np.testing.assert_allclose(store.times("v0"), np.arange(8) / 15.0)
    rec = store.record("v0")
    assert (rec.source, rec.fps, rec.num_frames, rec.fingerprint) == ("v0.mp4", 15.0, 8, "fp0")

    writer.rows(1, rows[8:12])  # all 4 rows, but no end-of-video yet
    assert store.video_ids() == ["v0"]
    writer.done(Done(1, num_decoded=4, fps=15.0, truncated="ends at 2 s of 9 s"))
    assert store.video_ids() == ["v0", "v1"] and summary.truncated == {"v1": "ends at 2 s of 9 s"}
    writer.done(Done(2, num_decoded=0, fps=15.0))  # no frame kept: published, empty
    assert store.features("v2").shape == (0, 4)
    assert (summary.extracted, summary.frames, summary.failed) == (3, 12, {})


def test_writer_records_failures_and_forgets_the_video(store):
    jobs, summary = _jobs(3), Summary(total=3)
    cfg = ExtractConfig(dataset="demo", dtype="float32", strict=True)
    writer = Writer(store, jobs, cfg, summary, dim=4)
    writer.chunk(_chunk(0, 0, 2))
    writer.fail(0, "/videos/v0.mp4: corrupt packet")
    assert writer.pending == [] and "v0" in store.failures()
    writer.chunk(_chunk(1, 0, 2))
    writer.done(Done(1, 2, 15.0))
    writer.rows(1, np.full((2, 4), np.nan, np.float32))  # a model that overflowed
    assert "NaN or inf" in summary.failed["v1"] and "v1" in store.failures()
    writer.done(Done(2, 0, 15.0, truncated="ends early"))  # --strict: truncated is a failure
    assert summary.failed["v2"] == "/videos/v2.mp4: truncated (--strict): ends early"
    assert store.video_ids() == [] and summary.extracted == 0


def test_decoders_hand_each_video_complete_and_in_order(tmp_path, shared_videos):
    paths = [shared_videos / "tree.avi", tmp_path / "broken.mp4", shared_videos / "Megamind.avi"]
    paths[1].write_text("not a video\n" * 20)
    cfg = ExtractConfig(dataset="demo", batch_size=16, workers=2, sampling=Sampling("stride", 4))
    items: dict[int, list] = {0: [], 1: [], 2: []}
    with Decoders(paths, cfg) as decoded:
        for item in decoded:
            items[item.video].append(item)
    assert isinstance(items[1][-1], Failed) and "not a readable video" in items[1][-1].reason
    for k in (0, 2):
        *chunks, done = items[k]
        assert isinstance(done, Done) and all(isinstance(c, Chunk) for c in chunks)
        assert all(len(c.frames) == 16 for c in chunks[:-1])  # chunks of batch_size frames
        expected = list(VideoSource(paths[k], Sampling("stride", 4)))
        np.testing.assert_array_equal(
            np.concatenate([c.frames for c in chunks]), [f.index for f in expected]
        )
        first = resize_crop(np.stack([f.image for f in expected[:16]]))
        assert torch.equal(chunks[0].pixels, first)  # the crops of the real frames
        assert done.num_decoded == {0: 68, 2: 270}[k]


def _h264_stream(path: Path, segments: list[np.ndarray], fps: int = 15) -> Path:
    """(T, H, W, 3) uint8 segments as one raw H.264 stream, each coded at its own size: what
    a recorder dumps from a camera whose resolution was changed while it was recording."""
    data = b""
    for frames in segments:
        part = path.with_suffix(".part")
        with av.open(str(part), "w", format="h264") as container:
            stream = container.add_stream("libx264", rate=fps)
            stream.width, stream.height = frames.shape[2], frames.shape[1]
            stream.pix_fmt = "yuv420p"
            for image in frames:
                container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
            container.mux(stream.encode(None))
        data += part.read_bytes()
        part.unlink()
    path.write_bytes(data)
    return path


def test_decoders_crop_every_frame_of_a_source_that_changes_size_mid_stream(tmp_path):
    # 4:3 frames, then wider ones, in one stream. Each frame is cropped from its own size
    # (as it would be alone); the chunks still hold batch_size frames across the change.
    rng = np.random.default_rng(3)
    small, _ = render_scene("Explosion", rng, 11, (96, 72))
    wide, _ = render_scene("Normal", rng, 9, (160, 90))
    path = _h264_stream(tmp_path / "resized.h264", [small, wide])
    cfg = ExtractConfig(dataset="demo", batch_size=8, workers=1)
    with Decoders([path], cfg) as decoded:
        *chunks, done = list(decoded)
    assert isinstance(done, Done) and done.num_decoded == 20
    assert [len(c.frames) for c in chunks] == [8, 8, 4]
    expected = list(VideoSource(path))
    assert [f.image.shape for f in expected] == [(72, 96, 3)] * 11 + [(90, 160, 3)] * 9
    crops = torch.cat([resize_crop(f.image[None]) for f in expected])
    assert torch.equal(torch.cat([c.pixels for c in chunks]), crops)


def _small_videos(folder: Path, n: int) -> list[Path]:
    rng = np.random.default_rng(5)
    paths = []
    for k in range(n):
        pixels, _ = render_scene("Explosion" if k % 2 else "Normal", rng, 10 + 4 * k, (64, 48))
        paths.append(folder / f"v{k}.mp4")
        encode_video(paths[-1], pixels)
    return paths


@pytest.mark.slow
def test_extract_takes_one_config_and_fields_override_it(tiny_clip, tmp_path):
    paths = _small_videos(tmp_path, 3)
    entries = [VideoEntry(p.stem, p, "Normal", "test") for p in paths]
    cfg = ExtractConfig(dataset="demo", batch_size=8, dtype="float32", progress=False)
    a = extract(entries, tmp_path / "a.zarr", tiny_clip, cfg)
    b = extract(entries, tmp_path / "b.zarr", tiny_clip, dataset="demo", batch_size=8,
                dtype="float32", progress=False)  # fmt: skip
    c = extract(entries, tmp_path / "c.zarr", tiny_clip, cfg, sampling=Sampling("stride", 2))
    assert a.frames == b.frames == 10 + 14 + 18 and c.frames == 5 + 7 + 9
    with open_store(tmp_path / "a.zarr") as sa, open_store(tmp_path / "b.zarr") as sb:
        for p in paths:
            np.testing.assert_array_equal(sa.features(p.stem), sb.features(p.stem))
        assert sa.attrs["producer"]["precision"] == "fp32"
        assert sa.attrs["producer"]["attention"] == "sdpa"
    with open_store(tmp_path / "c.zarr") as sc:
        assert sc.attrs["sampling"] == {"mode": "stride", "value": 2}
    with pytest.raises(AnomalyError, match="batch size and workers must be >= 1"):
        extract(entries, tmp_path / "d.zarr", tiny_clip, cfg, batch_size=0)
    with pytest.raises(AnomalyError, match="precision 'fp8'"):
        ExtractConfig(dataset="demo", precision="fp8")
    with pytest.raises(TypeError):
        extract(entries, tmp_path / "d.zarr", tiny_clip, cfg, batchsize=8)  # a typo is no no-op


def test_auto_precision_follows_the_device_and_the_cpus_bf16_units(monkeypatch):
    assert cpu_has_bf16(frozenset({"avx2", "avx512f", "avx512_bf16"}))
    assert cpu_has_bf16(frozenset({"avx512f", "amx_tile", "amx_bf16"}))
    assert not cpu_has_bf16(frozenset({"avx2", "avx512f", "avx512_vnni"}))
    assert resolve_precision("auto", "cuda:0") == "fp16"
    assert resolve_precision("fp32", "cuda") == "fp32"
    assert resolve_precision("bf16", "cpu") == "bf16"
    monkeypatch.setattr(encoder_module, "cpu_has_bf16", lambda: True)
    assert resolve_precision("auto", "cpu") == "bf16"
    monkeypatch.setattr(encoder_module, "cpu_has_bf16", lambda: False)
    assert resolve_precision("auto", "cpu") == "fp32"
    with pytest.raises(ValueError, match="unknown precision"):
        resolve_precision("half", "cpu")


@pytest.mark.slow
def test_features_command_records_the_precision_it_used(tiny_clip, tmp_path):
    videos = tmp_path / "videos"
    (videos / "train" / "Normal").mkdir(parents=True)
    _small_videos(videos / "train" / "Normal", 2)  # the demo layout: train/<Class>/<id>.mp4
    bad = run_cli("features", "--dataset", "demo", "--videos", videos, "--precision", "fp8")
    assert bad.code == 2 and bad.error_line == (
        "error: --precision fp8: expected auto, fp32, bf16 or fp16"
    )
    store = tmp_path / "s.zarr"
    done = call_cli("features", "--dataset", "demo", "--videos", videos, "--model", tiny_clip,
                    "--precision", "bf16", "--out", store, "--workers", "1",
                    "--dtype", "float32")  # fmt: skip
    assert done.code == 0, done.err
    with open_store(store) as st:
        producer = st.attrs["producer"]
        assert sorted(st.video_ids()) == ["train/Normal/v0", "train/Normal/v1"]
        feats = st.features("train/Normal/v1")
        path = videos / st.record("train/Normal/v1").source
    assert producer["precision"] == "bf16" and producer["attention"] == "sdpa"
    ref = ImageEncoder(tiny_clip)(resize_crop(np.stack([f.image for f in VideoSource(path)])))
    cos = torch.nn.functional.cosine_similarity(torch.from_numpy(feats), ref, dim=1)
    assert len(cos) == 14 and cos.min() > 0.999  # bf16 features, within their tolerance
    assert not np.array_equal(feats, ref.numpy())  # and not fp32's


def test_a_video_s_features_do_not_depend_on_the_videos_extracted_beside_it(tiny_clip, tmp_path):
    """Bit for bit: one video extracted alone, and after other videos (whose frames a shared
    batch would put beside its own), gives the same stored rows. Matrix multiplies round a
    row differently with the rows around it, so this holds only if a batch never mixes
    videos; the videos are the demo world's, of lengths that do not fill whole batches."""
    paths = _small_videos(tmp_path, 4)  # 10, 14, 18, 22 frames
    cfg = ExtractConfig(dataset="demo", batch_size=8, dtype="float32", progress=False)
    target = VideoEntry("target", paths[3], "Normal", "test")
    others = [VideoEntry(p.stem, p, "Normal", "test") for p in paths[:3]]
    extract([target], tmp_path / "alone.zarr", tiny_clip, cfg)
    extract([*others, target], tmp_path / "beside.zarr", tiny_clip, cfg, workers=1)
    with open_store(tmp_path / "alone.zarr") as a, open_store(tmp_path / "beside.zarr") as b:
        alone, beside = a.features("target"), b.features("target")
    assert alone.shape == (22, 512)
    assert np.array_equal(alone, beside), np.abs(alone - beside).max()
