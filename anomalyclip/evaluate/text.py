"""Text drawn into renders: PIL's own font (no font file needed) at fixed pixel sizes, each
string drawn once, and time stamps pasted together from glyphs drawn once."""

from __future__ import annotations

import functools

import numpy as np
from PIL import Image, ImageDraw, ImageFont

BANNER_FONT = 20  # px: the alarm banner's and the clock's capitals are 14 pixels tall
PANEL_FONT = 14  # px: the class names and probabilities beside the frame
STRIP = 28  # rows of a banner or clock strip
TEXT_Y = 2  # the text's offset in a strip
STAMP_PAD = 4  # pixels left of the text in a strip: room for a glyph's overhang


@functools.cache
def _font(size: int) -> ImageFont.FreeTypeFont:
    """PIL's own font (no font file needed) at ``size`` pixels."""
    return ImageFont.load_default(size=size)


@functools.lru_cache(maxsize=4096)
def panel_text(text: str, fill: tuple[int, int, int], back: tuple[int, int, int]) -> np.ndarray:
    """``text`` at :data:`PANEL_FONT` on a strip of ``back``, (20, width, 3): the same
    strings come back frame after frame (class names, two-decimal values), so each is drawn
    once."""
    font = _font(PANEL_FONT)
    width = int(np.ceil(ImageDraw.Draw(Image.new("RGB", (1, 1))).textlength(text, font=font)))
    image = Image.new("RGB", (max(1, width + 1), 20), back)
    ImageDraw.Draw(image).text((0, 0), text, fill=fill, font=font)
    return np.asarray(image)


def banner_strip(text: str, width: int, colour: tuple[int, int, int]) -> np.ndarray:
    """White text at :data:`BANNER_FONT` on a strip of ``colour``, :data:`STRIP` rows high."""
    strip = Image.new("RGB", (width, STRIP), colour)
    ImageDraw.Draw(strip).text((STAMP_PAD, TEXT_Y), text, fill="white", font=_font(BANNER_FONT))
    return np.asarray(strip)


@functools.cache
def _glyph(char: str) -> tuple[np.ndarray, int]:
    """One character's coverage on a strip, drawn ``STAMP_PAD`` pixels in, and its advance in
    whole pixels (PIL's default font advances by whole pixels)."""
    font = _font(BANNER_FONT)
    advance = ImageDraw.Draw(Image.new("L", (1, 1))).textlength(char, font=font)
    mask = Image.new("L", (int(np.ceil(advance)) + 2 * STAMP_PAD + 16, STRIP), 0)
    ImageDraw.Draw(mask).text((STAMP_PAD, TEXT_Y), char, fill=255, font=font)
    return np.asarray(mask), int(round(advance))


def stamp_width(text: str) -> int:
    """Pixels the clock ``text`` needs (an even number)."""
    return _even_up(sum(_glyph(char)[1] for char in text) + 2 * STAMP_PAD)


def clock_stamp(text: str, width: int) -> np.ndarray:
    """What ``banner_strip(text, width, (0, 0, 0))`` draws, from glyphs drawn once each: a time
    stamp is a new string on every frame, and FreeType took ~0.5 ms to draw one. The glyphs'
    coverages are merged by maximum, as FreeType's rasteriser merges them; on the characters
    of a time stamp the result is the same image (tests/unit/evaluate/test_render.py)."""
    glyphs = [_glyph(char) for char in text]
    mask = np.zeros((STRIP, width + sum(a for _, a in glyphs) + 2 * STAMP_PAD + 24), np.uint8)
    x = 0
    for glyph, advance in glyphs:
        span = mask[:, x : x + glyph.shape[1]]
        np.maximum(span, glyph, out=span)
        x += advance
    strip = Image.new("RGB", (width, STRIP), (0, 0, 0))
    strip.paste((255, 255, 255), (0, 0, width, STRIP), Image.fromarray(mask[:, :width]))
    return np.asarray(strip)


def _even_up(n: int) -> int:
    return n + (n % 2)
