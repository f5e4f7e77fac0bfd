"""Plain configuration of the AnomalyCLIP model and its loss weights.

Both dataclasses round-trip through JSON (``to_dict`` / ``from_dict``) so a checkpoint's
config file fully describes the network that its weights belong to.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any


@dataclass
class LossWeights:
    """Weights of the loss terms (docs/model.md; the paper's configs for all datasets)."""

    dir_abnormal: float = 1.0
    dir_normal: float = 1.0
    topk_abnormal: float = 1.0
    bottomk_abnormal: float = 1.0
    topk_normal: float = 1.0
    smooth: float = 8e-4
    sparse: float = 8e-3

    def to_dict(self) -> dict[str, float]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LossWeights:
        return cls(**{f.name: float(d[f.name]) for f in fields(cls) if f.name in d})


# fields of ModelConfig filled from the data rather than chosen
DATA_FIELDS = ("classes", "normal_id", "feature_dim")


@dataclass
class ModelConfig:
    """Shape of an AnomalyCLIP network.

    ``classes`` are in id order exactly as the dataset registry spells them (the prompts are
    built from them), ``normal_id`` is the position of the Normal class. ``concat_similarity``
    feeds the A similarities, then the D centred feature values, to the temporal model
    (the paper's ShanghaiTech setting).

    The fields of :data:`DATA_FIELDS` come from the data (the dataset's classes, the store's
    feature size); every other field is a hyper-parameter that a training configuration
    chooses. A configuration without classes is not yet bound to a dataset
    (:meth:`with_data` binds it).
    """

    classes: tuple[str, ...] = ()
    normal_id: int = 0
    feature_dim: int = 512
    emb_dim: int = 256
    depth: int = 1
    heads: int = 8
    n_ctx: int = 8
    num_segments: int = 32
    seg_length: int = 16
    concat_similarity: bool = False
    topk: int = 3
    segment_dropout: float = 0.7
    loss_weights: LossWeights = field(default_factory=LossWeights)

    def __post_init__(self) -> None:
        self.classes = tuple(self.classes)
        if self.classes and not 0 <= self.normal_id < len(self.classes):
            raise ValueError(f"normal_id {self.normal_id} outside 0..{len(self.classes) - 1}")
        if len(self.classes) == 1:
            raise ValueError("need the Normal class and at least one anomaly class")
        if self.emb_dim % self.heads:
            raise ValueError(f"emb_dim {self.emb_dim} is not divisible by heads {self.heads}")
        if self.topk > self.num_segments:
            raise ValueError(f"topk {self.topk} exceeds num_segments {self.num_segments}")

    @classmethod
    def hyper_parameters(cls) -> tuple[str, ...]:
        """The fields a training configuration chooses (all but :data:`DATA_FIELDS`)."""
        return tuple(f.name for f in fields(cls) if f.name not in DATA_FIELDS)

    def with_data(self, classes: tuple[str, ...], normal_id: int, feature_dim: int) -> ModelConfig:
        """This shape bound to a dataset's classes and a store's feature size."""
        return replace(self, classes=tuple(classes), normal_id=normal_id, feature_dim=feature_dim)

    @property
    def num_classes(self) -> int:
        """C: every class, Normal included."""
        return len(self.classes)

    @property
    def num_anomaly(self) -> int:
        """A = C - 1: the anomaly classes, the channels of the similarity."""
        return len(self.classes) - 1

    @property
    def temporal_in_dim(self) -> int:
        return self.feature_dim + (self.num_anomaly if self.concat_similarity else 0)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["classes"] = list(self.classes)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        known = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in d.items() if k in known}
        kwargs["classes"] = tuple(kwargs["classes"])
        if isinstance(kwargs.get("loss_weights"), dict):
            kwargs["loss_weights"] = LossWeights.from_dict(kwargs["loss_weights"])
        return cls(**kwargs)
