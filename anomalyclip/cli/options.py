"""Option callbacks and small helpers shared by the command modules (no torch at import)."""

from __future__ import annotations

import typer

from anomalyclip import checks
from anomalyclip.errors import AnomalyError


def _human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.1f} {unit}" if unit != "B" else f"{int(size)} B"
        size /= 1024
    return f"{n} B"


def _threshold_rule(value: str | None) -> str | None:
    if value is not None:
        from anomalyclip.thresholds import ThresholdRule

        try:
            ThresholdRule.parse(value)
        except AnomalyError as exc:
            raise typer.BadParameter(str(exc)) from None
    return value


def _conv_algorithm(value: str | None) -> str | None:
    from anomalyclip.kernels import CONV_ALGORITHMS  # no torch: argument errors stay fast

    if value is not None and value not in CONV_ALGORITHMS:
        raise typer.BadParameter(f"{value!r}: choose one of {', '.join(CONV_ALGORITHMS)}")
    return value


def _keep_memory_on_cpu(device: str | None) -> None:
    """The allocator policy of the commands that train or score on the CPU: glibc keeps freed
    memory, so the 30-130 MB tensors of every batch stop faulting in fresh pages
    (:mod:`anomalyclip.kernels.allocator`; ``ANOMALY_KEEP_MEMORY=0`` turns it off)."""
    from anomalyclip.kernels.allocator import keep_freed_memory
    from anomalyclip.runs import default_device

    if default_device(device).type == "cpu":
        keep_freed_memory()


def _run_folder(out: str, resume: bool, exist_ok: bool):
    """The run folder: an existing run to resume, or a new one claimed now (never a run
    overwritten unless ``exist_ok``). Under ``torchrun`` rank 0 alone claims and writes."""
    import os
    from pathlib import Path

    if resume:
        return checks.run_dir(out)
    if os.environ.get("RANK", "0") != "0":
        return Path(out)
    return checks.claim_run_dir(out, exist_ok)


def _probability(value: float | None) -> float | None:
    if value is not None and not 0.0 <= value <= 1.0:
        raise typer.BadParameter(f"{value:g} is not a probability in [0, 1]")
    return value


def _backend(value: str) -> str:
    from anomalyclip.export.manifest import BACKENDS  # no torch: argument errors stay fast

    if value not in BACKENDS:
        raise typer.BadParameter(f"{value!r}: choose one of {', '.join(BACKENDS)}")
    return value


def _image_tower(backend: str, given: str | None, run: str | None) -> str:
    """What runs the image tower, checked before torch is imported: for ``torch`` a CLIP
    (``given``, else the run's recorded one); for an exported backend its export folder
    (``given``: an export folder or an exported run; else the run's ``export/<format>``)."""
    from pathlib import Path

    from anomalyclip import locations
    from anomalyclip.export.manifest import check_installed, find_export

    if backend == "torch":
        clip = given or locations.recorded(run, checks.run_config(run), "clip")
        locations.local_clip(clip)
        return clip
    if given is not None and not Path(given).exists():
        raise AnomalyError(
            f"--backend {backend} runs an export: {given} is no export folder or run"
        )
    check_installed(backend)
    if run is not None:
        checks.run_config(run)
    return str(find_export(backend, given, run))


def _image_model(backend: str, image_tower: str):
    """The ``model`` argument of extraction: the CLIP for ``torch``, else the export's image
    tower, loaded."""
    if backend == "torch":
        return image_tower
    from anomalyclip.export.backends import Export

    return Export(image_tower, backend).image_encoder()
