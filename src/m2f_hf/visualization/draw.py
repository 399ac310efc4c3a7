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
        return _integer_ids(segmentation), segments, False
    if isinstance(result, dict) and "segmentation" in result:  # SemanticSegmentationPostProcessorOutput
        result = result["segmentation"]
    class_map = torch.as_tensor(result).cpu()
    if class_map.ndim != 2:
        raise ValueError(
            f"expected a (H, W) class map or a dict with 'segments_info'; got shape {tuple(class_map.shape)}."
        )
    ids = _integer_ids(class_map)
    # the classes present, a block of rows at a time (np.unique of a whole large map sorts a copy of it)
    present: set[int] = set()
    for rows in _row_blocks(ids.shape[0], ids.shape[1]):
        present.update(np.unique(ids[rows]).tolist())
    segments = [_Segment(c, c, name(c), None) for c in sorted(present)]
    return ids, segments, True


def _integer_ids(segmentation: torch.Tensor) -> np.ndarray:
    """The id map as numpy integers without widening a compact int32 map (a large image's map is 4 bytes a pixel)."""
    segmentation = segmentation.cpu()
    if segmentation.dtype not in (torch.int32, torch.int64):
        segmentation = segmentation.to(torch.int64)
    return segmentation.numpy()


def _as_rgb(image) -> np.ndarray:
    """The image as an (H, W, 3) uint8 array (an HWC uint8 RGB array as it is: no copy of a large image)."""
    if not isinstance(image, Image.Image):
        array = image.cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
        if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[-1] not in (1, 3, 4):
            array = array.transpose(1, 2, 0)  # CHW -> HWC
        if array.ndim == 3 and array.shape[-1] == 3 and array.dtype == np.uint8:
            return array
        image = Image.fromarray(array.squeeze().astype(np.uint8))
    return np.asarray(image.convert("RGB"))


def _compact(ids: np.ndarray, segments: list[_Segment]) -> np.ndarray:
    """(H, W) map of 1-based positions in `segments` (0 for pixels of no listed segment)."""
    low, high = int(ids.min()), int(ids.max())
    lookup = np.zeros(high - low + 1, dtype=np.int32)
    for position, segment in enumerate(segments):
        if low <= segment.segment_id <= high:
            lookup[segment.segment_id - low] = position + 1
    compact = np.empty(ids.shape, dtype=np.int32)
    for rows in _row_blocks(ids.shape[0], ids.shape[1]):
        compact[rows] = lookup[ids[rows] - low]
    return compact


def _contours_in_rows(compact: np.ndarray, rows: slice, width: int) -> np.ndarray:
    """`_contours` of the rows `rows` only, computed on them plus enough rows around them to be exact (an edge
    needs one neighbour, and the widening reaches `width` / 2 pixels)."""
    halo = max(1, int(round(width / 2))) + 1
    top, bottom = max(0, rows.start - halo), min(compact.shape[0], rows.stop + halo)
    return _contours(compact[top:bottom], width)[rows.start - top : rows.stop - top]


# pixels per block when blending and counting (the float copies of a block stay about 40 MB)
_BLOCK_PIXELS = 1 << 20
# most segments labelled on one picture (the largest ones); the legend counts them all
MAX_LABELS = 200
# with more segments than this (a large image segmented in windows), a label that finds no free spot is left out
# instead of being drawn over another one
CROWDED_SEGMENTS = 50


