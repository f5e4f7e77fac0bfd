"""``anomaly store ...``: inspect, check, convert, merge and import feature stores."""

from __future__ import annotations

import typer

from anomalyclip import checks
from anomalyclip.cli.app import store_app
from anomalyclip.cli.options import _human_bytes
from anomalyclip.errors import AnomalyError

_ESCAPED = ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp")  # control, format, unassigned...


def shown(text: object, backslash: bool = True) -> str:
    """Text from a store as it may reach a terminal: control and format characters (escape
    sequences, bidi overrides), tabs, newlines and backslashes escaped as Python writes them
    (``\\x1b``, ``\\u202e``, ``\\t``), a byte that is not UTF-8 as ``\\xNN``; other
    characters, any script, as they are. ``backslash=False`` for a message that quotes
    stored text already escaped (``label 'Nor\\x1b[8mmal'``)."""
    import unicodedata

    out = []
    for c in str(text):
        if 0xDC80 <= ord(c) <= 0xDCFF:  # a file name's byte that was not UTF-8
            out.append(f"\\x{ord(c) - 0xDC00:02x}")
        elif (backslash and c == "\\") or unicodedata.category(c) in _ESCAPED:
            out.append(ascii(c)[1:-1])
        else:
            out.append(c)
    return "".join(out)


def _dataset_classes(name: object) -> tuple[str, ...] | None:
    """The classes of the dataset a store names: what the labels of a store written before
    stores recorded their classes are checked against (None: not a known dataset)."""
    from anomalyclip.datasets import get_dataset

    try:
        return get_dataset(name).classes if isinstance(name, str) else None
    except AnomalyError:
        return None


def _line(*fields: object, state: str | None = None) -> str:
    """One video of ``store ls``: its stored fields, then the state the package describes
    (which quotes stored text already escaped)."""
    told = [] if state is None else [shown(state, backslash=False)]
    return "\t".join([*map(shown, fields), *told])


