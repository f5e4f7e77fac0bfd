"""The root attributes of a feature store, typed: what every row of the store shares.

On disk they stay one JSON-able mapping on the store's root (docs/store.md):
``schema``, ``schema_version``, ``dataset``, ``backbone`` (``model``, ``dim``, weight hash),
``preprocessing``, ``sampling`` (``mode``, ``value``), ``dtype``, ``producer``, and ``inputs``
(where the CLIP was: :func:`anomalyclip.locations.store_clip`).
:class:`StoreMeta` is the one place that reads them into fields and writes them back.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass, field
from typing import Any

from anomalyclip.errors import AnomalyError

SCHEMA = "anomalyclip.features"
SCHEMA_VERSION = 1
DTYPES = ("float16", "float32")
DEFAULT_DIM = 512  # D where a store or file does not say: CLIP ViT-B/16's embedding size


def _table(value: Any) -> dict | None:
    return value if isinstance(value, dict) else None


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
        )

    def to_attrs(self) -> dict:
        where = {"inputs": self.inputs} if self.inputs else {}  # stores before it had none
        return {
            "schema": self.schema,
            "schema_version": self.schema_version,
            "dataset": self.dataset,
            "backbone": self.backbone,
            "preprocessing": self.preprocessing,
            "sampling": self.sampling,
            "dtype": self.dtype,
            "producer": self.producer,
        } | where


def provenance(
    *,
    dataset: str,
    backbone: dict,
    preprocessing: dict,
    sampling: dict,
    dtype: str = "float16",
    device: str = "cpu",
    inputs: dict | None = None,
) -> dict:
    """Root attributes of a new store: every fact needed to decide whether two stores mix."""
    import torch
    import transformers

    import anomalyclip

    if dtype not in DTYPES:
        raise AnomalyError(f"dtype must be one of {DTYPES}, not {dtype!r}")
    producer = {
        "package": f"anomalyclip {anomalyclip.__version__}",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "device": device,
    }
    meta = StoreMeta(dataset, backbone, preprocessing, sampling, dtype, SCHEMA, SCHEMA_VERSION,
                     producer, inputs or {})  # fmt: skip
    return meta.to_attrs()
