"""The feature store contract: round trips, integrity, ids, merging."""

from __future__ import annotations

import json
import uuid
from dataclasses import asdict
from pathlib import Path

import h5py
import numpy as np
import pytest

from anomalyclip.datasets import UCF
from anomalyclip.errors import AnomalyError
from anomalyclip.store import (
    FeatureStore,
    VideoRecord,
    content_sha256,
    export_store,
    merge_stores,
    open_store,
    provenance,
    video_key,
)

DIM = 16
# Ids as the datasets spell them: UCF-Crime's nested path, an XD-Violence name with '#', ','
# and spaces, and an id whose key would start with zarr's reserved "__" prefix.
VIDEOS = {
    "Abuse/Abuse028_x264": dict(rows=2500, label="Abuse", split="train", intervals=[]),
    "Normal_Videos_event/Normal_Videos_015_x264": dict(
        rows=700, label="Normal", split="test", intervals=[]
    ),
    "v=38GQ9L2meyE__#1_label_B2-0-0, Bad Boys (1995) #3": dict(
        rows=130, label="Shooting", split="test", intervals=[[10, 40], [90, 120]]
    ),
    "one_row": dict(rows=1, label="Normal", split="train", intervals=[]),
    "__starts_with_underscores": dict(rows=5, label="Abuse", split="train", intervals=[]),
}


@pytest.fixture(scope="session")
def base_attrs() -> dict:
    return provenance(
        dataset="ucf",
        classes=UCF.classes,
        backbone={"model": "openai/clip-vit-base-patch16", "revision": "abc", "dim": DIM},
        preprocessing={"size": 224, "mean": [0.48145466, 0.4578275, 0.40821073]},
        sampling={"stride": 1},
    )


def attrs_for(base: dict, dtype: str = "float16", **changes) -> dict:
    attrs = json.loads(json.dumps(base))
    attrs["dtype"] = dtype
    for dotted, value in changes.items():
        node = attrs
        *parents, leaf = dotted.split("__")
        for name in parents:
            node = node[name]
        node[leaf] = value
    return attrs


def random_video(
    video_id: str, seed: int
) -> tuple[VideoRecord, np.ndarray, np.ndarray, np.ndarray]:
    spec = VIDEOS[video_id]
    rng = np.random.default_rng(seed)
    n = spec["rows"]
    feats = (rng.standard_normal((n, DIM)) * 3).astype(np.float32)
    frames = np.sort(rng.choice(10 * n + 10, size=n, replace=False)).astype(np.int64)
    times = frames / 29.97 + rng.uniform(0, 1e-3, size=n)
    rec = VideoRecord(
        video_id=video_id,
        source=f"videos/{video_id}.mp4",
        label=spec["label"],
        split=spec["split"],
        fps=29.97,
        source_size=123456 + seed,
        fingerprint=f"sample-sha256:{seed:064x}",
        intervals=spec["intervals"],
    )
    return rec, feats, frames, times


def fill(path: str | Path, attrs: dict, ids=tuple(VIDEOS), seed: int = 0) -> dict:
    """Write the given videos into a new store; returns id -> (record, feats, frames, times)."""
    data = {}
    with open_store(path, "w") as st:
        st.init(attrs)
        for i, vid in enumerate(ids):
            data[vid] = random_video(vid, seed + i)
            st.write_video(*data[vid])
    return data


def comparable(rec: VideoRecord) -> dict:
    d = asdict(rec)
    d.pop("sha256")
    d.pop("num_frames")
    d.pop("complete")
    return d


def chunk_files(store: Path, group: str, video_id: str) -> list[Path]:
    return sorted(p for p in (store / group / video_key(video_id) / "c").rglob("*") if p.is_file())


def flip_byte(path: Path, offset: int) -> None:
    with path.open("r+b") as fh:
        fh.seek(offset)
        byte = fh.read(1)[0]
        fh.seek(offset)
        fh.write(bytes([byte ^ 0xFF]))


