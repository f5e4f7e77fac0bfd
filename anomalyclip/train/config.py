"""Training configuration: the paper's per-dataset presets, overridable from TOML or flags.

Resolution order, last wins: the dataset's preset, a TOML file (``--config``), command-line
flags. The resolved configuration is written into every checkpoint, so a run is reproducible
from its own directory. Nothing here imports torch or numpy: the command line checks a TOML
file and prints a configuration (``anomaly train --print-config``) at once.
"""

from __future__ import annotations

import dataclasses
import json
import numbers
import types
import typing
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from anomalyclip import checks
from anomalyclip.errors import AnomalyError
from anomalyclip.kernels import CONV_ALGORITHMS
from anomalyclip.model.config import ModelConfig

# the training frame samplers (anomalyclip.train.data.SAMPLERS holds their code)
SAMPLER_NAMES = ("published", "uniform")


@dataclass
class TrainConfig:
    """Everything a training run depends on besides the data and the CLIP weights.

    ``model`` is the network's shape, not yet bound to a dataset (its classes and feature
    size come from the store when training starts). Presets, TOML files, flags and
    ``config.json`` spell the configuration flat, the model's hyper-parameters beside the
    training options (``emb_dim = 128``, ``[train.loss_weights]``): :meth:`from_dict` and
    :meth:`to_dict` are the one place where that spelling meets the nested configuration.
    """

    model: ModelConfig = field(default_factory=ModelConfig)
    # which N x L frames a training video gives: "published" (the authors' sampler) or
    # "uniform" (N equal spans of any video); see anomalyclip.train.data.SegmentSampler
    sampler: str = "published"
    # optimisation
    lr: float = 1e-5
    # per-group multipliers of lr (the authors' solver ratios); 1 unless a config says otherwise
    lr_ratios: dict[str, float] = field(
        default_factory=lambda: {"prompt": 1.0, "text_projection": 1.0, "temporal": 1.0}
    )
    weight_decay: float = 0.2
    epochs: int = 50
    warmup_epochs: int = 5
    batch_size: int = 64  # half abnormal, half normal
    seed: int = 1024
    # decisions: a share of the normal training videos is held out (never trained on) and
    # sets the decision threshold by this rule (anomalyclip.thresholds)
    calibration_share: float = 0.1
    threshold_rule: str = "far@1"
    # bookkeeping
    eval_every: int = 1  # epochs between evaluations on the test split (0: never)
    workers: int = 2  # threads reading the store ahead of the step
    device: str = "auto"  # cuda when there is one, else cpu; or cpu, cuda, cuda:N, mps
    # how the temporal model computes its convolutions (same result): anomalyclip.model.temporal
    conv: str = "auto"

    def __post_init__(self) -> None:
        from anomalyclip.thresholds import ThresholdRule  # numpy: only once a config is made

        ThresholdRule.parse(self.threshold_rule)
        if not 0.0 <= self.calibration_share < 1.0:
            raise AnomalyError(
                f"calibration share {self.calibration_share}: a fraction in [0, 1) of the "
                "normal training videos"
            )
        if self.conv not in CONV_ALGORITHMS:
            raise AnomalyError(
                f"unknown conv algorithm {self.conv!r}; choose one of {', '.join(CONV_ALGORITHMS)}"
            )
        if self.sampler not in SAMPLER_NAMES:
            raise AnomalyError(
                f"unknown sampler {self.sampler!r}; choose one of {', '.join(SAMPLER_NAMES)}"
            )

    def to_dict(self) -> dict[str, Any]:
        """The flat spelling: the model's hyper-parameters, then the training options."""
        model = self.model.to_dict()
        flat = {k: model[k] for k in ModelConfig.hyper_parameters()}
        return flat | {f.name: asdict(self)[f.name] for f in fields(self) if f.name != "model"}

    @classmethod
    def checked(cls, d: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """(model options, training options) of the flat spelling ``d``, every name known and
        every value of its option's type (:func:`checked_value`)."""
        model_keys = set(ModelConfig.hyper_parameters())
        own = {f.name for f in fields(cls)} - {"model"}
        unknown = sorted(set(d) - own - model_keys)
        if unknown:
            raise AnomalyError(f"unknown training option(s): {', '.join(unknown)}")
        model_hints, hints = typing.get_type_hints(ModelConfig), typing.get_type_hints(cls)
        shape = {k: checked_value(k, v, model_hints[k]) for k, v in d.items() if k in model_keys}
        rest = {k: checked_value(k, v, hints[k]) for k, v in d.items() if k in own}
        return shape, rest

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """From the flat spelling (any subset of the options; the others keep defaults)."""
        shape, rest = cls.checked(d)
        try:
            model = ModelConfig(**shape)
        except ValueError as exc:
            raise AnomalyError(f"model shape: {exc}") from None
        return cls(model=model, **rest)

    def to_toml(self) -> str:
        """The flat spelling as TOML (``[train]``, then its tables): what ``--config`` reads
        back into this very configuration (JSON's spelling of these values is TOML's)."""
        flat = self.to_dict()
        tables = {k: v for k, v in flat.items() if isinstance(v, dict)}
        lines = ["[train]", *(f"{k} = {_shown(v)}" for k, v in flat.items() if k not in tables)]
        for name, table in tables.items():
            lines += ["", f"[train.{name}]", *(f"{k} = {_shown(v)}" for k, v in table.items())]
        return "\n".join(lines) + "\n"

    def updated(self, **overrides: Any) -> TrainConfig:
        """A copy with the non-None overrides applied (flat names, as :meth:`from_dict`)."""
        d = self.to_dict()
        d.update({k: v for k, v in overrides.items() if v is not None})
        return TrainConfig.from_dict(d)


def _shown(value: Any) -> str:
    return json.dumps(value, default=str)  # TOML's spelling: "text", true, 1.5, [3]


def checked_value(name: str, value: Any, hint: Any) -> Any:
    """``value`` checked against the type ``hint`` of option ``name`` (an integer where a
    number is expected becomes a float; a table becomes the dataclass it describes).

    Raises :class:`AnomalyError` naming the option and the value, e.g.
    ``lr = "fast": expected a number``.
    """
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None and len(options) < len(typing.get_args(hint)):
            return None
        hint = options[0] if len(options) == 1 else Any
    is_bool = isinstance(value, bool)
    if hint is bool:
        if is_bool:
            return value
        raise AnomalyError(f"{name} = {_shown(value)}: expected true or false")
    if hint is int:
        if isinstance(value, numbers.Integral) and not is_bool:
            return int(value)
        raise AnomalyError(f"{name} = {_shown(value)}: expected an integer")
    if hint is float:
        if isinstance(value, numbers.Real) and not is_bool:
            return float(value)
        raise AnomalyError(f"{name} = {_shown(value)}: expected a number")
    if hint is str:
        if isinstance(value, str):
            return value
        raise AnomalyError(f"{name} = {_shown(value)}: expected a string")
    if typing.get_origin(hint) is dict:
        if not isinstance(value, dict):
            raise AnomalyError(f"{name} = {_shown(value)}: expected a table")
        item = typing.get_args(hint)[1]
        return {k: checked_value(f"{name}.{k}", v, item) for k, v in value.items()}
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        if isinstance(value, hint):
            return value
        if not isinstance(value, dict):
            raise AnomalyError(f"{name} = {_shown(value)}: expected a table")
        known = {f.name for f in fields(hint)}
        unknown = sorted(set(value) - known)
        if unknown:
            label = name.replace("_", " ").rstrip("s")
            raise AnomalyError(f"unknown {label}(s): {', '.join(unknown)}")
        hints = typing.get_type_hints(hint)
        return hint(**{k: checked_value(f"{name}.{k}", v, hints[k]) for k, v in value.items()})
    return value  # a type this check does not know: taken as given


# The paper's configurations (docs/training.md).
PRESETS: dict[str, dict[str, Any]] = {
    "ucf": {"emb_dim": 256, "depth": 1, "lr": 1e-5, "epochs": 50, "warmup_epochs": 5},
    "xd": {"emb_dim": 128, "depth": 1, "lr": 5e-6, "epochs": 50, "warmup_epochs": 5},
    "sht": {
        "emb_dim": 256,
        "depth": 2,
        "lr": 5e-4,
        "epochs": 100,
        "warmup_epochs": 10,
        "concat_similarity": True,
    },
    # the demo: a minute of training on 2 cores; its short clips (128-192 frames) and few
    # videos want a small temporal model over 16 segments of 8 frames (one pass over a clip,
    # where 32 x 16 would play it three times), and the similarities fed to it as in the
    # ShanghaiTech setting
    "demo": {
        "emb_dim": 32,
        "depth": 1,
        "heads": 4,
        "num_segments": 16,
        "seg_length": 8,
        "lr": 2e-4,
        "epochs": 60,
        "warmup_epochs": 2,
        "eval_every": 20,
        "batch_size": 8,
        "weight_decay": 0.01,
        "concat_similarity": True,
    },
    # your own videos (csv:FILE; stores record them as custom:CLASSES): tens of videos, not
    # thousands. The paper's 32 x 16 frames per video (real footage runs for minutes), the
    # small temporal model and optimiser of the demo, a batch that 4 abnormal and 4 normal
    # training videos fill (64 would need 32 of each), a test evaluation every 10 epochs
    "custom": {
        "emb_dim": 64,
        "depth": 1,
        "heads": 4,
        "lr": 2e-4,
        "epochs": 60,
        "warmup_epochs": 2,
        "eval_every": 10,
        "batch_size": 8,
        "weight_decay": 0.01,
        "concat_similarity": True,
    },
}
CUSTOM_FAMILY = "custom"  # the prefix of the recorded names of csv: datasets


def preset_name(dataset: str) -> str | None:
    """The preset a dataset trains with: its own, ``custom`` for a dataset of your own
    videos (``custom:Fight,Normal``), None for a dataset without one (the defaults)."""
    if dataset in PRESETS:
        return dataset
    family = dataset.partition(":")[0]
    return CUSTOM_FAMILY if family in (CUSTOM_FAMILY, "csv") else None


def preset_values(name: str) -> dict[str, Any]:
    """Option ``name`` (flat spelling) in every preset, without building a configuration
    (for the command line's help, which must not import numpy)."""
    defaults = {
        f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory()
        for cls in (TrainConfig, ModelConfig)
        for f in fields(cls)
    }
    return {preset: values.get(name, defaults[name]) for preset, values in PRESETS.items()}


def read_toml_options(path: str | Path) -> dict[str, Any]:
    """The training options of a TOML file (top level or ``[train]``), every name and value
    type checked; needs no dataset, so ``anomaly train`` refuses a typo before any work."""
    table = checks.read_toml(path)
    table = table.get("train", table)
    try:
        TrainConfig.checked(table)
    except AnomalyError as exc:
        raise AnomalyError(f"{path}: {exc}") from exc
    return table


def resolve_config(
    dataset: str, toml_path: str | Path | None = None, **overrides: Any
) -> TrainConfig:
    """Preset of ``dataset`` (:func:`preset_name`) <- TOML file <- explicit overrides (None
    means "not given")."""
    cfg = TrainConfig.from_dict(PRESETS.get(preset_name(dataset) or "", {}))
    if toml_path is not None:
        table = read_toml_options(toml_path)
        try:
            cfg = TrainConfig.from_dict({**cfg.to_dict(), **table})
        except AnomalyError as exc:
            raise AnomalyError(f"{toml_path}: {exc}") from exc
    return cfg.updated(**overrides)
