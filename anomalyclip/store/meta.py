"""The root attributes of a feature store, typed: what every row of the store shares.

On disk they stay one JSON-able mapping on the store's root (docs/store.md):
``schema``, ``schema_version``, ``dataset`` and its ``classes`` (names in id order, Normal
included: what the videos' labels are checked against), ``backbone`` (``model``, ``dim``,
weight hash),
``preprocessing``, ``sampling`` (``mode``, ``value``), ``dtype``, ``producer``, and ``inputs``
(where the CLIP was: :func:`anomalyclip.locations.store_clip`).
:class:`StoreMeta` is the one place that reads them into fields and writes them back.
"""

from __future__ import annotations

import json
import platform
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from anomalyclip.errors import AnomalyError, shorten
from anomalyclip.names import normalise_label

SCHEMA = "anomalyclip.features"
SCHEMA_VERSION = 1
DTYPES = ("float16", "float32")
DEFAULT_DIM = 512  # D where a store or file does not say: CLIP ViT-B/16's embedding size
# The fields two stores must share to be merged or read together.
COMPATIBILITY_FIELDS = ("dataset", "backbone", "preprocessing", "sampling")


def shown(value: Any, limit: int = 40) -> str:
    """A stored value as JSON writes it (``"2"``, ``7``), cut short: what errors quote."""
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return shorten(text, limit)


def _table(value: Any) -> dict | None:
    return value if isinstance(value, dict) else None


def class_names(value: Any) -> tuple[str, ...] | None:
    """``value`` as a class list: a non-empty list of non-empty names, distinct as class
    names compare (:func:`anomalyclip.names.normalise_label`); None when it is not one."""
    if not isinstance(value, list) or not value:
        return None
    if not all(isinstance(c, str) and c.strip() for c in value):
        return None
    if len({normalise_label(c) for c in value}) != len(value):
        return None
    return tuple(value)


@dataclass(frozen=True)
class StoreMeta:
    """A store's root attributes. Reading is lenient (a field of the wrong type reads as
    missing; :meth:`anomalyclip.store.FeatureStore.root_problem` names what is wrong)."""

    dataset: str = ""
    backbone: dict | None = None  # the CLIP the features came from: model, dim, weights_sha256
    preprocessing: dict | None = None
    sampling: dict | None = None  # which frames were kept: {"mode": ..., "value": ...}
    dtype: str = "float16"
    schema: str = ""
    schema_version: int = 0
    producer: dict = field(default_factory=dict)
    # where the CLIP was, so a moved store still finds it: {"clip": {"given", "absolute",
    # "relative" (to the store), "weights_sha256"}} (anomalyclip.locations.record)
    inputs: dict = field(default_factory=dict)
    # the dataset's class names in id order; None in a store written before stores recorded
    # them (its labels are then checked only against classes the caller gives)
    classes: tuple[str, ...] | None = None

    @property
    def dim(self) -> int | None:
        """D, the width of the stored rows (None when the backbone does not say)."""
        dim = (self.backbone or {}).get("dim")
        return dim if isinstance(dim, int) and not isinstance(dim, bool) and dim > 0 else None

    @property
    def model(self) -> str | None:
        """The backbone's name or folder, as extraction recorded it."""
        return (self.backbone or {}).get("model")

    @property
    def is_store(self) -> bool:
        return self.schema == SCHEMA

    @classmethod
    def from_attrs(cls, attrs: dict) -> StoreMeta:
        def text(name: str, default: str) -> str:
            value = attrs.get(name, default)
            return value if isinstance(value, str) else default

        version = attrs.get("schema_version", 0)
        return cls(
            dataset=text("dataset", ""),
            backbone=_table(attrs.get("backbone")),
            preprocessing=_table(attrs.get("preprocessing")),
            sampling=_table(attrs.get("sampling")),
            dtype=text("dtype", "float16"),
            schema=text("schema", ""),
            schema_version=version if isinstance(version, int) else 0,
            producer=_table(attrs.get("producer")) or {},
            inputs=_table(attrs.get("inputs")) or {},
            classes=class_names(attrs.get("classes")),
        )

    def to_attrs(self) -> dict:
        where = {"inputs": self.inputs} if self.inputs else {}  # stores before it had none
        classes = {"classes": list(self.classes)} if self.classes is not None else {}  # idem
        return {
            "schema": self.schema,
            "schema_version": self.schema_version,
            "dataset": self.dataset,
            **classes,
            "backbone": self.backbone,
            "preprocessing": self.preprocessing,
            "sampling": self.sampling,
            "dtype": self.dtype,
            "producer": self.producer,
        } | where


