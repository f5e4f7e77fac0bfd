"""Shared stores that must not be trusted blindly: what copying, reading and listing a store
do with content that `anomaly store verify` rejects, crafted HDF5 files, wrongly typed
fields, ids too long for a file name and escape sequences in ids.

Stores are real Zarr and HDF5 files written by the package, then changed the way a careless
teammate or an attacker would (through zarr / h5py directly); commands run through the
console script's entry point, so exit codes and one-line errors are the real ones.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pytest
from cli_helper import anomaly, error_lines, run_cli

from anomalyclip.errors import AnomalyError
from anomalyclip.store import SCHEMA, VideoRecord, export_store, open_store, video_key

DIM = 8
ATTRS = {
    "schema": SCHEMA,
    "schema_version": 1,
    "dataset": "demo",
    "backbone": {"model": "tiny", "dim": DIM},
    "preprocessing": {"size": 224},
    "sampling": {"mode": "all", "value": None},
    "dtype": "float16",
    "producer": {"package": "anomalyclip test"},
}
# id -> (rows, label, split, intervals)
VIDEOS = {
    "train/n1": (30, "Normal", "train", []),
    "train/x1": (40, "Explosion", "train", []),
    "test/x2": (50, "Explosion", "test", [[10, 20]]),
    "test/n2": (20, "Normal", "test", []),
}


def make_store(path: Path, videos: dict = VIDEOS, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    with open_store(path, "w") as st:
        st.init(ATTRS)
        for vid, (rows, label, split, intervals) in videos.items():
            rec = VideoRecord(vid, f"{vid}.mp4", label, split, 10.0, intervals=intervals)
            st.write_video(rec, rng.standard_normal((rows, DIM)))
    return path


def silently_edit(path: Path, video_id: str) -> None:
    """New rows with valid chunk checksums (CRC32C / Fletcher-32) but the old SHA-256: what
    a tool that rewrites arrays without this package leaves."""
    with open_store(path, "a") as st:
        rec = st.record(video_id)
        rows = st.features(video_id).copy()
        rows[0] += 1
        st.backend.write_array(f"videos/{video_key(video_id)}", rows, {**rec.__dict__})


# -- copying never launders a damaged video ---------------------------------------------------
@pytest.mark.parametrize("suffix", [".zarr", ".h5"])
def test_export_refuses_a_video_that_fails_its_checksum(monkeypatch, capsys, tmp_path, suffix):
    src = make_store(tmp_path / f"src{suffix}")
    silently_edit(src, "test/x2")
    code, out, _ = anomaly(monkeypatch, capsys, "store", "verify", src)
    assert code == 1 and out.startswith("test/x2: checksum mismatch")
    dst = tmp_path / "copy.zarr"
    code, _, err = anomaly(monkeypatch, capsys, "store", "export", src, dst)
    assert code == 2
    assert error_lines(err) == [
        f"error: {src}: video 'test/x2': checksum mismatch (content changed since it was "
        "written); nothing exported (`anomaly store verify` lists every damaged video)"
    ]
    assert not dst.exists() and [p.name for p in tmp_path.iterdir()] == [src.name]


def test_an_export_that_fails_midway_leaves_the_old_destination(monkeypatch, capsys, tmp_path):
    """The second of four videos is damaged: the export stops there, the destination that
    existed is kept as it was, and no partial copy is left beside it."""
    src = make_store(tmp_path / "src.zarr")
    dst = make_store(tmp_path / "dst.h5", {"train/n1": VIDEOS["train/n1"]}, seed=1)
    before = dst.read_bytes()
    silently_edit(src, "train/x1")
    code, _, err = anomaly(monkeypatch, capsys, "store", "export", src, dst, "--overwrite")
    assert code == 2 and "video 'train/x1': checksum mismatch" in err
    assert dst.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dst.h5", "src.zarr"]


def test_merge_reports_damaged_videos_and_copies_the_rest(monkeypatch, capsys, tmp_path):
    src = make_store(tmp_path / "src.zarr")
    silently_edit(src, "test/x2")
    dst = tmp_path / "merged.zarr"
    code, out, err = anomaly(monkeypatch, capsys, "store", "merge", dst, src)
    assert code == 1
    assert out.strip() == "added 3, already present 0, conflicts 0, damaged 1"
    assert err.strip().splitlines()[-1] == (
        f"damaged: test/x2: in {src}: checksum mismatch (content changed since it was written)"
    )
    with open_store(dst) as st:
        assert st.video_ids() == ["test/n2", "train/n1", "train/x1"]
        assert st.verify() == {}


def test_merge_carries_failures_but_never_over_a_complete_video(monkeypatch, capsys, tmp_path):
    a = make_store(tmp_path / "a.zarr", {k: VIDEOS[k] for k in ("train/n1", "train/x1")})
    b = make_store(tmp_path / "b.zarr", {"test/n2": VIDEOS["test/n2"]})
    with open_store(b, "a") as st:
        st.record_failure("test/broken", "test/broken.mp4", "moov atom not found")
        st.record_failure("train/x1", "train/x1.mp4", "unreadable share")
    code, out, _ = anomaly(monkeypatch, capsys, "store", "merge", a, b)
    assert code == 0
    assert out.strip() == "added 1, already present 0, conflicts 0, failures carried 1"
    with open_store(a) as st:
        assert st.failures() == {
            "test/broken": {
                "video_id": "test/broken",
                "source": "test/broken.mp4",
                "error": "moov atom not found",
            }  # fmt: skip
        }
        assert st.video_ids() == ["test/n2", "train/n1", "train/x1"]  # x1 kept whole
        assert st.verify() == {}


# -- HDF5: a video's rows must live inside the store's file, checksummed ------------------------
SECRET = b"aws_secret_access_key=AKIAabcdefghijklmnop0123456789 password=hunter2 "


def craft_hdf5(path: Path, kind: str, tmp: Path) -> str:
    """Replace the rows of 'test/x2' in the HDF5 store ``path`` by a dataset of the same
    shape whose bytes live elsewhere (``kind``), with a record whose SHA-256 matches what
    reading it gives, so that only the storage itself gives it away. Returns the id."""
    import h5py

    from anomalyclip.store.records import content_sha256

    vid, key = "test/x2", video_key("test/x2")
    rows = VIDEOS[vid][0]
    nbytes = rows * DIM * 2
    target = tmp / "elsewhere.bin"
    if kind == "fifo":
        os.mkfifo(target)
    else:
        target.write_bytes((SECRET * (nbytes // len(SECRET) + 1))[:nbytes])
    with h5py.File(path, "a") as f:
        attrs = dict(f[f"videos/{key}"].attrs)
        frames, times = f[f"frames/{key}"][...], f[f"times/{key}"][...]
        del f[f"videos/{key}"]
        where = f"videos/{key}"
        if kind in ("external", "fifo"):
            f.create_dataset(where, (rows, DIM), "float16", external=[(str(target), 0, nbytes)])
        elif kind == "contiguous":
            f.create_dataset(where, data=np.ones((rows, DIM), np.float16))
        else:
            with h5py.File(tmp / "other.h5", "w") as other:
                other.create_dataset("rows", data=np.frombuffer(target.read_bytes(), "<f2")
                                     .reshape(rows, DIM))  # fmt: skip
            if kind == "virtual":
                layout = h5py.VirtualLayout((rows, DIM), "float16")
                layout[:] = h5py.VirtualSource(str(tmp / "other.h5"), "rows", (rows, DIM))
                f.create_virtual_dataset(where, layout)
            elif kind == "external-link":
                f[where] = h5py.ExternalLink(str(tmp / "other.h5"), "rows")
            else:  # a soft link to a dataset elsewhere in the same file
                f.create_dataset("elsewhere", data=np.ones((rows, DIM), np.float16),
                                 chunks=(rows, DIM), fletcher32=True)  # fmt: skip
                f[where] = h5py.SoftLink("/elsewhere")
        if kind != "fifo":
            rows_read = f[where][...]
            attrs["sha256"] = json.dumps(content_sha256(rows_read, frames, times))
        if kind not in ("external-link", "soft-link"):
            f[where].attrs.update(attrs)
    return vid


KINDS = ["external", "fifo", "virtual", "external-link", "soft-link", "contiguous"]


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_hdf5_rows_stored_outside_the_file_are_refused_without_reading_them(tmp_path, kind):
    """External raw storage, virtual datasets and links could make a shared .h5 read (and a
    copy carry) any local file, or hang on a FIFO; datasets must be chunked in the file with
    the Fletcher-32 filter, as the store writes them."""
    store = make_store(tmp_path / "shared.h5")
    vid = craft_hdf5(store, kind, tmp_path)
    verify = run_cli("store", "verify", store, timeout=120)  # a hang fails here, not forever
    assert verify.code == 1, verify.err
    [line] = verify.out.splitlines()
    assert line.startswith(f"{vid}: unusable array videos/ ("), line
    reason = {"external": "external raw storage", "fifo": "external raw storage",
              "virtual": "a virtual dataset", "external-link": "an external link",
              "soft-link": "a soft link", "contiguous": "not chunked with Fletcher-32"}  # fmt: skip
    assert reason[kind] in line
    export = run_cli("store", "export", store, tmp_path / "copy.zarr", timeout=120)
    assert export.code == 2
    assert export.error_line.startswith(f"error: {store}: video {vid!r}: ")
    assert reason[kind] in export.error_line
    assert not (tmp_path / "copy.zarr").exists()
    with open_store(store) as st:
        with pytest.raises(AnomalyError, match=f"video {vid!r}: .*{reason[kind]}"):
            st.video_ids()  # a linked record is refused when listed, the rest when read
            st.features(vid)
        assert st.features("test/n2").shape == (20, DIM)  # the other videos read as before
    assert SECRET not in (tmp_path / "shared.h5").read_bytes()


def test_hdf5_groups_that_are_links_are_refused(tmp_path):
    """The whole ``videos`` group as an external link into another file."""
    import h5py

    store = make_store(tmp_path / "shared.h5")
    make_store(tmp_path / "other.h5", seed=3)
    with h5py.File(store, "a") as f:
        del f["videos"]
        f["videos"] = h5py.ExternalLink(str(tmp_path / "other.h5"), "videos")
    done = run_cli("store", "verify", store, timeout=120)
    assert done.code == 2
    why = "group videos/ is an external link to data elsewhere (refused)"
    assert done.error_line == f"error: {store}: {why}"


# -- every read checks what verify checks that is cheap ----------------------------------------
def tamper(path: Path, video_id: str, rows=None, frames=None, **record) -> None:
    """Rewrite a video's arrays and record as a careless tool would, with a matching SHA-256
    (so the checksum is not what gives it away)."""
    from anomalyclip.store.records import content_sha256

    key = video_key(video_id)
    with open_store(path, "a") as st:
        rec = {**st.record(video_id).__dict__, **record}
        parts = {g: st.backend.array(f"{g}/{key}")[...] for g in ("videos", "frames", "times")}
        parts["videos"] = parts["videos"] if rows is None else rows
        parts["frames"] = parts["frames"] if frames is None else frames
        rec["sha256"] = content_sha256(parts["videos"], parts["frames"], parts["times"])
        for group, data in parts.items():
            st.backend.write_array(f"{group}/{key}", data, rec if group == "videos" else {})


RANDOM = np.random.default_rng(5)
TAMPERED = {  # what is changed -> what verify and every read say
    "split": ({"split": "validation"}, "split 'validation' is not train or test"),
    "reversed frames": ({"frames": np.arange(50)[::-1].copy()}, "frame numbers are not increasing"),
    "int8 rows": ({"rows": RANDOM.integers(-9, 9, (50, DIM), dtype=np.int8)},
                  "rows are int8, the store holds float16"),
    "narrow rows": ({"rows": RANDOM.standard_normal((50, 4)).astype(np.float16)},
                    "rows have width 4, the store's backbone 8"),
    "interval after the end": ({"intervals": [[60, 70]]},
                               "interval [60, 70) is not inside the video's frames [0, 50)"),
    "interval ending late": ({"intervals": [[10, 51]]},
                             "interval [10, 51) is not inside the video's frames [0, 50)"),
    "interval end 1e23": ({"intervals": [[10, 10**23]]},
                          f"interval [10, {10**23}) is not inside the video's frames [0, 50)"),
    "empty interval": ({"intervals": [[20, 20]]},
                       "interval [20, 20) is not inside the video's frames [0, 50)"),
}  # fmt: skip


@pytest.mark.parametrize("case", TAMPERED)
@pytest.mark.parametrize("suffix", [".zarr", ".h5"])
def test_reads_refuse_what_verify_rejects(monkeypatch, capsys, tmp_path, case, suffix):
    """A shared store edited by hand: training and evaluation read it through the same
    checks as `verify`, so a video is never scored, dropped or counted as normal silently."""
    store = make_store(tmp_path / f"s{suffix}")
    change, reason = TAMPERED[case]
    tamper(store, "test/x2", **change)
    code, out, _ = anomaly(monkeypatch, capsys, "store", "verify", store)
    assert code == 1 and out.splitlines() == [f"test/x2: {reason}"]
    expected = f"{store}: video 'test/x2': {reason} (`anomaly store verify` lists every damaged"
    with open_store(store) as st:
        with pytest.raises(AnomalyError) as found:
            for rec in st.records(split="test"):  # what evaluation reads, in its order
                st.frames(rec.video_id), st.features(rec.video_id)
        assert str(found.value).startswith(expected)
        assert st.features("test/n2").shape == (20, DIM)


def test_intervals_are_inside_frames_as_sampled(tmp_path):
    """With every 4th frame stored, the video runs to the frame after its last row's."""
    store = make_store(tmp_path / "s.zarr")
    tamper(store, "test/x2", frames=np.arange(0, 200, 4), intervals=[[180, 200]])
    with open_store(store) as st:
        assert st.verify() == {}
        assert st.frames("test/x2")[-1] == 196
    tamper(store, "test/x2", intervals=[[180, 201]])
    with open_store(store) as st:
        assert st.verify() == {
            "test/x2": "interval [180, 201) is not inside the video's frames [0, 200)"
        }


