"""Colours: one per class, fixed by the class index alone (so a class looks the same in every image and every run),
and distinguishable shades of it for the instances of one class."""

from __future__ import annotations

import colorsys

# Successive class indices step the hue by the golden ratio, which keeps any run of neighbouring indices far apart
# on the colour wheel; saturation and brightness cycle too, so that classes whose hues come close still differ.
_GOLDEN = 0.618033988749895
_SATURATIONS = (0.80, 0.55, 0.95)
_VALUES = (0.95, 0.78)
# Lightness offsets (HLS) of the k-th instance of a class: alternately darker and lighter, growing, then repeating.
_SHADE_OFFSETS = (0.0, -0.16, 0.14, -0.28, 0.25, -0.08, 0.07, -0.22, 0.2)


def class_color(label_id: int) -> tuple[int, int, int]:
    """The RGB colour of class `label_id` (a model class index), the same in every picture."""
    label_id = int(label_id)
    hue = (0.02 + label_id * _GOLDEN) % 1.0
    saturation = _SATURATIONS[label_id % len(_SATURATIONS)]
    value = _VALUES[(label_id // len(_SATURATIONS)) % len(_VALUES)]
    return _to_rgb(*colorsys.hsv_to_rgb(hue, saturation, value))


def shade(color: tuple[int, int, int], index: int) -> tuple[int, int, int]:
    """The `index`-th shade of `color` (0 is the colour itself): same hue, another lightness."""
    if index == 0:
        return tuple(color)
    hue, lightness, saturation = colorsys.rgb_to_hls(*(c / 255 for c in color))
    offset = _SHADE_OFFSETS[index % len(_SHADE_OFFSETS)]
    cycle = index // len(_SHADE_OFFSETS)  # past the table, shift the hue a little so that shades stay distinct
    lightness = min(0.85, max(0.18, lightness + offset))
    return _to_rgb(*colorsys.hls_to_rgb((hue + 0.03 * cycle) % 1.0, lightness, saturation))


def segment_colors(label_ids: list[int]) -> list[tuple[int, int, int]]:
    """Colours of segments given their classes in display order: the first segment of a class gets the class colour,
    the next ones its shades."""
    seen: dict[int, int] = {}
    colors = []
    for label_id in label_ids:
        count = seen.get(int(label_id), 0)
        seen[int(label_id)] = count + 1
        colors.append(shade(class_color(label_id), count))
    return colors


def distinct_colors(count: int, *, seed: int = 0) -> list[tuple[int, int, int]]:
    """The colours of classes `seed` .. `seed + count - 1` (distinct, and the same as those the drawings use)."""
    return [class_color(seed + i) for i in range(count)]


def darker(color: tuple[int, int, int], factor: float = 0.6) -> tuple[int, int, int]:
    return tuple(int(round(c * factor)) for c in color)


def _to_rgb(r: float, g: float, b: float) -> tuple[int, int, int]:
    return int(round(r * 255)), int(round(g * 255)), int(round(b * 255))


__all__ = ["class_color", "darker", "distinct_colors", "segment_colors", "shade"]
