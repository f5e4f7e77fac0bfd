"""``anomaly bench export``: its numbers are quotients of what it timed, and it says what it
could not measure. No timing is asserted."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import torch
from cli_helper import cli_env

from anomalyclip.bench import export as bench_export
from anomalyclip.extract.encoder import ImageEncoder
from anomalyclip.runs import load_model


class CountingEncoder:
    """A real tiny-CLIP encoder that counts the frames it was given."""

    def __init__(self, clip) -> None:  # noqa: ANN001
        self.inner, self.frames = ImageEncoder(clip), []

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        self.frames.append(len(pixels))
        return self.inner(pixels)


@pytest.mark.slow
def test_tower_rates_time_every_backend_each_round_and_emulated_bf16_once(tiny_clip, monkeypatch):
    monkeypatch.setattr(bench_export, "cpu_has_bf16", lambda: False)
    setups = {"torch fp32": (CountingEncoder(tiny_clip), None),
              "torch bf16": (CountingEncoder(tiny_clip), None)}  # fmt: skip
    crops = torch.randint(0, 255, (6, 3, 224, 224), dtype=torch.uint8)
    rates = bench_export._tower_rates(setups, crops, repeats=3)
    assert setups["torch fp32"][0].frames == [6, 6, 6, 6]  # a warm-up, then 3 rounds
    assert setups["torch bf16"][0].frames == [2, 2]  # emulated: a warm-up and one round
    assert rates["torch bf16"] == {
        "frames_per_s": pytest.approx(rates["torch bf16"]["frames_per_s"]),
        "emulated": True,
        "timed_frames": 2,
    }
    assert not rates["torch fp32"]["emulated"] and rates["torch fp32"]["frames_per_s"] > 0


def _result() -> dict:
    names = ("torch fp32", "torch bf16", "onnxruntime fp32", "onnxruntime int8",
             "openvino fp32", "openvino int8")  # fmt: skip
    fps = (4.0, 0.25, 4.4, 7.0, 4.8, 9.6)
    rows = [{"backend": n, "frames_per_s": f, "emulated": n == "torch bf16",
             "timed_frames": 2 if n == "torch bf16" else 16, "vs_torch_fp32": f / 4.0,
             "scorer_ms": 100.0, "watch_fps": 3, "watch_estimate": 3}
            for n, f in zip(names, fps, strict=True)]  # fmt: skip
    rows[1].pop("watch_fps")
    return {"cpu": "AMD EPYC", "threads": 2, "date": "2026-12-07", "wall_s": 600.0,
            "load_avg": 2.0, "clip": "vit-b-16", "cpu_bf16": False, "rows": rows,
            "int8_cosine": {"openvino int8": 0.9995, "onnxruntime int8": 0.9991},
            "accuracy": {"videos": 17, "rows": [
                {"backend": "torch fp32", "frame_auc": 0.964, "events_found": 9,
                 "planted_events": 9},
                {"backend": "openvino int8", "frame_auc": 0.961, "events_found": 9,
                 "planted_events": 9, "int8_matmuls": 6, "candidates": 14}]}}  # fmt: skip


def test_the_table_reads_its_ratios_off_the_rows():
    text = bench_export.table(_result())
    assert "| openvino int8 | 9.60 | 2.40x | 100 | 3 |" in text
    assert "| torch bf16 | 0.25 (emulated, 2 frames) | 0.06x | 100 | not measured |" in text
    assert "OpenVINO 0.9995, ONNX Runtime 0.9991" in text
    assert "| openvino int8 | 0.9610 | -0.0030 | 9 of 9 | 6 of 14 |" in text
    assert "| torch fp32 | 0.9640 | 0 | 9 of 9 | - |" in text
    assert re.search(r"on AMD EPYC, 2 threads, 2026-12-07 \(10 min", text)


def test_a_watch_that_kept_up_with_no_rate_reads_below_one_fps():
    """0 sustained: even 1 fps (the lowest rate tried) fell behind."""
    result = _result()
    result["rows"][0]["watch_fps"] = 0
    assert "| torch fp32 | 4.00 | 1.00x | 100 | < 1 |" in bench_export.table(result)


def test_without_bf16_units_the_table_gives_int8_against_fp32_not_against_emulated_bf16():
    text = bench_export.table(_result())
    assert "This CPU has no bf16 units" in text
    assert "target int8 >= 2x torch bf16 cannot be measured here" in text
    assert "38.4x" not in text and "28.0x" not in text  # no ratio to emulated bf16
    assert "OpenVINO 2.00x OpenVINO fp32 (2.40x torch fp32)" in text
    assert "ONNX Runtime 1.59x ONNX Runtime fp32 (1.75x torch fp32)" in text


def test_with_bf16_units_the_table_reads_int8_against_torch_bf16():
    result = _result()
    result["cpu_bf16"] = True
    result["rows"][1].update(frames_per_s=8.0, emulated=False, timed_frames=16)
    text = bench_export.table(result)
    assert "int8 against torch bf16: OpenVINO 1.20x, ONNX Runtime 0.88x (target >= 2x)" in text
    assert "no bf16 units" not in text
    assert "OpenVINO 2.00x OpenVINO fp32 (2.40x torch fp32)" in text


def test_bench_export_help_and_a_bad_readme_fail_fast(tmp_path):
    code = "import sys\nfrom anomalyclip.cli import main\ntry:\n    main()\nfinally:\n"
    code += "    print('torch' in sys.modules, file=sys.stderr)\n"
    done = subprocess.run(
        [sys.executable, "-c", code, "bench", "export", "--readme", str(tmp_path / "R.md")],
        env=cli_env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and lines[-2] == f"error: {tmp_path / 'R.md'}: no such file"
    assert lines[-1] == "False"  # refused before torch was imported


def test_the_bench_run_is_a_run_the_package_reads(tmp_path, tiny_clip):
    """The random-weight run the bench exports passes the checks every run's config.json
    goes through, with the fixed threshold it was written with."""
    run = bench_export._bench_run(tmp_path, tiny_clip, "tiny")
    model, config = load_model(run)
    assert (config.threshold.value, config.threshold.rule) == (0.5, "fixed@0.5")
    assert (model.cfg.num_segments, model.cfg.seg_length, model.cfg.emb_dim) == (32, 16, 256)