# -- round trip -------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_round_trip_through_every_format(tmp_path, base_attrs, dtype):
    attrs = attrs_for(base_attrs, dtype)
    src = tmp_path / "src.zarr"
    data = fill(src, attrs)
    with open_store(src, "a") as st:
        st.record_failure("Arson/Arson011_x264", "Arson/Arson011_x264.mp4", "invalid data found")

    chain = [src, tmp_path / "a.h5", tmp_path / "b.zip", tmp_path / "nested" / "c.zarr"]
    for a, b in zip(chain, chain[1:], strict=False):
        assert export_store(a, b) == len(VIDEOS)
    assert not list(tmp_path.glob(".*partial*")), "temporary export names left behind"

    for path in chain:
        with open_store(path) as st:
            assert st.attrs == attrs
            assert sorted(st.video_ids()) == sorted(VIDEOS)
            assert st.failures() == {
                "Arson/Arson011_x264": {
                    "video_id": "Arson/Arson011_x264",
                    "source": "Arson/Arson011_x264.mp4",
                    "error": "invalid data found",
                }
            }
            for vid, (rec, feats, frames, times) in data.items():
                got = st.features(vid)
                assert got.dtype == np.dtype(dtype) and got.shape == feats.shape
                # bit-exact against the stored dtype's cast (identity for float32)
                expected = feats.astype(dtype)
                assert got.tobytes() == expected.tobytes(), (path, vid)
                assert np.array_equal(st.frames(vid), frames) and st.frames(vid).dtype == np.int64
                assert st.times(vid).tobytes() == times.tobytes()
                stored = st.record(vid)
                assert comparable(stored) == comparable(rec)
                assert stored.complete and stored.num_frames == feats.shape[0]
                assert stored.sha256 == content_sha256(expected, frames, times)
            assert st.verify() == {}


def test_float16_is_default_and_halves_the_rows(tmp_path, base_attrs):
    assert base_attrs["dtype"] == "float16"
    rec, feats, frames, times = random_video("Abuse/Abuse028_x264", 0)
    with open_store(tmp_path / "s.zarr", "w") as st:
        st.init(base_attrs)
        st.write_video(rec, feats, frames, times)
        assert st.features(rec.video_id).dtype == np.float16
        np.testing.assert_array_equal(st.features(rec.video_id), feats.astype(np.float16))


def test_rows_reads_any_index_order_with_repeats(tmp_path, base_attrs):
    data = fill(tmp_path / "s.h5", attrs_for(base_attrs, "float32"), ids=["Abuse/Abuse028_x264"])
    feats = data["Abuse/Abuse028_x264"][1]
    index = np.array([2400, 3, 3, 1500, 2499, 0])
    with open_store(tmp_path / "s.h5") as st:
        np.testing.assert_array_equal(st.rows("Abuse/Abuse028_x264", index), feats[index])


def test_default_frames_and_times(tmp_path, base_attrs):
    with open_store(tmp_path / "s.zarr", "w") as st:
        st.init(base_attrs)
        st.write_video(VideoRecord("a", fps=25.0), np.zeros((4, DIM)))
        st.write_video(VideoRecord("b"), np.zeros((2, DIM)))
        np.testing.assert_array_equal(st.frames("a"), [0, 1, 2, 3])
        np.testing.assert_allclose(st.times("a"), [0.0, 0.04, 0.08, 0.12])
        assert np.isnan(st.times("b")).all()


def test_wrong_shapes_are_refused(tmp_path, base_attrs):
    with open_store(tmp_path / "s.zarr", "w") as st:
        st.init(base_attrs)
        with pytest.raises(AnomalyError, match="dim 8, the store holds 16"):
            st.write_video(VideoRecord("a"), np.zeros((3, 8)))
        with pytest.raises(AnomalyError, match=r"\(frames, dim\)"):
            st.write_video(VideoRecord("a"), np.zeros(3))
        with pytest.raises(AnomalyError, match="one entry per row"):
            st.write_video(VideoRecord("a"), np.zeros((3, DIM)), frames=np.arange(2))
        assert st.video_ids(complete=False) == []


