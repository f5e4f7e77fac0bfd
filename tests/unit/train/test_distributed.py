"""Data-parallel training with real ``torchrun`` (gloo on CPU)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file
from synthetic_stores import planted_store

from anomalyclip.train import resolve_config, train
from anomalyclip.train.data import local_positions


def test_local_positions_shard_both_halves_in_order():
    assert local_positions(8, 0, 2) == [0, 1, 4, 5]
    assert local_positions(8, 1, 2) == [2, 3, 6, 7]
    assert local_positions(8, 0, 1) == list(range(8))
    with pytest.raises(Exception, match="does not split"):
        local_positions(6, 0, 2)


@pytest.mark.slow
def test_two_process_training_matches_one_process(tmp_path, tiny_clip):
    # no warm-up: a warm-up epoch runs at lr 0 and would leave both runs' weights untouched
    cfg = resolve_config("demo", epochs=1, warmup_epochs=0, workers=1, eval_every=0)
    store = planted_store(tmp_path / "s.zarr", tiny_clip, cfg, n_abnormal=4, n_normal=8)
    single = train(store, tmp_path / "one", cfg, progress=False)

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
        "-m", "anomalyclip.cli", "train", "--features", str(store), "--out", str(tmp_path / "two"),
        "--epochs", "1", "--warmup-epochs", "0", "--workers", "1", "--eval-every", "0",
    ]  # fmt: skip
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]

    two = json.loads((tmp_path / "two" / "config.json").read_text())
    assert two["world_size"] == 2
    one_loss = single["history"][0]["first_step_loss"]
    assert abs(two["history"][0]["first_step_loss"] - one_loss) < 1e-5
    # same global batches, same gradients: the weights agree after a whole epoch
    w1 = load_file(tmp_path / "one" / "model.safetensors")
    w2 = load_file(tmp_path / "two" / "model.safetensors")
    assert w1.keys() == w2.keys()
    for key in w1:
        assert torch.allclose(w1[key], w2[key], atol=1e-4, rtol=1e-4), key
    # rank 0 alone writes the run
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == sorted(
        p.name for p in (tmp_path / "one").iterdir()
    )
