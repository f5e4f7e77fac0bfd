"""Zones: the part of a camera's picture the model is shown.

A zone is a polygon in pixel coordinates of the decoded frame (x to the right, y down, the
frame's top-left corner at 0, 0). :meth:`Zone.apply` cuts the frame to the polygon's
bounding box (clipped to the frame) and paints every pixel whose centre lies outside the
polygon (even-odd rule) in CLIP's mean colour (:func:`fill`): after CLIP's normalisation
those pixels are zero, the least signal a pixel can carry. The cut then takes the usual
resize and centre crop (:mod:`~anomalyclip.extract.preprocess`), as a whole frame does: a
zone is a smaller camera, and a zone much wider than tall loses its ends to the centre crop
exactly as a wide frame does (a zone as large as the frame is no zone at all).

A frame of another size (a resolution change) is cut at the same pixel coordinates; the
masks are cached per frame size. A zone that misses the frame entirely leaves nothing to
see: the model is shown a square of that colour (and a warning says so once).
"""

from __future__ import annotations

import functools
import logging
import math
from dataclasses import dataclass, field

import numpy as np

from anomalyclip.errors import AnomalyError

log = logging.getLogger(__name__)

_EMPTY_SIDE = 224


@functools.cache
def fill() -> tuple[int, int, int]:
    """CLIP's mean colour in uint8 RGB, (123, 117, 104): zero once normalised. (Read from the
    backbone when first needed: a zone is parsed and checked before torch is imported.)"""
    from anomalyclip.backbone import CLIP_MEAN

    return tuple(round(255 * m) for m in CLIP_MEAN)


def polygon_mask(points: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """(len(ys), len(xs)) bool: is the point (xs[j], ys[i]) inside the polygon ``points``
    (K, 2)? Even-odd rule: a point is inside when a ray to its right crosses an odd number of
    edges."""
    x = xs[None, :]  # (1, W)
    y = ys[:, None]  # (H, 1)
    inside = np.zeros((ys.size, xs.size), bool)
    for (x1, y1), (x2, y2) in zip(points, np.roll(points, -1, axis=0), strict=True):
        if y1 == y2:  # a horizontal edge is never crossed by a horizontal ray
            continue
        crosses = (y1 > y) != (y2 > y)  # (H, 1)
        at = x1 + (y - y1) * (x2 - x1) / (y2 - y1)  # (H, 1): where the edge meets the row
        inside ^= crosses & (x < at)
    return inside


@dataclass(frozen=True)
class Zone:
    """A polygon of at least three ``(x, y)`` pixel points (module docstring)."""

    points: tuple[tuple[float, float], ...]
    _masks: dict = field(
        default_factory=dict, compare=False, hash=False, repr=False
    )  # (h, w) -> cut

    @classmethod
    def parse(cls, value: object, where: str) -> Zone:
        """A zone from ``[[x, y], ...]``; a one-line error naming ``where`` otherwise."""
        shape = "a list of at least three [x, y] pixel points"
        if not isinstance(value, (list, tuple)) or len(value) < 3:
            raise AnomalyError(f"{where}: expected {shape}")
        points = []
        for point in value:
            if not (isinstance(point, (list, tuple)) and len(point) == 2 and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                and v >= 0 for v in point)):  # fmt: skip
                raise AnomalyError(f"{where}: {point!r} is not an [x, y] pixel point (>= 0)")
            points.append((float(point[0]), float(point[1])))
        p = np.asarray(points)
        area = 0.5 * abs(
            np.dot(p[:, 0], np.roll(p[:, 1], -1)) - np.dot(p[:, 1], np.roll(p[:, 0], -1))
        )
        if area < 1.0:
            raise AnomalyError(f"{where}: the polygon encloses no area")
        return cls(tuple(points))

    def box(self, width: int, height: int) -> tuple[int, int, int, int]:
        """(x0, y0, x1, y1): the pixels of the bounding box inside a ``width`` x ``height``
        frame (x1, y1 exclusive; empty when the zone misses the frame)."""
        p = np.asarray(self.points)
        x0, y0 = (int(math.floor(v)) for v in p.min(0))
        x1, y1 = (int(math.ceil(v)) for v in p.max(0))
        return min(x0, width), min(y0, height), min(x1, width), min(y1, height)

    def _cut(self, height: int, width: int) -> tuple[tuple[int, int, int, int], np.ndarray]:
        key = (height, width)
        if key not in self._masks:
            x0, y0, x1, y1 = self.box(width, height)
            xs = np.arange(x0, x1) + 0.5  # pixel centres
            ys = np.arange(y0, y1) + 0.5
            mask = polygon_mask(np.asarray(self.points), xs, ys)  # (y1 - y0, x1 - x0)
            if not mask.any():
                log.warning("zone %s lies outside the %dx%d frame: nothing of it is seen",
                            list(self.points), width, height)  # fmt: skip
            self._masks[key] = ((x0, y0, x1, y1), mask)
        return self._masks[key]

    def apply(self, image: np.ndarray, pixels: str = "rgb24") -> np.ndarray:
        """(H, W, 3) uint8 frame in ``pixels`` (``rgb24`` or ``bgr24``) -> (h, w, 3) uint8:
        the zone's box, outside masked in CLIP's mean colour."""
        colour = fill() if pixels == "rgb24" else fill()[::-1]
        (x0, y0, x1, y1), mask = self._cut(*image.shape[:2])
        if not mask.any():
            return np.full((_EMPTY_SIDE, _EMPTY_SIDE, 3), colour, np.uint8)
        out = image[y0:y1, x0:x1].copy()  # (h, w, 3)
        out[~mask] = colour
        return out

    def describe(self) -> list[list[float]]:
        return [list(p) for p in self.points]
