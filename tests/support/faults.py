"""Fault injection: the jobs a killed process was running, and a driver that kills them.

``python tests/support/faults.py store .zarr DIR`` runs :func:`store_job` (``checkpoint - DIR``:
:func:`checkpoint_job`) once per injection point k = 1, 2, ...: a forked child counts the
writes it makes and SIGKILLs itself just before the k-th one, leaving ``DIR/k<k><suffix>``
as a killed process leaves it (no exception handler, no ``close``, no HDF5 flush). The
first child that finishes without reaching its k has passed every write, so k - 1 is the
number of points covered. The driver prints ``{"points": n}``.

A "write" is every file operation Zarr makes through its LocalStore (each metadata file,
each chunk, each deletion: LocalStore writes a file to a temporary name and renames it, so a
kill inside a write equals a kill before it), every call of the HDF5 backend that changes
the file (HDF5 writes its own file through C: the points are between those calls), and for a
checkpoint every file written, renamed or removed while :func:`checkpoint_job` publishes
epoch 1 over a complete epoch 0.

Forking after the imports keeps each point a few milliseconds; nothing here has started
zarr's event-loop thread before the fork, so the children start clean.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import numpy as np

from anomalyclip.store import SCHEMA, VideoRecord, open_store

DIM = 16
ATTRS = {
    "schema": SCHEMA,
    "schema_version": 1,
    "dataset": "ucf",
    "backbone": {"model": "openai/clip-vit-base-patch16", "dim": DIM, "weights_sha256": "ab" * 32},
    "preprocessing": {"size": 224},
    "sampling": {"mode": "all", "value": None},
    "dtype": "float16",
    "producer": {"package": "anomalyclip faults"},
}


def videos() -> list[tuple[VideoRecord, np.ndarray, np.ndarray, np.ndarray]]:
    """Two videos as an extraction writes them: one over three chunks, one of five rows."""
    rng = np.random.default_rng(18)
    out = []
    for vid, rows in (("Abuse/Abuse028_x264", 2500), ("Normal_Videos_015_x264", 5)):
        feats = rng.standard_normal((rows, DIM)).astype(np.float32)
        frames = np.arange(rows, dtype=np.int64)
        label = vid.split("_")[0].split("/")[0]
        fingerprint = f"sample-sha256:{rows:064x}"
        rec = VideoRecord(vid, f"{vid}.mp4", label, "train", 30.0, fingerprint=fingerprint)
        out.append((rec, feats, frames, frames / 30.0))
    return out


def store_job(path: str | Path) -> None:
    """What one extraction run does to a store: root attributes, each video unless already
    complete from the same source, and the failure of a video that cannot be decoded."""
    with open_store(path, "a") as st:
        st.init(ATTRS)
        for rec, feats, frames, times in videos():
            if not st.is_complete(rec.video_id, rec.fingerprint):
                st.write_video(rec, feats, frames, times)
        st.record_failure("Arson/Arson011_x264", "Arson/Arson011_x264.mp4", "moov atom not found")


class _KillAt:
    """Counts writes; SIGKILLs the process just before write number ``k``."""

    def __init__(self, k: int) -> None:
        self.k = k
        self.count = 0

    def __call__(self) -> None:
        self.count += 1
        if self.count == self.k:
            os.kill(os.getpid(), signal.SIGKILL)


def _hook_zarr(kill: _KillAt) -> None:
    from zarr.storage import LocalStore

    for name in ("_set", "delete", "delete_dir"):
        real = getattr(LocalStore, name)

        async def wrapped(self, *args, _real=real, **kwargs):
            kill()
            return await _real(self, *args, **kwargs)

        setattr(LocalStore, name, wrapped)


def _hook_hdf5(kill: _KillAt) -> None:
    import h5py

    from anomalyclip.store import hdf5

    real_file = h5py.File

    def file(name, mode="r", *args, **kwargs):
        if mode != "r":
            kill()
        return real_file(name, mode, *args, **kwargs)

    backend_h5py = file
    h5py.File = backend_h5py
    for name in ("set_attrs", "write_array", "ensure_group", "delete", "flush"):
        real = getattr(hdf5.HDF5Backend, name)

        def wrapped(self, *args, _real=real, **kwargs):
            kill()
            return _real(self, *args, **kwargs)

        setattr(hdf5.HDF5Backend, name, wrapped)


def _preload() -> None:
    """Import what the jobs import lazily, once, before forking (without starting zarr's
    event loop, which a forked child could not use)."""
    import h5py  # noqa: F401
    import zarr.codecs  # noqa: F401
    import zarr.storage  # noqa: F401
    from zarr.registry import get_codec_class

    get_codec_class("crc32c"), get_codec_class("bytes")


def tiny_training(epoch: int):
    """(model, optimizer, config) after ``epoch + 1`` deterministic AdamW steps: a network
    with parameters, BatchNorm statistics and optimizer moments, as a run saves them."""
    import torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 4))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    x, target = torch.randn(16, 8), torch.randn(16, 4)
    for _ in range(epoch + 1):
        optimizer.zero_grad()
        (model(x) - target).square().mean().backward()
        optimizer.step()
    from anomalyclip.model import ModelConfig

    config = {
        "dataset": "demo",
        "model": ModelConfig().to_dict(),  # a run's config.json always holds its model's
        "history": [{"epoch": e, "loss": 1.0 / (e + 1)} for e in range(epoch + 1)],
    }
    return model, optimizer, config


def checkpoint_job(run: str | Path, epoch: int) -> None:
    """What training does at the end of an epoch: publish the run's checkpoint."""
    from anomalyclip.runs.checkpoint import save_run

    model, optimizer, config = tiny_training(epoch)
    save_run(run, model, config, epoch, optimizer)