def _row_blocks(height: int, width: int):
    step = max(1, _BLOCK_PIXELS // max(1, width))
    for start in range(0, height, step):
        yield slice(start, min(height, start + step))


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
    image_pixels = _as_rgb(image)
    height, width = image_pixels.shape[:2]
    ids, segments, semantic = _segments(result, id2label)
    if ids.shape != (height, width):
        raise ValueError(
            f"the result has size {ids.shape} but the image has size {(height, width)}; post-process with "
            "`target_sizes=[(height, width)]` of the original image."
        )
    scale = Scale.for_image(height, width)
    colors = np.array(segment_colors([s.label_id for s in segments]), dtype=np.float32).reshape(-1, 3)
    compact = _compact(ids, segments) if segments else np.zeros(ids.shape, dtype=np.int32)
    del ids

    # per segment: pixel count, and the mean colour under it (every 4th pixel is plenty) for the legend's swatches
    counts = np.zeros(len(segments) + 1, dtype=np.int64)
    for rows in _row_blocks(height, width):
        counts += np.bincount(compact[rows].ravel(), minlength=len(segments) + 1)
    sampled = np.zeros(len(segments) + 1, dtype=np.int64)
    sums = np.zeros((len(segments) + 1, 3), dtype=np.float64)
    for rows in _row_blocks((height + 3) // 4, (width + 3) // 4):  # blocks of sampled rows: small copies
        rows = slice(rows.start * 4, rows.stop * 4, 4)
        sample = compact[rows, ::4].ravel()
        sample_pixels = image_pixels[rows, ::4].reshape(-1, 3)
        sampled += np.bincount(sample, minlength=len(segments) + 1)
        for c in range(3):
            sums[:, c] += np.bincount(sample, weights=sample_pixels[:, c], minlength=len(segments) + 1)
    means = np.where(sampled[:, None] > 0, sums / np.maximum(sampled, 1)[:, None], 255.0)
    legend = _legend_layout(segments, colors, means, counts, alpha, semantic, scale, legend_width, (width, height))

    # the picture (image and legend) is filled in blocks of rows: float copies stay small on large images
    picture = Image.new("RGB", (width + legend["width"], legend["height"]), WHITE)
    lookup = np.concatenate([np.zeros((1, 3), dtype=np.float32), colors])  # row 0 "no segment": the image
    opacity = np.array([0.0] + [alpha] * len(segments), dtype=np.float32)
    for rows in _row_blocks(height, width):
        pixels, block = image_pixels[rows].astype(np.float32), compact[rows]
        blended = lookup[block]
        blended -= pixels
        blended *= opacity[block][..., None]
        blended += pixels  # (1 - alpha) * image + alpha * colour on segments, the image elsewhere
        if contours and segments:
            edges = _contours_in_rows(compact, rows, scale.contour_px)
            blended[edges] = lookup[block[edges]]
        blended += 0.5
        picture.paste(Image.fromarray(blended.astype(np.uint8)), (0, rows.start))  # convex: already in [0, 255]
    if show_labels and segments:
        _draw_labels(picture, compact, segments, scale, counts, (width, height))
    _draw_legend(picture, legend, scale, width)
    if output_path is not None:
        picture.save(output_path, format="PNG")
    return picture


def _draw_labels(
    canvas: Image.Image, compact: np.ndarray, segments: list[_Segment], scale: Scale, areas: np.ndarray, bounds
) -> None:
    """Each segment's label at its most interior point, kept inside the image; a label that would cover one placed
    before it (larger segments first) moves up or down by whole text heights when that frees it. At most
    `MAX_LABELS` labels, on the largest segments (`areas`: pixels per position in `compact`); with more than
    `CROWDED_SEGMENTS` segments a label with no free spot is left out."""
    from scipy import ndimage

    draw = ImageDraw.Draw(canvas)
    text_font = font(scale.font_px)
    boxes = ndimage.find_objects(compact, max_label=len(segments))
    placed: list[tuple[int, int, int, int]] = []
    for position in sorted(range(len(segments)), key=lambda k: -areas[k + 1])[:MAX_LABELS]:
        segment, box = segments[position], boxes[position]
        if box is None:  # no visible pixel (fully covered by other segments)
            continue
        anchor = label_anchor(compact[box] == position + 1)
        center = (anchor[0] + box[1].start, anchor[1] + box[0].start)
        text = segment.label if segment.score is None else f"{segment.label} {segment.score:.2f}"
        left, top, right, bottom = draw.textbbox((0, 0), text, font=text_font, stroke_width=scale.stroke_px)
        size = (right - left, bottom - top)
        spot = _free_spot(center, size, bounds, placed, skip_if_covered=len(segments) > CROWDED_SEGMENTS)
        if spot is None:
            continue
        x, y = spot
        placed.append((x, y, x + size[0], y + size[1]))
        draw.text(
            (x - left, y - top), text, fill=WHITE, font=text_font, stroke_width=scale.stroke_px, stroke_fill=BLACK
        )


def _free_spot(center, size, bounds, placed, tries: int = 3, skip_if_covered: bool = False) -> tuple[int, int] | None:
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
    if skip_if_covered and overlaps(*first):
        return None
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


def _legend_layout(segments, colors, means, counts, alpha, semantic, scale, legend_width, image_size) -> dict:
    """The legend's rows, its width and the picture's height (at least the image's)."""
    width, height = image_size
    text_font = font(scale.font_px)
    rows = _legend_rows(segments, colors, means, counts, alpha, semantic, width * height)
    if not rows:
        rows = [("no segments", [], None)]
    margin, swatch = scale.margin_px, scale.font_px
    row_height = int(round(scale.font_px * 1.5))
    if legend_width is None:
        text_width = max(int(text_font.getlength(text)) for text, _, _ in rows)
        legend_width = 3 * margin + swatch + text_width
        height = max(height, 2 * margin + row_height * len(rows))
    else:
        fit = max(1, (height - 2 * margin) // row_height)
        if len(rows) > fit:
            rows = rows[: fit - 1] + [(f"+{len(rows) - fit + 1} more classes", [], None)]
    return {"rows": rows, "width": legend_width, "height": height, "row_height": row_height}


def _draw_legend(picture, legend: dict, scale: Scale, image_width: int) -> None:
    text_font = font(scale.font_px)
    margin, swatch, row_height = scale.margin_px, scale.font_px, legend["row_height"]
    draw = ImageDraw.Draw(picture)
    left = image_width + margin
    for index, (text, swatch_colors, edge) in enumerate(legend["rows"]):
        top = margin + index * row_height + (row_height - swatch) // 2
        if swatch_colors:  # the shades of the class's segments side by side, outlined like the regions
            stripe = swatch / len(swatch_colors)
            for k, color in enumerate(swatch_colors):
                x0 = left + int(round(k * stripe))
                draw.rectangle([x0, top, left + int(round((k + 1) * stripe)) - 1, top + swatch - 1], fill=color)
            draw.rectangle([left, top, left + swatch - 1, top + swatch - 1], outline=edge, width=scale.contour_px)
        draw.text((left + swatch + margin, top + swatch // 2), text, fill=LEGEND_TEXT, font=text_font, anchor="lm")


def legend_width_for(id2label: dict[int, str], height: int, width: int, *, max_count: int = 99) -> int:
    """A legend width that fits every class name of `id2label` with a count up to `max_count` (for the frames of
    a video, which must all have one size)."""
    scale = Scale.for_image(height, width)
    text_font = font(scale.font_px)
    longest = max((text_font.getlength(f"{name} ({max_count})") for name in id2label.values()), default=40)
    return int(3 * scale.margin_px + scale.font_px + longest)


__all__ = ["draw_segmentation", "legend_width_for"]
