"""``anomaly bench all --readme``: the README's performance block is replaced, nothing else."""

from __future__ import annotations

import pytest

from anomalyclip.bench.all import BEGIN, END, write_readme
from anomalyclip.errors import AnomalyError


def test_readme_block_is_replaced_and_the_rest_kept(tmp_path):
    readme = tmp_path / "README.md"
    before = "# title\n\ntext before\n"
    after = "\n## Next\ntext after, with a | table | row |\n"
    readme.write_text(f"{before}{BEGIN}\nold numbers\n{END}{after}")
    write_readme(readme, "| stage | new |\n|---|---|")
    assert readme.read_text() == f"{before}{BEGIN}\n| stage | new |\n|---|---|\n{END}{after}"
    write_readme(readme, "again")  # idempotent: the markers stay, one block
    assert readme.read_text().count(BEGIN) == 1 and "again" in readme.read_text()
    assert "new |" not in readme.read_text()


def test_readme_without_the_block_is_an_error_naming_the_file(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# no markers here\n")
    with pytest.raises(AnomalyError, match="README.md: no '<!-- bench:all -->'"):
        write_readme(readme, "x")
    assert readme.read_text() == "# no markers here\n"


@pytest.mark.slow
def test_every_stage_runs_and_bf16_is_left_to_cpus_that_have_it(tiny_clip):
    """Each stage at tiny sizes (the demo stage, minutes long, left out), as on a CPU without
    bf16 units: the training and extraction stages time fp32 only, although their configs ask
    for bf16 too, and the table says why; the inference stage keeps its bf16 row."""
    from bench_sizes import TINY, tiny_train_bench

    from anomalyclip.bench.all import NO_BF16, AllBench, measure, table
    from anomalyclip.bench.extract import ExtractBench

    bench = AllBench(
        bf16=False,
        train=tiny_train_bench(steps=1, load_batches=1),
        glibc=None,
        extract=ExtractBench(
            tiny_clip,
            frames=4,
            videos=1,
            size=(64, 48),
            batch_size=4,
            workers=1,
            repeats=1,
            peak_n=64,
        ),  # fmt: skip
        store={"n_videos": 3, "frames_per_video": 600, "batches": 1},
        eval={
            "shape": TINY,
            "n_videos": 2,
            "frames": (20, 60),
            "batch_size": 2,
            "rounds": 1,
            "threads": None,
        },  # fmt: skip
        demo=False,
    )
    result = measure(bench, progress=False)
    assert [r["bf16"] for r in result["train"]["rows"]] == [False, False]  # direct, winograd
    assert result["extract"]["rows"] and all(
        not r["setup"].startswith("bf16") for r in result["extract"]["rows"]
    )
    assert any("bf16" in r["setup"] for r in result["eval"]["rows"])
    assert result["host"]["bf16"] is False and "demo" not in result
    text = table(result)
    rows = [line for line in text.splitlines() if line.startswith("| ")][1:]
    assert sum(line.startswith("| train step") for line in rows) == 2
    bf16_rows = ("| train step, UCF shape, bf16", "| CLIP ViT-B/16 extraction, bf16")
    assert not any(line.startswith(bf16_rows) for line in rows)
    assert any(line.startswith("| training batches from the store") for line in rows)
    assert text.endswith(NO_BF16)
