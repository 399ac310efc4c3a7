"""Draw a semantic, instance or panoptic result over its image: blended class colours, contours, labels and a legend
per class."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from .colors import segment_colors
from .layout import Scale, clamp_box, font, label_anchor

WHITE, BLACK, LEGEND_TEXT = (255, 255, 255), (0, 0, 0), (20, 20, 20)
# most instance shades shown side by side in one legend swatch
_MAX_SWATCH_STRIPES = 4


@dataclass(frozen=True)
class _Segment:
    segment_id: int
    label_id: int
    label: str
    score: float | None


def _segments(result, id2label: dict[int, str] | None) -> tuple[np.ndarray, list[_Segment], bool]:
    """(id map (H, W) int64, the segments in display order, whether the result is a semantic class map)."""

    def name(label_id: int) -> str:
        return id2label.get(label_id, str(label_id)) if id2label else str(label_id)

    if isinstance(result, dict) and "segments_info" in result:
        segmentation = result["segmentation"]
        if isinstance(segmentation, list):
            raise ValueError(
                "draw the result before RLE encoding: call post-processing without return_coco_annotation."
            )
        segmentation = torch.as_tensor(segmentation)
        if segmentation.ndim == 3:  # binary maps: paint them in score order, later ones underneath
            ids = torch.full(segmentation.shape[-2:], -1, dtype=torch.int64)
            for index in reversed(range(segmentation.shape[0])):
                ids[segmentation[index] > 0] = result["segments_info"][index]["id"]
            segmentation = ids
        segments = [
            _Segment(int(s["id"]), int(s["label_id"]), name(int(s["label_id"])), s.get("score"))
            for s in result["segments_info"]
        ]
        return segmentation.to(torch.int64).cpu().numpy(), segments, False
    if isinstance(result, dict) and "segmentation" in result:  # SemanticSegmentationPostProcessorOutput
        result = result["segmentation"]
    class_map = torch.as_tensor(result).to(torch.int64).cpu()
    if class_map.ndim != 2:
        raise ValueError(
            f"expected a (H, W) class map or a dict with 'segments_info'; got shape {tuple(class_map.shape)}."
        )
    segments = [_Segment(int(c), int(c), name(int(c)), None) for c in torch.unique(class_map).tolist()]
    return class_map.numpy(), segments, True


def _as_rgb(image) -> Image.Image:
    if not isinstance(image, Image.Image):
        array = image.cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
        if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[-1] not in (1, 3, 4):
            array = array.transpose(1, 2, 0)  # CHW -> HWC
        image = Image.fromarray(array.squeeze().astype(np.uint8))
    return image.convert("RGB")


def _compact(ids: np.ndarray, segments: list[_Segment]) -> np.ndarray:
    """(H, W) map of 1-based positions in `segments` (0 for pixels of no listed segment)."""
    low, high = int(ids.min()), int(ids.max())
    lookup = np.zeros(high - low + 1, dtype=np.int32)
    for position, segment in enumerate(segments):
        if low <= segment.segment_id <= high:
            lookup[segment.segment_id - low] = position + 1
    return lookup[ids - low]


def _contours(compact: np.ndarray, width: int) -> np.ndarray:
    """Pixels of a segment within about `width` / 2 pixels of another segment or of unassigned pixels."""
    edge = np.zeros(compact.shape, dtype=bool)
    across = compact[:, 1:] != compact[:, :-1]  # a change between horizontal neighbours marks both of them
    edge[:, 1:] |= across
    edge[:, :-1] |= across
    down = compact[1:] != compact[:-1]
    edge[1:] |= down
    edge[:-1] |= down
    if width > 2:
        from scipy import ndimage

        edge = ndimage.binary_dilation(edge, iterations=int(round(width / 2)) - 1)
    return edge & (compact > 0)


def draw_segmentation(
    image,
    result,
    id2label: dict[int, str] | None = None,
    *,
    alpha: float = 0.5,
    show_labels: bool = True,
    contours: bool = True,
    legend_width: int | None = None,
    output_path: str | Path | None = None,
) -> Image.Image:
    """Overlay a post-processing result on `image` and return the picture (also saved as PNG to `output_path`).

    Args:
        image: the original image (PIL, or numpy/torch HWC uint8); the result must have its size.
        result: one image's result of `post_process_semantic_segmentation` (a class map),
            `post_process_instance_segmentation` or `post_process_panoptic_segmentation` (a dict with
            `segmentation` and `segments_info`).
        id2label: class names, e.g. `model.config.id2label`.
        alpha: opacity of the colour fill, in [0, 1].
        show_labels: write each segment's class (and score) on it.
        contours: outline each segment in its colour.
        legend_width: a fixed legend width in pixels, and a picture as high as the image (frames of a video); classes
            that do not fit are summed up in a last row. None: the legend is as wide and high as its text needs.
        output_path: where to write the PNG.

    Each class has one colour whatever the image (`class_color`), its instances distinguishable shades of it. The
    legend beside the image lists each class once, with its number of segments (semantic: its share of the image),
    on a swatch blended like the regions. Text and line widths follow the image size; labels stay inside the image.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1]; got {alpha}.")
    base = _as_rgb(image)
    ids, segments, semantic = _segments(result, id2label)
    if ids.shape != (base.height, base.width):
        raise ValueError(
            f"the result has size {ids.shape} but the image has size {(base.height, base.width)}; post-process with "
            "`target_sizes=[(height, width)]` of the original image."
        )
    scale = Scale.for_image(base.height, base.width)
    colors = np.array(segment_colors([s.label_id for s in segments]), dtype=np.float32).reshape(-1, 3)
    pixels = np.asarray(base).astype(np.float32)
    compact = _compact(ids, segments) if segments else np.zeros(ids.shape, dtype=np.int32)
    # row 0 of the tables is "no segment": its pixels keep the image
    lookup = np.concatenate([np.zeros((1, 3), dtype=np.float32), colors])
    opacity = np.array([0.0] + [alpha] * len(segments), dtype=np.float32)
    blended = lookup[compact]
    blended -= pixels
    blended *= opacity[compact][..., None]
    blended += pixels  # (1 - alpha) * image + alpha * colour on segments, the image elsewhere
    if contours and segments:
        edge = _contours(compact, scale.contour_px)
        blended[edge] = lookup[compact[edge]]
    canvas = Image.fromarray((blended + 0.5).astype(np.uint8))  # a convex combination: already in [0, 255]

    # per segment: pixel count, and the mean colour under it (every 4th pixel is plenty) for the legend's swatches
    counts = np.bincount(compact.ravel(), minlength=len(segments) + 1)
    sample, sample_pixels = compact[::4, ::4].ravel(), pixels[::4, ::4].reshape(-1, 3)
    sampled = np.bincount(sample, minlength=len(segments) + 1)
    sums = np.stack(
        [np.bincount(sample, weights=sample_pixels[:, c], minlength=len(segments) + 1) for c in range(3)], 1
    )
    means = np.where(sampled[:, None] > 0, sums / np.maximum(sampled, 1)[:, None], 255.0)

    if show_labels and segments:
        _draw_labels(canvas, compact, segments, scale)
    return _with_legend(canvas, segments, colors, means, counts, alpha, semantic, scale, legend_width, output_path)


