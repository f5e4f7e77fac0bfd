"""Run directories: what a trained (or imported) model is on disk.

``runs/<name>/`` holds one checkpoint:

- ``model.safetensors``: the trainable weights (prompt contexts, text projection, temporal
  model), the BatchNorm statistics and the normal centroid; optionally the whole text tower
  (imported checkpoints carry the authors' own);
- ``config.json``: dataset, model and training configuration, CLIP source, store provenance,
  epoch and the last metrics;
- ``optimizer.safetensors`` + ``optimizer.json``: AdamW state for ``--resume``;
- ``rng.safetensors``: the torch RNG state;
- ``checkpoint.json``: the manifest: epoch, and the size and SHA-256 of each file above.

Publishing is atomic. A new checkpoint is written whole into ``.staging/`` (each file
fsynced), then its manifest is written there last: from that moment the new checkpoint is
complete and the previous one is no longer needed. Only then are the files renamed into the
run directory, one by one, the manifest last, and ``.staging/`` removed. A loader prefers a
complete ``.staging/`` (its files are found there or, once renamed, in the run directory,
each checked against the manifest's hash), and otherwise reads the run directory against
its own manifest: killed at any moment, or out of disk space, a run always loads as exactly
the previous or exactly the new checkpoint, and the next save finishes or discards what
was interrupted. Runs written before manifests existed load as before (every tensor file
carries the epoch in its metadata; files of different epochs are refused). No pickle is
involved anywhere.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_tensor_bytes
from safetensors.torch import save as tensor_bytes

from anomalyclip.checks import CLAIM
from anomalyclip.errors import AnomalyError
from anomalyclip.runs.config import RUN_FORMAT, RunConfig
from anomalyclip.store import FeatureStore
from anomalyclip.store.meta import backbone_difference, describe_backbone

RUN_VERSION = 2  # 2: config.json's "epoch" counts completed epochs (1: last 0-based index)
MANIFEST = "checkpoint.json"
STAGING = ".staging"
FILES = (
    "model.safetensors",
    "optimizer.safetensors",
    "optimizer.json",
    "rng.safetensors",
    "config.json",
)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_file(path: Path, data: bytes) -> None:
    """Write and fsync one file (the only way this module writes file contents)."""
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _tensor_file(tensors: dict[str, torch.Tensor], meta: dict[str, str]) -> bytes:
    return tensor_bytes({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, meta)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _read_manifest(folder: Path) -> dict[str, Any] | None:
    """The manifest in ``folder``, or None when absent or not a complete one."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    ok = (
        isinstance(manifest, dict)
        and manifest.get("format") == RUN_FORMAT
        and isinstance(manifest.get("files"), dict)
        and all(isinstance(v, dict) and "sha256" in v for v in manifest["files"].values())
    )
    return manifest if ok else None


