"""What int8 costs and buys: the demo's accuracy per cosine target, and the speed it leaves.

    python tools/int8_tradeoff.py accuracy DEMO_DIR [--targets 0.99,0.95,0]
    python tools/int8_tradeoff.py speed [--frames 8 --repeats 2 --shape vit-b-16]

``accuracy``: the ``anomaly demo`` run in DEMO_DIR exported int8 (ONNX Runtime, OpenVINO) at
each ``min_cosine`` target of the sensitivity pass (0: every candidate int8, the recipe
before the pass), the demo's test videos extracted through each and scored by the run's
model: frame AUC, planted events found at IoU >= 0.3, smallest and mean per-frame cosine
to the torch fp32 tower over every test frame, and what the pass kept float.

``speed``: a ViT-B/16-shaped image tower (random weights) as torch fp32, each format fp32,
each format int8 with every candidate int8 (what the pass chooses for random weights), and
each format int8 with only the families the demo's CLIP could keep int8 at 0.99 (the query
and key projections and the attention scores; the rest float): frames/s, the best of
``repeats`` interleaved rounds, as ratios to torch fp32, on 2 threads.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

# what the pass keeps int8 at 0.99 on the demo's CLIP: the query and key projections and the
# attention scores (ONNX: the first of the attention's two MatMuls; IR: its fused attention)
DEMO_INT8 = {"onnx": r"(q_proj|k_proj)/MatMul$|self_attn/MatMul$",
             "openvino": r"(q_proj|k_proj)/MatMul$|self_attn/MatMul_1$"}  # fmt: skip


class _Judged:
    """An export's image encoder whose every batch is compared with the torch fp32 tower."""

    def __init__(self, encoder, ref) -> None:  # noqa: ANN001 - image encoders
        self.encoder, self.ref, self.cos = encoder, ref, []

    def __getattr__(self, name: str):  # noqa: ANN204 - the encoder's attributes
        return getattr(self.encoder, name)

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        got = self.encoder(pixels)
        self.cos.append(torch.cosine_similarity(got.double(), self.ref(pixels).double(), 1))
        return got


def accuracy(demo: Path, targets: list[float], out: Path) -> list[dict]:
    from anomalyclip.bench.export import _evaluate
    from anomalyclip.datasets import discover
    from anomalyclip.export.backends import Export
    from anomalyclip.export.exporter import ExportConfig, export_run
    from anomalyclip.extract.encoder import ImageEncoder
    from anomalyclip.extract.pipeline import extract
    from anomalyclip.runs import load_model

    model, config = load_model(demo / "run")
    ref = ImageEncoder(config.get("clip"), "cpu", "fp32")
    entries = [e for e in discover("demo", demo / "videos") if e.split == "test"]
    rows = []
    for target in targets:
        for fmt, backend in (("onnx", "onnxruntime"), ("openvino", "openvino")):
            folder = export_run(demo / "run", ExportConfig(fmt, True, out=out / f"{fmt}-{target}",
                                                           min_cosine=target))  # fmt: skip
            record = json.loads((folder / "manifest.json").read_text())["graphs"]["image_tower"]
            judged = _Judged(Export(folder, backend).image_encoder(), ref)
            store = out / f"{fmt}-{target}.zarr"
            shutil.rmtree(store, ignore_errors=True)
            assert extract(entries, store, judged, dataset="demo", root=demo / "videos",
                           progress=False).ok  # fmt: skip
            c, int8 = torch.cat(judged.cos), record["int8"]
            rows.append({"backend": f"{backend} int8", "target": target,
                         **_evaluate(model, config, store), "cos_min": float(c.min()),
                         "cos_mean": float(c.mean()), "frames": len(c),
                         "int8_matmuls": int8["int8_matmuls"],
                         "candidates": int8["int8_matmuls"] + len(int8["float_matmuls"]),
                         "float_matmuls": int8["float_matmuls"]})  # fmt: skip
            print(json.dumps(rows[-1]), flush=True)
    return rows


