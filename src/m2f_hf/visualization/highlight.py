"""One segment standing out in its image: what the web demo shows when a row of its segments table is clicked."""

from __future__ import annotations

import numpy as np
from PIL import Image


def highlight_segment(
    image,
    mask,
    *,
    dim: float = 0.6,
    color: tuple[int, int, int] = (255, 214, 0),
    alpha: float = 0.35,
    outline_width: int | None = None,
) -> Image.Image:
    """`image` with one segment standing out: the rest darkened, the segment tinted and outlined.

    Args:
        image: the original image (PIL); `mask` must have its size.
        mask: (H, W) bool array of the segment, e.g. a record's RLE decoded.
        dim: how much darker the pixels outside the segment get (0: unchanged, 1: black).
        color: tint and outline colour of the segment.
        alpha: opacity of the tint inside the segment.
        outline_width: outline thickness in pixels, drawn inside the segment; default about 1/200 of the image's
            shorter side, at least 2.
    """
    from scipy import ndimage

    base = np.asarray(image.convert("RGB")).astype(np.float32)
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != base.shape[:2]:
        raise ValueError(f"mask has size {mask.shape} but the image has size {base.shape[:2]}.")
    for name, value in (("dim", dim), ("alpha", alpha)):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must lie in [0, 1]; got {value}.")
    width = outline_width if outline_width is not None else max(2, round(min(mask.shape) / 200))
    tint = np.array(color, dtype=np.float32)
    out = base * (1.0 - dim)
    out[mask] = (1.0 - alpha) * base[mask] + alpha * tint
    rows, cols = np.nonzero(mask)
    if rows.size:
        # erode only around the segment (its box plus the outline width): the cost follows the segment, not the image
        top, left = max(rows.min() - width, 0), max(cols.min() - width, 0)
        bottom, right = rows.max() + width + 1, cols.max() + width + 1
        window = mask[top:bottom, left:right]
        inner = ndimage.binary_erosion(window, iterations=width, border_value=0)
        out[top:bottom, left:right][window & ~inner] = tint
    return Image.fromarray(out.round().astype(np.uint8))