def _hook_files(kill: _KillAt) -> None:
    """Every way the checkpoint code changes a file: write, rename, remove."""
    import shutil

    from anomalyclip.runs import checkpoint

    for module, name in ((os, "replace"), (os, "rename"), (os, "unlink"), (os, "remove"),
                         (shutil, "rmtree"), (checkpoint, "_write_file")):  # fmt: skip
        real = getattr(module, name, None)
        if real is None:
            continue

        def wrapped(*args, _real=real, **kwargs):
            kill()
            return _real(*args, **kwargs)

        setattr(module, name, wrapped)
    import safetensors.torch

    real_save = safetensors.torch.save_file

    def save_file(*args, **kwargs):
        kill()
        return real_save(*args, **kwargs)

    safetensors.torch.save_file = save_file
    checkpoint.save_file = save_file  # the name the module imported, if it writes through it


def drive(what: str, suffix: str, folder: Path, limit: int = 500) -> int:
    """Kill a job at each write in turn; returns the number of points covered."""
    import shutil

    _preload()
    if what == "checkpoint":
        import torch

        torch.set_num_threads(1)  # no thread pool in the parent, so forked children are clean
        checkpoint_job(folder / "epoch0", 0)
    for k in range(1, limit):
        target = folder / f"k{k:03d}{suffix if what == 'store' else ''}"
        if what == "checkpoint":
            shutil.copytree(folder / "epoch0", target)
        pid = os.fork()
        if pid == 0:  # the child: hook, run, and report "finished" by exiting normally
            kill = _KillAt(k)
            if what == "store":
                (_hook_hdf5 if suffix == ".h5" else _hook_zarr)(kill)
                store_job(target)
            else:
                _hook_files(kill)
                checkpoint_job(target, 1)
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        if not (os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL):
            if os.WEXITSTATUS(status) != 0:
                raise SystemExit(f"point {k}: the job failed (exit {os.WEXITSTATUS(status)})")
            return k - 1
    raise SystemExit(f"more than {limit} writes")


if __name__ == "__main__":
    what, suffix, folder = sys.argv[1:4]
    print(json.dumps({"points": drive(what, suffix, Path(folder))}))
