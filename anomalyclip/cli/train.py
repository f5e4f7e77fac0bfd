"""``anomaly train``: a feature store in, a run folder out."""

from __future__ import annotations

import glob
import logging
from pathlib import Path
from typing import Any

import typer

from anomalyclip import checks, locations
from anomalyclip.cli.app import app
from anomalyclip.cli.options import (
    Interrupted,
    _at_least_one,
    _conv_algorithm,
    _keep_memory_on_cpu,
    _run_folder,
    _threshold_rule,
    cleaned_up,
    clip_option,
    rerun_command,
)
from anomalyclip.train.config import preset_values, read_toml_options, resolve_config

log = logging.getLogger(__name__)


def _preset_default(name: str) -> str:
    """``(default: the dataset's preset: ucf 50, ..., custom 60)``, or the one value all
    presets share: the help's default of an option that each dataset's preset sets."""
    values = preset_values(name)
    if len(set(map(str, values.values()))) == 1:
        return f"(default: {next(iter(values.values()))}, in every preset)"
    shown = ", ".join(f"{preset} {value}" for preset, value in values.items())
    return f"(default: the dataset's preset: {shown})"


def preset_option(flag: str, metavar: str, what: str, callback=None) -> Any:
    name = flag.removeprefix("--").replace("-", "_")
    help = f"{what} {_preset_default(name)}."
    return typer.Option(None, flag, metavar=metavar, callback=callback, help=help)


def _claim(out: str, exist_ok: bool) -> tuple[Path, bool]:
    """A new run's folder (OUT, or the next free OUT-2, OUT-3...), and whether it was there."""
    base = Path(out)
    before = {Path(p) for p in glob.glob(glob.escape(str(base)) + "*")}
    folder = _run_folder(out, False, exist_ok)
    return folder, folder in before


def _schedule_warning(epochs: int, warmup: int) -> str | None:
    """One line when the schedule never gets past its warm-up (nothing or little trains)."""
    if epochs > warmup:
        return None
    fix = f"give --epochs {warmup + 1} or more, or fewer --warmup-epochs"
    if epochs <= 1:
        return (f"--epochs {epochs} with {warmup} warm-up epochs: the only epoch runs at "
                f"learning rate 0, so no weight moves; {fix}")  # fmt: skip
    return (f"--epochs {epochs} with {warmup} warm-up epochs: the learning rate never rises "
            f"above {(epochs - 1) / warmup:.0%} of --lr and never decays; {fix}")  # fmt: skip


def _interrupted(folder: Path, epochs: int) -> Interrupted:
    """What Ctrl-C left of a run: the last epoch saved, and the command that goes on."""
    import json

    try:
        done = json.loads((folder / "config.json").read_text())["epoch"]
    except (OSError, ValueError, KeyError):
        return Interrupted(
            f"no epoch was finished, nothing is kept; start again with: {rerun_command({})}"
        )
    resume = rerun_command({("--out", "-o"): str(folder)}, drop=("--exist-ok",), add=("--resume",))
    return Interrupted(f"{folder} keeps epoch {done} of {epochs}; go on with: {resume}")