def _draw_labels(canvas: Image.Image, compact: np.ndarray, segments: list[_Segment], scale: Scale) -> None:
    """Each segment's label at its most interior point, kept inside the image; a label that would cover one placed
    before it (larger segments first) moves up or down by whole text heights when that frees it."""
    from scipy import ndimage

    draw = ImageDraw.Draw(canvas)
    text_font = font(scale.font_px)
    boxes = ndimage.find_objects(compact, max_label=len(segments))
    areas = np.bincount(compact.ravel(), minlength=len(segments) + 1)
    placed: list[tuple[int, int, int, int]] = []
    for position in sorted(range(len(segments)), key=lambda k: -areas[k + 1]):
        segment, box = segments[position], boxes[position]
        if box is None:  # no visible pixel (fully covered by other segments)
            continue
        anchor = label_anchor(compact[box] == position + 1)
        center = (anchor[0] + box[1].start, anchor[1] + box[0].start)
        text = segment.label if segment.score is None else f"{segment.label} {segment.score:.2f}"
        left, top, right, bottom = draw.textbbox((0, 0), text, font=text_font, stroke_width=scale.stroke_px)
        size = (right - left, bottom - top)
        x, y = _free_spot(center, size, canvas.size, placed)
        placed.append((x, y, x + size[0], y + size[1]))
        draw.text(
            (x - left, y - top), text, fill=WHITE, font=text_font, stroke_width=scale.stroke_px, stroke_fill=BLACK
        )


