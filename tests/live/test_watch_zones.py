"""Zones: a camera's polygon limits what the model sees.

The pixels are checked against a per-pixel float64 reference (the even-odd rule at each
pixel centre); then a whole watch: a camera frame made of two demo scenes side by side, a
planted explosion in the left one, watched through a zone on each half by the run of the
full demo (``demo_run``: a run that really finds the demo's events, frame AUC >= 0.9 in
``tests/unit/demo/test_demo.py``). Each half is a frame of the size the run was trained on, so the
test is not easier than the demo's own task: the event seen through its zone must be found,
the same frames through the other zone must raise nothing.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
from watch_helpers import Proc, closed, read_events

from anomalyclip.errors import AnomalyError
from anomalyclip.evaluate.event_metrics import temporal_iou
from anomalyclip.extract.zone import Zone, fill, polygon_mask
from anomalyclip.synthetic import encode_video, render_scene

STARTUP = 180
L_SHAPE = [[2, 1], [30, 4], [30, 30], [16, 30], [16, 12.5], [1, 14]]  # concave, slanted edges


def inside_reference(points: list, x: float, y: float) -> bool:
    """The even-odd rule at one point, in float64, one edge at a time."""
    inside = False
    for (x1, y1), (x2, y2) in zip(points, points[1:] + points[:1], strict=True):
        if (y1 > y) != (y2 > y) and x < x1 + (y - y1) * (x2 - x1) / (y2 - y1):
            inside = not inside
    return inside


def test_the_mask_is_the_even_odd_rule_at_pixel_centres():
    xs, ys = np.arange(40) + 0.5, np.arange(36) + 0.5
    mask = polygon_mask(np.asarray(L_SHAPE, float), xs, ys)
    expected = [[inside_reference(L_SHAPE, x, y) for x in xs] for y in ys]
    np.testing.assert_array_equal(mask, expected)
    assert 300 < mask.sum() < 600  # the L's area, about 430 pixels


def test_a_zone_cuts_its_box_and_paints_the_rest_in_clips_mean_colour():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (36, 40, 3), dtype=np.uint8)
    out = Zone.parse(L_SHAPE, "z").apply(image)
    assert out.shape == (29, 29, 3)  # the box: x and y from 1 to 30, pixels [1, 30)
    cut = image[1:30, 1:30]
    mask = polygon_mask(np.asarray(L_SHAPE, float), np.arange(1, 30) + 0.5, np.arange(1, 30) + 0.5)
    np.testing.assert_array_equal(out[mask], cut[mask])
    assert (out[~mask] == fill()).all() and fill() == (123, 117, 104)
    # what happens outside the polygon never reaches the model
    other = image.copy()
    other[~np.pad(mask, ((1, 6), (1, 10)))] = 0
    np.testing.assert_array_equal(Zone.parse(L_SHAPE, "z").apply(other), out)
    # a zone larger than the frame is cut to it; one beside it leaves nothing to see
    assert Zone.parse([[0, 0], [99, 0], [99, 99]], "z").apply(image).shape[:2] == (36, 40)
    assert (Zone.parse([[50, 0], [60, 0], [60, 9]], "z").apply(image) == fill()).all()
    with pytest.raises(AnomalyError, match="encloses no area"):
        Zone.parse([[0, 0], [5, 5], [10, 10]], "z")


@pytest.fixture(scope="module")
def two_scenes(tmp_path_factory):
    """10 s of a 320x120 camera: the left half a demo scene with an explosion (its blob
    wholly inside that half), the right half another demo camera's normal scene."""
    folder = tmp_path_factory.mktemp("zones")
    left, intervals = render_scene("Explosion", np.random.default_rng(5), 150, (160, 120),
                                   event={"cx": 80.0, "cy": 60.0, "rmax": 54.0})  # fmt: skip
    right, _ = render_scene("Normal", np.random.default_rng(105), 150, (160, 120), camera=1)
    path = folder / "two.mp4"
    encode_video(path, np.concatenate([left, right], axis=2))  # (T, 120, 320, 3)
    return path, intervals[0]


@pytest.mark.slow
def test_an_event_is_found_inside_its_zone_and_not_outside(demo_run, two_scenes, tmp_path):
    video, (start, end) = two_scenes
    site = tmp_path / "site.toml"
    site.write_text(f'checkpoint = "{demo_run.run_dir}"\nout = "out"\nstatus_every = 0\n'
                    f'[[camera]]\nname = "left"\nsource = "{video}"\n'
                    "zone = [[0, 0], [160, 0], [160, 120], [0, 120]]\n"
                    f'[[camera]]\nname = "right"\nsource = "{video}"\n'
                    "zone = [[160, 0], [320, 0], [320, 120], [160, 120]]\n")  # fmt: skip
    proc = Proc([sys.executable, "-m", "anomalyclip.cli", "watch", "--config", str(site),
                 "--precision", "fp32"])  # fmt: skip
    assert proc.wait(STARTUP) == 0, proc.tail()
    events = closed(read_events(tmp_path / "out" / "events.jsonl"))
    inside = [e for e in events if e["camera"] == "left"]
    assert [e for e in events if e["camera"] == "right"] == []
    assert len(inside) == 1 and inside[0]["class"] == "Explosion", inside
    iou = temporal_iou([[inside[0]["start_frame"], inside[0]["end_frame"]]], [[start, end]])
    assert iou[0, 0] >= 0.3, (inside[0], (start, end))