# -- verify -------------------------------------------------------------------------------------
def test_verify_finds_flipped_byte_deleted_chunk_and_missing_flag(tmp_path, base_attrs):
    path = tmp_path / "s.zarr"
    fill(path, base_attrs)
    with open_store(path) as st:
        assert st.verify() == {}

    flipped, deleted, unflagged = (
        "Abuse/Abuse028_x264",
        "Normal_Videos_event/Normal_Videos_015_x264",
        "v=38GQ9L2meyE__#1_label_B2-0-0, Bad Boys (1995) #3",
    )
    # Abuse028 has 2500 rows = 3 chunks of 1024: damage the middle one
    chunks = chunk_files(path, "videos", flipped)
    assert len(chunks) == 3
    flip_byte(chunks[1], chunks[1].stat().st_size // 2)
    chunk_files(path, "videos", deleted)[0].unlink()
    meta = path / "videos" / video_key(unflagged) / "zarr.json"
    doc = json.loads(meta.read_text())
    del doc["attributes"]["complete"]
    meta.write_text(json.dumps(doc))

    with open_store(path) as st:
        problems = st.verify()
        assert set(problems) == {flipped, deleted, unflagged}
        assert problems[flipped].startswith("damaged data in videos/")
        assert problems[deleted] == "1 missing chunk(s) in videos/"
        assert problems[unflagged].startswith("incomplete")
        # readers never see the unflagged video
        assert unflagged not in st.video_ids()
        assert unflagged in st.video_ids(complete=False)


def test_verify_finds_damage_in_frames_and_times_and_silent_edits(tmp_path, base_attrs):
    path = tmp_path / "s.zarr"
    fill(path, base_attrs, ids=["Abuse/Abuse028_x264", "one_row", "__starts_with_underscores"])
    flip_byte(chunk_files(path, "times", "one_row")[0], 3)
    chunk_files(path, "frames", "Abuse/Abuse028_x264")[-1].unlink()
    # a valid rewrite of the rows that bypasses write_video: only the checksum can tell
    with open_store(path, "a") as st:
        arr = st._b.array(f"videos/{video_key('__starts_with_underscores')}")
        arr[0, 0] = arr[0, 0] + 1
    with open_store(path) as st:
        problems = st.verify()
    assert problems["one_row"].startswith("damaged data in times/")
    assert problems["Abuse/Abuse028_x264"] == "1 missing chunk(s) in frames/"
    assert problems["__starts_with_underscores"].startswith("checksum mismatch")


def test_verify_hdf5_catches_flipped_byte_in_a_chunk(tmp_path, base_attrs):
    path = tmp_path / "s.h5"
    fill(path, base_attrs, ids=["Abuse/Abuse028_x264", "one_row"])
    with h5py.File(path, "r") as f:
        dset = f[f"videos/{video_key('Abuse/Abuse028_x264')}"]
        assert dset.fletcher32 and dset.chunks == (834, DIM)  # 2500 rows in 3 even chunks
        info = dset.id.get_chunk_info(1)
        offset = info.byte_offset + info.size // 2
    with open_store(path) as st:
        assert st.verify() == {}
    flip_byte(path, offset)
    with open_store(path) as st:
        problems = st.verify()
    assert list(problems) == ["Abuse/Abuse028_x264"]
    assert problems["Abuse/Abuse028_x264"].startswith("damaged data in videos/")


# -- ids ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "bad", ["../x", "/abs", "a//b", "", "a/../../b", "a/./b", ".", "a/", "a\\b", "..\\x"]
)
def test_invalid_ids_are_refused(tmp_path, base_attrs, bad):
    with pytest.raises(AnomalyError, match="invalid video id"):
        video_key(bad)
    with open_store(tmp_path / "s.zarr", "w") as st:
        st.init(base_attrs)
        with pytest.raises(AnomalyError, match="invalid video id"):
            st.write_video(VideoRecord(bad), np.zeros((2, DIM)))
        with pytest.raises(AnomalyError, match="invalid video id"):
            st.record_failure(bad, "x", "y")
    assert not [p for p in (tmp_path / "s.zarr" / "videos").iterdir() if p.is_dir()]
    assert not (tmp_path / "x").exists()


def test_keys_are_flat_and_never_reserved(tmp_path, base_attrs):
    for vid in VIDEOS:
        key = video_key(vid)
        assert "/" not in key and not key.startswith("__") and key not in (".", "..")
    assert video_key("a/b") != video_key("a%2Fb")  # encoding is injective
    path = tmp_path / "s.zarr"
    fill(path, base_attrs, ids=["__starts_with_underscores", "Abuse/Abuse028_x264"])
    assert sorted(p.name for p in (path / "videos").iterdir() if p.is_dir()) == sorted(
        video_key(v) for v in ["__starts_with_underscores", "Abuse/Abuse028_x264"]
    )