def test_writing_refuses_intervals_outside_the_video(tmp_path):
    with open_store(tmp_path / "s.zarr", "w") as st:
        st.init(ATTRS)
        rec = VideoRecord("test/x", "x.mp4", "Explosion", "test", 10.0, intervals=[[5, 12]])
        with pytest.raises(AnomalyError, match=r"^test/x: interval \[5, 12\) is not inside"):
            st.write_video(rec, np.ones((10, DIM)))
        assert st.keys() == []


# -- ids longer than a file name -------------------------------------------------------------
NAME = "北京市朝阳区监控摄像头录像二〇二四年十二月三十一日晚上十一点五十九分五十九秒"[:35]
LONG_ID = "现场/" * 6 + NAME


@pytest.mark.parametrize("suffix", [".zarr", ".h5"])
def test_ids_longer_than_a_file_name_are_stored_under_bounded_keys(tmp_path, suffix):
    """A 35-character CJK name six folders deep is 441 bytes once percent-encoded: its key
    is cut and ends in a hash; the record keeps the id, through which it is read back."""
    assert len(NAME) == 35 and len(quote(LONG_ID)) > 255 and len(video_key(LONG_ID)) <= 200
    assert video_key("test/x2") == "test%2Fx2"  # short keys unchanged
    other = LONG_ID[:-1] + "象"  # the same first 180 bytes of key, another video
    assert video_key(other) != video_key(LONG_ID)
    rows = np.random.default_rng(0).standard_normal((12, DIM))
    videos = {LONG_ID: (12, "Explosion", "test", [[2, 5]]), "train/n1": VIDEOS["train/n1"]}
    store = make_store(tmp_path / f"s{suffix}", videos)
    with open_store(store, "a") as st:
        st.write_video(VideoRecord(LONG_ID, label="Explosion", split="test", intervals=[[2, 5]]),
                       rows)  # fmt: skip
        st.record_failure(other, "x.mp4", "moov atom not found")
    with open_store(store) as st:
        assert sorted(st.video_ids()) == sorted([LONG_ID, "train/n1"])
        assert st.is_complete(LONG_ID) and st.record(LONG_ID).intervals == [[2, 5]]
        np.testing.assert_array_equal(st.features(LONG_ID), rows.astype(np.float16))
        assert list(st.failures()) == [other]
        assert st.verify() == {}
    copy = tmp_path / "copy.zarr"
    assert export_store(store, copy) == 2
    with open_store(copy) as st:
        np.testing.assert_array_equal(st.features(LONG_ID), rows.astype(np.float16))


