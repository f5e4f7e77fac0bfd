"""Run directories: what a trained (or imported) model is on disk.

``runs/<name>/`` holds

- ``model.safetensors``: the trainable weights (prompt contexts, text projection, temporal
  model), the BatchNorm statistics and the normal centroid; optionally the whole text tower
  (imported checkpoints carry the authors' own);
- ``config.json``: dataset, model and training configuration, CLIP source, store provenance,
  epoch and the last metrics;
- ``optimizer.safetensors`` + ``optimizer.json``: AdamW state for ``--resume``;
- ``rng.safetensors``: the torch RNG state.

Every file is written under a temporary name and renamed, and every tensor file carries the
epoch in its metadata; a loader that finds files from different epochs (a crash between two
renames) refuses the run instead of mixing them. No pickle is involved anywhere.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from anomalyclip.errors import AnomalyError
from anomalyclip.store.store import FeatureStore, backbone_difference, describe_backbone

RUN_FORMAT = "anomalyclip.run"
RUN_VERSION = 1


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _atomic_save_tensors(
    path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, str]
) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp), meta)
    os.replace(tmp, path)


def _load_tensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as fh:
            meta = fh.metadata() or {}
        return load_file(str(path)), meta
    except FileNotFoundError as exc:
        raise AnomalyError(f"{path}: missing") from exc
    except (SafetensorError, OSError) as exc:
        raise AnomalyError(f"{path}: not a readable safetensors file ({exc})") from exc


def text_tower_prefix(model: torch.nn.Module) -> str:
    """Name prefix of the Hugging Face text model inside ``model`` ('' if none)."""
    from transformers import PreTrainedModel

    for name, module in model.named_modules():
        if name and isinstance(module, PreTrainedModel):
            return name + "."
    return ""


def model_state(model: torch.nn.Module, with_text_tower: bool = False) -> dict[str, torch.Tensor]:
    """What a run stores: trainable parameters and buffers, frozen CLIP weights left out."""
    prefix = text_tower_prefix(model)
    state = model.state_dict()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    return {
        k: v
        for k, v in state.items()
        if with_text_tower or not prefix or not k.startswith(prefix) or k in trainable
    }


def load_model_state(model: torch.nn.Module, state: dict[str, torch.Tensor], source: Path) -> None:
    """Load a run's weights; only frozen text-tower weights may be absent."""
    prefix = text_tower_prefix(model)
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not (prefix and k.startswith(prefix))]
    if missing or result.unexpected_keys:
        detail = f"missing {missing[:3]}" if missing else f"unexpected {result.unexpected_keys[:3]}"
        raise AnomalyError(f"{source}: weights do not fit the model ({detail})")


@dataclass
class RunState:
    config: dict[str, Any]
    weights: dict[str, torch.Tensor]
    optimizer: dict[str, Any] | None
    rng: torch.Tensor | None


def save_run(
    run_dir: str | Path,
    model: torch.nn.Module,
    config: dict[str, Any],
    epoch: int,
    optimizer: torch.optim.Optimizer | None = None,
    with_text_tower: bool = False,
) -> Path:
    """Write (or overwrite) a run directory, file by file atomically; ``config.json`` last."""
    run = Path(run_dir)
    run.mkdir(parents=True, exist_ok=True)
    meta = {"format": RUN_FORMAT, "epoch": str(epoch)}
    _atomic_save_tensors(run / "model.safetensors", model_state(model, with_text_tower), meta)
    if optimizer is not None:
        sd = optimizer.state_dict()
        tensors, scalars = {}, {}
        for idx, st in sd["state"].items():
            for name, value in st.items():
                if torch.is_tensor(value):
                    tensors[f"{idx}.{name}"] = value
                else:
                    scalars[f"{idx}.{name}"] = value
        _atomic_save_tensors(run / "optimizer.safetensors", tensors, meta)
        layout = {"epoch": epoch, "param_groups": sd["param_groups"], "scalars": scalars}
        _atomic_write_bytes(run / "optimizer.json", json.dumps(layout, indent=1).encode())
        _atomic_save_tensors(run / "rng.safetensors", {"torch": torch.get_rng_state()}, meta)
    full = {"format": RUN_FORMAT, "version": RUN_VERSION, **config, "epoch": epoch}
    _atomic_write_bytes(run / "config.json", json.dumps(full, indent=2).encode())
    return run


def read_run_config(run_dir: str | Path) -> dict[str, Any]:
    """A run's ``config.json``, checked to be one."""
    cfg_path = Path(run_dir) / "config.json"
    if not cfg_path.is_file():
        raise AnomalyError(f"{run_dir}: not a run directory (no config.json)")
    try:
        config = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as exc:
        raise AnomalyError(f"{cfg_path}: invalid JSON ({exc})") from exc
    if not isinstance(config, dict) or config.get("format") != RUN_FORMAT:
        raise AnomalyError(f"{cfg_path}: not an anomalyclip run")
    return config


def load_run(run_dir: str | Path, with_optimizer: bool = False) -> RunState:
    run = Path(run_dir)
    config = read_run_config(run)
    epoch = str(config.get("epoch"))
    weights, meta = _load_tensors(run / "model.safetensors")
    if meta.get("epoch") != epoch:
        raise AnomalyError(
            f"{run}: model.safetensors is from epoch {meta.get('epoch')}, config from {epoch}"
        )
    optimizer, rng = None, None
    if with_optimizer and (run / "optimizer.safetensors").is_file():
        tensors, ometa = _load_tensors(run / "optimizer.safetensors")
        layout = json.loads((run / "optimizer.json").read_text())
        if ometa.get("epoch") != epoch or str(layout.get("epoch")) != epoch:
            raise AnomalyError(f"{run}: optimizer state is not from epoch {epoch}")
        state: dict[int, dict[str, Any]] = {}
        for key, value in {**tensors, **layout["scalars"]}.items():
            idx, name = key.split(".", 1)
            state.setdefault(int(idx), {})[name] = value
        optimizer = {"state": state, "param_groups": layout["param_groups"]}
        rng = _load_tensors(run / "rng.safetensors")[0]["torch"]
    return RunState(config, weights, optimizer, rng)


def check_backbone(
    config: dict[str, Any], store: FeatureStore, run_dir: str | Path, allow: bool = False
) -> None:
    """Refuse a store whose features come from another backbone than the run was trained on.

    ``allow`` (``--allow-backbone-mismatch``) lets it through: e.g. features from a local copy
    of the same weights under another name, recorded before weight hashes were.
    """
    expected = (config.get("store") or {}).get("backbone")
    found = store.attrs.get("backbone")
    if allow or not backbone_difference(expected, found):
        return
    raise AnomalyError(
        f"{store.location}: features were extracted with {describe_backbone(found)}, the run "
        f"{run_dir} was trained on {describe_backbone(expected)}; pass "
        "--allow-backbone-mismatch to use them anyway"
    )