# -- compatibility ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"backbone__model": "openai/clip-vit-large-patch14"}, "backbone.model"),
        ({"backbone__revision": "def"}, "backbone.revision"),
        ({"preprocessing__size": 336}, "preprocessing.size"),
        ({"sampling__stride": 2}, "sampling.stride"),
        ({"dataset": "xd"}, "dataset"),
    ],
)
def test_init_refuses_a_different_store(tmp_path, base_attrs, change, field):
    path = tmp_path / "s.zarr"
    fill(path, base_attrs, ids=["one_row"])
    with open_store(path, "a") as st:
        st.init(attrs_for(base_attrs))  # the same provenance: accepted
        with pytest.raises(AnomalyError, match=rf"{path}: existing store differs in {field} "):
            st.init(attrs_for(base_attrs, **change))
    with open_store(path, "a") as st, pytest.raises(AnomalyError, match="dtype"):
        st.init(attrs_for(base_attrs, "float32"))


def test_merge_refuses_a_different_backbone(tmp_path, base_attrs):
    fill(tmp_path / "a.zarr", base_attrs, ids=["one_row"])
    other = attrs_for(base_attrs, backbone__model="openai/clip-vit-large-patch14")
    fill(tmp_path / "b.zarr", other, ids=["Abuse/Abuse028_x264"])
    with pytest.raises(
        AnomalyError, match=r"b\.zarr: cannot merge into .*a\.zarr: backbone\.model"
    ):
        merge_stores(tmp_path / "a.zarr", [tmp_path / "b.zarr"])
    with open_store(tmp_path / "a.zarr") as st:
        assert st.video_ids() == ["one_row"]


@pytest.mark.parametrize("suffix", [".zarr", ".h5"])
def test_merging_two_halves_equals_the_whole(tmp_path, base_attrs, suffix):
    ids = list(VIDEOS)
    whole = fill(tmp_path / f"whole{suffix}", base_attrs, ids=ids)
    # the same videos, same seeds: two extraction jobs that split the list
    first, second = ids[:2], ids[2:]
    fill(tmp_path / "a.zarr", base_attrs, ids=first)
    fill(tmp_path / "b.h5", base_attrs, ids=second, seed=len(first))
    with open_store(tmp_path / "b.h5", "a") as st:
        st.record_failure("Arson/Arson011_x264", "x.mp4", "boom")

    dst = tmp_path / f"merged{suffix}"
    report = merge_stores(dst, [tmp_path / "a.zarr", tmp_path / "b.h5"])
    assert sorted(report.added) == sorted(ids)
    assert report.identical == [] and report.conflicts == {}
    with open_store(dst) as m, open_store(tmp_path / f"whole{suffix}") as w:
        assert m.attrs == w.attrs
        assert m.video_ids() == w.video_ids()
        for vid in whole:
            assert m.record(vid) == w.record(vid)
            assert m.features(vid).tobytes() == w.features(vid).tobytes()
            assert np.array_equal(m.times(vid), w.times(vid))
        assert m.verify() == {}


def test_merge_keeps_identical_once_and_reports_conflicts(tmp_path, base_attrs):
    data = fill(tmp_path / "dst.zarr", base_attrs, ids=["Abuse/Abuse028_x264", "one_row"])
    # the same Abuse028, and a different one_row (another extraction of the same id)
    with open_store(tmp_path / "src.zarr", "w") as st:
        st.init(base_attrs)
        st.write_video(*data["Abuse/Abuse028_x264"])
        rec, feats, frames, times = data["one_row"]
        st.write_video(rec, feats + 1, frames, times)
        st.write_video(*random_video("__starts_with_underscores", 7))

    report = merge_stores(tmp_path / "dst.zarr", [tmp_path / "src.zarr"])
    assert report.added == ["__starts_with_underscores"]
    assert report.identical == ["Abuse/Abuse028_x264"]
    assert list(report.conflicts) == ["one_row"]
    assert "src.zarr" in report.conflicts["one_row"]
    with open_store(tmp_path / "dst.zarr") as st:
        assert sorted(st.video_ids()) == sorted(
            ["Abuse/Abuse028_x264", "one_row", "__starts_with_underscores"]
        )
        np.testing.assert_array_equal(st.features("one_row"), feats.astype(np.float16))
        assert st.verify() == {}