def test_long_keys_of_older_stores_are_still_found(tmp_path):
    """An HDF5 store written before keys were bounded holds a long id under its full key."""
    from anomalyclip.store.records import content_sha256

    store = make_store(tmp_path / "old.h5", {"train/n1": VIDEOS["train/n1"]})
    full = quote(LONG_ID, safe="-_.,+=@()[]~ ")
    rows, frames = np.ones((3, DIM), np.float16), np.arange(3)
    times = frames / 10.0
    rec = VideoRecord(LONG_ID, label="Normal", split="train", fps=10.0, num_frames=3,
                      sha256=content_sha256(rows, frames, times), complete=True)  # fmt: skip
    with open_store(store, "a") as st:
        st.backend.write_array(f"frames/{full}", frames, {})
        st.backend.write_array(f"times/{full}", times, {})
        st.backend.write_array(f"videos/{full}", rows, rec.__dict__)
    with open_store(store) as st:
        assert sorted(st.video_ids()) == sorted([LONG_ID, "train/n1"])
        assert st.is_complete(LONG_ID) and st.features(LONG_ID).shape == (3, DIM)
        assert st.verify() == {}


def test_a_record_stored_under_another_videos_key_is_refused(tmp_path):
    store = make_store(tmp_path / "s.zarr")
    with open_store(store, "a") as st:
        st.backend.set_attrs(f"videos/{video_key('test/n2')}", {"video_id": "test/x2"})
    with open_store(store) as st:
        assert st.verify() == {
            "test/n2": "its record names another video ('test/x2')",
        }
        with pytest.raises(AnomalyError, match="its record names another video"):
            st.records()
        with pytest.raises(AnomalyError, match="video 'test/n2': its record names another"):
            st.features("test/n2")