def _free_spot(center, size, bounds, placed, tries: int = 3) -> tuple[int, int]:
    def overlaps(x, y):
        return any(x < b[2] and b[0] < x + size[0] and y < b[3] and b[1] < y + size[1] for b in placed)

    first = clamp_box(center, size, bounds)
    for step in range(1, tries + 1):
        if not overlaps(*first):
            break
        for sign in (-1, 1):
            spot = clamp_box((center[0], center[1] + sign * step * size[1]), size, bounds)
            if not overlaps(*spot):
                return spot
    return first


def _legend_rows(segments, colors, means, counts, alpha, semantic, total_pixels):
    """One row per class, by class index: (text, [swatch colours of its segments' shades, blended])."""
    rows: dict[int, dict] = {}
    for position, segment in enumerate(segments):
        row = rows.setdefault(segment.label_id, {"label": segment.label, "count": 0, "pixels": 0, "swatch": []})
        row["count"] += 1
        row["pixels"] += int(counts[position + 1])
        if len(row["swatch"]) < _MAX_SWATCH_STRIPES:
            under = means[position + 1]
            under = under.astype(np.float32)
            blend = under + np.float32(alpha) * (colors[position] - under)  # the regions' formula, in float32
            row["swatch"].append(tuple(int(v) for v in (blend + 0.5).astype(np.uint8)))  # rounded as the regions
            row.setdefault("edge", tuple(int(v) for v in colors[position]))
    texts = []
    for label_id in sorted(rows):
        row = rows[label_id]
        if semantic:
            text = f"{row['label']} {100 * row['pixels'] / max(total_pixels, 1):.1f}%"
        else:
            text = f"{row['label']} ({row['count']})"
        texts.append((text, row["swatch"], row["edge"]))
    return texts


def _with_legend(canvas, segments, colors, means, counts, alpha, semantic, scale, legend_width, output_path):
    text_font = font(scale.font_px)
    rows = _legend_rows(segments, colors, means, counts, alpha, semantic, canvas.width * canvas.height)
    if not rows:
        rows = [("no segments", [], None)]
    margin, swatch = scale.margin_px, scale.font_px
    row_height = int(round(scale.font_px * 1.5))
    measure = ImageDraw.Draw(canvas)
    if legend_width is None:
        text_width = max(int(measure.textlength(text, font=text_font)) for text, _, _ in rows)
        legend_width = 3 * margin + swatch + text_width
        height = max(canvas.height, 2 * margin + row_height * len(rows))
    else:
        height = canvas.height
        fit = max(1, (height - 2 * margin) // row_height)
        if len(rows) > fit:
            rows = rows[: fit - 1] + [(f"+{len(rows) - fit + 1} more classes", [], None)]
    picture = Image.new("RGB", (canvas.width + legend_width, height), WHITE)
    picture.paste(canvas, (0, 0))
    draw = ImageDraw.Draw(picture)
    left = canvas.width + margin
    for index, (text, swatch_colors, edge) in enumerate(rows):
        top = margin + index * row_height + (row_height - swatch) // 2
        if swatch_colors:  # the shades of the class's segments side by side, outlined like the regions
            stripe = swatch / len(swatch_colors)
            for k, color in enumerate(swatch_colors):
                x0 = left + int(round(k * stripe))
                draw.rectangle([x0, top, left + int(round((k + 1) * stripe)) - 1, top + swatch - 1], fill=color)
            draw.rectangle([left, top, left + swatch - 1, top + swatch - 1], outline=edge, width=scale.contour_px)
        draw.text((left + swatch + margin, top + swatch // 2), text, fill=LEGEND_TEXT, font=text_font, anchor="lm")
    if output_path is not None:
        picture.save(output_path, format="PNG")
    return picture


def legend_width_for(id2label: dict[int, str], height: int, width: int, *, max_count: int = 99) -> int:
    """A legend width that fits every class name of `id2label` with a count up to `max_count` (for the frames of
    a video, which must all have one size)."""
    scale = Scale.for_image(height, width)
    text_font = font(scale.font_px)
    longest = max((text_font.getlength(f"{name} ({max_count})") for name in id2label.values()), default=40)
    return int(3 * scale.margin_px + scale.font_px + longest)


__all__ = ["draw_segmentation", "legend_width_for"]