def test_merge_same_rows_in_another_dtype_is_identical(tmp_path, base_attrs):
    rec, feats, frames, times = random_video("one_row", 0)
    feats16 = feats.astype(np.float16).astype(np.float32)  # representable in both dtypes
    for name, dtype in (("a.zarr", "float16"), ("b.zarr", "float32")):
        with open_store(tmp_path / name, "w") as st:
            st.init(attrs_for(base_attrs, dtype))
            st.write_video(rec, feats16, frames, times)
    report = merge_stores(tmp_path / "a.zarr", [tmp_path / "b.zarr"])
    assert report.identical == ["one_row"] and not report.conflicts


# -- rewriting and interruption -----------------------------------------------------------------
@pytest.mark.parametrize("suffix", [".zarr", ".h5"])
def test_rewriting_a_video_replaces_it(tmp_path, base_attrs, suffix):
    path = tmp_path / f"s{suffix}"
    data = fill(path, base_attrs, ids=["Abuse/Abuse028_x264"])
    rec = data["Abuse/Abuse028_x264"][0]
    short = np.full((10, DIM), 0.5, dtype=np.float32)
    with open_store(path, "a") as st:
        st.record_failure(rec.video_id, rec.source, "earlier failure")
        st.write_video(VideoRecord(**{**asdict(rec), "label": "Arrest"}), short)
    with open_store(path) as st:
        assert st.video_ids() == ["Abuse/Abuse028_x264"]
        assert st.features(rec.video_id).shape == (10, DIM)
        np.testing.assert_array_equal(st.frames(rec.video_id), np.arange(10))
        assert st.record(rec.video_id).label == "Arrest"
        assert st.record(rec.video_id).num_frames == 10
        assert st.failures() == {}  # a successful write clears the earlier failure
        assert st.verify() == {}
    if suffix == ".zarr":  # no stale chunks of the longer version are left on disk
        assert len(chunk_files(path, "videos", rec.video_id)) == 1
        assert len(chunk_files(path, "frames", rec.video_id)) == 1


class Killed(BaseException):
    """Stands for the process dying: not an Exception, so nothing catches it on the way."""


@pytest.mark.parametrize("suffix", [".zarr", ".h5"])
def test_interrupted_write_is_never_read_as_done(tmp_path, base_attrs, suffix):
    path = tmp_path / f"s{suffix}"
    data = fill(path, base_attrs, ids=["one_row"])
    rec, feats, frames, times = random_video("Abuse/Abuse028_x264", 3)
    with open_store(path, "a") as st:
        real_set_attrs = st._b.set_attrs

        def die_before_the_flag(node, attrs):
            if attrs.get("complete") is True:
                raise Killed
            real_set_attrs(node, attrs)

        st._b.set_attrs = die_before_the_flag
        with pytest.raises(Killed):
            st.write_video(rec, feats, frames, times)
        with pytest.raises(Killed):  # a redo of one_row that dies too unflags the old copy
            st.write_video(*data["one_row"])

    with open_store(path) as st:
        assert st.video_ids() == []
        assert sorted(st.video_ids(complete=False)) == ["Abuse/Abuse028_x264", "one_row"]
        assert not st.is_complete("Abuse/Abuse028_x264")
        assert st.summary()["incomplete"] == 2 and st.summary()["videos"] == 0
        assert set(st.verify()) == {"Abuse/Abuse028_x264", "one_row"}
    assert export_store(path, tmp_path / f"e{suffix}") == 0

    with open_store(path, "a") as st:  # the next run redoes it
        st.write_video(rec, feats, frames, times)
        assert st.is_complete("Abuse/Abuse028_x264", fingerprint=rec.fingerprint)
        assert not st.is_complete("Abuse/Abuse028_x264", fingerprint="sample-sha256:other")
        assert st.video_ids() == ["Abuse/Abuse028_x264"]
        assert st.verify() == {"one_row": "incomplete (no completeness flag)"}


# -- opening ------------------------------------------------------------------------------------
def test_non_stores_are_refused_naming_the_path(tmp_path):
    (tmp_path / "empty_dir").mkdir()
    (tmp_path / "text.h5").write_text("not hdf5")
    (tmp_path / "notes.txt").write_text("hello")
    import zarr

    zarr.create_group(store=str(tmp_path / "plain.zarr"), attributes={"x": 1})
    for name in ["missing.zarr", "missing.h5", "missing.zip", "empty_dir", "text.h5", "notes.txt"]:
        with pytest.raises(AnomalyError, match=rf"^{tmp_path / name}: "):
            open_store(tmp_path / name)
    with pytest.raises(AnomalyError, match="not an anomalyclip feature store"):
        open_store(tmp_path / "plain.zarr")


