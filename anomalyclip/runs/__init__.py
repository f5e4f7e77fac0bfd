"""Run folders: what a trained (or imported) model is on disk, and what both training and
evaluation need of one (its config and checkpoint, its network, its store, the device).

Sits under :mod:`anomalyclip.train` and :mod:`anomalyclip.evaluate`, which import it and
never each other.
"""

from anomalyclip.runs.checkpoint import (
    RunState,
    check_backbone,
    load_model_state,
    load_run,
    read_run_config,
    save_run,
)
from anomalyclip.runs.load import (
    build_network,
    default_device,
    load_model,
    run_clip,
    run_inputs,
    run_store,
)

__all__ = [
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
