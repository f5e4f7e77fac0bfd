"""The numbers the documentation states about training presets are the code's."""

from __future__ import annotations

import re

import pytest
from paths import ROOT

from anomalyclip.train.config import PRESETS, resolve_config


def preset_table() -> dict[str, dict[str, str]]:
    """docs/training.md's preset table: preset name -> column -> cell."""
    lines = (ROOT / "docs" / "training.md").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| preset |"))
    header = [c.strip() for c in lines[start].strip("|").split("|")]
    rows = {}
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        name = re.match(r"`(\w+)`", cells[0]).group(1)
        rows[name] = dict(zip(header, cells, strict=True))
    return rows


def test_every_preset_is_in_the_table():
    assert set(preset_table()) == set(PRESETS)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_the_table_states_each_presets_values(name):
    row, cfg = preset_table()[name], resolve_config(name)
    m = cfg.model
    assert int(row["E"]) == m.emb_dim and int(row["depth"]) == m.depth
    assert int(row["heads"]) == m.heads
    assert row["N x L"] == f"{m.num_segments} x {m.seg_length}"
    assert row["concat. similarities"] == ("yes" if m.concat_similarity else "no")
    assert float(row["lr"]) == cfg.lr and float(row["weight decay"]) == cfg.weight_decay
    assert row["epochs (warm-up)"] == f"{cfg.epochs} ({cfg.warmup_epochs})"
    assert int(row["batch"]) == cfg.batch_size
    assert int(row["test eval every"]) == cfg.eval_every


def test_what_all_presets_share_is_stated():
    text = (ROOT / "docs" / "training.md").read_text()
    for name in PRESETS:
        cfg = resolve_config(name)
        assert (cfg.model.n_ctx, cfg.model.topk, cfg.model.segment_dropout) == (8, 3, 0.7)
        assert (cfg.seed, cfg.calibration_share, cfg.threshold_rule) == (1024, 0.1, "far@1")
    assert "8 context vectors per class, top-k with k = 3, segment dropout 0.7, seed 1024" in text


def test_the_readme_credits_the_demo_seeds_it_uses():
    """The demo's seed 0 makes its videos and CLIP; training uses the preset's seed."""
    readme = " ".join((ROOT / "README.md").read_text().split())
    assert f"the demo preset's training seed {resolve_config('demo').seed}" in readme
    assert "With seed 0 the demo reaches" not in readme