def test_newer_schema_is_refused(tmp_path, base_attrs):
    fill(tmp_path / "s.zarr", attrs_for(base_attrs, schema_version=2), ids=[])
    with pytest.raises(AnomalyError, match="schema version 2 is newer"):
        open_store(tmp_path / "s.zarr")


@pytest.mark.parametrize("name", ["new/dir/s.h5", "new/dir/s.zip", "new/dir/s.zarr"])
def test_export_creates_missing_folders(tmp_path, base_attrs, name):
    fill(tmp_path / "s.zarr", base_attrs, ids=["one_row"])
    assert export_store(tmp_path / "s.zarr", tmp_path / name) == 1
    with open_store(tmp_path / name) as st:
        assert st.video_ids() == ["one_row"] and st.verify() == {}


def test_zip_store_cannot_be_appended(tmp_path, base_attrs):
    fill(tmp_path / "s.zarr", base_attrs, ids=["one_row"])
    export_store(tmp_path / "s.zarr", tmp_path / "s.zip")
    with pytest.raises(AnomalyError, match=r"s\.zip: a zip store is written once"):
        open_store(tmp_path / "s.zip", "a")
    with pytest.raises(AnomalyError, match="written once"):
        merge_stores(tmp_path / "s.zip", [tmp_path / "s.zarr"])
    with pytest.raises(AnomalyError, match="already exists"):
        export_store(tmp_path / "s.zarr", tmp_path / "s.zip")


