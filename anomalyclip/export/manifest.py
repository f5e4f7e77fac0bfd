"""An export folder and its manifest: what a CPU box needs to know to run a run's graphs.

``anomaly export RUN --format F`` writes ``RUN/export/F/`` (or ``--out``)::

    manifest.json       this module's record: format, files and their SHA-256, the graphs'
                        input and output names and shapes, the run's classes, threshold,
                        window and sampling, the CLIP's weight hash, the package version
    config.json         the run's own config.json, as it was when exported
    image_tower.onnx    frames -> features           (ONNX;  image_tower.xml + .bin: OpenVINO IR)
    scorer.onnx         a window of features -> p(A), class probabilities (scorer.xml + .bin)

Nothing here imports more than the standard library, so the command line checks an export
folder (and names the command that makes a missing one) before torch is imported.
"""

from __future__ import annotations

import hashlib
import importlib
import json
from pathlib import Path
from typing import Any

from anomalyclip.errors import AnomalyError

SCHEMA = "anomalyclip.export"
SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
FORMATS = ("onnx", "openvino")
BACKENDS = ("torch", "onnxruntime", "openvino")
FORMAT_OF = {"onnxruntime": "onnx", "openvino": "openvino"}  # backend -> the export it runs
GRAPHS = ("image_tower", "scorer")
EXTRA = "export"  # pip install anomalyclip[export]
# int8: the per-frame cosine of the tower's features to fp32 that the sensitivity pass keeps
# on its held-out calibration frames (32 by default), keeping float the matrix multiplies it
# needs. Aimed above 0.99 because unseen frames fall further: on the demo's 2,786 test
# frames, a pass at 0.99 left a smallest cosine of 0.972 (OpenVINO, AVX-512 host) and 0.988
# (ONNX Runtime, AVX2 host); at 0.998, 0.998 and 0.9965 (tools/int8_tradeoff.py accuracy)
MIN_COSINE = 0.998
PACKAGES = {"onnx": "onnx", "onnxruntime": "onnxruntime", "openvino": "openvino", "nncf": "nncf"}


