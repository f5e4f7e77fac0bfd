"""Synthetic scenes encoded as real videos: what the demo dataset and the benchmarks record.

:func:`render_scene` draws (T, H, W, 3) frames of a textured background that pans slowly,
soft blobs drifting across it and mild sensor noise, with one planted event of a demo anomaly
class (``Explosion``, ``Intruder``, ``Tampering``) over an exact frame interval;
:func:`encode_video` encodes frames into an MP4 file with PyAV.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from anomalyclip.datasets.registry import DEMO
from anomalyclip.extract.decode import Converter
from anomalyclip.extract.mp4 import Mp4Settings, open_mp4

NORMAL = DEMO.normal


def _smooth_texture(rng: np.random.Generator, h: int, w: int, cell: int = 20) -> np.ndarray:
    """(h, w, 3) float texture in [0, 255]: a random grid of ``cell``-pixel cells, bilinearly
    upsampled, periodic along x so a panning camera can wrap around without a seam."""
    cy, cx = max(1, h // cell), max(1, w // cell)
    grid = rng.uniform(0, 1, (cy + 1, cx + 1, 3))
    grid[:, -1] = grid[:, 0]
    ys = np.linspace(0, cy, h)
    xs = np.linspace(0, cx, w, endpoint=False)
    y0 = np.minimum(ys.astype(int), cy - 1)
    x0 = np.minimum(xs.astype(int), cx - 1)
    fy = (ys - y0)[:, None, None]
    fx = (xs - x0)[None, :, None]
    g00, g01 = grid[y0][:, x0], grid[y0][:, x0 + 1]
    g10, g11 = grid[y0 + 1][:, x0], grid[y0 + 1][:, x0 + 1]
    tex = (g00 * (1 - fx) + g01 * fx) * (1 - fy) + (g10 * (1 - fx) + g11 * fx) * fy
    base = rng.uniform(60, 140, 3)  # a muted scene colour
    return np.clip(base + (tex - 0.5) * 90, 0, 255)


NUM_CAMERAS = 4  # fixed scenes the videos are filmed in, as in surveillance datasets


class _Scene:
    """Normal scene: one of the cameras' backgrounds, panning slowly, drifting soft blobs and
    noise, all frames at once."""

    def __init__(
        self, rng: np.random.Generator, h: int, w: int, num_blobs: int = 3,
        camera: int | None = None,
    ) -> None:  # fmt: skip
        self.rng, self.h, self.w = rng, h, w
        drawn = int(rng.integers(NUM_CAMERAS))  # drawn always: the rest of the stream stays
        camera = np.random.default_rng([7919, drawn if camera is None else camera])
        self.texture = _smooth_texture(camera, h, 2 * w).astype(np.float32)  # room to pan
        self.pan = rng.uniform(0.2, 0.6) * rng.choice([-1, 1])  # pixels per frame
        self.blob_pos = rng.uniform([0, 0], [w, h], (num_blobs, 2))  # (B, 2) x, y
        self.blob_vel = rng.uniform(-0.8, 0.8, (num_blobs, 2))
        self.blob_rad = rng.uniform(8, 16, num_blobs)
        self.blob_col = rng.uniform(40, 220, (num_blobs, 3)).astype(np.float32)
        self.yy, self.xx = np.mgrid[0:h, 0:w].astype(np.float32)

    def render(self, num_frames: int) -> np.ndarray:
        """(T, h, w, 3) float32 frames."""
        t = np.arange(num_frames)
        shifts = np.round(t * self.pan).astype(int) % (2 * self.w)
        wrapped = np.concatenate([self.texture, self.texture[:, : self.w]], axis=1)  # (h, 3w, 3)
        frames = np.empty((num_frames, self.h, self.w, 3), np.float32)
        for i, s in enumerate(shifts):  # slice copies: far faster than a fancy-index gather
            frames[i] = wrapped[:, s : s + self.w]
        pos = (self.blob_pos + t[:, None, None] * self.blob_vel) % [self.w, self.h]  # (T, B, 2)
        # separable Gaussian blobs: alpha = gy (T, B, h, 1) * gx (T, B, 1, w)
        r2 = 2 * self.blob_rad[None, :, None] ** 2  # (1, B, 1)
        gx = np.exp(-((np.arange(self.w) - pos[..., 0:1]) ** 2) / r2).astype(np.float32)
        gy = np.exp(-((np.arange(self.h) - pos[..., 1:2]) ** 2) / r2).astype(np.float32)
        # far tails to exact zero: float32 subnormals (below 1.2e-38) make the painting below
        # ~30x slower, and an alpha under 1e-36 changes no pixel
        gx[gx < 1e-18], gy[gy < 1e-18] = 0, 0
        alpha = gy[..., :, None] * gx[..., None, :]  # (T, B, h, w)
        for b in range(len(self.blob_rad)):  # few blobs, painted in order
            a = alpha[:, b, :, :, None]  # (T, h, w, 1)
            frames += a * (self.blob_col[b] - frames)
        # sensor noise from a small bank of noise frames, drawn at random per frame
        bank = 3 * self.rng.standard_normal((16, self.h, self.w, 3), dtype=np.float32)
        frames += bank[self.rng.integers(0, len(bank), num_frames)]
        return frames


def _explosion(frame: np.ndarray, scene: _Scene, k: int, n: int, params: dict) -> np.ndarray:
    cx, cy, rmax = params["cx"], params["cy"], params["rmax"]
    radius = rmax * (0.3 + 0.7 * min(1.0, (k + 1) / max(1, 0.5 * n)))  # a fast bloom
    d = np.sqrt((scene.xx - cx) ** 2 + (scene.yy - cy) ** 2) / radius  # (h, w)
    inside = np.clip(3 * (1 - d), 0, 1)[..., None]  # opaque fireball, soft outer third
    core = np.array([255, 245, 160])  # yellow-white core, orange rim
    rim = np.array([255, 120, 20])
    colour = core * (1 - d[..., None].clip(0, 1)) + rim * d[..., None].clip(0, 1)
    flicker = 0.9 + 0.1 * np.sin(k * 1.7)
    return frame * (1 - inside) + colour * flicker * inside


def _intruder(frame: np.ndarray, scene: _Scene, k: int, n: int, params: dict) -> np.ndarray:
    w = scene.w
    x = 10 + (w - 20) * (k + 0.5) / n  # crosses the frame, fully in view the whole event
    if params["leftward"]:
        x = w - x
    y = params["y"]  # feet
    body = (np.abs(scene.xx - x) < 20) & (scene.yy > y - 66) & (scene.yy < y)
    head = (scene.xx - x) ** 2 + (scene.yy - (y - 78)) ** 2 < 12**2
    mask = (body | head)[..., None]
    return np.where(mask, params["colour"], frame)


def _tampering(frame: np.ndarray, scene: _Scene, k: int, n: int, params: dict) -> np.ndarray:
    if params["kind"] == "covered":
        return frame * 0.12 + params["rng"].normal(0, 25, frame.shape)
    # defocus: separable box blur of width 15, washed out towards grey
    kernel = 15
    pad = np.pad(frame, ((kernel, kernel), (kernel, kernel), (0, 0)), mode="edge")
    c = np.cumsum(pad, axis=0)
    pad = (c[kernel:] - c[:-kernel]) / kernel
    c = np.cumsum(pad, axis=1)
    pad = (c[:, kernel:] - c[:, :-kernel]) / kernel
    h, w = frame.shape[:2]
    off = kernel // 2 + 1
    blurred = pad[off : off + h, off : off + w]
    return 0.6 * blurred + 0.4 * 128


_EVENTS: dict[str, Callable] = {
    "Explosion": _explosion,
    "Intruder": _intruder,
    "Tampering": _tampering,
}


def _event_params(label: str, rng: np.random.Generator, h: int, w: int) -> dict:
    if label == "Explosion":
        return {"cx": rng.uniform(0.3, 0.7) * w, "cy": rng.uniform(0.3, 0.7) * h, "rmax": 0.45 * h}
    if label == "Intruder":
        return {
            "leftward": bool(rng.integers(2)),
            "y": rng.uniform(0.85, 0.98) * h,
            "colour": rng.uniform([170, 0, 0], [250, 50, 60]),  # a red jacket
        }
    return {"kind": "covered" if rng.integers(2) else "defocus", "rng": rng}


def render_scene(
    label: str, rng: np.random.Generator, num_frames: int, size: tuple[int, int],
    camera: int | None = None, event: dict | None = None,
) -> tuple[np.ndarray, list[tuple[int, int]]]:  # fmt: skip
    """(T, H, W, 3) uint8 frames of one demo video and its anomalous intervals.

    The scene and the event draw from separate streams split off ``rng``, so a video of any
    class is, outside its event, pixel for pixel the Normal video of the same ``rng`` state.
    ``camera`` picks the background (by default one of the demo's :data:`NUM_CAMERAS`, drawn;
    any other number is a camera the demo never filmed); ``event`` overrides the event's
    drawn parameters (an explosion's centre ``cx``, ``cy`` and radius ``rmax`` in pixels...).
    """
    w, h = size
    scene_rng, event_rng = rng.spawn(2)
    scene = _Scene(scene_rng, h, w, camera=camera)
    intervals: list[tuple[int, int]] = []
    if label != NORMAL:
        length = int(event_rng.uniform(0.15, 0.3) * num_frames)
        start = int(event_rng.uniform(0.2, 0.6) * num_frames)
        intervals = [(start, min(num_frames, start + length))]
        params = _event_params(label, event_rng, h, w) | (event or {})
    frames = scene.render(num_frames)  # (T, h, w, 3) float32
    for s, e in intervals:
        for t in range(s, e):
            frames[t] = _EVENTS[label](frames[t], scene, t - s, e - s, params)
    return np.clip(frames, 0, 255).round().astype(np.uint8), intervals


# without MB-tree: with it, this x264 codes the same frames differently from one encoder to
# the next in a process, so generated datasets would not repeat
_SETTINGS = Mp4Settings(
    x264={"preset": "veryfast", "crf": "18", "x264-params": "mbtree=0"}, mpeg4_bit_rate=2_000_000
)


def encode_video(path: Path, frames: np.ndarray, fps: int = 15) -> None:
    """Encode (T, H, W, 3) uint8 RGB frames (even H and W) into an MP4 file: the same frames
    give the same bytes, in any thread and after any other encoding."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")  # never leave a half-written video behind
    container, stream = open_mp4(tmp, fps, frames.shape[2], frames.shape[1], _SETTINGS)
    with container:
        convert = Converter()
        for t, image in enumerate(frames):
            frame = convert.for_encoder(image)
            frame.pts = t  # in the encoder's time base, 1 / fps
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    tmp.replace(path)
