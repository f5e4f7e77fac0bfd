"""A run's ``config.json`` as the code reads it: :class:`RunConfig`, checked once, on reading.

``config.json`` is one JSON mapping, written by ``train`` and ``import-checkpoint``.
:meth:`RunConfig.parse` is the one place that reads it: each field that other modules use
becomes a typed attribute, checked on the way in, so a shared run with a wrongly typed field
fails with one line naming the file and the field (``threshold.value = "high": expected a
probability in [0, 1]``) instead of a traceback deep inside evaluation or a live camera.
Fields no module reads stay in the mapping (:meth:`RunConfig.to_dict` gives it back whole).

Standard library only (numpy comes with :mod:`anomalyclip.thresholds`' record, for a run
that has a threshold): ``watch`` and the other commands check a run before torch is imported.

Fields (all but ``format``, ``dataset`` and ``model`` optional):

====================  ==========================================================
``dataset``           the dataset's name (its classes are the model's)
``epoch``             epochs trained (the current checkpoint's)
``version``           the run format's version (1: before epochs were counted from 1)
``model``             :class:`anomalyclip.model.ModelConfig`'s fields
``threshold``         ``{value, rule, source}``: the decision threshold chosen in training
``train``             the training options (``threshold_rule``, ``conv``, ``sampler``, ...)
``calibration``       the held-out normal frames' score quantiles (``far@X`` rules)
``store``             the training store: ``location``, ``backbone``, ``sampling``
``inputs``            where its CLIP and store were (``anomalyclip.locations.record``) and
                      how the store's frames were made (``preprocessing``)
``metrics``           the last evaluation's numbers; ``history``: one entry per epoch
``imported``          the authors' checkpoint it came from (``import-checkpoint``)
====================  ==========================================================
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from anomalyclip import checks
from anomalyclip.errors import AnomalyError, one_line, shorten
from anomalyclip.model.config import LossWeights, ModelConfig

if TYPE_CHECKING:
    from anomalyclip.thresholds import Threshold

RUN_FORMAT = "anomalyclip.run"
SAMPLING = "a sampling (all; fps or stride with a positive value)"


@dataclass(frozen=True)
class RunConfig:
    """A run's ``config.json``, read and checked (module docstring); build with :meth:`parse`."""

    dataset: str
    model: ModelConfig
    epoch: int = 0
    version: int = 1
    threshold: Threshold | None = None
    threshold_rule: str | None = None  # train.threshold_rule: the rule training applied
    calibration: dict | None = None
    store: dict = field(default_factory=dict)
    inputs: dict = field(default_factory=dict)
    metrics: dict | None = None
    history: tuple[dict, ...] = ()
    imported: dict | None = None
    raw: dict = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def parse(cls, config: Any, file: str | Path) -> RunConfig:
        """The :class:`RunConfig` of the mapping ``config`` read from ``file``; otherwise one
        AnomalyError ``<file>: <field> = <value>: expected ...``."""
        if not isinstance(config, dict) or config.get("format") != RUN_FORMAT:
            raise AnomalyError(f"{file}: not an anomalyclip run")
        if "dataset" not in config and "model" not in config:
            raise AnomalyError(f"{file}: not an anomalyclip run")  # neither of its two musts
        try:
            return cls._build(config)
        except ValueError as exc:
            raise AnomalyError(f"{file}: {exc}") from None

    @classmethod
    def read(cls, run_dir: str | Path) -> RunConfig:
        """The :class:`RunConfig` of the run folder ``run_dir`` (its ``config.json`` as it
        stands; :func:`anomalyclip.runs.read_run_config` also checks it against the
        checkpoint's manifest): one line for a folder or file that is not a run's."""
        file = checks.run_dir(run_dir) / "config.json"
        try:
            config = json.loads(file.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
            raise AnomalyError(f"{file}: invalid JSON ({one_line(exc, 160)})") from exc
        return cls.parse(config, file)

    @classmethod
    def _build(cls, config: dict) -> RunConfig:
        dataset, epoch = config.get("dataset"), config.get("epoch", 0)
        _check(isinstance(dataset, str), "dataset", dataset, "a dataset name")
        _check(_integer(epoch) and epoch >= 0, "epoch", epoch, "a whole number of epochs")
        version = config.get("version", 1)
        _check(_integer(version), "version", version, "an integer")
        rule = _table(config, "train").get("threshold_rule")
        _check(rule is None or isinstance(rule, str), "train.threshold_rule", rule, "a rule")
        history = config.get("history", [])
        _check(isinstance(history, list), "history", history, "a list of epochs")
        return cls(
            dataset=dataset,
            model=_model(_table(config, "model", optional=False)),
            epoch=epoch,
            version=version,
            threshold=_threshold(_table(config, "threshold")),
            threshold_rule=rule,
            calibration=_table(config, "calibration") or None,
            store=_store(_table(config, "store")),
            inputs=_table(config, "inputs"),
            metrics=_table(config, "metrics") or None,
            history=tuple(history),
            imported=_table(config, "imported") or None,
            raw=config,
        )

    @property
    def train(self) -> dict:
        """The training options as recorded (``train`` of the file)."""
        return self.raw.get("train") or {}

    @property
    def sampling(self) -> dict | None:
        """``store.sampling``: which frames the training features kept (None: not recorded)."""
        return self.store.get("sampling")

    def get(self, name: str, default: Any = None) -> Any:
        """A field of the file that no attribute types (``provenance``, ``clip``, ...)."""
        return self.raw.get(name, default)

    def to_dict(self) -> dict:
        """The whole mapping, as read (a copy: fields no attribute covers included)."""
        return copy.deepcopy(self.raw)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _shown(value: Any) -> str:
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return shorten(text, 60)


def _check(ok: bool, name: str, value: Any, expected: str) -> None:
    if not ok:
        raise ValueError(f"{name} = {_shown(value)}: expected {expected}")


def _table(config: dict, name: str, optional: bool = True) -> dict:
    value = config.get(name)
    if value is None and optional:
        return {}
    _check(isinstance(value, dict), name, value, "a table of fields")
    return value


def _model(model: dict) -> ModelConfig:
    """Each field of :class:`ModelConfig` of the type its default has, then the whole."""
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
    try:
        return ModelConfig.from_dict(model)
    except (ValueError, TypeError, KeyError) as exc:
        raise ValueError(f"model: {exc}") from None


def _threshold(threshold: dict) -> Threshold | None:
    if not threshold:
        return None
    from anomalyclip.thresholds import Threshold  # numpy: only for a run that has one

    value = threshold.get("value")
    ok = _number(value) and 0.0 <= value <= 1.0  # False for NaN too
    _check(ok, "threshold.value", value, "a probability in [0, 1]")
    for name in ("rule", "source"):
        _check(isinstance(threshold.get(name), str), f"threshold.{name}", threshold.get(name),
               "text")  # fmt: skip
    return Threshold.from_dict(threshold)


def _store(store: dict) -> dict:
    """``store``, its ``sampling`` checked (absent, or all / fps / stride with a value)."""
    sampling = store.get("sampling")
    if sampling is None:
        return store
    mode = sampling.get("mode") if isinstance(sampling, dict) else None
    value = sampling.get("value") if isinstance(sampling, dict) else None
    positive = _number(value) and math.isfinite(value) and value > 0
    ok = mode == "all" or (mode == "fps" and positive)
    ok = ok or (mode == "stride" and positive and float(value).is_integer())
    _check(ok, "store.sampling", sampling, SAMPLING)
    return store