@store_app.command("info")
def store_info(
    path: str = typer.Argument(..., metavar="STORE", help="Store: Zarr folder, .zip, .h5 or URL."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Dataset, backbone, dtype, counts per split and class, frames and size on disk."""
    checks.store_location(path)
    import json

    from anomalyclip.store import open_store

    with open_store(path) as st:
        info = st.summary()
    if as_json:
        typer.echo(json.dumps(info, indent=2))
        return
    typer.echo(f"store      {shown(info['location'])}")
    typer.echo(f"dataset    {shown(info['dataset'])}")
    backbone = shown(info["backbone"])
    typer.echo(f"backbone   {backbone} (dim {shown(info['dim'])}, stored {shown(info['dtype'])})")
    typer.echo(f"sampling   {shown(info['sampling'])}")
    typer.echo(
        f"videos     {info['videos']} complete, {info['incomplete']} incomplete, "
        f"{info['failed']} failed" + (f", {info['damaged']} damaged" if info["damaged"] else "")
    )
    typer.echo(f"frames     {info['frames']:,}")
    typer.echo(f"size       {_human_bytes(info['size_bytes'])}")
    for split, n in info["per_split"].items():
        classes = {
            k.split("/", 1)[1]: v for k, v in info["per_class"].items() if k.startswith(split)
        }
        listed = ", ".join(f"{shown(c)} {v}" for c, v in classes.items())
        typer.echo(f"  {shown(split):<6} {n:>6}  {listed}")


@store_app.command("ls")
def store_ls(path: str = typer.Argument(..., metavar="STORE", help="Store to list.")) -> None:
    """One line per video: id, split, class, frames, state."""
    checks.store_location(path)
    from anomalyclip.store import open_store

    with open_store(path) as st:
        for vid, r, state in st.listing():
            if r is None:  # a damaged record: its id comes from its key
                typer.echo(_line(vid, "-", "-", 0, state=state))
            else:
                typer.echo(_line(r.video_id, r.split, r.label, r.num_frames, state=state))
        for vid, failure in st.failures().items():  # the reason is stored text: all escaped
            typer.echo(_line(vid, "-", "-", 0, f"failed: {failure.get('error', '')}"))


@store_app.command("verify")
def store_verify(
    path: str = typer.Argument(..., metavar="STORE", help="Store to check."),
) -> None:
    """Recompute every video's checksum; list damaged, missing or incomplete videos (exit 1)."""
    checks.store_location(path)
    from anomalyclip.store import open_store

    with open_store(path) as st:
        n = len(st.keys())
        problems = st.verify(progress=True, classes=_dataset_classes(st.attrs.get("dataset")))
        truncated = {} if problems else st.truncated()
    for vid, reason in problems.items():
        typer.echo(f"{shown(vid)}: {shown(reason, backslash=False)}")
    if problems:
        typer.echo(f"{path}: {len(problems)} of {n} videos failed verification", err=True)
        raise typer.Exit(1)
    for vid, why in truncated.items():
        typer.echo(f"{shown(vid)}: truncated source, stored as decoded: {shown(why)}")
    typer.echo(
        f"{path}: all {n} videos intact" + (f" ({len(truncated)} truncated)" if truncated else "")
    )


@store_app.command("export")
def store_export(
    src: str = typer.Argument(..., metavar="SOURCE", help="Store to convert."),
    dst: str = typer.Argument(
        ...,
        metavar="DEST",
        help="New store; its suffix picks the format: none or .zarr, .zip, .h5.",
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing destination."),
) -> None:
    """Convert a store between Zarr directory, Zarr zip and HDF5, bit-exact."""
    checks.store_location(src)
    from anomalyclip.store import export_store
    from anomalyclip.store.backend import store_format

    store_format(dst)  # an unknown suffix is refused before anything is read or written
    n = export_store(src, dst, overwrite=overwrite)
    typer.echo(f"exported {n} videos to {dst}")


@store_app.command("merge")
def store_merge(
    dst: str = typer.Argument(..., metavar="DEST", help="Store to add to (created if absent)."),
    sources: list[str] = typer.Argument(..., metavar="SOURCE", help="Stores to add."),
) -> None:
    """Merge stores that share dataset, backbone, preprocessing and sampling."""
    for source in sources:
        checks.store_location(source)
    from anomalyclip.store import merge_stores

    report = merge_stores(dst, sources)
    typer.echo(
        f"added {len(report.added)}, already present {len(report.identical)}, "
        f"conflicts {len(report.conflicts)}"
        + (f", damaged {len(report.damaged)}" if report.damaged else "")
        + (f", failures carried {len(report.failures)}" if report.failures else "")
    )
    for vid, why in report.conflicts.items():
        typer.echo(f"conflict: {shown(vid)}: {shown(why, backslash=False)}", err=True)
    for vid, why in report.damaged.items():
        typer.echo(f"damaged: {shown(vid)}: {shown(why, backslash=False)}", err=True)
    if report.conflicts or report.damaged:
        raise typer.Exit(1)


@store_app.command("import-npy")
def store_import_npy(
    npy_dir: str = typer.Argument(
        ..., metavar="DIR", help="Folder of per-video .npy features, any nesting."
    ),
    dataset: str = typer.Option(
        ..., "--dataset", "-d", metavar="NAME", help="ucf, xd, sht, demo or csv:FILE."
    ),
    out: str = typer.Option(
        ..., "--out", "-o", metavar="STORE", help="Store to create or add to (Zarr, .h5)."
    ),
    lists: str = typer.Option(
        None, "--lists", metavar="DIR", help="Folder of official list and truth files."
    ),
    authors_list: list[str] = typer.Option(
        None,
        "--authors-list",
        metavar="[SPLIT=]FILE",
        help="Authors' 'path start end label' list (FILE, train=FILE or test=FILE).",
    ),
    dtype: str = typer.Option(
        "float16", "--dtype", metavar="DTYPE", help="float16, or float32 (bit-exact)."
    ),
    ncrops: int = typer.Option(
        1, "--ncrops", metavar="N", help="Crops: files __0..__N-1 or (T*N, D) rows."
    ),
    crop: str = typer.Option(
        "0", "--crop", metavar="CROP", help="Crop to keep (0-based), or mean."
    ),
    backbone: str = typer.Option(
        "openai/clip-vit-base-patch16",
        "--clip",
        "--backbone",
        metavar="CLIP",
        help="The CLIP the features came from (recorded, not loaded).",
    ),
    dim: int = typer.Option(
        None, "--dim", metavar="D", help="Feature width (default 512, or the store's)."
    ),
    fps: float = typer.Option(
        None, "--fps", metavar="FPS", help="Frame rate, for presentation times."
    ),
    stride: int = typer.Option(
        1, "--stride", metavar="K", help="Decoded frames between consecutive rows."
    ),
) -> None:
    """Import published per-video .npy features, labels and test ground truth into a store."""
    checks.existing_dir(npy_dir, "folder of .npy features")
    if lists:
        checks.existing_dir(lists, "folder of list files")
    for item in authors_list or []:
        checks.existing_file(item.split("=", 1)[-1], "list file")
    if crop != "mean" and not crop.isdigit():
        raise AnomalyError(f"--crop must be a crop index or 'mean', not {crop!r}")
    from anomalyclip.interop.npy_import import NpyImportConfig, import_npy

    cfg = NpyImportConfig(
        lists=lists, authors_lists=authors_list or None, dtype=dtype, ncrops=ncrops,
        crop=crop if crop == "mean" else int(crop), backbone=backbone, dim=dim, fps=fps,
        stride=stride,
    )  # fmt: skip
    summary = import_npy(npy_dir, dataset, out, cfg, progress=True)
    typer.echo(
        f"imported {len(summary.imported)} ({summary.frames:,} rows), "
        f"unchanged {len(summary.skipped)}, failed {len(summary.failed)}, "
        f"listed without .npy {len(summary.missing)}, .npy not listed {len(summary.unlisted)}"
    )
    for vid, why in summary.failed.items():
        typer.echo(f"failed: {vid}: {why}", err=True)
    if summary.failed:
        raise typer.Exit(1)


@store_app.command("compare")
def store_compare(
    a: str = typer.Argument(..., metavar="A", help="Store A (the reference)."),
    b: str = typer.Argument(
        ..., metavar="B", help="Store B, or a folder of per-video .npy (a release)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output, every video."),
    max_distance: float = typer.Option(
        None,
        "--max-distance",
        metavar="PERCENT",
        help="Exit 1 when the content distance (%) is above this.",
    ),
    max_offset: int = typer.Option(
        5, "--max-offset", metavar="N", help="Frames either way to align by."
    ),
    ncrops: int = typer.Option(
        1, "--ncrops", metavar="N", help="B's crops per video, as import-npy reads."
    ),
    crop: str = typer.Option(
        "0", "--crop", metavar="K", help="B's crop to compare (0-based), or 'mean'."
    ),
) -> None:
    """Per video: rows, best frame offset, cosine and content distance; a one-line verdict
    (same pipeline, or the most likely cause: JPEG step, resize, offset, sampling, backbone)."""
    checks.store_location(a)
    if not checks.is_url(b):
        checks.existing_path(b, "store or folder of .npy features")
    if crop != "mean" and not crop.isdigit():
        raise AnomalyError(f"--crop must be a crop index or 'mean', not {crop!r}")
    import json

    from anomalyclip.store.compare import compare, format_comparison

    result = compare(a, b, max_offset, ncrops, crop if crop == "mean" else int(crop))
    text = json.dumps(result.to_dict(), indent=2) if as_json else format_comparison(result)
    typer.echo(text)
    distance = result.summary()["distance"]
    if max_distance is not None and not distance <= max_distance:  # NaN (nothing compared) too
        typer.echo(f"content distance {distance:.2f} % is above --max-distance {max_distance:g}",
                   err=True)  # fmt: skip
        raise typer.Exit(1)
