"""The FLOP count ``anomaly bench extract`` reads its GFLOP/s from, against the count by hand.

No timing is asserted: speed is measured by the bench command only.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from cli_helper import cli_env, run_cli

from anomalyclip.bench.extract import frame_flops, readme_text, table
from anomalyclip.extract.encoder import ImageEncoder


def vit_flops(hidden: int, layers: int, patch: int, inter: int, proj: int, size: int = 224) -> int:
    """FLOPs of a CLIP ViT on one image (2 per multiply-add): the patch convolution, per layer
    the q/k/v/out projections, QK^T and AV over all heads, the two MLP layers; the output
    projection. Norms, softmax, biases and activations are not multiply-adds and not counted."""
    patches = (size // patch) ** 2
    n = patches + 1  # + the class token
    embed = patches * hidden * 3 * patch * patch
    layer = 4 * n * hidden * hidden + 2 * n * n * hidden + 2 * n * hidden * inter
    return 2 * (embed + layers * layer + hidden * proj)


def test_frame_flops_equal_the_count_by_hand(tiny_clip):
    enc = ImageEncoder(tiny_clip, "cpu", "fp32", "eager")
    c = enc.vision.config
    expected = vit_flops(c.hidden_size, c.num_hidden_layers, c.patch_size,
                         c.intermediate_size, c.projection_dim)  # fmt: skip
    assert frame_flops(enc) == expected
    # ViT-B/16 by the same formula: the 35.1 GFLOP (17.6 G multiply-adds) usually quoted
    assert round(vit_flops(768, 12, 16, 3072, 512) / 1e9, 1) == 35.1


def _result() -> dict:
    rows = [
        {"setup": "fp32 sdpa", "model_fps": 4.0, "pipeline_fps": 3.6, "ratio": 0.9,
         "speedup": 1.0, "pipeline_speedup": 1.0, "gflops": 140.0, "of_peak": 0.7},
        {"setup": "fp32 sdpa authors", "model_fps": 4.0, "pipeline_fps": 2.7, "ratio": 0.675,
         "speedup": 1.0, "pipeline_speedup": 0.75, "gflops": 140.0, "of_peak": 0.7},
    ]  # fmt: skip
    return {"frames": 128, "input": "2 x H.264 320x240", "batch_size": 32, "workers": 2,
            "threads": 2, "gflop_per_frame": 35.1, "peak_fp32_gflops": 200.0,
            "peak_bf16_gflops": 2.0, "rows": rows, "cpu": "AMD EPYC", "date": "2026-12-07",
            "wall_s": 540.0, "load_avg_range": (1.8, 3.2),
            "profile": {**{f"{s}_{k}": 0.1 for s in ("decode", "preprocess", "model", "write")
                           for k in ("ms_per_frame", "share")},
                        "preprocess_authors_ms_per_frame": 9.5}}  # fmt: skip


def test_the_table_fits_the_authors_setup_and_gives_the_pipeline_ratio():
    lines = table(_result()).splitlines()
    header, native, authors = lines[1], lines[2], lines[3]
    assert authors.startswith("fp32 sdpa authors ") and native.startswith("fp32 sdpa ")
    # every column ends where its header does: the longer setup name shifts nothing
    assert len(native) == len(authors) == len(header)
    for word in ("model fps", "pipe fps", "pipe speedup", "of peak"):
        end = header.index(word) + len(word)
        assert native[end - 1] != " " and authors[end - 1] != " "
    assert authors.split()[4:8] == ["2.70", "0.68", "1.00x", "0.75x"]


def test_the_readme_block_names_the_command_the_host_and_the_load():
    text = readme_text(_result(), "anomaly bench extract --setups fp32:sdpa,fp32:sdpa:authors")
    first, rest = text.split("\n", 1)
    assert first == (
        "`anomaly bench extract --setups fp32:sdpa,fp32:sdpa:authors` on AMD EPYC, 2 threads, "
        "2026-12-07 (9 min; load average 1.8 at the start, 3.2 at the end):"
    )
    assert rest == f"\n```text\n{table(_result())}\n```"


@pytest.mark.slow
def test_bench_extract_writes_its_block_into_a_readme(tmp_path, tiny_clip):
    """A real (tiny) run of both frame paths, written between the README's markers and
    nowhere else, as it was printed."""
    readme = tmp_path / "README.md"
    readme.write_text(
        "# t\n\nbefore\n<!-- bench:extract -->\nold\n<!-- /bench:extract -->\nafter\n"
    )
    args = ("bench", "extract", "--clip", tiny_clip, "--frames", "8", "--batch-size", "4",
            "--repeats", "1", "--setups", "fp32:sdpa,fp32:sdpa:authors")  # fmt: skip
    done = run_cli(*args, "--readme", readme)
    assert done.code == 0, done.err
    body = readme.read_text()
    assert body.startswith("# t\n\nbefore\n<!-- bench:extract -->\n`anomaly bench extract --clip")
    assert body.endswith("```\n<!-- /bench:extract -->\nafter\n") and "old" not in body
    assert "--setups fp32:sdpa,fp32:sdpa:authors --readme" in body
    block = body.split("```text\n")[1].split("\n```")[0]
    assert block in done.out
    setups = [line.split("  ")[0] for line in block.splitlines()[2:4]]
    assert setups == ["fp32 sdpa", "fp32 sdpa authors"]


@pytest.mark.parametrize("command", ["extract", "export", "all"])
def test_a_readme_without_its_block_fails_before_torch(tmp_path, command):
    """No such file, or no markers of the command's block: one line, before any work."""
    code = "import sys\nfrom anomalyclip.cli import main\ntry:\n    main()\nfinally:\n"
    code += "    print('torch' in sys.modules, file=sys.stderr)\n"
    readme = tmp_path / "README.md"
    for body, error in ((None, f"{readme}: no such file"),
                        ("<!-- bench:other -->\n<!-- /bench:other -->\n",
                         f"{readme}: no '<!-- bench:{command} -->' ... "
                         f"'<!-- /bench:{command} -->' block to fill")):  # fmt: skip
        if body:
            readme.write_text(body)
        argv = [sys.executable, "-c", code, "bench", command, "--readme", readme]
        done = subprocess.run(argv, env=cli_env(), capture_output=True, text=True, timeout=300)
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 2 and lines[-2:] == [f"error: {error}", "False"]


@pytest.mark.slow
def test_the_wall_time_and_load_cover_the_whole_run(tiny_clip):
    """Every timed pass lies inside the run: its wall time is at least the repeats times
    the best model and pipeline passes; the load average is read at its start and end."""
    from anomalyclip.bench.extract import ExtractBench, measure

    bench = ExtractBench(tiny_clip, frames=8, batch_size=4, repeats=2, peak_n=64,
                         setups=(("fp32", "sdpa", "native"),))  # fmt: skip
    result = measure(bench)
    (row,) = result["rows"]
    passes = 8 / row["model_fps"] + 8 / row["pipeline_fps"]
    assert result["wall_s"] >= bench.repeats * passes
    assert len(result["load_avg_range"]) == 2 and min(result["load_avg_range"]) >= 0
