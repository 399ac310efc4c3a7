"""Draw a semantic, instance or panoptic result over its image: coloured masks, labels, scores and a legend."""

from __future__ import annotations

import colorsys
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont


def distinct_colors(count: int, *, seed: int = 0) -> list[tuple[int, int, int]]:
    """`count` well separated RGB colours (golden-ratio hue steps, alternating brightness)."""
    colors = []
    for i in range(count):
        hue = (seed * 0.137 + i * 0.618033988749895) % 1.0
        value = 0.95 if i % 2 == 0 else 0.75
        r, g, b = colorsys.hsv_to_rgb(hue, 0.65, value)
        colors.append((int(r * 255), int(g * 255), int(b * 255)))
    return colors


def _segments(result, id2label: dict[int, str] | None):
    """Normalise a post-processing result to (id map (H, W) int64 numpy, list of (segment id, text, score))."""

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
        entries = [(int(s["id"]), name(int(s["label_id"])), s.get("score")) for s in result["segments_info"]]
        return segmentation.to(torch.int64).cpu().numpy(), entries
    if isinstance(result, dict) and "segmentation" in result:  # SemanticSegmentationPostProcessorOutput
        result = result["segmentation"]
    class_map = torch.as_tensor(result).to(torch.int64).cpu()
    if class_map.ndim != 2:
        raise ValueError(
            f"expected a (H, W) class map or a dict with 'segments_info'; got shape {tuple(class_map.shape)}."
        )
    entries = [(int(c), name(int(c)), None) for c in torch.unique(class_map).tolist()]
    return class_map.numpy(), entries


def draw_segmentation(
    image,
    result,
    id2label: dict[int, str] | None = None,
    *,
    alpha: float = 0.5,
    output_path: str | Path | None = None,
) -> Image.Image:
    """Overlay a post-processing result on `image` and return the picture (also saved as PNG to `output_path`).

    Args:
        image: the original image (PIL, or numpy/torch HWC uint8); the result must have its size.
        result: one image's result of `post_process_semantic_segmentation` (a class map),
            `post_process_instance_segmentation` or `post_process_panoptic_segmentation` (a dict with
            `segmentation` and `segments_info`).
        id2label: class names, e.g. `model.config.id2label`.
        alpha: opacity of the colour fill.
        output_path: where to write the PNG.

    Every segment gets its own colour; its label (and score, if any) is written at its centre, and a legend beside
    the image lists them all.
    """
    if not isinstance(image, Image.Image):
        array = image.cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
        if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[-1] not in (1, 3, 4):
            array = array.transpose(1, 2, 0)  # CHW -> HWC
        image = Image.fromarray(array.squeeze().astype(np.uint8))
    base = image.convert("RGB")
    ids, entries = _segments(result, id2label)
    if ids.shape != (base.height, base.width):
        raise ValueError(
            f"the result has size {ids.shape} but the image has size {(base.height, base.width)}; post-process with "
            "`target_sizes=[(height, width)]` of the original image."
        )
    colors = distinct_colors(len(entries))
    overlay = np.asarray(base).astype(np.float32)
    for (segment_id, _, _), color in zip(entries, colors):
        region = ids == segment_id
        overlay[region] = (1 - alpha) * overlay[region] + alpha * np.array(color, dtype=np.float32)
    canvas_image = Image.fromarray(overlay.round().astype(np.uint8))

    font = ImageFont.load_default()
    draw = ImageDraw.Draw(canvas_image)
    texts = []
    for (segment_id, label, score), color in zip(entries, colors):
        text = label if score is None else f"{label} {score:.2f}"
        texts.append((text, color))
        rows, cols = np.nonzero(ids == segment_id)
        if rows.size:
            centre = (int(cols.mean()), int(rows.mean()))
            draw.text(
                centre, text, fill=(255, 255, 255), font=font, anchor="mm", stroke_width=1, stroke_fill=(0, 0, 0)
            )

    # legend: a colour swatch and the text of every segment, in a column right of the image
    line_height, swatch, margin = 14, 10, 6
    legend_width = margin * 3 + swatch + max((int(draw.textlength(t, font=font)) for t, _ in texts), default=40)
    height = max(base.height, margin * 2 + line_height * max(len(texts), 1))
    picture = Image.new("RGB", (base.width + legend_width, height), (255, 255, 255))
    picture.paste(canvas_image, (0, 0))
    legend = ImageDraw.Draw(picture)
    for row, (text, color) in enumerate(texts):
        top = margin + row * line_height
        left = base.width + margin
        legend.rectangle([left, top, left + swatch, top + swatch], fill=color, outline=(0, 0, 0))
        legend.text((left + swatch + margin, top - 1), text, fill=(0, 0, 0), font=font)
    if output_path is not None:
        picture.save(output_path, format="PNG")
    return picture


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


__all__ = ["distinct_colors", "draw_segmentation", "highlight_segment"]