def _quantized(fp32: Path, fmt: str, frames, keep_int8: str | None, out: Path) -> Path:
    """The recipe's quantiser (anomalyclip.export.quantize) with every candidate int8, or
    with only those matching ``keep_int8`` int8 (the others float)."""
    import onnx

    from anomalyclip.export import quantize as q
    from anomalyclip.export.graphs import IMAGE_INPUT

    if fmt == "onnx":
        from onnxruntime import quantization as ortq
        from onnxruntime.quantization.shape_inference import quant_pre_process

        prepared = out.with_name(out.stem + "-prepared.onnx")
        quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
        names, last = q._onnx_candidates(onnx.load(str(prepared)).graph)
        floats = [n for n in names if keep_int8 and not re.search(keep_int8, n)]
        ortq.quantize_static(
            str(prepared), str(out), q._Frames(IMAGE_INPUT, frames),
            quant_format=ortq.QuantFormat.QDQ, op_types_to_quantize=["MatMul", "Gemm"],
            nodes_to_exclude=[*last, *floats], per_channel=True,
            activation_type=ortq.QuantType.QUInt8, weight_type=ortq.QuantType.QInt8,
        )  # fmt: skip
        return out
    import nncf
    import openvino as ov

    from anomalyclip.export.openvino import save_ir

    model = ov.Core().read_model(str(fp32))
    names, last = q._openvino_candidates(model)
    floats = [n for n in names if keep_int8 and not re.search(keep_int8, n)]
    nncf.set_log_level(logging.WARNING)  # its INFO lines list every layer it leaves alone
    with contextlib.redirect_stdout(sys.stderr):  # its progress bars: stdout is the JSON
        quantized = nncf.quantize(
            model, nncf.Dataset([frames[i : i + 1] for i in range(len(frames))]),
            subset_size=len(frames), model_type=nncf.ModelType.TRANSFORMER,
            ignored_scope=nncf.IgnoredScope(names=[last, *floats], types=["Convolution"]),
        )  # fmt: skip
    return save_ir(quantized, out)


def speed(frames: int, repeats: int, work: Path, shape: str = "vit-b-16") -> dict:
    from anomalyclip.backbone import build_clip, load_vision
    from anomalyclip.bench.export import _tower_rates
    from anomalyclip.bench.watch import render_stream
    from anomalyclip.export.backends import runner
    from anomalyclip.export.graphs import IMAGE_INPUT, IMAGE_OUTPUT, ImageTower
    from anomalyclip.export.onnx import export_onnx
    from anomalyclip.export.openvino import onnx_to_ir
    from anomalyclip.export.quantize import Calibration, calibration_frames
    from anomalyclip.extract.encoder import ImageEncoder
    from anomalyclip.extract.preprocess import normalize, resize_crop

    torch.set_num_threads(2)
    t0 = time.perf_counter()
    clip = build_clip(work / "clip", shape)
    tower = ImageTower(load_vision(clip, "sdpa")).eval()
    onnx_fp32 = export_onnx(tower, torch.zeros(2, 3, 224, 224), work / "fp32.onnx", IMAGE_INPUT,
                            [IMAGE_OUTPUT])  # fmt: skip
    graphs = {"onnxruntime": onnx_fp32, "openvino": onnx_to_ir(onnx_fp32, work / "fp32.xml")}
    cal = calibration_frames(Calibration(frames=32), "demo")

    def encoder(path: Path, backend: str):  # noqa: ANN202 - uint8 crops -> features
        run = runner(path, backend, "fp32", 2)  # an int8 graph's int8 layers run in int8
        return lambda pixels: torch.from_numpy(run(normalize(pixels).numpy())[0])

    setups = {"torch fp32": (ImageEncoder(clip, "cpu", "fp32"), None)}
    for backend, fp32 in graphs.items():
        fmt, ext = ("onnx", ".onnx") if backend == "onnxruntime" else ("openvino", ".xml")
        setups[f"{backend} fp32"] = (encoder(fp32, backend), None)
        for name, slug, keep in (("all", "all", None), ("demo's", "demo", DEMO_INT8[fmt])):
            path = _quantized(fp32, fmt, cal, keep, work / f"int8-{slug}-{fmt}{ext}")
            setups[f"{backend} int8 ({name})"] = (encoder(path, backend), None)
    stream = render_stream(8.0, (320, 240))
    crops = resize_crop(stream[:: max(1, len(stream) // frames)][:frames])
    rates = _tower_rates(setups, crops, repeats)
    base = rates["torch fp32"]["frames_per_s"]
    return {"rows": {n: {"frames_per_s": r["frames_per_s"], "vs_torch_fp32": r["frames_per_s"]
                         / base} for n, r in rates.items()},
            "frames": frames, "repeats": repeats, "load_avg": os.getloadavg(),
            "wall_s": time.perf_counter() - t0}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=["accuracy", "speed"])
    ap.add_argument("demo", nargs="?", type=Path)
    ap.add_argument("--targets", default="0.99,0.95,0")
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--shape", default="vit-b-16", help="the CLIP's shape (tiny: a smoke test)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="int8-tradeoff-") as tmp:
        if args.what == "accuracy":
            accuracy(args.demo, [float(t) for t in args.targets.split(",")], Path(tmp))
        else:
            print(json.dumps(speed(args.frames, args.repeats, Path(tmp), args.shape), indent=1))


if __name__ == "__main__":
    main()
