"""A run's ``config.json``, checked once where it is read: the fields other modules use.

``config.json`` stays one JSON mapping (written by ``train`` and ``import-checkpoint``, read
as a dict throughout); :func:`check_run_config` is the one place that says what each field
read elsewhere must hold, so a shared run with a wrongly typed field fails with one line
naming the file and the field (``threshold.value = "high": expected a probability in
[0, 1]``) instead of a traceback deep inside evaluation. Fields nobody reads are left alone.
"""

from __future__ import annotations

import math
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any

from anomalyclip.errors import AnomalyError
from anomalyclip.model import ModelConfig
from anomalyclip.model.config import LossWeights
from anomalyclip.store.meta import shown


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check(ok: bool, name: str, value: Any, expected: str) -> None:
    if not ok:
        raise ValueError(f"{name} = {shown(value, 60)}: expected {expected}")


def _table(config: dict, name: str, optional: bool = True) -> dict:
    value = config.get(name)
    if value is None and optional:
        return {}
    _check(isinstance(value, dict), name, value, "a table of fields")
    return value


def _model_fields(model: dict) -> None:
    """Each field of :class:`ModelConfig` of the type its default has."""
    for f in fields(ModelConfig):
        if f.name not in model:
            continue
        value, name = model[f.name], f"model.{f.name}"
        default = f.default if f.default is not MISSING else f.default_factory()
        if isinstance(default, bool):
            _check(isinstance(value, bool), name, value, "true or false")
        elif isinstance(default, int):
            _check(_integer(value), name, value, "an integer")
        elif isinstance(default, float):
            _check(_number(value) and math.isfinite(value), name, value, "a number")
        elif isinstance(default, tuple):
            ok = isinstance(value, list) and all(isinstance(c, str) for c in value)
            _check(ok, name, value, "a list of class names")
        elif isinstance(default, LossWeights):
            ok = isinstance(value, dict) and all(_number(v) for v in value.values())
            _check(ok, name, value, "a table of numbers")


def _fields(config: dict) -> None:
    """ValueError naming the first field of the wrong type or out of range."""
    _check(isinstance(config.get("dataset"), str), "dataset", config.get("dataset"),
           "a dataset name")  # fmt: skip
    epoch = config.get("epoch", 0)
    _check(_integer(epoch) and epoch >= 0, "epoch", epoch, "a whole number of epochs")
    model = _table(config, "model", optional=False)
    _model_fields(model)
    threshold = _table(config, "threshold")
    if threshold:
        value = threshold.get("value")
        ok = _number(value) and 0.0 <= value <= 1.0  # False for NaN too
        _check(ok, "threshold.value", value, "a probability in [0, 1]")
        for name in ("rule", "source"):
            _check(isinstance(threshold.get(name), str), f"threshold.{name}",
                   threshold.get(name), "text")  # fmt: skip
    rule = _table(config, "train").get("threshold_rule")
    _check(rule is None or isinstance(rule, str), "train.threshold_rule", rule, "a rule")
    for name in ("calibration", "store", "inputs", "metrics"):
        _table(config, name)
    try:
        ModelConfig.from_dict(model)
    except (ValueError, TypeError, KeyError) as exc:
        raise ValueError(f"model: {exc}") from None


def check_run_config(config: dict, file: str | Path) -> dict:
    """``config`` itself when every field that is read elsewhere holds what it must;
    otherwise an AnomalyError ``<file>: <field> = <value>: expected ...``."""
    try:
        _fields(config)
    except ValueError as exc:
        raise AnomalyError(f"{file}: {exc}") from None
    return config