@app.command("train")
def train_cmd(
    features: str = typer.Option(
        ..., "--features", "-f", metavar="STORE", help="Feature store to train on."
    ),
    out: str = typer.Option(
        None,
        "--out",
        "-o",
        metavar="DIR",
        help="Run folder (default runs/DATASET); when taken, the next free DIR-2, DIR-3...",
    ),  # fmt: skip
    clip: str = clip_option("CLIP of the text tower (default: the store's)."),
    config: str = typer.Option(
        None, "--config", metavar="TOML", help="Training options over the dataset's preset."
    ),
    print_config: bool = typer.Option(
        False, "--print-config", help="Print the resolved configuration as TOML and exit."
    ),
    epochs: int = preset_option("--epochs", "N", "Epochs", _at_least_one),
    warmup_epochs: int = preset_option("--warmup-epochs", "N", "Epochs of rising learning rate"),
    lr: float = preset_option("--lr", "LR", "Peak learning rate"),
    batch_size: int = preset_option("--batch-size", "N", "Videos per step, half abnormal"),
    emb_dim: int = preset_option("--emb-dim", "E", "Temporal model width"),
    depth: int = preset_option("--depth", "N", "Temporal Transformer blocks"),
    seed: int = preset_option("--seed", "N", "Seed of weights, batches and held-out videos"),
    eval_every: int = preset_option("--eval-every", "N", "Epochs between test evaluations"),
    workers: int = preset_option("--workers", "N", "Threads reading the store ahead"),
    sampler: str = preset_option("--sampler", "NAME", "Training frames: published or uniform"),
    device: str = preset_option("--device", "DEVICE", "cpu, cuda, cuda:N, mps or auto"),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out."),
    exist_ok: bool = typer.Option(False, "--exist-ok", help="Write into --out even if taken."),
    calibration_share: float = preset_option(
        "--calibration-share", "SHARE", "Share of the normal training videos held out"
    ),
    threshold_rule: str = preset_option(
        "--threshold-rule", "RULE", "far@X, fixed@T, youden or best-f1", _threshold_rule
    ),
    allow_backbone_mismatch: bool = typer.Option(
        False, "--allow-backbone-mismatch", help="Resume on features of another backbone."
    ),
    conv: str = preset_option(
        "--conv", "ALGORITHM", "3x3 convolutions: direct, winograd or auto", _conv_algorithm
    ),
) -> None:
    """Train AnomalyCLIP on a feature store: its dataset, classes and CLIP come with it.

    Options left out come from the dataset's preset, then --config (the paper's presets for
    ucf, xd and sht; custom for csv: datasets; docs/training.md). Ctrl-C keeps the last
    finished epoch and prints the command that resumes.
    """
    flags = dict(
        epochs=epochs, warmup_epochs=warmup_epochs, lr=lr, batch_size=batch_size,
        emb_dim=emb_dim, depth=depth, seed=seed, eval_every=eval_every, workers=workers,
        sampler=sampler, device=device, calibration_share=calibration_share,
        threshold_rule=threshold_rule, conv=conv,
    )  # fmt: skip
    store, cfg, clip = _checked(features, config, clip, flags)
    if print_config:
        typer.echo(f"# anomaly train: preset {store['preset']} <- {config or 'no TOML'} <- flags")
        typer.echo(cfg.to_toml(), nl=False)
        return
    warning = _schedule_warning(cfg.epochs, cfg.warmup_epochs)
    if warning:
        log.warning(warning)
    run_dir, existed = (checks.run_dir(out or f"runs/{store['dataset']}"), True) if resume else (
        _claim(out or f"runs/{store['dataset']}", exist_ok))  # fmt: skip
    with cleaned_up(run_dir, existed):
        try:
            result = _train(features, run_dir, cfg, clip, resume, allow_backbone_mismatch)
        except KeyboardInterrupt:
            raise _interrupted(run_dir, cfg.epochs) from None
    typer.echo(f"run written to {run_dir}")
    if result.get("metrics"):
        from anomalyclip.evaluate.report import format_table

        typer.echo(format_table(result["metrics"]))


def _checked(features: str, config: str | None, clip: str | None, flags: dict):
    """Every check that needs no torch: paths, the TOML file, the store's dataset and CLIP,
    the resolved configuration. Returns (store facts, configuration, CLIP)."""
    checks.store_location(features)
    if config:
        checks.existing_file(config, "config file")
        read_toml_options(config)  # a typo fails before the store is even opened
    device = flags["device"]
    if device and device != "auto":
        checks.device_name(device)
    if clip:
        locations.local_clip(clip)
    checks.feature_store(features)
    from anomalyclip.store import open_store  # zarr, not torch
    from anomalyclip.train.config import preset_name

    with open_store(features) as st:
        dataset, attrs = st.dataset, st.meta.to_attrs()
    if device and device not in ("auto", "cpu"):
        _keep_memory_on_cpu(device)  # torch: is that GPU there? (before the CLIP is looked for)
    clip = clip or locations.store_clip(features, attrs)
    store = {"dataset": dataset, "preset": preset_name(dataset) or "none (defaults)"}
    return store, resolve_config(dataset, config, **flags), clip


def _train(features: str, run_dir: Path, cfg, clip: str, resume: bool, allow_mismatch: bool):
    """The training itself (torch from here on)."""
    from anomalyclip.evaluate.evaluation import metrics_on_test_split
    from anomalyclip.train import train

    if resume:
        from anomalyclip.runs.checkpoint import check_backbone, read_run_config
        from anomalyclip.store import open_store

        with open_store(features) as st:
            check_backbone(read_run_config(run_dir), st, run_dir, allow_mismatch)
    _keep_memory_on_cpu(cfg.device)  # also refuses a device this machine does not have
    log.info("run folder %s", run_dir)
    return train(features, run_dir, cfg, clip=clip, resume=resume,
                 evaluate=metrics_on_test_split)  # fmt: skip