class _Checkpoint:
    """The files of the checkpoint a run directory holds now, checked against its manifest."""

    def __init__(self, run: Path) -> None:
        self.run = run
        self.manifest: dict[str, Any] | None = None
        self.paths: dict[str, Path] = {}
        staged = self._staged()
        if staged is not None:
            self.manifest, self.paths = staged
            return
        self.manifest = _read_manifest(run)
        names = self.manifest["files"] if self.manifest else FILES
        self.paths = {name: run / name for name in names if (run / name).is_file()}

    def _staged(self) -> tuple[dict[str, Any], dict[str, Path]] | None:
        """A complete checkpoint in ``.staging/`` whose files (there, or already renamed
        into the run directory) all match its manifest."""
        staging = self.run / STAGING
        manifest = _read_manifest(staging)
        if manifest is None:
            return None
        paths = {}
        for name, entry in manifest["files"].items():
            for path in (staging / name, self.run / name):
                same_size = path.is_file() and path.stat().st_size == entry.get("size")
                if same_size and _sha256(path.read_bytes()) == entry["sha256"]:
                    paths[name] = path
                    break
            else:
                return None
        return manifest, paths

    def read(self, name: str) -> bytes:
        """A file's bytes, verified against the manifest when there is one."""
        path = self.paths.get(name)
        if path is None:
            raise AnomalyError(f"{self.run / name}: missing")
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise AnomalyError(f"{path}: cannot read ({exc.strerror or exc})") from exc
        if self.manifest is not None and _sha256(data) != self.manifest["files"][name]["sha256"]:
            raise AnomalyError(
                f"{path}: does not match the checkpoint's manifest (damaged or changed since "
                "it was saved)"
            )
        return data

    def tensors(self, name: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
        data = self.read(name)
        try:
            (size,) = struct.unpack("<Q", data[:8])
            meta = json.loads(data[8 : 8 + size]).get("__metadata__") or {}
            return load_tensor_bytes(data), meta
        except (SafetensorError, ValueError, struct.error) as exc:
            raise AnomalyError(f"{self.paths[name]}: not a readable safetensors file") from exc


def _publish_staged(run: Path) -> None:
    """Finish publishing a complete ``.staging/`` checkpoint (rename its files into the run
    directory, the manifest last), or discard an incomplete one."""
    staging = run / STAGING
    if not staging.exists():
        return
    if _Checkpoint(run)._staged() is None:
        shutil.rmtree(staging)
        return
    manifest = _read_manifest(staging)
    for name in manifest["files"]:
        if (staging / name).is_file():
            os.replace(staging / name, run / name)
    for name in FILES:  # files of an older checkpoint that the new one has not
        if name not in manifest["files"] and (run / name).is_file():
            os.unlink(run / name)
    os.replace(staging / MANIFEST, run / MANIFEST)
    _fsync_dir(run)
    shutil.rmtree(staging)


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
    """Load a run's weights; only frozen text-tower weights may be absent. Each tensor must
    have the model's shape and hold finite values (NaN weights score every frame NaN)."""
    prefix = text_tower_prefix(model)
    expected = model.state_dict()
    for name, tensor in state.items():
        if name in expected and tensor.shape != expected[name].shape:
            raise AnomalyError(
                f"{source}: {name} has shape {tuple(tensor.shape)}, the model's is "
                f"{tuple(expected[name].shape)}"
            )
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            bad = int((~torch.isfinite(tensor)).sum())
            raise AnomalyError(f"{source}: {name} holds {bad} NaN or infinite values")
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not (prefix and k.startswith(prefix))]
    if missing or result.unexpected_keys:
        detail = f"missing {missing[:3]}" if missing else f"unexpected {result.unexpected_keys[:3]}"
        raise AnomalyError(f"{source}: weights do not fit the model ({detail})")


@dataclass
class RunState:
    config: RunConfig
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
    """Publish a checkpoint into a run directory, atomically (see the module docstring).

    Out of disk space (or any other write error), the previous checkpoint stays the run's
    and the error is one line naming the run.
    """
    run = Path(run_dir)
    run.mkdir(parents=True, exist_ok=True)
    meta = {"format": RUN_FORMAT, "epoch": str(epoch)}
    files = {"model.safetensors": _tensor_file(model_state(model, with_text_tower), meta)}
    if optimizer is not None:
        sd = optimizer.state_dict()
        tensors, scalars = {}, {}
        for idx, st in sd["state"].items():
            for name, value in st.items():
                if torch.is_tensor(value):
                    tensors[f"{idx}.{name}"] = value
                else:
                    scalars[f"{idx}.{name}"] = value
        layout = {"epoch": epoch, "param_groups": sd["param_groups"], "scalars": scalars}
        files["optimizer.safetensors"] = _tensor_file(tensors, meta)
        files["optimizer.json"] = json.dumps(layout, indent=1).encode()
        files["rng.safetensors"] = _tensor_file({"torch": torch.get_rng_state()}, meta)
    full = {"format": RUN_FORMAT, "version": RUN_VERSION, **config, "epoch": epoch}
    files["config.json"] = json.dumps(full, indent=2).encode()
    manifest = {
        "format": RUN_FORMAT,
        "epoch": epoch,
        "files": {n: {"size": len(d), "sha256": _sha256(d)} for n, d in files.items()},
    }
    staging = run / STAGING
    try:
        _publish_staged(run)  # a save interrupted earlier: finish it or drop it
        staging.mkdir()
        for name, data in files.items():
            _write_file(staging / name, data)
        _write_file(staging / f".{MANIFEST}.tmp", json.dumps(manifest, indent=1).encode())
        os.replace(staging / f".{MANIFEST}.tmp", staging / MANIFEST)  # the commit point
        _fsync_dir(staging)
        _publish_staged(run)
        (run / CLAIM).unlink(missing_ok=True)  # the folder holds a run now: taken for good
    except OSError as exc:
        if _read_manifest(staging) is None:
            shutil.rmtree(staging, ignore_errors=True)  # give back the space it took
        why = "no space left on device" if exc.errno == errno.ENOSPC else exc.strerror or exc
        raise AnomalyError(
            f"{run}: cannot save the epoch {epoch} checkpoint ({why}); the run keeps its "
            "previous checkpoint"
        ) from exc
    return run