def test_memory_url_store(base_attrs):
    url = f"memory://anomalyclip-test-{uuid.uuid4().hex}/feats.zarr"
    data = fill(url, base_attrs, ids=["Abuse/Abuse028_x264", "one_row"])
    with open_store(url) as st:
        assert isinstance(st, FeatureStore)
        assert sorted(st.video_ids()) == ["Abuse/Abuse028_x264", "one_row"]
        for vid, (_, feats, frames, _) in data.items():
            np.testing.assert_array_equal(st.features(vid), feats.astype(np.float16))
            np.testing.assert_array_equal(st.frames(vid), frames)
        assert st.verify() == {}
        assert st.size_bytes() > 2500 * DIM  # the rows compress, but not below half
    import fsspec

    fs = fsspec.filesystem("memory")
    chunk = next(p for p in fs.find(url.split("://")[1]) if "videos/one_row/c/" in p)
    raw = bytearray(fs.cat_file(chunk))
    raw[len(raw) // 2] ^= 0xFF
    fs.pipe_file(chunk, bytes(raw))
    with open_store(url) as st:
        assert list(st.verify()) == ["one_row"]
    fs.rm(url.split("://")[1].split("/")[0], recursive=True)


def test_summary_counts(tmp_path, base_attrs):
    path = tmp_path / "s.h5"
    fill(path, base_attrs)
    with open_store(path, "a") as st:
        st.record_failure("Arson/Arson011_x264", "a.mp4", "bad")
        summary = st.summary()
    assert summary["videos"] == 5 and summary["failed"] == 1 and summary["incomplete"] == 0
    assert summary["frames"] == sum(v["rows"] for v in VIDEOS.values())
    assert summary["per_split"] == {"test": 2, "train": 3}
    assert summary["per_class"] == {
        "test/Normal": 1,
        "test/Shooting": 1,
        "train/Abuse": 2,
        "train/Normal": 1,
    }
    assert summary["dim"] == DIM and summary["dtype"] == "float16" and summary["dataset"] == "ucf"
    assert summary["size_bytes"] == path.stat().st_size


# -- benchmark ----------------------------------------------------------------------------------
def test_sample_rows_long_and_short_videos():
    from anomalyclip.bench.store import SEGMENT_LEN, SEGMENTS, sample_rows

    rng = np.random.default_rng(0)
    for length in (10_000, 512, 100, 1):
        index = sample_rows(length, rng).reshape(SEGMENTS, SEGMENT_LEN)
        assert index.min() >= 0 and index.max() < length
        # 16 consecutive rows per segment, wrapping around the end of the video
        np.testing.assert_array_equal(
            np.diff(index, axis=1) % length, np.full((SEGMENTS, SEGMENT_LEN - 1), 1 % length)
        )
        starts = index[:, 0]
        edges = np.floor(np.linspace(0, length, SEGMENTS + 1)).astype(int)
        assert (starts >= edges[:-1]).all()
        assert (starts < np.maximum(edges[1:], edges[:-1] + 1)).all()
    # a long video: one segment per span, so the segments cover the whole video in order
    index = sample_rows(10_000, rng).reshape(SEGMENTS, SEGMENT_LEN)
    assert (np.diff(index[:, 0]) > 0).all() and index[-1, 0] >= 10_000 - 10_000 // SEGMENTS


def test_bench_store_sizes_and_reads(tmp_path):
    from anomalyclip.bench.store import measure, table

    result = measure(tmp_path, n_videos=3, frames_per_video=600, batches=1)
    assert result["batch"] == [3, 512, 512]
    assert 300 * 3 <= result["frames"] < 900 * 3
    assert result["bytes"]["npy"] == sum(f.stat().st_size for f in (tmp_path / "npy").iterdir())
    # float16 rows: half of float32, plus frames, times, checksums and metadata
    rows = result["frames"] * 512
    assert result["bytes"]["npy"] >= rows * 4
    for fmt in ("zarr", "hdf5"):
        assert rows * 2 < result["bytes"][fmt] < rows * 2 * 1.2
        assert 0.45 < result["size_vs_npy"][fmt] < 0.6
    for cache in ("cold", "warm", "warm_cpu"):
        assert result["read_vs_npy"][cache]["npy"] == 1.0
        assert all(v > 0 for v in result["read_s"][cache].values())
    lines = table(result).splitlines()
    assert len(lines) == 5 and lines[2].startswith("zarr f16")


# -- reliability --------------------------------------------------------------------------------
def test_export_onto_an_existing_url_store_is_refused_unless_overwrite(tmp_path, base_attrs):
    """A URL destination is refused like a local one: an export never replaces a store silently."""
    fill(tmp_path / "a.zarr", base_attrs, ids=["one_row"])
    fill(tmp_path / "b.zarr", base_attrs, ids=["Abuse/Abuse028_x264"], seed=4)
    url = f"memory://anomalyclip-test-{uuid.uuid4().hex}/feats.zarr"
    assert export_store(tmp_path / "a.zarr", url) == 1
    with pytest.raises(AnomalyError, match=rf"^{url}: already exists; .*--overwrite"):
        export_store(tmp_path / "b.zarr", url)
    with open_store(url) as st:  # untouched
        assert st.video_ids() == ["one_row"] and st.verify() == {}
    assert export_store(tmp_path / "b.zarr", url, overwrite=True) == 1
    with open_store(url) as st:  # replaced whole: nothing of the old store is left
        assert st.video_ids() == ["Abuse/Abuse028_x264"] and st.verify() == {}
        assert st.keys() == [video_key("Abuse/Abuse028_x264")]
    # the same rule for a local destination
    with pytest.raises(AnomalyError, match="already exists"):
        export_store(tmp_path / "b.zarr", tmp_path / "a.zarr")
    assert export_store(tmp_path / "b.zarr", tmp_path / "a.zarr", overwrite=True) == 1
    with open_store(tmp_path / "a.zarr") as st:
        assert st.video_ids() == ["Abuse/Abuse028_x264"]
    import fsspec

    fsspec.filesystem("memory").rm(url.split("://")[1].split("/")[0], recursive=True)


def drop_root_attrs(path: Path, *names: str) -> None:
    """Remove root attributes behind the store's back, as a killed older writer left them."""
    if path.suffix == ".h5":
        with h5py.File(path, "a") as f:
            for name in names:
                del f.attrs[name]
        return
    meta = json.loads((path / "zarr.json").read_text())
    for name in names:
        del meta["attributes"][name]
    (path / "zarr.json").write_text(json.dumps(meta))


@pytest.mark.parametrize("suffix", [".zarr", ".h5"])
def test_incomplete_root_attributes(tmp_path, base_attrs, suffix):
    """A root with only some attributes (an older writer killed between its per-key
    updates) is written anew while no video is complete, and refused clearly otherwise."""
    path = tmp_path / f"s{suffix}"
    fill(path, base_attrs, ids=[])
    drop_root_attrs(path, "dataset", "backbone", "preprocessing", "sampling", "dtype", "producer")
    with open_store(path, "a") as st:
        st.init(base_attrs)  # re-initialised
        assert st.attrs == base_attrs
        st.write_video(*random_video("one_row", 0))
    drop_root_attrs(path, "backbone", "dataset")
    with (
        open_store(path, "a") as st,
        pytest.raises(
            AnomalyError, match=r"root attributes are incomplete \(no dataset, backbone\) but 1 "
        ),
    ):
        st.init(base_attrs)


# -- values, records and verify -----------------------------------------------------------------
def test_float16_store_refuses_values_it_would_turn_into_inf(tmp_path, base_attrs):
    """float32 rows beyond ±65504 would be stored as inf in a float16 store: refused, naming
    the video and the way out (a float32 store); NaN and inf are refused in any dtype."""
    rec, feats, frames, times = random_video("one_row", 0)
    big = feats.copy()
    big[0, 3] = 1e5
    with open_store(tmp_path / "s.zarr", "w") as st:
        st.init(base_attrs)
        with pytest.raises(AnomalyError, match=r"one_row: values up to 1e\+05 exceed float16's"):
            st.write_video(rec, big, frames, times)
        nan = feats.copy()
        nan[0, 0] = np.nan
        with pytest.raises(AnomalyError, match=r"one_row: 1 row\(s\) with NaN or inf"):
            st.write_video(rec, nan, frames, times)
        assert st.video_ids(complete=False) == []
        st.write_video(rec, feats * 1000, frames, times)  # large but representable: kept
        assert np.isfinite(st.features("one_row")).all()
    with open_store(tmp_path / "f32.zarr", "w") as st:
        st.init(attrs_for(base_attrs, "float32"))
        st.write_video(rec, big, frames, times)
        assert st.features("one_row")[0, 3] == 1e5


@pytest.mark.parametrize("suffix", [".zarr", ".h5"])
def test_record_row_count_must_match_the_arrays(tmp_path, base_attrs, suffix):
    """A record claiming more (or fewer) rows than its arrays hold is refused on read and
    named by verify, instead of sampling indices past the end (or ignoring rows)."""
    path = tmp_path / f"s{suffix}"
    fill(path, base_attrs, ids=["Abuse/Abuse028_x264", "one_row"])
    key = video_key("Abuse/Abuse028_x264")
    with open_store(path, "a") as st:
        st._b.set_attrs(f"videos/{key}", {"num_frames": 2600})
    with open_store(path) as st:
        with pytest.raises(AnomalyError, match=r"'Abuse/Abuse028_x264': has 2500 rows in vid"):
            st.rows("Abuse/Abuse028_x264", np.array([0, 2550]))
        assert st.verify() == {
            "Abuse/Abuse028_x264": "has 2500 rows in videos/, its record says 2600"
        }
        assert st.rows("one_row", np.array([0])).shape == (1, DIM)


def test_verify_checks_root_labels_and_values(tmp_path, base_attrs):
    path = tmp_path / "s.zarr"
    fill(path, base_attrs, ids=["Abuse/Abuse028_x264", "one_row", "__starts_with_underscores"])
    with open_store(path, "a") as st:
        assert st.verify() == {}
        st._b.set_attrs(f"videos/{video_key('one_row')}", {"label": "Picnic"})
        # rewritten rows with a NaN and a matching checksum: only a value check can tell
        rec, feats, frames, times = random_video("__starts_with_underscores", 9)
        st.write_video(rec, feats, frames, times)
        arr = st._b.array(f"videos/{video_key(rec.video_id)}")
        bad = arr[...]
        bad[1, 2] = np.nan
        arr[...] = bad
        st._b.set_attrs(
            f"videos/{video_key(rec.video_id)}",
            {"sha256": content_sha256(bad, frames, times)},
        )
        st._b.set_attrs("", {"backbone": {"model": "x"}, "dtype": "float8"})
    with open_store(path) as st:
        problems = st.verify()
    assert problems == {
        "/": "root attributes: backbone has no dim; dtype 'float8' is not float16 or float32",
        "one_row": "label 'Picnic' is not a class of dataset 'ucf'",
        "__starts_with_underscores": "1 row(s) of features with NaN or inf (first: row 1)",
    }
