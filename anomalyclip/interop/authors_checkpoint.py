"""Reading the AnomalyCLIP authors' files: a Lightning ``last.ckpt`` (its ``net.*`` tensors and
a few plain integers, loaded without running its pickle) and ``ncentroid.pt``; the network's
shape read from the tensors' shapes and checked against the dataset."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from anomalyclip.datasets import DatasetSpec
from anomalyclip.errors import AnomalyError
from anomalyclip.interop.authors_keys import NET
from anomalyclip.interop.safe_pickle import load_torch_file
from anomalyclip.model import ModelConfig
from anomalyclip.train.config import TrainConfig, resolve_config


@dataclass
class AuthorsCheckpoint:
    """The parts of a ``last.ckpt`` this project uses: tensors and a few plain integers."""

    path: Path
    state: dict[str, torch.Tensor]  # ``net.`` stripped
    epoch: int
    global_step: int
    num_classes: int | None  # hyper_parameters.num_classes
    normal_id: int | None  # datamodule_hyper_parameters.normal_id
    lightning_version: str | None
    locations: set[str]

    def need(self, key: str, ndim: int | None = None) -> torch.Tensor:
        t = self.state.get(key)
        if t is None:
            raise AnomalyError(f"{self.path}: key {NET}{key} is missing")
        if not isinstance(t, torch.Tensor):
            raise AnomalyError(f"{self.path}: key {NET}{key} is not a tensor")
        if ndim is not None and t.dim() != ndim:
            raise AnomalyError(
                f"{self.path}: key {NET}{key} has shape {fmt_shape(t.shape)}, expected {ndim} dims"
            )
        return t


def fmt_shape(shape: Any) -> str:
    """A shape as the messages write it: ``3x4``, or ``scalar``."""
    return "x".join(str(s) for s in shape) or "scalar"


def _int(d: Any, key: str) -> int | None:
    v = d.get(key) if isinstance(d, dict) else None
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def read_authors_checkpoint(path: str | Path) -> AuthorsCheckpoint:
    """Load a published ``last.ckpt`` safely (:mod:`.safe_pickle`); keep only its tensors."""
    path = Path(path)
    archive = load_torch_file(path)
    obj = archive.obj
    sd = obj.get("state_dict") if isinstance(obj, dict) else None
    if not isinstance(sd, dict):
        raise AnomalyError(f"{path}: not a PyTorch Lightning checkpoint (no state_dict)")
    state = {
        k.removeprefix(NET): v for k, v in sd.items() if isinstance(k, str) and k.startswith(NET)
    }
    if not state:
        raise AnomalyError(f"{path}: state_dict has no '{NET}*' keys; not an AnomalyCLIP model")
    version = obj.get("pytorch-lightning_version")
    return AuthorsCheckpoint(
        path=path,
        state=state,
        epoch=_int(obj, "epoch") or 0,
        global_step=_int(obj, "global_step") or 0,
        num_classes=_int(obj.get("hyper_parameters"), "num_classes"),
        normal_id=_int(obj.get("datamodule_hyper_parameters"), "normal_id"),
        lightning_version=version if isinstance(version, str) else None,
        locations=archive.locations,
    )


def read_centroid(path: str | Path, dim: int) -> torch.Tensor:
    """``ncentroid.pt``: a saved (D,) tensor, usually a CUDA one; read on the CPU, float32."""
    obj = load_torch_file(path).obj
    if not isinstance(obj, torch.Tensor) or tuple(obj.shape) != (dim,):
        what = fmt_shape(obj.shape) if isinstance(obj, torch.Tensor) else type(obj).__name__
        raise AnomalyError(f"{path}: expected a centroid tensor of shape {dim}, found {what}")
    if not obj.is_floating_point() or not torch.isfinite(obj).all():
        raise AnomalyError(f"{path}: the centroid is not a finite floating-point vector")
    return obj.float().clone()


def _block_indices(state: dict[str, torch.Tensor], pattern: str) -> list[int]:
    rx = re.compile(pattern)
    return sorted({int(m.group(1)) for k in state if (m := rx.match(k))})


def text_layers(ck: AuthorsCheckpoint) -> int:
    found = _block_indices(ck.state, r"text_encoder\.transformer\.resblocks\.(\d+)\.")
    if not found or found != list(range(len(found))):
        raise AnomalyError(f"{ck.path}: no text_encoder.transformer.resblocks.0..N keys")
    return len(found)


def infer_config(ck: AuthorsCheckpoint, spec: DatasetSpec) -> tuple[ModelConfig, TrainConfig]:
    """The network's shape, read from the checkpoint's tensors and checked against ``spec``."""
    p = ck.path
    num_classes, n_ctx, _ = ck.need("prompt_learner.ctx", 3).shape
    feature_dim = ck.need("text_encoder.text_projection", 2).shape[1]
    emb_dim, in_dim = ck.need("temporal_model.projection.weight", 2).shape
    pos_n = ck.need("temporal_model.axial_attn.pos_emb.param_0", 4).shape  # (1, E, N, 1)
    pos_l = ck.need("temporal_model.axial_attn.pos_emb.param_1", 4).shape  # (1, E, 1, L)
    num_anomaly = ck.need("selector_model.bn_layer.running_mean", 1).shape[0]
    blocks = _block_indices(ck.state, r"temporal_model\.axial_attn\.layers\.blocks\.(\d+)\.")
    if not blocks or blocks != list(range(len(blocks))) or len(blocks) % 2:
        raise AnomalyError(
            f"{p}: temporal_model.axial_attn.layers.blocks.* should number 2 per layer, "
            f"found indices {blocks}"
        )
    if num_classes != spec.num_classes or ck.num_classes not in (None, spec.num_classes):
        raise AnomalyError(
            f"{p}: {NET}prompt_learner.ctx has {num_classes} classes, dataset {spec.name!r} "
            f"has {spec.num_classes}"
        )
    if num_anomaly != num_classes - 1:
        raise AnomalyError(
            f"{p}: {NET}selector_model.bn_layer.running_mean has {num_anomaly} values, "
            f"expected {num_classes - 1} (one per anomaly class)"
        )
    if ck.normal_id not in (None, spec.normal_id):
        raise AnomalyError(
            f"{p}: the checkpoint's normal_id is {ck.normal_id}, dataset {spec.name!r} has "
            f"{spec.normal_id} ({spec.normal})"
        )
    if in_dim not in (feature_dim, feature_dim + num_anomaly):
        raise AnomalyError(
            f"{p}: {NET}temporal_model.projection.weight takes {in_dim} inputs, expected "
            f"{feature_dim} (features) or {feature_dim + num_anomaly} (similarities + features)"
        )
    try:
        tcfg = resolve_config(spec.name).updated(
            emb_dim=emb_dim,
            depth=len(blocks) // 2,
            n_ctx=n_ctx,
            num_segments=pos_n[2],
            seg_length=pos_l[3],
            concat_similarity=in_dim != feature_dim,
        )
        mcfg = tcfg.model.with_data(spec.classes, spec.normal_id, feature_dim)
    except (AnomalyError, ValueError) as exc:
        raise AnomalyError(f"{p}: {exc}") from exc
    return mcfg, tcfg
