"""Output file names of `eval` and `predict`: one file per video, never two videos in one.

The ids are the kind the datasets really have: UCF-Crime's nested paths, XD-Violence's names
with '#', ',' and spaces, and names in other scripts (CJK); predict's inputs are files with the
same name in two folders, as two cameras' `clip.mp4` are.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest
from synthetic_stores import quick_run

from anomalyclip.evaluate.evaluation import VideoResult, write_outputs
from anomalyclip.evaluate.predict import output_names
from anomalyclip.names import safe_name

IDS = [
    "日本",
    "中国",
    "a b",
    "a_b",
    "a%20b",
    "Abuse/Abuse028_x264",
    "Abuse_Abuse028_x264",
    "v=38GQ9L2meyE__#1_label_B2-0-0, Bad Boys (1995) #3",
    "v=38GQ9L2meyE__#1_label_B2-0-0_ Bad Boys _1995_ _3",
    ".hidden",
    "dir/.hidden",
    "-starts-with-dash",
]


def test_safe_name_is_unique_reversible_and_readable():
    names = [safe_name(v) for v in IDS]
    assert len(set(names)) == len(IDS)
    assert len({n.casefold() for n in names}) == len(IDS)
    assert [unquote(n) for n in names] == IDS
    # ordinary ids stay readable; a '/' keeps its folder
    assert safe_name("Abuse/Abuse028_x264") == "Abuse/Abuse028_x264"
    assert safe_name("Normal_Videos_015_x264") == "Normal_Videos_015_x264"
    for part in (part for n in names for part in n.split("/")):
        assert part not in ("", ".", "..") and not part.startswith(".")
        assert len(part.encode()) <= 255


def test_long_ids_stay_within_file_name_limits_and_distinct():
    a, b = "長" * 200 + "a", "長" * 200 + "b"
    na, nb = safe_name(a), safe_name(b)
    assert na != nb and len(na.encode()) <= 240 and len(nb.encode()) <= 240


def test_eval_writes_one_csv_per_video(tmp_path):
    results = []
    for k, vid in enumerate(IDS):
        n = 5 + k
        p = np.linspace(0, 1, n)
        results.append(
            VideoResult(vid, np.arange(n), np.arange(n) / 10.0, p,
                        np.stack([p, 1 - p], 1), np.ones(n, np.int64), [])
        )  # fmt: skip
    out = write_outputs(
        tmp_path / "eval", {"threshold": 0.5}, results, ("A", "Normal"), 1, max_video_plots=2
    )
    csvs = sorted((out / "videos").rglob("*.csv"))
    assert len(csvs) == len(IDS)
    back = {unquote(p.relative_to(out / "videos").as_posix()[: -len(".csv")]): p for p in csvs}
    assert sorted(back) == sorted(IDS)
    for r in results:  # each file holds its own video's rows
        assert len(back[r.video_id].read_text().splitlines()) == 1 + len(r.frames)
    assert sorted(p.name for p in (out / "videos").glob("*.png")) == sorted(
        f"{safe_name(v)}.png" for v in IDS[:2]
    )


def test_predict_names_same_file_name_from_two_folders(tmp_path):
    paths = [Path("cams/pa/clip.mp4"), Path("cams/pb/clip.mp4"), Path("other/x.mp4"),
             Path("cams/pa/clip.avi"), Path("cams/pa/clip.mp4")]  # fmt: skip
    names = output_names(paths)
    assert names == ["pa/clip.mp4", "pb/clip", "x", "clip.avi", "pa/clip.mp4~2"]
    assert output_names(paths) == names  # deterministic
    assert output_names([Path("a/clip.mp4")]) == ["clip"]  # a lone input keeps its stem
    # an input whose own name is what the second of a pair gets is written apart from it
    twice = output_names([Path("clip.mp4"), Path("clip.mp4"), Path("clip~2.mp4")])
    assert twice == ["clip", "clip~2", "clip%7E2"] and len(set(twice)) == 3
    assert output_names([Path("日本.mp4"), Path("中国.mp4")]) == [
        safe_name("日本"),
        safe_name("中国"),
    ]


@pytest.mark.slow
def test_predict_writes_both_clips(tmp_path, tiny_clip):
    from anomalyclip.evaluate.predict import predict
    from anomalyclip.synthetic import encode_video, render_scene

    _, run = quick_run(tmp_path, tiny_clip, epochs=1, n_each=2)
    rng = np.random.default_rng(0)
    paths = []
    for folder, n in (("pa", 12), ("pb", 20)):  # two cameras, same file name, other lengths
        pixels, _ = render_scene("Normal", rng, n, (64, 48))
        (tmp_path / folder).mkdir()
        paths.append(tmp_path / folder / "clip.mp4")
        encode_video(paths[-1], pixels)
    results, failed = predict(paths, run, tmp_path / "pred")
    assert not failed
    assert [r.csv for r in results] == [tmp_path / f"pred/{p}/clip.csv" for p in ("pa", "pb")]
    assert [len(r.csv.read_text().splitlines()) - 1 for r in results] == [12, 20]