def read_run_config(run_dir: str | Path) -> RunConfig:
    """A run's ``config.json`` (of its current checkpoint), read and checked."""
    return _read_config(_Checkpoint(Path(run_dir)))


def _read_config(ckpt: _Checkpoint) -> RunConfig:
    if "config.json" not in ckpt.paths:
        raise AnomalyError(f"{ckpt.run}: not a run directory (no config.json)")
    data = ckpt.read("config.json")
    try:
        config = json.loads(data)
    except ValueError as exc:
        raise AnomalyError(f"{ckpt.paths['config.json']}: invalid JSON ({exc})") from exc
    return RunConfig.parse(config, ckpt.paths["config.json"])


def load_run(run_dir: str | Path, with_optimizer: bool = False) -> RunState:
    """The run's current checkpoint: always one whole checkpoint, never a mix of two."""
    run = Path(run_dir)
    ckpt = _Checkpoint(run)
    config = _read_config(ckpt)
    epoch = str(config.get("epoch"))
    weights, meta = ckpt.tensors("model.safetensors")
    if meta.get("epoch") != epoch:
        raise AnomalyError(
            f"{run}: model.safetensors is from epoch {meta.get('epoch')}, config from {epoch}"
        )
    optimizer, rng = None, None
    if with_optimizer and "optimizer.safetensors" in ckpt.paths:
        tensors, ometa = ckpt.tensors("optimizer.safetensors")
        try:
            layout = json.loads(ckpt.read("optimizer.json"))
        except ValueError as exc:
            raise AnomalyError(f"{run}: optimizer.json is not valid JSON") from exc
        if ometa.get("epoch") != epoch or str(layout.get("epoch")) != epoch:
            raise AnomalyError(f"{run}: optimizer state is not from epoch {epoch}")
        state: dict[int, dict[str, Any]] = {}
        for key, value in {**tensors, **layout["scalars"]}.items():
            idx, name = key.split(".", 1)
            state.setdefault(int(idx), {})[name] = value
        optimizer = {"state": state, "param_groups": layout["param_groups"]}
        rng = ckpt.tensors("rng.safetensors")[0]["torch"]
    return RunState(config, weights, optimizer, rng)


def check_backbone(
    config: RunConfig, store: FeatureStore, run_dir: str | Path, allow: bool = False
) -> None:
    """Refuse a store whose features come from another backbone than the run was trained on.

    ``allow`` (``--allow-backbone-mismatch``) lets it through: e.g. features from a local copy
    of the same weights under another name, recorded before weight hashes were.
    """
    expected = config.store.get("backbone")
    found = store.meta.backbone
    if allow or not backbone_difference(expected, found):
        return
    raise AnomalyError(
        f"{store.location}: features were extracted with {describe_backbone(found)}, the run "
        f"{run_dir} was trained on {describe_backbone(expected)}; pass "
        "--allow-backbone-mismatch to use them anyway"
    )
