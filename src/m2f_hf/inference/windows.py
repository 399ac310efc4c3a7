"""The grid of overlapping windows that sliding-window inference cuts from a large image.

Windows are squares of `window_size` pixels (a multiple of 32, the model's coarsest feature stride) taken from the
image at its own resolution, `stride = window_size * (1 - overlap)` apart; the last window of a row or column is
moved back to end at the image's edge (as mmsegmentation's slide mode does), so every window lies inside the image
and is full size unless the image itself is smaller than a window in that direction.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

# the coarsest stride of the backbone features (Mask2Former's res5): a window must be divisible by it
WINDOW_MULTIPLE = 32
MAX_WINDOW_OVERLAP = 0.9


def check_window_size(window_size, argument: str = "window_size") -> None:
    """Raise `ValueError` unless `window_size` is None or a positive multiple of 32."""
    if window_size is None:
        return
    if isinstance(window_size, bool) or not isinstance(window_size, int) or window_size <= 0:
        raise ValueError(f"{argument} must be a positive multiple of {WINDOW_MULTIPLE} pixels; got {window_size!r}.")
    if window_size % WINDOW_MULTIPLE:
        below = max(WINDOW_MULTIPLE, window_size // WINDOW_MULTIPLE * WINDOW_MULTIPLE)
        raise ValueError(
            f"{argument} must be a multiple of {WINDOW_MULTIPLE} pixels (the model's coarsest feature stride); got "
            f"{window_size}: use {below} or {below + WINDOW_MULTIPLE}."
        )


def check_window_overlap(overlap, argument: str = "window_overlap") -> None:
    if isinstance(overlap, bool) or not isinstance(overlap, (int, float)) or not 0.0 <= overlap <= MAX_WINDOW_OVERLAP:
        raise ValueError(f"{argument} must be a fraction of the window in [0, {MAX_WINDOW_OVERLAP}]; got {overlap!r}.")


def default_window_size(processor) -> int:
    """The model's training size, as its processor records it: the shorter side images are resized to
    (`size["shortest_edge"]`, or the smaller of `size["height"]` / `size["width"]`), rounded up to a multiple of 32.

    `examples/train.py` saves the processor with `shortest_edge` = the evaluation size, the smaller side of the
    training crop by default; converted checkpoints keep the original's test size (800 for COCO, 512 for ADE20K).
    """
    size = dict(getattr(processor, "size", None) or {})
    side = size.get("shortest_edge") or min((size[k] for k in ("height", "width") if size.get(k)), default=None)
    if not side:
        raise ValueError(
            f"the processor's size {size!r} names no training size (shortest_edge, or height and width); pass "
            "window_size (CLI: --window-size N)."
        )
    return int(math.ceil(side / WINDOW_MULTIPLE) * WINDOW_MULTIPLE)


def window_starts(length: int, window: int, stride: int) -> list[int]:
    """Start offsets along one axis of `length` pixels: 0, stride, 2 * stride, ..., the last one moved back to end at
    `length`. One start (0) when the axis is no longer than the window."""
    if length <= window:
        return [0]
    count = math.ceil((length - window) / stride) + 1
    return [min(i * stride, length - window) for i in range(count)]


@dataclass(frozen=True)
class WindowGrid:
    """The windows of an image of `height` x `width` pixels.

    Attributes:
        rows / cols: start offsets of the window rows / columns (increasing); a window is
            `[row, row + window_height) x [col, col + window_width)`.
        window_height / window_width: the window's size (`window_size`, or the image's side where that is smaller).
    """

    height: int
    width: int
    window_size: int
    overlap: float

    @property
    def stride(self) -> int:
        return max(1, int(round(self.window_size * (1.0 - self.overlap))))

    @property
    def window_height(self) -> int:
        return min(self.window_size, self.height)

    @property
    def window_width(self) -> int:
        return min(self.window_size, self.width)

    @functools.cached_property
    def rows(self) -> list[int]:
        return window_starts(self.height, self.window_size, self.stride)

    @functools.cached_property
    def cols(self) -> list[int]:
        return window_starts(self.width, self.window_size, self.stride)

    @property
    def single(self) -> bool:
        """The whole image fits in one window."""
        return self.height <= self.window_size and self.width <= self.window_size

    def __len__(self) -> int:
        return len(self.rows) * len(self.cols)

    def core_bounds(self, starts: list[int], extent: int, total: int) -> list[tuple[int, int]]:
        """Per window along one axis, the part it owns when each pixel goes to the window whose centre is nearest:
        from the middle of the overlap with the previous window to the middle of the overlap with the next."""
        bounds = []
        for i, start in enumerate(starts):
            low = 0 if i == 0 else (start + starts[i - 1] + extent) // 2
            high = total if i == len(starts) - 1 else (starts[i + 1] + start + extent) // 2
            bounds.append((low, high))
        return bounds

    @functools.cached_property
    def core_rows(self) -> list[tuple[int, int]]:
        return self.core_bounds(self.rows, self.window_height, self.height)

    @functools.cached_property
    def core_cols(self) -> list[tuple[int, int]]:
        return self.core_bounds(self.cols, self.window_width, self.width)


__all__ = [
    "MAX_WINDOW_OVERLAP",
    "WINDOW_MULTIPLE",
    "WindowGrid",
    "check_window_overlap",
    "check_window_size",
    "default_window_size",
    "window_starts",
]