def provenance(
    *,
    dataset: str,
    classes: Sequence[str],
    backbone: dict,
    preprocessing: dict,
    sampling: dict,
    dtype: str = "float16",
    device: str = "cpu",
    inputs: dict | None = None,
) -> dict:
    """Root attributes of a new store: every fact needed to decide whether two stores mix,
    and the dataset's ``classes`` (names in id order) its videos' labels are checked
    against."""
    import torch
    import transformers

    import anomalyclip

    if dtype not in DTYPES:
        raise AnomalyError(f"dtype must be one of {DTYPES}, not {dtype!r}")
    names = class_names(list(classes))
    if names is None:
        raise AnomalyError(f"classes {shown(list(classes))}: not a list of distinct class names")
    producer = {
        "package": f"anomalyclip {anomalyclip.__version__}",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "device": device,
    }
    meta = StoreMeta(dataset, backbone, preprocessing, sampling, dtype, SCHEMA, SCHEMA_VERSION,
                     producer, inputs or {}, names)  # fmt: skip
    return meta.to_attrs()


def first_difference(
    a: dict, b: dict, fields_: tuple[str, ...] = COMPATIBILITY_FIELDS
) -> str | None:
    """Dotted name of the first compatibility field where two root attribute sets differ."""

    def walk(x, y, prefix: str) -> str | None:
        if isinstance(x, dict) and isinstance(y, dict):
            for key in sorted(set(x) | set(y)):
                found = walk(x.get(key), y.get(key), f"{prefix}.{key}")
                if found:
                    return found
            return None
        return None if x == y else f"{prefix} ({x!r} != {y!r})"

    for name in fields_:
        if name == "preprocessing":  # the frame path first: the difference that matters
            modes = preprocessing_mode(a.get(name)), preprocessing_mode(b.get(name))
            if modes[0] != modes[1]:
                return f"preprocessing.mode ({modes[0]!r} != {modes[1]!r})"
        found = walk(a.get(name), b.get(name), name)
        if found:
            return found
    return None


def preprocessing_mode(preprocessing: dict | None) -> str:
    """The frame path a store's features came from (``anomaly features --preprocess``): the
    recorded ``mode``; ``native`` for the extractor's records that have none (written before
    there was a choice, or by the native path, which still writes them so); ``unknown`` for
    anything else (imported ``.npy`` features, other tools)."""
    p = preprocessing if isinstance(preprocessing, dict) else {}
    if isinstance(p.get("mode"), str):
        return p["mode"]
    return "native" if str(p.get("implementation", "")).startswith("torch") else "unknown"


def describe_backbone(backbone: dict | None) -> str:
    """``model (weights 0123456789ab, dim 512)``: what tells two backbones apart, short."""
    if not isinstance(backbone, dict) or not backbone:
        return "an unrecorded backbone"
    detail = []
    if backbone.get("weights_sha256"):
        detail.append(f"weights {str(backbone['weights_sha256'])[:12]}")
    if backbone.get("dim"):
        detail.append(f"dim {shorten(backbone['dim'], 12)}")
    name = shorten(backbone.get("model", "?"))
    return f"{name} ({', '.join(detail)})" if detail else name


def backbone_difference(expected: dict | None, found: dict | None) -> str | None:
    """Why features from backbone ``found`` do not fit a model trained on ``expected``.

    The weight hash decides when both sides have one (a local copy of the same weights may
    carry another name); otherwise the model id does. The width must always agree. None when
    they fit, or when ``expected`` was never recorded (nothing to compare against).
    """
    if not expected:
        return None
    found = found or {}
    if expected.get("dim") and found.get("dim") and expected["dim"] != found["dim"]:
        return "dim"
    if expected.get("weights_sha256") and found.get("weights_sha256"):
        return None if expected["weights_sha256"] == found["weights_sha256"] else "weights_sha256"
    return None if expected.get("model") == found.get("model") else "model"
