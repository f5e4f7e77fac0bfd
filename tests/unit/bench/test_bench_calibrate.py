"""``anomaly bench calibrate``: its counts on curves whose answer is known, and a small run on
the full demo's run (``demo_run``) with cameras the demo never films."""

from __future__ import annotations

import numpy as np
import pytest

from anomalyclip.bench.calibrate import decisions, measure, table

LABELS = (["Normal", "Explosion"], 0)


def curve(p: list[float]) -> dict:
    p = np.asarray(p, np.float64)
    probs = np.stack([1 - p, p], axis=1)
    return {"frames": np.arange(p.size), "times": np.arange(p.size) / 15, "p": p, "probs": probs}


def test_decisions_count_alarms_per_hour_and_events_found():
    low, high = [0.1] * 60, [0.9] * 30
    normal = curve(low + high + low)  # 150 rows (10 s): one false alarm of 2 s
    quiet = curve(low * 3)  # 180 rows (12 s): none
    planted = curve(low + high + low)  # its event where it was planted
    missed = curve(low * 2 + [0.9] * 10)  # an event, but not where the truth is
    out = decisions([(normal, []), (quiet, []), (planted, [(60, 90)]), (missed, [(0, 40)])],
                    LABELS, 0.5)  # fmt: skip
    assert out["false_alarms"] == 1 and out["normal_seconds"] == pytest.approx(22.0)
    assert out["false_alarms_per_hour"] == pytest.approx(3600 / 22)
    assert out["normal_frames_over"] == pytest.approx(30 / 330)
    assert (out["found"], out["planted"]) == (1, 2)


@pytest.mark.slow
def test_the_bench_measures_each_new_camera_at_both_thresholds(demo_run):
    result = measure(demo_run.out, cameras=1, counts=(2, 2, 1))
    (cam,) = result["cameras"]
    assert cam["camera"] == 4 and cam["calibration_frames"] == 2 * 192
    assert result["run_threshold"] == cam["run"]["threshold"]
    for key in ("run", "own"):
        d = cam[key]
        assert d["planted"] == 3 and 0 <= d["found"] <= 3
        assert d["normal_seconds"] == pytest.approx(2 * 192 / 15)
        assert d["false_alarms_per_hour"] == pytest.approx(d["false_alarms"] * 3600 / (2 * 12.8))
    # far@1 on 384 normal frames: about 1 % of them reach it
    assert 0.0 < cam["own"]["threshold"] < 1.0
    assert "| 4 | run's |" in table(result) and "| 4 | own (far@1, 26 s) |" in table(result)
