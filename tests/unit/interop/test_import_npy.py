"""`anomaly store import-npy`: published per-video .npy features -> feature store.

Features are random float32 arrays written as .npy files in fake release layouts, with
hand-written list files; every test checks stored rows, labels, splits and intervals against
what was written.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from cli_helper import anomaly

from anomalyclip.errors import AnomalyError
from anomalyclip.interop.npy_import import NpyImportConfig, import_npy
from anomalyclip.store import open_store
from anomalyclip.store.npy import load_npy_features, split_feature_name

D = 512
UCF_TRAIN = """Abuse/Abuse001_x264.mp4
Arrest/Arrest002_x264.mp4
Training_Normal_Videos_Anomaly/Normal_Videos001_x264.mp4
"""
UCF_TEST = """Abuse/Abuse028_x264.mp4
RoadAccidents/RoadAccidents002_x264.mp4
Testing_Normal_Videos_Anomaly/Normal_Videos_003_x264.mp4
"""
UCF_TEMPORAL = """Abuse028_x264.mp4  Abuse  3  7  -1  -1
RoadAccidents002_x264.mp4  RoadAccidents  1  2  10  12
Normal_Videos_003_x264.mp4  Normal  -1  -1  -1  -1
"""
# id -> (rows, class, split, half-open intervals from the inclusive annotations above)
UCF_VIDEOS = {
    "Abuse/Abuse001_x264": (9, "Abuse", "train", []),
    "Arrest/Arrest002_x264": (5, "Arrest", "train", []),
    "Training_Normal_Videos_Anomaly/Normal_Videos001_x264": (12, "Normal", "train", []),
    "Abuse/Abuse028_x264": (10, "Abuse", "test", [[3, 8]]),
    "RoadAccidents/RoadAccidents002_x264": (14, "RoadAccidents", "test", [[1, 3], [10, 13]]),
    "Testing_Normal_Videos_Anomaly/Normal_Videos_003_x264": (3, "Normal", "test", []),
}


def write_lists(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "Anomaly_Train.txt").write_text(UCF_TRAIN)
    (folder / "Anomaly_Test.txt").write_text(UCF_TEST)
    (folder / "Temporal_Anomaly_Annotation_for_Testing_Videos.txt").write_text(UCF_TEMPORAL)
    return folder


def write_features(folder: Path, flat: set[str] = frozenset(), seed: int = 0) -> dict:
    """One (T, 512) float32 .npy per UCF video; ids in ``flat`` go in the top folder."""
    rng = np.random.default_rng(seed)
    feats = {}
    for vid, (rows, *_) in UCF_VIDEOS.items():
        feats[vid] = (rng.standard_normal((rows, D)) * 3).astype(np.float32)
        rel = Path(vid).name if vid in flat else vid
        path = folder / f"{rel}.npy"
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, feats[vid])
    return feats


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_round_trip_official_lists(tmp_path, dtype):
    lists = write_lists(tmp_path / "lists")
    npy = tmp_path / "release"
    # nested like AnomalyCLIP's <root>/<list path>.npy, two flat like other releases
    feats = write_features(npy, flat={"Arrest/Arrest002_x264", "Abuse/Abuse028_x264"})
    out = tmp_path / "ucf.zarr"
    summary = import_npy(npy, "ucf", out, NpyImportConfig(lists=lists, dtype=dtype, fps=30.0))
    assert sorted(summary.imported) == sorted(UCF_VIDEOS)
    assert summary.failed == {} and summary.missing == [] and summary.unlisted == []
    assert summary.frames == sum(v[0] for v in UCF_VIDEOS.values())
    with open_store(out) as st:
        attrs = st.attrs
        assert attrs["dataset"] == "ucf" and attrs["dtype"] == dtype
        assert attrs["backbone"] == {
            "model": "openai/clip-vit-base-patch16",
            "dim": 512,
            "output": "image_embeds (as published)",
            "source": "imported .npy",
        }
        assert attrs["preprocessing"] == {"source": "unknown (imported)"}
        assert attrs["sampling"]["mode"] == "all"
        assert st.verify() == {}
        for vid, (rows, label, split, intervals) in UCF_VIDEOS.items():
            rec = st.record(vid)
            assert (rec.label, rec.split, rec.intervals) == (label, split, intervals)
            assert rec.num_frames == rows and rec.complete and rec.fps == 30.0
            got = st.features(vid)
            assert got.dtype == np.dtype(dtype)
            assert got.tobytes() == feats[vid].astype(dtype).tobytes()  # bit-exact / the cast
            np.testing.assert_array_equal(st.frames(vid), np.arange(rows))
            np.testing.assert_array_equal(st.times(vid), np.arange(rows) / 30.0)
        assert st.record("Arrest/Arrest002_x264").source == "Arrest002_x264.npy"


def test_times_and_stride(tmp_path):
    lists = write_lists(tmp_path / "lists")
    write_features(tmp_path / "npy")
    import_npy(tmp_path / "npy", "ucf", tmp_path / "s.zarr", NpyImportConfig(lists=lists))
    with open_store(tmp_path / "s.zarr") as st:
        assert np.isnan(st.times("Abuse/Abuse001_x264")).all()
        assert st.record("Abuse/Abuse001_x264").fps == 0.0
    # features of every 16th frame: rows sit at frames 0, 16, 32 ... where the truth is looked up
    import_npy(
        tmp_path / "npy",
        "ucf",
        tmp_path / "k.zarr",
        NpyImportConfig(lists=lists, stride=16, fps=32.0),
    )
    with open_store(tmp_path / "k.zarr") as st:
        assert st.attrs["sampling"] == {"mode": "stride", "value": 16}
        np.testing.assert_array_equal(st.frames("Abuse/Abuse001_x264"), np.arange(9) * 16)
        np.testing.assert_array_equal(st.times("Abuse/Abuse001_x264"), np.arange(9) / 2.0)


def test_rerun_is_a_noop_and_a_changed_file_is_redone(tmp_path):
    lists = write_lists(tmp_path / "lists")
    npy = tmp_path / "npy"
    write_features(npy)
    out = tmp_path / "s.h5"
    first = import_npy(npy, "ucf", out, NpyImportConfig(lists=lists, dtype="float32"))
    with open_store(out) as st:
        before = {vid: st.record(vid) for vid in UCF_VIDEOS}
    again = import_npy(npy, "ucf", out, NpyImportConfig(lists=lists, dtype="float32"))
    assert again.imported == [] and sorted(again.skipped) == sorted(first.imported)
    with open_store(out) as st:
        assert {vid: st.record(vid) for vid in UCF_VIDEOS} == before

    new = np.ones((4, D), np.float32)
    np.save(npy / "Abuse/Abuse001_x264.npy", new)
    third = import_npy(npy, "ucf", out, NpyImportConfig(lists=lists, dtype="float32"))
    assert third.imported == ["Abuse/Abuse001_x264"] and len(third.skipped) == 5
    with open_store(out) as st:
        np.testing.assert_array_equal(st.features("Abuse/Abuse001_x264"), new)
        assert (
            st.record("Abuse/Abuse001_x264").fingerprint
            != before["Abuse/Abuse001_x264"].fingerprint
        )

    with pytest.raises(AnomalyError, match="existing store differs in dtype"):
        import_npy(npy, "ucf", out, NpyImportConfig(lists=lists, dtype="float16"))


def test_authors_list_format(tmp_path):
    npy = tmp_path / "Image-Features"
    feats = write_features(npy)
    ann = tmp_path / "Annotations"
    ann.mkdir()
    # the authors' lists: path first_frame last_frame label_id; frames 100.. for one video
    (ann / "Anomaly_Train_Abnormal.txt").write_text(
        "Abuse/Abuse001_x264 0 8 0\nArrest/Arrest002_x264 0 4 1\n"
    )
    (ann / "Anomaly_Train_Normal.txt").write_text(
        "Training_Normal_Videos_Anomaly/Normal_Videos001_x264 0 11 7\n"
    )
    (ann / "Anomaly_Test.txt").write_text(
        "Abuse/Abuse028_x264 100 109 0\n"
        "RoadAccidents/RoadAccidents002_x264 0 13 8\n"
        "Testing_Normal_Videos_Anomaly/Normal_Videos_003_x264 0 2 7\n"
    )
    (ann / "Temporal_Anomaly_Annotation_for_Testing_Videos.txt").write_text(
        UCF_TEMPORAL.replace("Abuse  3  7", "Abuse  103  107")
    )
    out = tmp_path / "s.zarr"
    names = ["Anomaly_Train_Abnormal.txt", "Anomaly_Train_Normal.txt", "Anomaly_Test.txt"]
    authors_lists = [ann / name for name in names]
    cfg = NpyImportConfig(authors_lists=authors_lists, dtype="float32")
    summary = import_npy(npy, "ucf", out, cfg)
    assert sorted(summary.imported) == sorted(UCF_VIDEOS) and not summary.failed
    with open_store(out) as st:
        for vid, (rows, label, split, intervals) in UCF_VIDEOS.items():
            rec = st.record(vid)
            offset = 100 if vid == "Abuse/Abuse028_x264" else 0
            want = [[s + offset, e + offset] for s, e in intervals]
            assert (rec.label, rec.split, rec.intervals) == (label, split, want)
            np.testing.assert_array_equal(st.frames(vid), offset + np.arange(rows))
            assert st.features(vid).tobytes() == feats[vid].tobytes()

    # a list whose name says no split needs train=/test=
    (ann / "mine.txt").write_text("Abuse/Abuse001_x264 0 8 0\n")
    with pytest.raises(AnomalyError, match="cannot tell the split"):
        import_npy(
            npy, "ucf", tmp_path / "t.zarr", NpyImportConfig(authors_lists=[ann / "mine.txt"])
        )
    ok = import_npy(
        npy,
        "ucf",
        tmp_path / "t.zarr",
        NpyImportConfig(authors_lists=[f"train={ann / 'mine.txt'}"]),
    )
    assert ok.imported == ["Abuse/Abuse001_x264"] and len(ok.unlisted) == 5


def test_authors_list_in_lists_dir_gets_a_hint(tmp_path):
    lists = tmp_path / "lists"
    write_lists(lists)
    (lists / "Anomaly_Test.txt").write_text("Abuse/Abuse028_x264 0 9 0\n")
    write_features(tmp_path / "npy")
    with pytest.raises(AnomalyError, match="pass it with --authors-list"):
        import_npy(tmp_path / "npy", "ucf", tmp_path / "s.zarr", NpyImportConfig(lists=lists))


def test_pickled_npy_is_refused_naming_the_file(tmp_path):
    path = tmp_path / "evil.npy"
    np.save(path, np.array([{"a": 1}, None], dtype=object))  # saved pickled: object dtype
    with pytest.raises(AnomalyError) as exc:
        load_npy_features(path, path)
    message = str(exc.value)
    assert message.startswith(f"{path}: pickled .npy") and "\n" not in message


def test_bad_files_are_recorded_and_the_rest_imported(monkeypatch, capsys, tmp_path):
    lists = write_lists(tmp_path / "lists")
    npy = tmp_path / "npy"
    feats = write_features(npy)
    bad = {
        "Abuse/Abuse001_x264": np.array([np.zeros(3)], dtype=object),  # pickled
        "Arrest/Arrest002_x264": np.zeros((4, 2, D), np.float32),  # 3-D
        "Abuse/Abuse028_x264": np.zeros((4, 768), np.float32),  # wrong width
        "RoadAccidents/RoadAccidents002_x264": np.where(
            np.arange(14)[:, None] == 6, np.nan, feats["RoadAccidents/RoadAccidents002_x264"]
        ).astype(np.float32),
    }
    for vid, arr in bad.items():
        np.save(npy / f"{vid}.npy", arr)  # saved pickled: object dtype
    truncated = npy / "Testing_Normal_Videos_Anomaly/Normal_Videos_003_x264.npy"
    truncated.write_bytes(truncated.read_bytes()[:200])
    out = tmp_path / "s.zarr"
    code, stdout, err = anomaly(
        monkeypatch, capsys, "store", "import-npy", npy, "--dataset", "ucf", "--out", out,
        "--lists", lists, "--dtype", "float32",
    )  # fmt: skip
    assert code == 1
    assert stdout.startswith("imported 1 (12 rows), unchanged 0, failed 5,")
    expected = {
        "Abuse/Abuse001_x264": "Abuse/Abuse001_x264.npy: pickled .npy (object array) refused",
        "Arrest/Arrest002_x264": "expected a 2-D (frames, 512) array, got shape (4, 2, 512)",
        "Abuse/Abuse028_x264": "rows have width 768, expected 512",
        "RoadAccidents/RoadAccidents002_x264": "1 row(s) with NaN or inf (first: row 6)",
        "Testing_Normal_Videos_Anomaly/Normal_Videos_003_x264": "unreadable .npy",
    }
    with open_store(out) as st:
        failures = st.failures()
        assert set(failures) == set(expected)
        for vid, reason in expected.items():
            assert reason in failures[vid]["error"]
            assert str(npy / vid) in failures[vid]["error"]  # the file is named
            assert f"failed: {vid}: " in err
        assert st.video_ids() == ["Training_Normal_Videos_Anomaly/Normal_Videos001_x264"]

    # fixing a file clears its failure on the next run
    np.save(npy / "Abuse/Abuse028_x264.npy", feats["Abuse/Abuse028_x264"])
    again = import_npy(npy, "ucf", out, NpyImportConfig(lists=lists, dtype="float32"))
    assert again.imported == ["Abuse/Abuse028_x264"] and again.skipped == [
        "Training_Normal_Videos_Anomaly/Normal_Videos001_x264"
    ]
    with open_store(out) as st:
        assert "Abuse/Abuse028_x264" not in st.failures() and len(st.failures()) == 4


@pytest.mark.slow
def test_single_file_ncrops_time_major(tmp_path):
    lists = write_lists(tmp_path / "lists")
    npy = tmp_path / "npy"
    rng = np.random.default_rng(1)
    ncrops = 3
    crops = {}
    for vid, (rows, *_) in UCF_VIDEOS.items():
        crops[vid] = rng.standard_normal((rows, ncrops, D)).astype(np.float32)  # (T, ncrops, D)
        (npy / vid).parent.mkdir(parents=True, exist_ok=True)
        np.save(npy / f"{vid}.npy", crops[vid].reshape(rows * ncrops, D))  # (T * ncrops, D)
    for crop in (2, "mean"):
        out = tmp_path / f"c{crop}.zarr"
        summary = import_npy(
            npy, "ucf", out, NpyImportConfig(lists=lists, dtype="float32", ncrops=ncrops, crop=crop)
        )
        assert len(summary.imported) == 6
        with open_store(out) as st:
            for vid, (rows, *_) in UCF_VIDEOS.items():
                want = crops[vid][:, 2] if crop == 2 else crops[vid].mean(axis=1)
                assert st.record(vid).num_frames == rows
                np.testing.assert_allclose(st.features(vid), want, rtol=0, atol=1e-6)
                if crop == 2:
                    assert st.features(vid).tobytes() == want.tobytes()

    np.save(npy / "Abuse/Abuse001_x264.npy", np.zeros((10, D), np.float32))  # 10 % 3 != 0
    summary = import_npy(
        npy, "ucf", tmp_path / "bad.zarr", NpyImportConfig(lists=lists, ncrops=ncrops)
    )
    assert "not a multiple of --ncrops 3" in summary.failed["Abuse/Abuse001_x264"]


def test_per_crop_files_flat_layout(tmp_path):
    """VadCLIP-style releases: one file per crop, ``<name>__<k>.npy``, all in one folder."""
    lists = write_lists(tmp_path / "lists")
    npy = tmp_path / "UCFClipFeatures"
    npy.mkdir()
    rng = np.random.default_rng(2)
    crops = {}
    for vid, (rows, *_) in UCF_VIDEOS.items():
        crops[vid] = rng.standard_normal((2, rows, D)).astype(np.float32)
        for k in range(2):
            np.save(npy / f"{Path(vid).name}__{k}.npy", crops[vid][k])
    out1 = tmp_path / "k1.zarr"
    assert (
        len(
            import_npy(
                npy, "ucf", out1, NpyImportConfig(lists=lists, dtype="float32", crop=1)
            ).imported
        )
        == 6
    )
    out_mean = tmp_path / "mean.zarr"
    import_npy(
        npy, "ucf", out_mean, NpyImportConfig(lists=lists, dtype="float32", crop="mean", ncrops=2)
    )
    with open_store(out1) as a, open_store(out_mean) as b:
        for vid in UCF_VIDEOS:
            assert a.features(vid).tobytes() == crops[vid][1].tobytes()
            assert a.record(vid).source == f"{Path(vid).name}__1.npy"
            np.testing.assert_allclose(b.features(vid), crops[vid].mean(axis=0), atol=1e-6)
            assert b.record(vid).fingerprint.endswith(";crop=mean")
    summary = import_npy(
        npy, "ucf", tmp_path / "x.zarr", NpyImportConfig(lists=lists, crop=0, ncrops=3)
    )
    assert all("2 crop files, --ncrops says 3" in why for why in summary.failed.values())


@pytest.mark.parametrize(
    ("rel", "want"),
    [
        ("Abuse/Abuse028_x264__5", ("Abuse/Abuse028_x264", 5)),
        ("Abuse028_x264_i3d", ("Abuse028_x264", None)),
        ("v=x__#1_label_B1-0-0__0", ("v=x__#1_label_B1-0-0", 0)),
        ("Bad.Boys__#01-11-55_label_G-B2-B6", ("Bad.Boys__#01-11-55_label_G-B2-B6", None)),
        ("01_0014", ("01_0014", None)),
    ],
)  # fmt: skip
def test_feature_names(rel, want):
    assert split_feature_name(rel) == want


def test_xd_crops_and_folder_split(tmp_path):
    """XD-Violence: labels from names, split from XD*Test* folders, annotations.txt ends."""
    npy = tmp_path / "xd"
    names = {
        "XDTrainClipFeatures": ["Fast.Five.2011__#00-10-00_00-11-00_label_A"],
        "XDTestClipFeatures": [
            "v=8cTqh9tMz_I__#1_label_B1-0-0",
            "Love.Actually.2003__#00-05_label_A",
        ],
    }
    for folder, vids in names.items():
        (npy / folder).mkdir(parents=True)
        for name in vids:
            for k in range(5):
                np.save(npy / folder / f"{name}__{k}.npy", np.full((20, D), k, np.float32))
    (npy / "annotations.txt").write_text("v=8cTqh9tMz_I__#1_label_B1-0-0.mp4 16 19\n")
    out = tmp_path / "xd.zarr"
    summary = import_npy(npy, "xd", out, NpyImportConfig(ncrops=5, crop=4))
    assert len(summary.imported) == 3 and not summary.failed
    with open_store(out) as st:
        fight = st.record("v=8cTqh9tMz_I__#1_label_B1-0-0")
        assert (fight.label, fight.split, fight.intervals) == ("Fighting", "test", [[16, 20]])
        normal = st.record("Fast.Five.2011__#00-10-00_00-11-00_label_A")
        assert (normal.label, normal.split, normal.intervals) == ("Normal", "train", [])
        assert st.record("Love.Actually.2003__#00-05_label_A").split == "test"
        assert (st.features("Fast.Five.2011__#00-10-00_00-11-00_label_A") == 4).all()


def test_sht_masks_give_intervals_and_are_not_features(tmp_path):
    npy = tmp_path / "sht"
    (npy / "test_frame_mask").mkdir(parents=True)
    (npy / "SH_Train.txt").write_text("01_001\n")
    (npy / "SH_Test.txt").write_text("01_0015\n05_003\n")
    (npy / "SH_Classes.txt").write_text("01_0015 throwing object\n")
    for name, rows in (("01_001", 6), ("01_0015", 8), ("05_003", 5)):
        np.save(npy / f"{name}.npy", np.ones((rows, D), np.float32))
    np.save(npy / "test_frame_mask/01_0015.npy", np.array([0, 1, 1, 0, 0, 1, 1, 1]))
    np.save(npy / "test_frame_mask/05_003.npy", np.zeros(5, np.int64))
    summary = import_npy(npy, "sht", tmp_path / "s.zarr")
    assert sorted(summary.imported) == ["01_001", "01_0015", "05_003"] and not summary.unlisted
    with open_store(tmp_path / "s.zarr") as st:
        rec = st.record("01_0015")
        assert (rec.label, rec.split, rec.intervals) == (
            "throwing object",
            "test",
            [[1, 3], [5, 8]],
        )
        assert st.record("05_003").intervals == [] and st.record("01_001").split == "train"


def test_missing_and_unlisted_files_are_reported(tmp_path):
    lists = write_lists(tmp_path / "lists")
    npy = tmp_path / "npy"
    write_features(npy)
    (npy / "Abuse/Abuse001_x264.npy").unlink()
    (npy / "Extra").mkdir()
    np.save(npy / "Extra/Extra001.npy", np.zeros((2, D), np.float32))
    summary = import_npy(npy, "ucf", tmp_path / "s.zarr", NpyImportConfig(lists=lists))
    assert summary.missing == ["Abuse/Abuse001_x264"] and summary.unlisted == ["Extra/Extra001"]
    assert len(summary.imported) == 5 and not summary.failed


@pytest.mark.slow
def test_cli_import_then_export_chain_reads_back_equal(monkeypatch, capsys, tmp_path):
    """import-npy -> export zarr -> h5 -> zip, through the console script, read back equal."""
    lists = write_lists(tmp_path / "lists")
    npy = tmp_path / "npy"
    feats = write_features(npy, flat={"Abuse/Abuse001_x264"})
    for dtype in ("float32", "float16"):
        chain = [tmp_path / f"{dtype}.zarr", tmp_path / f"{dtype}.h5", tmp_path / f"{dtype}.zip"]
        code, out, _ = anomaly(
            monkeypatch, capsys, "store", "import-npy", npy, "--dataset", "ucf", "--out", chain[0],
            "--lists", lists, "--dtype", dtype, "--fps", "25",
        )  # fmt: skip
        assert code == 0, out
        assert out.startswith("imported 6 (53 rows), unchanged 0, failed 0")
        for src, dst in zip(chain, chain[1:], strict=False):
            code, out, _ = anomaly(monkeypatch, capsys, "store", "export", src, dst)
            assert code == 0 and out.strip() == f"exported 6 videos to {dst}"
        code, out, _ = anomaly(monkeypatch, capsys, "store", "verify", chain[-1])
        assert code == 0
        with open_store(chain[0]) as first, open_store(chain[-1]) as last:
            assert first.attrs == last.attrs
            for vid, (_, label, _, intervals) in UCF_VIDEOS.items():
                assert last.features(vid).tobytes() == feats[vid].astype(dtype).tobytes()
                assert last.record(vid) == first.record(vid)
                assert (last.record(vid).label, last.record(vid).intervals) == (label, intervals)
                np.testing.assert_array_equal(last.times(vid), first.times(vid))
    code, out, _ = anomaly(
        monkeypatch, capsys, "store", "import-npy", npy, "--dataset", "ucf", "--out",
        tmp_path / "float32.zarr", "--lists", lists, "--dtype", "float32",
    )  # fmt: skip
    assert code == 0 and out.startswith("imported 0 (0 rows), unchanged 6, failed 0")


def test_cli_user_errors_exit_2(monkeypatch, capsys, tmp_path):
    write_features(tmp_path / "npy")
    code, out, err = anomaly(
        monkeypatch, capsys, "store", "import-npy", tmp_path / "npy", "--dataset", "ucf",
        "--out", tmp_path / "s.zarr",
    )  # fmt: skip
    assert code == 2 and err.startswith("error: ") and "Anomaly_Train.txt" in err
    code, _, err = anomaly(
        monkeypatch, capsys, "store", "import-npy", tmp_path / "npy", "--dataset", "ucf",
        "--out", tmp_path / "s.zarr", "--crop", "middle",
    )  # fmt: skip
    assert code == 2 and "--crop must be a crop index or 'mean'" in err