def require(module: str) -> Any:
    """``import module``, or a one-line error naming the optional extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise AnomalyError(
            f"{PACKAGES.get(module.split('.')[0], module)} is not installed ({exc}); "
            f"pip install 'anomalyclip[{EXTRA}]'"
        ) from exc


def check_installed(*modules: str) -> None:
    """One-line error naming the optional extra when one of ``modules`` is not installed
    (found without importing it)."""
    import importlib.util

    for module in modules:
        if importlib.util.find_spec(module) is None:
            raise AnomalyError(
                f"{PACKAGES.get(module, module)} is not installed; "
                f"pip install 'anomalyclip[{EXTRA}]'"
            )


def needed_packages(fmt: str, int8: bool = False) -> tuple[str, ...]:
    """What ``anomaly export --format fmt [--int8]`` needs (a backend needs its own name)."""
    if fmt == "openvino":
        return ("onnx", "openvino", "nncf") if int8 else ("onnx", "openvino")
    return ("onnx", "onnxruntime") if int8 else ("onnx",)


def check_backend(backend: str) -> str:
    """``backend`` if it names one, else a one-line error."""
    if backend not in BACKENDS:
        raise AnomalyError(f"--backend {backend}: expected {', '.join(BACKENDS)}")
    return backend


def check_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise AnomalyError(f"--format {fmt}: expected {' or '.join(FORMATS)}")
    return fmt


def default_folder(run_dir: str | Path, fmt: str) -> Path:
    """Where ``anomaly export RUN --format F`` writes by default: ``RUN/export/F``."""
    return Path(run_dir) / "export" / fmt


def make_command(run_dir: str | Path, fmt: str) -> str:
    return f"anomaly export {run_dir} --format {fmt}"


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(folder: str | Path, manifest: dict[str, Any]) -> Path:
    """Write ``manifest.json`` last, with the SHA-256 of every file it lists: a folder whose
    manifest is there is complete."""
    folder = Path(folder)
    names = sorted({g["file"] for g in manifest["graphs"].values()} | set(manifest["extra_files"]))
    files = {}
    for name in names:
        files[name] = {
            "sha256": sha256_file(folder / name),
            "bytes": (folder / name).stat().st_size,
        }
        weights = (folder / name).with_suffix(".bin")
        if name.endswith(".xml") and weights.is_file():  # OpenVINO IR: the weights beside it
            files[weights.name] = {"sha256": sha256_file(weights), "bytes": weights.stat().st_size}
    manifest = {"schema": SCHEMA, "schema_version": SCHEMA_VERSION, **manifest, "files": files}
    tmp = folder / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    tmp.replace(folder / MANIFEST)
    return folder / MANIFEST


def read_manifest(
    folder: str | Path, backend: str | None = None, run_dir: str | Path | None = None
) -> dict[str, Any]:
    """The manifest of an export folder, checked: complete, of a format ``backend`` runs.

    A missing export is one line naming the command that makes it (for ``run_dir``).
    """
    folder = Path(folder)
    fmt = FORMAT_OF.get(backend or "", "onnx")
    path = folder / MANIFEST
    if not path.is_file():
        how = make_command(run_dir if run_dir is not None else "RUN", fmt)
        raise AnomalyError(f"{folder}: no {fmt} export here (no {MANIFEST}); make it with `{how}`")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise AnomalyError(f"{path}: unreadable export manifest ({exc})") from exc
    if not isinstance(manifest, dict) or manifest.get("schema") != SCHEMA:
        raise AnomalyError(f"{path}: not an anomalyclip export manifest")
    if manifest.get("schema_version") != SCHEMA_VERSION:
        raise AnomalyError(
            f"{path}: export version {manifest.get('schema_version')}, this anomalyclip reads "
            f"{SCHEMA_VERSION}; re-export with `{make_command(run_dir or 'RUN', fmt)}`"
        )
    if backend in FORMAT_OF and manifest.get("format") != FORMAT_OF[backend]:
        raise AnomalyError(
            f"{folder}: a {manifest.get('format')} export; --backend {backend} runs "
            f"{FORMAT_OF[backend]} exports (`{make_command(run_dir or 'RUN', fmt)}`)"
        )
    for name in manifest.get("files", {}):
        if not (folder / name).is_file():
            raise AnomalyError(f"{folder / name}: missing file of the export; re-export it")
    return manifest


def check_run(manifest: dict[str, Any], folder: str | Path, run_dir: str | Path) -> None:
    """Refuse an export made from another checkpoint than the run's current one (the run's
    ``checkpoint.json`` lists the SHA-256 of its weights; runs without one are not checked)."""
    listed = Path(run_dir) / "checkpoint.json"
    if not listed.is_file():
        return
    try:
        current = json.loads(listed.read_text())["files"]["model.safetensors"]["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        return
    exported = (manifest.get("run") or {}).get("weights_sha256")
    if exported and exported != current:
        raise AnomalyError(
            f"{folder}: exported from another checkpoint of {run_dir} (weights "
            f"{exported[:12]}, the run's are {current[:12]}); re-export with "
            f"`{make_command(run_dir, manifest.get('format', 'onnx'))}`"
        )


def find_export(
    backend: str, given: str | Path | None = None, run_dir: str | Path | None = None
) -> Path:
    """The export folder ``backend`` runs: ``given`` (an export folder, or a run whose
    ``export/<format>`` is one), else the run's ``export/<format>``; one line naming the
    command that makes it when there is none."""
    fmt = FORMAT_OF[check_backend(backend)] if backend in FORMAT_OF else "onnx"
    if given is not None:
        tried = [Path(given), default_folder(given, fmt)]
        owner = run_dir if run_dir is not None else given
    else:
        tried = [default_folder(run_dir, fmt)]
        owner = run_dir
    for folder in tried:
        if (folder / MANIFEST).is_file():
            read_manifest(folder, backend, owner)
            return folder
    raise AnomalyError(
        f"{tried[-1]}: no {fmt} export here; make it with `{make_command(owner, fmt)}`"
    )
