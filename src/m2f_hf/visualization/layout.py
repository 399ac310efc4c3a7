"""Sizes that follow the image (font, contour width, margins), the font, and where a segment's label goes."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from PIL import ImageFont

# Text height as a fraction of the image's shorter side, with a floor that keeps small images readable.
FONT_FRACTION, MIN_FONT_PX = 0.028, 12
# Contour width: one pixel per this many pixels of the shorter side (at least one).
CONTOUR_FRACTION = 1 / 350
# A label is placed on a grid of at most this many cells per side of the segment's box (the search stays cheap on
# large masks).
_ANCHOR_GRID = 96


@dataclass(frozen=True)
class Scale:
    """Sizes for one picture, in pixels."""

    font_px: int
    contour_px: int
    margin_px: int
    stroke_px: int

    @classmethod
    def for_image(cls, height: int, width: int) -> Scale:
        short = min(height, width)
        font_px = max(MIN_FONT_PX, int(round(short * FONT_FRACTION)))
        return cls(
            font_px=font_px,
            contour_px=max(1, int(round(short * CONTOUR_FRACTION))),
            margin_px=max(4, font_px // 2),
            stroke_px=max(1, font_px // 10),
        )


@functools.lru_cache(maxsize=16)
def font(size: int) -> ImageFont.FreeTypeFont:
    """Pillow's bundled TrueType font (Aileron, Pillow >= 10.1 with FreeType, as in its wheels) at `size` pixels."""
    loaded = ImageFont.load_default(size=size)
    if not isinstance(loaded, ImageFont.FreeTypeFont):
        raise RuntimeError(
            "Pillow was built without FreeType, so text cannot be scaled to the image; install Pillow's wheel "
            "(`pip install --force-reinstall pillow`)."
        )
    return loaded


def label_anchor(mask: np.ndarray) -> tuple[int, int] | None:
    """(x, y) of the point of `mask` farthest from its border: inside the segment even when its centroid is not
    (rings, crescents, L shapes). None for an empty mask."""
    from scipy import ndimage

    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    top, bottom, left, right = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    step = max(1, int(np.ceil(max(bottom - top, right - left) / _ANCHOR_GRID)))
    crop = mask[top:bottom:step, left:right:step]
    # pad by one cell so that the image border counts as the segment's border
    distance = ndimage.distance_transform_edt(np.pad(crop, 1))[1:-1, 1:-1]
    row, col = np.unravel_index(int(np.argmax(distance)), distance.shape)
    return int(left + col * step), int(top + row * step)


def clamp_box(center: tuple[int, int], size: tuple[int, int], bounds: tuple[int, int]) -> tuple[int, int]:
    """Top-left corner of a `size` (w, h) box centred on `center`, moved to lie inside `bounds` (w, h)."""
    width, height = size
    left = min(max(0, center[0] - width // 2), max(0, bounds[0] - width))
    top = min(max(0, center[1] - height // 2), max(0, bounds[1] - height))
    return int(left), int(top)


__all__ = ["Scale", "clamp_box", "font", "label_anchor"]
