"""Options and helpers shared by the command modules (no torch at import).

One name per concept across commands: ``--clip`` for the CLIP (``--model`` kept as its old
name), ``--device``, ``--precision``, and the same decision options in ``eval``, ``predict``
and ``watch`` (:func:`decision_options`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import sys
from collections.abc import Iterator
from pathlib import Path

import typer

from anomalyclip import checks, locations
from anomalyclip.errors import AnomalyError

log = logging.getLogger("anomalyclip.cli")


class Interrupted(Exception):
    """Ctrl-C in a long command; the message says what was kept and how to go on (exit 130)."""


def _human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.1f} {unit}" if unit != "B" else f"{int(size)} B"
        size /= 1024
    return f"{n} B"


def plural(n: int, word: str) -> str:
    """``1 event``, ``2 events``."""
    return f"{n} {word}" + ("" if n == 1 else "s")


# -- option callbacks ---------------------------------------------------------------------------
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


def _probability(value: float | None) -> float | None:
    if value is not None and not 0.0 <= value <= 1.0:
        raise typer.BadParameter(f"{value:g} is not a probability in [0, 1]")
    return value


def _positive(value: float | None) -> float | None:
    if value is not None and not value > 0:
        raise typer.BadParameter(f"{value:g}: must be above 0 (leave it out to keep every frame)")
    return value


def _at_least_one(value: int | None) -> int | None:
    if value is not None and value < 1:
        raise typer.BadParameter(f"{value}: must be 1 or more")
    return value


# -- options shared by several commands --------------------------------------------------------
def clip_option(help: str, default: str | None = None):
    """``--clip`` (old name ``--model``): a hub id or a local Hugging Face CLIP folder."""
    return typer.Option(default, "--clip", "--model", metavar="CLIP", help=help)


def device_option(what: str = "Device"):
    return typer.Option(
        None,
        "--device",
        metavar="DEVICE",
        help=f"{what}: cpu, cuda, cuda:N or mps (default: cuda when there is one, else cpu).",
    )


def precision_option(default: str = "auto"):
    return typer.Option(
        default,
        "--precision",
        metavar="PRECISION",
        help="Image tower: auto (bf16 on CPUs with bf16 units, fp16 on CUDA), fp32, bf16, fp16.",
    )


def threshold_option():
    return typer.Option(
        None,
        "--threshold",
        metavar="P",
        callback=_probability,
        help="p(A) at which a frame is abnormal and an event opens (default: the run's).",
    )


def threshold_rule_option():
    return typer.Option(
        None,
        "--threshold-rule",
        metavar="RULE",
        callback=_threshold_rule,
        help="Choose the threshold instead: far@X (X % of held-out normal frames alarm), "
        "fixed@T, youden or best-f1 (these two on --calibrate-on).",
    )


def calibrate_on_option():
    return typer.Option(
        None,
        "--calibrate-on",
        metavar="STORE",
        help="Store with frame ground truth where youden / best-f1 choose the threshold.",
    )


def min_duration_option():
    return typer.Option(0.5, "--min-duration", metavar="SECONDS", help="Shortest event.")


def merge_gap_option():
    return typer.Option(1.0, "--merge-gap", metavar="SECONDS", help="Merge events this close.")


def exit_ratio_option():
    return typer.Option(0.8, "--exit-ratio", metavar="R", help="An event ends below threshold x R.")


def decision_rule(threshold: float | None, rule: str | None) -> str | None:
    """The threshold rule the decision options ask for: ``--threshold P`` is ``fixed@P``;
    None keeps the run's own threshold."""
    if threshold is not None and rule is not None:
        raise AnomalyError("--threshold and --threshold-rule: give one of them")
    return f"fixed@{float(threshold)!r}" if threshold is not None else rule


def warn_if_random_clip(clip: str | None) -> None:
    """One line when ``clip`` is the demo's (or the tests') CLIP of random weights."""
    if clip and locations.is_random_clip(clip):
        log.warning(
            "%s is a CLIP of random weights (the demo's stand-in): its scores mean nothing "
            "outside the demo's generated videos", clip,
        )  # fmt: skip


# -- run folders, resuming -----------------------------------------------------------------------
def _keep_memory_on_cpu(device: str | None) -> None:
    """The allocator policy of the commands that train or score on the CPU: glibc keeps freed
    memory, so the 30-130 MB tensors of every batch stop faulting in fresh pages
    (:mod:`anomalyclip.kernels.allocator`; ``ANOMALY_KEEP_MEMORY=0`` turns it off)."""
    from anomalyclip.kernels.allocator import keep_freed_memory
    from anomalyclip.runs import default_device

    if default_device(device).type == "cpu":
        keep_freed_memory()


def _run_folder(out: str, resume: bool, exist_ok: bool) -> Path:
    """The run folder: an existing run to resume, or a new one claimed now (never a run
    overwritten unless ``exist_ok``). Under ``torchrun`` rank 0 alone claims and writes."""
    if resume:
        return checks.run_dir(out)
    if os.environ.get("RANK", "0") != "0":
        return Path(out)
    return checks.claim_run_dir(out, exist_ok)


def _backend(value: str) -> str:
    from anomalyclip.export.manifest import BACKENDS  # no torch: argument errors stay fast

    if value not in BACKENDS:
        raise typer.BadParameter(f"{value!r}: choose one of {', '.join(BACKENDS)}")
    return value


def _image_tower(backend: str, given: str | None, run: str | None) -> str:
    """What runs the image tower, checked before torch is imported: for ``torch`` a CLIP
    (``given``, else the run's recorded one); for an exported backend its export folder
    (``given``: an export folder or an exported run; else the run's ``export/<format>``)."""
    from anomalyclip.export.manifest import check_installed, find_export
    from anomalyclip.runs.config import RunConfig

    if backend == "torch":
        clip = given or locations.recorded(run, RunConfig.read(run), "clip")
        locations.local_clip(clip)
        return clip
    if given is not None and not Path(given).exists():
        raise AnomalyError(
            f"--backend {backend} runs an export: {given} is no export folder or run"
        )
    check_installed(backend)
    if run is not None:
        RunConfig.read(run)
    return str(find_export(backend, given, run))


def _image_model(backend: str, image_tower: str):
    """The ``model`` argument of extraction: the CLIP for ``torch``, else the export's image
    tower, loaded."""
    if backend == "torch":
        return image_tower
    from anomalyclip.export.backends import Export

    return Export(image_tower, backend).image_encoder()


@contextlib.contextmanager
def cleaned_up(folder: Path, existed: bool) -> Iterator[Path]:
    """``folder``, removed again when the block fails (error or Ctrl-C) and leaves it empty,
    unless it was there before: a failed command leaves no empty output folder behind."""
    try:
        yield folder
    except BaseException:
        checks.give_back(folder, created=not existed)  # its claim, and the folder if made now
        raise


def rerun_command(set_options: dict[tuple[str, ...], str], drop: tuple[str, ...] = (),
                  add: tuple[str, ...] = ()) -> str:  # fmt: skip
    """This command line as the user would type it again: ``set_options`` maps an option's
    names (``("--out", "-o")``) to its new value, ``drop`` flags are left out, ``add`` flags
    appended where absent."""
    args = sys.argv[1:]
    out: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        name = arg.split("=", 1)[0]
        if name in drop:
            i += 1
            continue
        names = next((n for n in set_options if name in n), None)
        if names is not None:
            i += 1 if "=" in arg else 2
            continue
        out.append(arg)
        i += 1
    for names, value in set_options.items():
        out += [names[0], value]
    out += [flag for flag in add if flag not in out]
    return shlex.join(["anomaly", *out])
