"""One typed configuration: the model's shape lives in ``TrainConfig.model`` (a
:class:`ModelConfig`), filled from presets, TOML and flags by its field names, so a new
``ModelConfig`` hyper-parameter reaches the trained network with no build code to edit.

The values are derived from each field's type and default (not listed by name), so a field
added to ``ModelConfig`` later is covered by these tests as it is.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
from synthetic_stores import planted_store

from anomalyclip.errors import AnomalyError
from anomalyclip.model import LossWeights, ModelConfig
from anomalyclip.runs import load_model
from anomalyclip.train import resolve_config, train
from anomalyclip.train.config import PRESETS, TrainConfig


def changed(value):
    """A valid value unlike ``value``: doubled (integers, so emb_dim stays divisible by the
    doubled heads and topk within the doubled segments), halved (floats), negated."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return 2 * value
    if isinstance(value, float):
        return value / 2
    if dataclasses.is_dataclass(value):
        return type(value)(**{k: changed(v) for k, v in dataclasses.asdict(value).items()})
    raise TypeError(f"no test value for {value!r}: extend changed()")


def non_default_shape() -> dict:
    base = resolve_config("demo").model
    return {name: changed(getattr(base, name)) for name in ModelConfig.hyper_parameters()}


def toml_text(values: dict) -> str:
    plain = {k: v for k, v in values.items() if not dataclasses.is_dataclass(v)}
    lines = ["[train]"] + [f"{k} = {json.dumps(v)}" for k, v in plain.items()]
    for k, v in values.items():
        if dataclasses.is_dataclass(v):
            lines += [f"[train.{k}]"] + [f"{n} = {x!r}" for n, x in dataclasses.asdict(v).items()]
    return "\n".join(lines) + "\n"


def test_every_hyper_parameter_is_a_training_option():
    """The model's fields other than the data's (classes, Normal's id, feature size) are all
    settable, and no training option shadows one."""
    hyper = set(ModelConfig.hyper_parameters())
    assert hyper == {f.name for f in dataclasses.fields(ModelConfig)} - {
        "classes", "normal_id", "feature_dim"
    }  # fmt: skip
    assert hyper <= set(TrainConfig().to_dict())
    assert not hyper & {f.name for f in dataclasses.fields(TrainConfig)}


def test_flags_fill_the_nested_model_config():
    values = non_default_shape()
    cfg = resolve_config("demo", **values)
    assert {k: getattr(cfg.model, k) for k in values} == values
    assert cfg.lr == PRESETS["demo"]["lr"]  # the training options keep the preset's


def test_the_flat_spelling_round_trips():
    """What config.json keeps of a run (``cfg.to_dict()``) reads back to the same config."""
    cfg = resolve_config("sht", **non_default_shape(), lr=3e-4)
    again = TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg and again.model.loss_weights == cfg.model.loss_weights


def test_a_bad_shape_is_a_one_line_error():
    with pytest.raises(AnomalyError, match="emb_dim 30 is not divisible by heads 4"):
        resolve_config("demo", emb_dim=30)


@pytest.mark.slow
def test_every_toml_hyper_parameter_reaches_the_trained_network(tmp_path, tiny_clip):
    """TOML -> TrainConfig -> one epoch of training -> the run's config.json -> the loaded
    network's configuration: every hyper-parameter arrives changed."""
    values = non_default_shape()
    path = tmp_path / "shape.toml"
    path.write_text(toml_text(values))
    cfg = resolve_config("demo", path, epochs=1, warmup_epochs=1, workers=1, eval_every=0,
                         batch_size=4, calibration_share=0.0)  # fmt: skip
    assert isinstance(cfg.model.loss_weights, LossWeights)
    store = planted_store(tmp_path / "s.zarr", tiny_clip, cfg, n_abnormal=2, n_normal=2,
                          n_test_abnormal=0, n_test_normal=0)  # fmt: skip
    train(store, tmp_path / "run", cfg, progress=False)
    model, _ = load_model(tmp_path / "run")
    assert {k: getattr(model.cfg, k) for k in values} == values