# -- wrongly typed root attributes: one line naming the store and the field --------------------
ROOT_EDITS = {  # root attribute -> (value, what verify says, what a reading command says)
    "schema_version": ("2", None, 'root attribute schema_version = "2": expected an integer'),
    "dataset": (7, "dataset 7 is unknown", "root attribute dataset = 7: expected a dataset name"),
    "backbone": ({"model": "tiny", "dim": "8"}, "backbone has no dim",
                 "root attributes: backbone has no dim"),
}  # fmt: skip


@pytest.mark.parametrize("name", ROOT_EDITS)
def test_wrongly_typed_root_attributes_are_one_line(monkeypatch, capsys, tmp_path, name):
    value, verified, read = ROOT_EDITS[name]
    store = make_store(tmp_path / "s.zarr")
    with open_store(store, "a") as st:
        st.backend.set_attrs("", {name: value})
    code, out, err = anomaly(monkeypatch, capsys, "store", "verify", store)
    if verified is None:  # not even opened: a newer schema could mean anything
        assert code == 2 and error_lines(err) == [f"error: {store}: {read}"]
        return
    assert code == 1 and out.splitlines() == [f"/: root attributes: {verified}"]
    for command, shown in (("info", "videos     4 complete"), ("ls", "train/x1\ttrain")):
        code, out, _ = anomaly(monkeypatch, capsys, "store", command, store)
        assert code == 0 and shown in out  # the listings still show what is there
    args = ["train", "--features", store, "--out", tmp_path / "r", "--epochs", "1"]
    code, _, err = anomaly(monkeypatch, capsys, *args)
    assert code == 2 and error_lines(err)[0].startswith(f"error: {store}: {read}"), err[-2000:]


