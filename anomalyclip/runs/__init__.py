"""Run folders: what a trained (or imported) model is on disk, and what both training and
evaluation need of one (its config and checkpoint, its network, its store, the device).

Sits under :mod:`anomalyclip.train` and :mod:`anomalyclip.evaluate`, which import it and
never each other. :class:`RunConfig` is plain data (no torch): a run is checked before
torch is imported; the checkpoint and loading functions import it on first use.
"""

from anomalyclip.runs.config import RunConfig

__all__ = [
    "RunConfig",
    "RunState",
    "build_network",
    "check_backbone",
    "default_device",
    "load_model",
    "load_model_state",
    "load_run",
    "read_run_config",
    "run_clip",
    "run_inputs",
    "run_store",
    "save_run",
]

_FROM = {
    "checkpoint": (
        "RunState",
        "check_backbone",
        "load_model_state",
        "load_run",
        "read_run_config",
        "save_run",
    ),  # fmt: skip
    "load": (
        "build_network",
        "default_device",
        "load_model",
        "run_clip",
        "run_inputs",
        "run_store",
    ),  # fmt: skip
}


def __getattr__(name: str):
    for module, names in _FROM.items():
        if name in names:
            from importlib import import_module

            return getattr(import_module(f"anomalyclip.runs.{module}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
