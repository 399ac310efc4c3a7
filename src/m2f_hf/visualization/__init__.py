"""Pictures of segmentation results that a person can read: class colours stable across images, shades per
instance, contours, labels and a legend per class, all scaled to the image. The CLI, batch runs and the web demo
draw through `draw_segmentation`; the demo highlights one segment with `highlight_segment`."""

from .colors import class_color, distinct_colors, segment_colors, shade
from .draw import draw_segmentation, legend_width_for
from .highlight import highlight_segment

__all__ = [
    "class_color",
    "distinct_colors",
    "draw_segmentation",
    "highlight_segment",
    "legend_width_for",
    "segment_colors",
    "shade",
]
