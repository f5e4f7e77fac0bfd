"""What `train`, `eval` and the store commands do with stores they must not trust blindly:
another backbone's features, damaged chunks and attributes (a fault-injection pass).

Commands run through :func:`anomalyclip.cli.main`, the console script's entry point, so exit
codes and the one-line errors are the real ones.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from cli_helper import anomaly, error_lines
from synthetic_stores import quick_run

from anomalyclip.errors import AnomalyError
from anomalyclip.runs.checkpoint import check_backbone, read_run_config
from anomalyclip.store import open_store


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_clip) -> tuple[Path, Path]:
    """(store, run): one short run on a planted store, shared by the tests that read it."""
    return quick_run(tmp_path_factory.mktemp("reliability"), tiny_clip, epochs=1, n_each=3)


def copy_store(src: Path, dst: Path, **backbone_changes) -> Path:
    shutil.copytree(src, dst)
    if backbone_changes:
        with open_store(dst, "a") as st:
            st._b.set_attrs("", {"backbone": {**st.attrs["backbone"], **backbone_changes}})
    return dst


@pytest.mark.slow
def test_eval_and_resume_refuse_another_backbone(monkeypatch, capsys, tmp_path, trained):
    """A store whose features come from other CLIP weights (same id, another weight hash:
    a fine-tuned or re-downloaded checkpoint) would give meaningless scores without error."""
    store, run = trained
    other = copy_store(store, tmp_path / "other.zarr", weights_sha256="f" * 64)
    with open_store(store) as st:
        ours = st.attrs["backbone"]["weights_sha256"]

    evaluate = ["eval", "-c", run, "-f", other, "-o", tmp_path / "e"]
    code, _, err = anomaly(monkeypatch, capsys, *evaluate)
    assert code == 2
    [line] = error_lines(err)
    assert line.startswith(f"error: {other}: features were extracted with ")
    assert "ffffffffffff" in line and ours[:12] in line and "--allow-backbone-mismatch" in line
    assert not (tmp_path / "e").exists()
    code, _, _ = anomaly(monkeypatch, capsys, *evaluate, "--allow-backbone-mismatch")
    assert code == 0 and (tmp_path / "e" / "metrics.json").is_file()

    resumed = tmp_path / "run"
    shutil.copytree(run, resumed)
    args = ["train", "-f", other, "-o", resumed, "--resume", "--epochs", "2", "--workers", "1",
            "--batch-size", "6", "--warmup-epochs", "1", "--eval-every", "0"]  # fmt: skip
    code, _, err = anomaly(monkeypatch, capsys, *args)
    assert code == 2
    [line] = error_lines(err)
    assert line.startswith(f"error: {other}: features were extracted with ")
    assert (resumed / "config.json").read_bytes() == (run / "config.json").read_bytes()
    code, _, err = anomaly(monkeypatch, capsys, *args, "--allow-backbone-mismatch")
    assert code == 0, err
    # the same weights under another name (a local copy of the hub model): accepted
    same = copy_store(store, tmp_path / "same.zarr", model="/models/my-clip-copy")
    with open_store(same) as st:
        check_backbone(read_run_config(run), st, run)
    with open_store(tmp_path / "same.zarr", "a") as st, pytest.raises(AnomalyError, match="dim"):
        st._b.set_attrs("", {"backbone": {**st.attrs["backbone"], "dim": 768}})
        check_backbone(read_run_config(run), st, run)


def chunk_of(store: Path, group: str, video_id: str) -> Path:
    from anomalyclip.store import video_key

    return sorted(p for p in (store / group / video_key(video_id) / "c").rglob("*") if p.is_file())[
        0
    ]


def first_video(store: Path, split: str) -> str:
    with open_store(store) as st:
        return sorted(r.video_id for r in st.records(split=split))[0]


@pytest.mark.parametrize("damage", ["deleted", "flipped"])
def test_train_and_eval_refuse_a_damaged_chunk_naming_the_video(
    monkeypatch, capsys, tmp_path, trained, damage
):
    """A deleted Zarr chunk reads as zeros (zarr's fill value) and a flipped byte fails its
    CRC32C: either way train and eval must stop with one line naming the video, not train or
    score on zeros (deleted) or print a traceback (flipped)."""
    store, run = trained
    bad = copy_store(store, tmp_path / "bad.zarr")
    victims = {split: first_video(bad, split) for split in ("train", "test")}
    for vid in victims.values():
        chunk = chunk_of(bad, "videos", vid)
        if damage == "deleted":
            chunk.unlink()
        else:
            raw = bytearray(chunk.read_bytes())
            raw[len(raw) // 2] ^= 0xFF
            chunk.write_bytes(bytes(raw))

    code, _, err = anomaly(monkeypatch, capsys, "eval", "-c", run, "-f", bad, "-o", tmp_path / "e")
    assert code == 2, err[-2000:]
    [line] = error_lines(err)
    assert line.startswith(f"error: {bad}: video {victims['test']!r}: ")
    assert "Traceback" not in err
    assert not (tmp_path / "e" / "metrics.json").exists()

    args = ["train", "-f", bad, "-o", tmp_path / "r", "--epochs", "1", "--workers", "1",
            "--batch-size", "6", "--warmup-epochs", "1", "--eval-every", "0"]  # fmt: skip
    code, _, err = anomaly(monkeypatch, capsys, *args)
    assert code == 2, err[-2000:]
    [line] = error_lines(err)
    assert line.startswith(f"error: {bad}: video {victims['train']!r}: ")
    assert "missing chunk" in line if damage == "deleted" else "damaged data" in line
    assert "Traceback" not in err


def test_train_refuses_a_video_with_unreadable_attributes(monkeypatch, capsys, tmp_path, trained):
    """JSON nested too deep for Python's parser in one video's attributes: train names the
    video in one line instead of dying with a RecursionError."""
    import json

    from anomalyclip.store import video_key

    store, _ = trained
    bad = copy_store(store, tmp_path / "bad.zarr")
    vid = first_video(bad, "train")
    meta = bad / "videos" / video_key(vid) / "zarr.json"
    doc = json.loads(meta.read_text())
    doc["attributes"]["label"] = "@@"
    meta.write_text(json.dumps(doc).replace('"@@"', "[" * 100_000 + "]" * 100_000))
    args = ["train", "-f", bad, "-o", tmp_path / "r", "--epochs", "1", "--workers", "1",
            "--batch-size", "6", "--warmup-epochs", "1", "--eval-every", "0"]  # fmt: skip
    code, _, err = anomaly(monkeypatch, capsys, *args)
    assert code == 2 and "Traceback" not in err
    [line] = error_lines(err)
    assert line.startswith(f"error: {bad}: video {vid!r}: unreadable attributes (RecursionError")
    assert len(line) < 600


def forged_npy(path: Path, rows: int, stored_rows: int) -> Path:
    """A .npy whose header claims ``rows`` rows of 512 float32 but holds ``stored_rows``."""
    import numpy as np

    header = np.lib.format.header_data_from_array_1_0(np.zeros((1, 512), np.float32))
    header["shape"] = (rows, 512)
    with open(path, "wb") as fh:
        np.lib.format.write_array_header_1_0(fh, header)
        fh.write(np.ones((stored_rows, 512), np.float32).tobytes())
    return path


def test_npy_header_claiming_a_billion_rows_is_one_failed_file(monkeypatch, capsys, tmp_path):
    """The header alone would make numpy allocate 1.9 TiB (MemoryError); the file is refused
    by comparing the header with the file's size, and the other videos are imported."""
    import numpy as np

    from anomalyclip.store.npy import load_npy_features

    npy = tmp_path / "npy"
    (npy / "train" / "Normal").mkdir(parents=True)
    forged = forged_npy(npy / "train" / "Normal" / "forged.npy", 10**9, 2)
    np.save(npy / "train" / "Normal" / "ok.npy", np.ones((3, 512), np.float32))
    with pytest.raises(AnomalyError) as exc:
        load_npy_features(forged, forged)
    assert str(exc.value) == (
        f"{forged}: unreadable .npy (header says (1000000000, 512) float32 = "
        "2,048,000,000,000 bytes, the file holds 4,096: truncated or forged)"
    )
    code, out, err = anomaly(monkeypatch, capsys, "store", "import-npy", npy, "--dataset", "demo",
                             "--out", tmp_path / "s.zarr")  # fmt: skip
    assert code == 1 and "Traceback" not in err
    assert out.startswith("imported 1 (3 rows), unchanged 0, failed 1,")
    assert f"failed: train/Normal/forged: {forged}: unreadable .npy (header says" in err


def test_npy_beyond_float16_is_one_failed_video_in_a_float16_store(tmp_path):
    """Published float32 features with values past ±65504 would become inf in the default
    float16 store: that video is recorded as failed (use --dtype float32), the rest goes in."""
    import numpy as np

    from anomalyclip.interop.npy_import import import_npy

    npy = tmp_path / "npy" / "train" / "Normal"
    npy.mkdir(parents=True)
    np.save(npy / "huge.npy", np.full((4, 512), 7e4, np.float32))
    np.save(npy / "ok.npy", np.ones((3, 512), np.float32))
    summary = import_npy(tmp_path / "npy", "demo", tmp_path / "s.zarr")
    assert summary.imported == ["train/Normal/ok"] and list(summary.failed) == ["train/Normal/huge"]
    assert "values up to 7e+04 exceed float16's range" in summary.failed["train/Normal/huge"]
    with open_store(tmp_path / "s.zarr") as st:
        assert st.video_ids() == ["train/Normal/ok"] and list(st.failures()) == [
            "train/Normal/huge"
        ]
