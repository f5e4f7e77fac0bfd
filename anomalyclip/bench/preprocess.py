"""Frame-path benchmark: how far the features of the frame paths lie apart, and what each costs.

For each video (every ``stride``-th frame), the same frames are cropped three ways:

- ``native``: the extractor's default (torch's antialiased bicubic on the decoded RGB frame);
- ``resize only``: PIL's bicubic on the same RGB frame, no JPEG (the resize kernel alone);
- ``authors``: the published features' path (OpenCV BGR, JPEG q95, PIL decode and resize);

and embedded by one image tower in fp32 (a random CLIP of ViT-B/16's size unless ``model``
names one). Reported per video and over all rows: the content distance of ``anomaly store
compare`` (:func:`anomalyclip.store.compare.align`) of each path against native, and of the
native features stored in float16; the largest grey-level difference of the crops; and each
path's crop step in ms per frame, one thread. These are the numbers the README's
"Reproducing the published features" quotes and the verdict thresholds of
:mod:`anomalyclip.store.compare` come from.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from anomalyclip.backbone import build_clip
from anomalyclip.extract.decode import Sampling, VideoSource
from anomalyclip.extract.encoder import ImageEncoder
from anomalyclip.extract.preprocess import crop_frame, pil_resize_crop, resize_crop
from anomalyclip.store.compare import align

PATHS = ("native", "resize only", "authors")


@dataclass(frozen=True)
class PreprocessBench:
    videos: tuple[Path, ...]
    model: str | Path | None = None  # None: a random CLIP of ViT-B/16's size
    stride: int = 10
    batch_size: int = 16


def _crops(path: Path, stride: int) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """{path name: (N, 3, 224, 224) uint8 crops} and {path name: ms per frame}."""
    sampling = Sampling("stride", stride) if stride > 1 else Sampling()
    rgb = [f.image for f in VideoSource(path, sampling)]
    bgr = [f.image for f in VideoSource(path, sampling, pixels="bgr24")]

    def resize_only(image: np.ndarray) -> torch.Tensor:
        crop = pil_resize_crop(Image.fromarray(image))  # (224, 224, 3)
        return torch.from_numpy(np.ascontiguousarray(crop.transpose(2, 0, 1)))[None]

    steps = {
        "native": (rgb, lambda im: resize_crop(im[None])),
        "resize only": (rgb, resize_only),
        "authors": (bgr, lambda im: crop_frame(im, "authors", "bgr24")),
    }
    crops, ms = {}, {}
    for name, (frames, step) in steps.items():
        step(frames[0])  # warm-up: first-call set-up is not the path's cost
        t0 = time.perf_counter()
        crops[name] = torch.cat([step(im) for im in frames])  # (N, 3, 224, 224)
        ms[name] = 1e3 * (time.perf_counter() - t0) / len(frames)
    return crops, ms


def measure(bench: PreprocessBench) -> dict:
    """Distances and costs per video and overall (module docstring)."""
    with tempfile.TemporaryDirectory(prefix="anomalyclip-bench-") as tmp:
        model = bench.model or build_clip(Path(tmp) / "clip", "vit-b-16")
        encoder = ImageEncoder(model, "cpu", "fp32")
        rows, ms_sum, frames = [], dict.fromkeys(PATHS, 0.0), 0
        sums = {k: [0.0, 0.0] for k in ("authors", "resize only", "float16")}
        for path in bench.videos:
            crops, ms = _crops(Path(path), bench.stride)
            feats = {
                name: torch.cat([encoder(c[i : i + bench.batch_size])
                                 for i in range(0, len(c), bench.batch_size)]).numpy()
                for name, c in crops.items()
            }  # fmt: skip
            native = feats["native"]  # (N, D)
            pairs = {"authors": feats["authors"], "resize only": feats["resize only"],
                     "float16": native.astype(np.float16)}  # fmt: skip
            row = {"video": Path(path).name, "frames": len(native)}
            for name, other in pairs.items():
                v = align(native, other, max_offset=0)
                row[name] = v.distance
                sums[name][0] += v.row_distance_sum
                sums[name][1] += v.spread_sum
            diff = (crops["authors"].int() - crops["native"].int()).abs().max()
            row["crop_levels"] = int(diff)
            rows.append(row)
            n = len(native)
            frames += n
            for name in PATHS:
                ms_sum[name] += ms[name] * n
        overall = {name: 100 * a / b if b else 0.0 for name, (a, b) in sums.items()}
        return {
            "model": str(bench.model or "random CLIP of ViT-B/16's size"),
            "stride": bench.stride,
            "frames": frames,
            "rows": rows,
            "overall": overall,
            "crop_ms_per_frame": {name: ms_sum[name] / frames for name in PATHS},
        }


def table(result: dict) -> str:
    """The result as a plain-text table."""
    lines = [
        f"{result['frames']} frames (every {result['stride']}th) through {result['model']}, fp32; "
        "content distance to the native path's features:",
        f"{'video':<22} {'frames':>6} {'authors':>9} {'resize only':>12} {'float16':>9} "
        f"{'crop levels':>12}",
    ]
    for r in result["rows"]:
        lines.append(
            f"{r['video']:<22} {r['frames']:>6} {r['authors']:>8.2f}% {r['resize only']:>11.2f}% "
            f"{r['float16']:>8.2f}% {r['crop_levels']:>12}"
        )
    o = result["overall"]
    lines.append(
        f"{'all (row-weighted)':<22} {result['frames']:>6} {o['authors']:>8.2f}% "
        f"{o['resize only']:>11.2f}% {o['float16']:>8.2f}%"
    )
    ms = result["crop_ms_per_frame"]
    lines.append(
        "crop step, one thread: "
        + ", ".join(f"{name} {ms[name]:.1f} ms ({1e3 / ms[name]:.0f} frames/s)" for name in PATHS)
    )
    return "\n".join(lines)
