"""`anomaly store info | ls | verify | export | merge`: output, numbers and exit codes.

Commands run through :func:`anomalyclip.cli.main`, the console script's entry point, so the
exit codes (0 ok, 1 verification or merge problems, 2 user error) are the real ones.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from cli_helper import anomaly, error_lines

from anomalyclip.store import SCHEMA, VideoRecord, open_store, video_key

DIM = 8
ATTRS = {
    "schema": SCHEMA,
    "schema_version": 1,
    "dataset": "xd",
    "backbone": {"model": "openai/clip-vit-base-patch16", "dim": DIM, "output": "image_embeds"},
    "preprocessing": {"size": 224},
    "sampling": {"stride": 1},
    "dtype": "float16",
    "producer": {"package": "anomalyclip test"},
}
# id -> (rows, label, split)
VIDEOS = {
    "A.Beautiful.Mind.2001__#00-01-45_00-02-50_label_A": (40, "Normal", "train"),
    "Bad.Boys.1995__#01-11-55_01-12-40_label_G-B2-B6": (1100, "Explosion", "test"),
    "v=wVey5JDRf_I__#00-00-00_00-01-00_label_B1-0-0, x": (1, "Fighting", "train"),
    "nested/dir/video": (7, "Fighting", "train"),
}


def make_store(path: Path | str, videos: dict = VIDEOS, attrs: dict = ATTRS, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    with open_store(path, "w") as st:
        st.init(attrs)
        for vid, (rows, label, split) in videos.items():
            rec = VideoRecord(vid, source=f"{vid}.mp4", label=label, split=split, fps=24.0)
            st.write_video(rec, rng.standard_normal((rows, DIM)))


@pytest.fixture
def store(tmp_path) -> Path:
    path = tmp_path / "xd.zarr"
    make_store(path)
    with open_store(path, "a") as st:
        st.record_failure("broken__#label_B1", "broken.mp4", "moov atom not found")
    return path


def test_info_json_numbers(monkeypatch, capsys, store):
    code, out, _ = anomaly(monkeypatch, capsys, "store", "info", store, "--json")
    assert code == 0
    info = json.loads(out)
    assert info["videos"] == 4 and info["incomplete"] == 0 and info["failed"] == 1
    assert info["frames"] == 40 + 1100 + 1 + 7
    assert info["per_split"] == {"test": 1, "train": 3}
    assert info["per_class"] == {"test/Explosion": 1, "train/Fighting": 2, "train/Normal": 1}
    assert info["dataset"] == "xd" and info["dim"] == DIM and info["dtype"] == "float16"
    assert info["backbone"] == "openai/clip-vit-base-patch16"
    on_disk = sum(f.stat().st_size for f in store.rglob("*") if f.is_file())
    assert info["size_bytes"] == on_disk


def test_info_text(monkeypatch, capsys, store):
    code, out, _ = anomaly(monkeypatch, capsys, "store", "info", store)
    assert code == 0
    lines = out.splitlines()
    assert "videos     4 complete, 0 incomplete, 1 failed" in lines
    assert "frames     1,148" in lines
    assert any(line.split() == ["train", "3", "Fighting", "2,", "Normal", "1"] for line in lines)
    assert any(line.split() == ["test", "1", "Explosion", "1"] for line in lines)


def test_ls_lines(monkeypatch, capsys, store):
    with open_store(store, "a") as st:  # an unflagged video shows as incomplete
        st._b.set_attrs(f"videos/{video_key('nested/dir/video')}", {"complete": False})
    code, out, _ = anomaly(monkeypatch, capsys, "store", "ls", store)
    assert code == 0
    assert sorted(out.splitlines()) == sorted(
        [
            "A.Beautiful.Mind.2001__#00-01-45_00-02-50_label_A\ttrain\tNormal\t40\tok",
            "Bad.Boys.1995__#01-11-55_01-12-40_label_G-B2-B6\ttest\tExplosion\t1100\tok",
            "v=wVey5JDRf_I__#00-00-00_00-01-00_label_B1-0-0, x\ttrain\tFighting\t1\tok",
            "nested/dir/video\ttrain\tFighting\t7\tincomplete",
            "broken__#label_B1\t-\t-\t0\tfailed: moov atom not found",
        ]
    )


def test_verify_exit_codes_and_names(monkeypatch, capsys, store):
    code, out, _ = anomaly(monkeypatch, capsys, "store", "verify", store)
    assert code == 0 and out.strip() == f"{store}: all 4 videos intact"

    bad = "Bad.Boys.1995__#01-11-55_01-12-40_label_G-B2-B6"
    chunk = store / "videos" / video_key(bad) / "c" / "1" / "0"
    raw = bytearray(chunk.read_bytes())
    raw[5] ^= 0x01
    chunk.write_bytes(bytes(raw))
    (store / "frames" / video_key("nested/dir/video") / "c" / "0").unlink()

    code, out, err = anomaly(monkeypatch, capsys, "store", "verify", store)
    assert code == 1
    lines = sorted(out.splitlines())
    assert len(lines) == 2
    assert lines[0].startswith(f"{bad}: damaged data in videos/")
    assert lines[1] == "nested/dir/video: 1 missing chunk(s) in frames/"
    assert f"{store}: 2 of 4 videos failed verification" in err


def test_export_chain_and_verify(monkeypatch, capsys, store, tmp_path):
    chain = [store, tmp_path / "out" / "xd.h5", tmp_path / "xd.zip", tmp_path / "back.zarr"]
    for src, dst in zip(chain, chain[1:], strict=False):
        code, out, _ = anomaly(monkeypatch, capsys, "store", "export", src, dst)
        assert code == 0 and out.strip() == f"exported 4 videos to {dst}"
    code, out, _ = anomaly(monkeypatch, capsys, "store", "verify", chain[-1])
    assert code == 0
    with open_store(store) as a, open_store(chain[-1]) as b:
        assert a.attrs == b.attrs and a.failures() == b.failures()
        for vid in VIDEOS:
            assert a.features(vid).tobytes() == b.features(vid).tobytes()

    code, _, err = anomaly(monkeypatch, capsys, "store", "export", store, chain[1])
    assert code == 2
    assert error_lines(err) == [
        f"error: {chain[1]}: already exists; remove it, choose another name or pass --overwrite"
    ]


@pytest.mark.parametrize("name", ["nothing.zarr", "nothing.h5", "nothing.zip", "plain.txt"])
@pytest.mark.parametrize("command", ["info", "ls", "verify"])
def test_non_store_exit_2_one_line(monkeypatch, capsys, tmp_path, name, command):
    (tmp_path / "plain.txt").write_text("hello")
    path = tmp_path / name
    code, out, err = anomaly(monkeypatch, capsys, "store", command, path)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1
    assert err.startswith(f"error: {path}: ")


def test_zip_cannot_be_merged_into(monkeypatch, capsys, store, tmp_path):
    zipped = tmp_path / "xd.zip"
    assert anomaly(monkeypatch, capsys, "store", "export", store, zipped)[0] == 0
    code, _, err = anomaly(monkeypatch, capsys, "store", "merge", zipped, store)
    assert code == 2
    assert error_lines(err) == [f"error: {zipped}: a zip store is written once; export into it"]


def test_merge_halves_then_conflict(monkeypatch, capsys, tmp_path):
    ids = list(VIDEOS)
    make_store(tmp_path / "a.zarr", {k: VIDEOS[k] for k in ids[:2]})
    make_store(tmp_path / "b.h5", {k: VIDEOS[k] for k in ids[2:]}, seed=1)
    dst = tmp_path / "all.zarr"
    code, out, _ = anomaly(
        monkeypatch, capsys, "store", "merge", dst, tmp_path / "a.zarr", tmp_path / "b.h5"
    )
    assert code == 0 and out.strip() == "added 4, already present 0, conflicts 0"
    code, out, _ = anomaly(monkeypatch, capsys, "store", "merge", dst, tmp_path / "a.zarr")
    assert code == 0 and out.strip() == "added 0, already present 2, conflicts 0"

    make_store(tmp_path / "c.zarr", {ids[0]: VIDEOS[ids[0]]}, seed=5)  # other rows, same id
    code, out, err = anomaly(monkeypatch, capsys, "store", "merge", dst, tmp_path / "c.zarr")
    assert code == 1 and out.strip() == "added 0, already present 0, conflicts 1"
    assert f"conflict: {ids[0]}: differs between {dst} and {tmp_path / 'c.zarr'}" in err
    with open_store(dst) as st, open_store(tmp_path / "a.zarr") as a:
        assert sorted(st.video_ids()) == sorted(ids)
        assert st.features(ids[0]).tobytes() == a.features(ids[0]).tobytes()  # not overwritten


def test_merge_refuses_another_backbone(monkeypatch, capsys, store, tmp_path):
    other = {**ATTRS, "backbone": {**ATTRS["backbone"], "model": "openai/clip-vit-large-patch14"}}
    make_store(tmp_path / "l14.zarr", {"x": (3, "Normal", "train")}, attrs=other)
    code, _, err = anomaly(monkeypatch, capsys, "store", "merge", store, tmp_path / "l14.zarr")
    assert code == 2
    [line] = error_lines(err)
    assert line.startswith(
        f"error: {tmp_path / 'l14.zarr'}: cannot merge into {store}: backbone.model"
    )


def test_memory_url_through_the_cli(monkeypatch, capsys):
    url = "memory://anomalyclip-cli-test/xd.zarr"
    make_store(url)
    code, out, _ = anomaly(monkeypatch, capsys, "store", "verify", url)
    assert code == 0 and out.strip() == f"{url}: all 4 videos intact"
    code, out, _ = anomaly(monkeypatch, capsys, "store", "info", url, "--json")
    assert code == 0 and json.loads(out)["frames"] == 1148
    import fsspec

    fsspec.filesystem("memory").rm("/anomalyclip-cli-test", recursive=True)


def test_console_script_error_is_one_line(tmp_path):
    exe = Path(sys.executable).with_name("anomaly")
    if not exe.exists():
        pytest.skip("console script not installed next to this interpreter")
    missing = tmp_path / "missing.zarr"
    proc = subprocess.run(
        [str(exe), "store", "info", str(missing)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [f"error: {missing}: no feature store here"]


def test_bench_store_command(monkeypatch, capsys, tmp_path):
    args = ["bench", "store", "--videos", "2", "--frames", "200", "--batches", "1"]
    code, out, _ = anomaly(monkeypatch, capsys, *args, "--out", tmp_path, "--json")
    assert code == 0
    result = json.loads(out)
    assert result["videos"] == 2 and result["batch"] == [2, 512, 512]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["features.h5", "features.zarr", "npy"]
    code, out, _ = anomaly(monkeypatch, capsys, *args)
    assert code == 0 and [line.split()[0] for line in out.splitlines()[2:]] == ["zarr", "h5", "npy"]


def test_export_onto_an_existing_url_needs_overwrite(monkeypatch, capsys, store):
    url = "memory://anomalyclip-cli-export/xd.zarr"
    assert anomaly(monkeypatch, capsys, "store", "export", store, url)[0] == 0
    code, _, err = anomaly(monkeypatch, capsys, "store", "export", store, url)
    assert code == 2
    assert error_lines(err) == [
        f"error: {url}: already exists; remove it, choose another name or pass --overwrite"
    ]
    code, out, _ = anomaly(monkeypatch, capsys, "store", "export", store, url, "--overwrite")
    assert code == 0 and out.strip() == f"exported 4 videos to {url}"
    import fsspec

    fsspec.filesystem("memory").rm("/anomalyclip-cli-export", recursive=True)


def nest_attribute(store: Path, video_id: str, depth: int = 100_000) -> None:
    """Replace a video's label by JSON nested ``depth`` levels deep (valid JSON that Python's
    parser refuses with RecursionError), as a hostile or buggy writer could leave it."""
    meta = store / "videos" / video_key(video_id) / "zarr.json"
    text = meta.read_text()
    doc = json.loads(text)
    label = json.dumps(doc["attributes"]["label"])
    assert text.count(f'"label": {label}') == 1
    meta.write_text(text.replace(f'"label": {label}', '"label": ' + "[" * depth + "]" * depth))


def test_deeply_nested_attributes_break_one_video_not_the_store(monkeypatch, capsys, store):
    bad = "nested/dir/video"
    nest_attribute(store, bad)
    code, out, err = anomaly(monkeypatch, capsys, "store", "verify", store)
    assert code == 1 and "Traceback" not in err
    [line] = out.splitlines()
    assert line.startswith(f"{bad}: unreadable attributes (RecursionError")
    assert len(line) < 400
    code, out, err = anomaly(monkeypatch, capsys, "store", "info", store, "--json")
    assert code == 0, err
    info = json.loads(out)
    assert info["videos"] == 3 and info["damaged"] == 1 and info["frames"] == 40 + 1100 + 1
    code, out, _ = anomaly(monkeypatch, capsys, "store", "ls", store)
    assert code == 0
    lines = out.splitlines()
    assert len(lines) == 5 and sum(line.startswith(f"{bad}\t") for line in lines) == 1
    assert (
        next(line for line in lines if line.startswith(bad))
        .split("\t")[-1]
        .startswith("damaged: unreadable attributes")
    )
    with open_store(store) as st:  # readers refuse it by name, not with a RecursionError
        from anomalyclip.errors import AnomalyError

        with pytest.raises(AnomalyError, match=rf"^{store}: video '{bad}': unreadable attrib"):
            st.records()
        assert bad in st.video_ids(complete=False) and len(st.video_ids(complete=False)) == 4


def test_huge_attribute_is_not_echoed_whole(monkeypatch, capsys, store):
    """A 50 MB label must not come back whole in an error or a listing."""
    vid = "nested/dir/video"
    with open_store(store, "a") as st:
        st._b.set_attrs(f"videos/{video_key(vid)}", {"label": "x" * 50_000_000})
    for command in ("verify", "ls", "info"):
        code, out, err = anomaly(monkeypatch, capsys, "store", command, store)
        assert len(out) + len(err) < 5000, command
        assert code == (1 if command == "verify" else 0), (command, err)
    code, out, _ = anomaly(monkeypatch, capsys, "store", "verify", store)
    assert f"{vid}: attribute 'label' is too long (50,000,000 characters)" in out


def test_deeply_nested_root_attributes_are_one_line(monkeypatch, capsys, store):
    meta = store / "zarr.json"
    doc = json.loads(meta.read_text())
    doc["attributes"]["producer"] = "@@"
    meta.write_text(json.dumps(doc).replace('"@@"', "[" * 100_000 + "]" * 100_000))
    for command in ("info", "ls", "verify"):
        code, out, err = anomaly(monkeypatch, capsys, "store", command, store)
        assert code == 2 and out == ""
        assert error_lines(err) == [
            f"error: {store}: unreadable root metadata (RecursionError: maximum recursion depth "
            "exceeded while decoding a JSON array from a unicode string)"
        ]
