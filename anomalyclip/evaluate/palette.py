"""One colour per class, the same in every plot and render: keyed by the class id alone.

Class ``c`` is drawn in ``PALETTE[c % 18]`` (matplotlib's tab10 colours without grey, then
their light tab20 partners: 18 colours, as many as ShanghaiTech's classes, the largest
preset); the Normal class is always grey. The p(A) curve is black and the true anomalous
intervals are hatched grey, so no class colour is ever read as either.
"""

from __future__ import annotations

PALETTE = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#bcbd22",
    "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2",
    "#dbdb8d", "#9edae5",
)  # fmt: skip
NORMAL = "#7f7f7f"
SCORE = "#000000"  # the p(A) curve
TRUTH = "#606060"  # the true anomalous intervals (hatched)


def class_colour(class_id: int, normal_id: int) -> str:
    """The colour of class ``class_id`` (hex), grey for the Normal class."""
    return NORMAL if class_id == normal_id else PALETTE[class_id % len(PALETTE)]


def class_rgb(class_id: int, normal_id: int) -> tuple[int, int, int]:
    """:func:`class_colour` as 8-bit RGB."""
    hex_colour = class_colour(class_id, normal_id)
    return tuple(int(hex_colour[i : i + 2], 16) for i in (1, 3, 5))
