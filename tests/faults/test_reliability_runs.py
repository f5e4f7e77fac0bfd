"""Shared runs that must not be trusted blindly: wrongly typed fields in ``config.json``,
tensors of the wrong shape, non-finite weights, and non-finite scores wherever they come from.

One short real training run (tests/support/synthetic_stores.py) is copied and edited the way a
careless teammate or a broken tool would; commands run through the console script's entry point,
so exit codes and one-line errors are the real ones. The manifest (``checkpoint.json``) of an
edited copy is removed: a run written before manifests existed loads without one, so only the
checks under test stand between the edit and the model.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest
import torch
from cli_helper import anomaly, cli_env, error_lines
from safetensors.torch import load_file, save_file
from synthetic_stores import quick_run

from anomalyclip.errors import AnomalyError
from anomalyclip.model.inference import score_videos
from anomalyclip.runs import load_model
from anomalyclip.synthetic import encode_video, render_scene


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_clip) -> tuple[Path, Path]:
    """(store, run): one short run on a planted store."""
    return quick_run(tmp_path_factory.mktemp("runs"), tiny_clip, epochs=1, n_each=3)


def edited_copy(run: Path, where: Path) -> Path:
    shutil.copytree(run, where)
    (where / "checkpoint.json").unlink()
    return where


def set_field(config: dict, dotted: str, value) -> None:
    *parents, last = dotted.split(".")
    for name in parents:
        config = config[name]
    config[last] = value


CONFIG_EDITS = {  # dotted field, value -> what the one line says after "config.json: "
    ("threshold.value", "high"): 'threshold.value = "high": expected a probability in [0, 1]',
    ("threshold.value", math.nan): "threshold.value = NaN: expected a probability in [0, 1]",
    ("threshold.value", 1.5): "threshold.value = 1.5: expected a probability in [0, 1]",
    ("model.emb_dim", "16"): 'model.emb_dim = "16": expected an integer',
    ("model.segment_dropout", (0.7,)): "model.segment_dropout = [0.7]: expected a number",
    ("model.classes", "Normal"): 'model.classes = "Normal": expected a list of class names',
    ("model.heads", 3): "model: emb_dim 32 is not divisible by heads 3",
    ("dataset", 7): "dataset = 7: expected a dataset name",
    ("epoch", "1"): 'epoch = "1": expected a whole number of epochs',
}


@pytest.mark.parametrize(("field", "value"), CONFIG_EDITS)
def test_wrongly_typed_config_fields_are_one_line(monkeypatch, capsys, tmp_path, trained, field,
                                                  value):  # fmt: skip
    store, run = trained
    bad = edited_copy(run, tmp_path / "run")
    config = json.loads((bad / "config.json").read_text())
    set_field(config, field, value)
    (bad / "config.json").write_text(json.dumps(config))
    code, _, err = anomaly(
        monkeypatch, capsys, "eval", "-c", bad, "-f", store, "-o", tmp_path / "e"
    )
    assert code == 2 and "Traceback" not in err, err[-3000:]
    assert error_lines(err) == [f"error: {bad / 'config.json'}: {CONFIG_EDITS[field, value]}"]
    assert not (tmp_path / "e").exists()


@pytest.mark.parametrize("text", ["[1, 2]", '{"format": "anomalyclip.run", "inputs": 3}'])
def test_a_config_that_is_not_a_table_is_one_line(monkeypatch, capsys, tmp_path, trained, text):
    store, run = trained
    bad = edited_copy(run, tmp_path / "run")
    (bad / "config.json").write_text(text)
    for args in (["eval", "-c", bad], ["predict", store, "-c", bad]):  # before anything loads
        code, _, err = anomaly(monkeypatch, capsys, *args)
        assert code == 2 and error_lines(err) == [
            f"error: {bad / 'config.json'}: not an anomalyclip run"
        ], err[-2000:]


def rewrite_tensor(run: Path, change) -> str:
    """Apply ``change`` to the first float tensor of the temporal model; returns its name."""
    path = run / "model.safetensors"
    from safetensors import safe_open

    with safe_open(path, "pt") as f:
        meta = f.metadata()
    tensors = load_file(path)
    name = sorted(k for k, v in tensors.items() if k.startswith("temporal") and v.dim() == 2)[0]
    tensors[name] = change(tensors[name])
    save_file(tensors, path, meta)
    return name


def test_a_tensor_of_the_wrong_shape_is_one_line(monkeypatch, capsys, tmp_path, trained):
    store, run = trained
    bad = edited_copy(run, tmp_path / "run")
    name = rewrite_tensor(bad, lambda t: t[:, :-1].contiguous())
    shape = tuple(load_file(run / "model.safetensors")[name].shape)
    code, _, err = anomaly(
        monkeypatch, capsys, "eval", "-c", bad, "-f", store, "-o", tmp_path / "e"
    )
    assert code == 2 and "Traceback" not in err, err[-3000:]
    assert error_lines(err) == [
        f"error: {bad / 'model.safetensors'}: {name} has shape {(shape[0], shape[1] - 1)}, "
        f"the model's is {shape}"
    ]


@pytest.mark.parametrize("bad_value", [math.nan, math.inf])
def test_non_finite_weights_are_refused_at_load(monkeypatch, capsys, tmp_path, trained,
                                                bad_value):  # fmt: skip
    """NaN weights gave p(A) = nan for every frame, 0 events and exit 0: refused when the run
    is loaded, by eval, predict and everything else that loads a run."""
    store, run = trained
    bad = edited_copy(run, tmp_path / "run")

    def poison(t: torch.Tensor) -> torch.Tensor:
        t = t.clone()
        t.view(-1)[[0, 5, 7]] = bad_value
        return t

    name = rewrite_tensor(bad, poison)
    expected = f"error: {bad / 'model.safetensors'}: {name} holds 3 NaN or infinite values"
    code, _, err = anomaly(
        monkeypatch, capsys, "eval", "-c", bad, "-f", store, "-o", tmp_path / "e"
    )
    assert code == 2 and error_lines(err) == [expected], err[-3000:]
    pixels, _ = render_scene("Normal", np.random.default_rng(0), 12, (64, 48))
    video = tmp_path / "v.mp4"
    encode_video(video, pixels, fps=10)
    code, _, err = anomaly(monkeypatch, capsys, "predict", video, "-c", bad, "-o", tmp_path / "p")
    assert code == 2 and error_lines(err) == [expected], err[-3000:]
    with pytest.raises(AnomalyError, match="NaN or infinite"):
        load_model(bad)


def test_non_finite_scores_are_refused_where_they_are_made():
    """Whatever made them (finite weights that overflow in reduced precision, a model edited
    in memory), scores with NaN or inf never reach metrics, events or alarms."""
    videos = [torch.zeros(5, 3), torch.zeros(7, 3)]

    def nan_on_second_video(x: torch.Tensor):  # (B, N, L, D) -> (B, N, L), (B, N, L, C)
        p = x.new_full(x.shape[:-1], 0.25)
        p[x[..., 0] > 0] = math.nan
        return p, torch.stack([p, 1 - p], dim=-1)

    videos[1][3:, 0] = 1.0  # frames 3..6 of the second video score NaN
    with pytest.raises(AnomalyError) as found:
        score_videos(videos, nan_on_second_video, num_segments=2, seg_length=2)
    assert str(found.value) == (
        "the model gave NaN or infinite scores for 4 of 12 frames (first: video 1, frame 3)"
    )
    p, _ = score_videos([torch.zeros(5, 3)], nan_on_second_video, 2, 2)
    assert p[0].tolist() == [0.25] * 5


# the entry point, then whether the process imported torch
PROBE = (
    "import sys\nfrom anomalyclip.cli import main\ntry:\n    main()\nfinally:\n"
    "    print('torch' in sys.modules, file=sys.stderr)\n"
)


@pytest.mark.parametrize(
    ("option", "value", "expected"),
    [("--min-duration", "nan", "seconds >= 0"), ("--merge-gap", "nan", "seconds >= 0"),
     ("--merge-gap", "inf", "seconds >= 0"), ("--exit-ratio", "nan", "a ratio in (0, 1]")],
)  # fmt: skip
def test_nan_event_settings_are_one_line_before_torch(tmp_path, trained, option, value, expected):
    """`--min-duration nan` was accepted and dropped every event."""
    store, run = trained
    for command in (["eval", "-c", run, "-o", tmp_path / "e"], ["predict", store, "-c", run]):
        done = subprocess.run(
            [sys.executable, "-c", PROBE, *map(str, command), option, value],
            env=cli_env(), capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        *_, line, torch_imported = done.stderr.strip().splitlines()
        assert done.returncode == 2 and line == f"error: {option} {value}: expected {expected}"
        assert torch_imported == "False"


@pytest.mark.slow
def test_predict_takes_a_file_name_that_is_not_utf8(tmp_path, trained):
    """A camera export named in Latin-1 (``caf\\xe9.mp4``): its bytes are kept in the output
    names (``caf%E9``, as `unquote` gives them back) and shown as ``\\xe9`` in text, also
    where the terminal's encoding refuses what is not UTF-8."""
    _, run = trained
    pixels, _ = render_scene("Normal", np.random.default_rng(0), 12, (64, 48))
    encode_video(tmp_path / "v.mp4", pixels, fps=10)
    name = os.fsencode(tmp_path) + b"/caf\xe9.mp4"
    os.rename(tmp_path / "v.mp4", name)
    done = subprocess.run(
        [sys.executable, "-m", "anomalyclip.cli", "predict", name, "-c", run, "-o",
         tmp_path / "p"], env=cli_env({"PYTHONIOENCODING": "utf-8"}), capture_output=True,
        timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-3000:]
    out = tmp_path / "p"
    line = done.stdout.decode()
    assert line.startswith(f"{tmp_path}/caf\\xe9.mp4: 12 frames, mean p(A) 0.")
    assert f"-> {out}/caf%E9.csv" in line
    assert sorted(p.name for p in out.iterdir()) == [
        "caf%E9.csv", "caf%E9.events.csv", "caf%E9.events.json", "caf%E9.png", "provenance.json"
    ]  # fmt: skip
    assert unquote("caf%E9", errors="surrogateescape") == os.fsdecode(b"caf\xe9")
    assert len((out / "caf%E9.csv").read_text().splitlines()) == 1 + 12