# -- what a store holds never drives the terminal -------------------------------------------
HOSTILE = "cam\x1b]0;owned\x07\x1b[2J\x1b[31m\u202egpj.exe\tx\ny"
SHOWN = "cam\\x1b]0;owned\\x07\\x1b[2J\\x1b[31m\\u202egpj.exe\\tx\\ny"


def test_ls_info_and_verify_escape_control_characters(monkeypatch, capsys, tmp_path):
    """Ids, labels and failure reasons come from whoever wrote the store: escape sequences
    (clear the screen, retitle the window, recolour), bidi overrides, tabs and newlines in
    them are shown escaped, so each video stays one line of tab-separated fields."""
    store = make_store(tmp_path / "s.zarr", {f"test/{HOSTILE}": (20, "Normal", "test", [])})
    with open_store(store, "a") as st:
        st.record_failure(f"train/{HOSTILE}", "x.mp4", f"moov atom not found {HOSTILE}\\z")
        key = st.key_for(f"test/{HOSTILE}")
        st.backend.set_attrs(f"videos/{key}", {"label": "Nor\x1b[8mmal"})
    outputs = {}
    for command in ("ls", "info", "verify"):
        code, out, err = anomaly(monkeypatch, capsys, "store", command, store)
        assert code == (1 if command == "verify" else 0)
        text = out + err  # (stderr's \r: the progress bar's own)
        assert not [c for c in text if (ord(c) < 32 and c not in "\n\t\r") or c in "\x7f\u202e"]
        assert "\r" not in out
        outputs[command] = out.splitlines()
    assert outputs["ls"] == [
        f"test/{SHOWN}\ttest\tNor\\x1b[8mmal\t20\tok",
        f"train/{SHOWN}\t-\t-\t0\tfailed: moov atom not found {SHOWN}\\\\z",
    ]
    assert "  test        1  Nor\\x1b[8mmal 1" in outputs["info"]
    assert outputs["verify"] == [
        f"test/{SHOWN}: label 'Nor\\x1b[8mmal' is not a class of dataset 'demo'"
    ]
