"""``anomaly watch --config site.toml``: one file for a site. Its mistakes are one line naming
the file, the table and the key, before torch is imported; its cameras are named, each with
its own threshold (the file's, a rule, a calibration, the command line's); sources on the
command line get names made from their address."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from synthetic_stores import quick_run
from test_watch_cli import PROBE, copy_run
from watch_helpers import Proc, closed, event_video, offline, read_events, stable_threshold

from anomalyclip.errors import AnomalyError
from anomalyclip.live.cameras import Camera, resolve_cameras, save_calibration
from anomalyclip.live.run import check_run
from anomalyclip.live.site import Site, load_site

STARTUP = 180


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_clip):
    return quick_run(tmp_path_factory.mktemp("run"), tiny_clip, epochs=1, n_each=4,
                     grid=(32, 16))[1]  # fmt: skip


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return event_video(tmp_path_factory.mktemp("video"))


THREE = """\
checkpoint = "{run}"
out = "watch"
status_every = 0

[[camera]]
name = "gate"
source = "{video}"
threshold = 0.0

[[camera]]
name = "door"
source = "{video}"
{door}

[[camera]]
name = "yard"
source = "rtsp://admin:pw@127.0.0.1:9/yard"
hop = 1.0
zone = [[0, 0], [80, 0], [80, 120], [0, 120]]
"""


def anomaly(*args: str, cwd: Path | None = None) -> tuple[int, list[str], bool]:
    done = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True,
                          timeout=STARTUP, cwd=cwd)  # fmt: skip
    return done.returncode, done.stderr.splitlines(), "torch imported: True" in done.stdout


@pytest.mark.slow
def test_three_cameras_and_one_typo_is_one_line_before_torch(run_dir, video, tmp_path):
    site = tmp_path / "site.toml"
    site.write_text(THREE.format(run=run_dir, video=video, door="treshold = 0.5"))
    code, err, torch = anomaly("watch", "--config", str(site))
    expected = (f"error: {site}: [[camera]] 'door' unknown key 'treshold' (known: name, source, "
                "threshold, threshold_rule, zone, hop)")  # fmt: skip
    assert (code, err, torch) == (2, [expected], False)


SITE_MISTAKES = [
    ("hopp = 1\n", "unknown key 'hopp' (known: checkpoint, out, clip,"),
    ('hop = "fast"\n', "hop = 'fast': expected a number"),
    ("[mqt]\nurl = 'x'\n", "unknown table [mqt] (known: camera, mqtt, metrics, retention)"),
    ("[mqtt]\nurl = 5\n", "[mqtt] url = 5: expected a string"),
    ("[retention]\nmax_gb = true\n", "[retention] max_gb = True: expected a number"),
    ("[retention]\nkeep_logs = 1.5\n", "[retention] keep_logs = 1.5: expected an integer"),
    ("[[camera]]\nname = 'a'\n", "[[camera]] 'a': no source"),
    ("[[camera]]\nsource = 'a.ts'\n", "[[camera]] #1: no name"),
    ("[[camera]]\nname = 'front door'\nsource = 'a.ts'\n", "[[camera]] 'front door' name: use"),
    ("[[camera]]\nname = 'a'\nsource = 'x'\n[[camera]]\nname = 'a'\nsource = 'y'\n",
     "[[camera]] name 'a' is given twice"),
    ("[[camera]]\nname = 'a'\nsource = 'x'\nthreshold = 2\n",
     "[[camera]] 'a' threshold: a probability in [0, 1]"),
    ("[[camera]]\nname = 'a'\nsource = 'x'\nthreshold_rule = 'far@200'\n",
     "[[camera]] 'a' threshold_rule: threshold rule 'far@200': the false-alarm rate"),
    ("[[camera]]\nname = 'a'\nsource = 'x'\nzone = [[0, 0], [1, 1]]\n",
     "[[camera]] 'a' zone: expected a list of at least three [x, y] pixel points"),
    ("[[camera]]\nname = 'a'\nsource = 'x'\nzone = [[0, 0], [9, 0], [-1, 5]]\n",
     "[[camera]] 'a' zone: [-1, 5] is not an [x, y] pixel point (>= 0)"),
    ("hop = [\n", "invalid TOML"),
]  # fmt: skip


@pytest.mark.parametrize("text, message", SITE_MISTAKES, ids=[m[1][:30] for m in SITE_MISTAKES])
def test_each_mistake_in_a_site_file_is_named(tmp_path, text, message):
    site = tmp_path / "site.toml"
    site.write_text(text)
    with pytest.raises(AnomalyError) as err:
        load_site(site)
    assert str(err.value).startswith(f"{site}: ") and message in str(err.value)
    assert "\n" not in str(err.value)


def test_the_file_holds_the_options_and_the_command_line_wins(run_dir, video, tmp_path):
    site = tmp_path / "site.toml"
    site.write_text("hop = 2.0\n" + THREE.format(run="run", video="v/event.ts", door=""))
    loaded = load_site(site)
    merged = loaded.merged({"hop": None, "out": "elsewhere"}, {"hop": 0.5, "drop": None})
    assert merged["hop"] == 2.0 and merged["out"] == "elsewhere" and merged["drop"] is None
    assert merged["checkpoint"] == str(tmp_path / "run")  # relative to the file's folder
    gate, door, yard = loaded.cameras
    assert gate.source == str(tmp_path / "v" / "event.ts") and gate.threshold == 0.0
    assert yard.source == "rtsp://admin:pw@127.0.0.1:9/yard" and yard.hop == 1.0
    assert yard.zone.box(160, 120) == (0, 0, 80, 120)


def test_sources_on_the_command_line_are_named_after_their_address(run_dir, video, tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for folder in ("a", "b"):
        (tmp_path / folder / "cam.ts").write_bytes(video.read_bytes())
    run = check_run(run_dir, None, None)
    sources = ["rtsp://admin:s3cret@10.0.0.5:554/cam1?token=abc", str(tmp_path / "a" / "cam.ts"),
               str(tmp_path / "b" / "cam.ts"), "udp://127.0.0.1:5000"]  # fmt: skip
    cameras = resolve_cameras(Site(), sources, run, None)
    assert [c.name for c in cameras] == ["10.0.0.5_554_cam1", "cam", "cam-2", "127.0.0.1_5000"]
    assert cameras[0].label == "rtsp://admin:***@10.0.0.5:554/cam1?token=***"
    assert all(c.threshold is None for c in cameras)  # the run's
    assert Camera.of("/x/gate 3.dav").name == "gate_3"


@pytest.mark.slow
def test_each_camera_watches_with_its_own_threshold(run_dir, video, tmp_path):
    """One video, four cameras: ``gate`` (threshold 0 in the file: one event over the whole
    video), ``door`` (calibrated: the run's events at that threshold), ``yard``
    (``threshold_rule = "fixed@1"``: nothing) and the video again from the command line
    (the run's threshold, set in a copy of the run to 1: nothing). Then ``--threshold 0``
    on the command line wins for every camera."""
    threshold, _ = stable_threshold(offline(run_dir, video, 0.5)["p"])
    reference = offline(run_dir, video, threshold)["events"]
    assert reference
    run = copy_run(run_dir, tmp_path, threshold__value=1.0)
    save_calibration(run, "door", {"threshold": {"value": threshold, "rule": "far@1",
                                                 "source": "test"}, "videos": ["x"],
                                   "frames": 1, "date": "today", "zone": None})  # fmt: skip
    site = tmp_path / "site.toml"
    text = THREE.format(run=run, video=video, door="")
    text = text.replace('source = "rtsp://admin:pw@127.0.0.1:9/yard"\nhop = 1.0\n'
                        "zone = [[0, 0], [80, 0], [80, 120], [0, 120]]",
                        f'source = "{video}"\nthreshold_rule = "fixed@1"')  # fmt: skip
    site.write_text(text)
    copy = tmp_path / "other"
    copy.mkdir()
    (copy / "event.ts").write_bytes(video.read_bytes())
    out = tmp_path / "watch"
    proc = Proc([sys.executable, "-m", "anomalyclip.cli", "watch", "--config", str(site),
                 "--threshold", "1", str(copy / "event.ts")])  # fmt: skip
    assert proc.wait(STARTUP) == 0, proc.tail()
    assert closed(read_events(out / "events.jsonl")) == []  # --threshold 1 for all: nothing
    (out / "events.jsonl").unlink()
    proc = Proc([sys.executable, "-m", "anomalyclip.cli", "watch", "--config", str(site),
                 str(copy / "event.ts")])  # fmt: skip
    assert proc.wait(STARTUP) == 0, proc.tail()
    events = read_events(out / "events.jsonl")
    per_camera = {c: [e for e in closed(events) if e["camera"] == c]
                  for c in ("gate", "door", "yard", "event")}  # fmt: skip
    assert [(e["start_frame"], e["end_frame"]) for e in per_camera["gate"]] == [(0, 90)]
    assert [(e["start_frame"], e["end_frame"]) for e in per_camera["door"]] == [
        (e["start_frame"], e["end_frame"]) for e in reference]  # fmt: skip
    assert per_camera["yard"] == [] and per_camera["event"] == []
    assert f"camera door: threshold {threshold:.4f} (calibrated far@1 on 1 video(s), 1 " \
        "frames, today)" in proc.err  # fmt: skip
    assert "camera yard: threshold 1.0000 (fixed@1)" in proc.err
    assert {e["source"] for e in per_camera["gate"]} == {str(video)}
