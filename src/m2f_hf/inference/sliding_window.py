"""Sliding-window inference: a large image segmented at its own resolution, window by window, so that memory
follows the window and not the image.

Each window (`windows.WindowGrid`) is pre-processed without resizing (rescaled, normalised, padded to a multiple of
32) and run through the model; its outputs are post-processed at the window's size by the processor's own methods,
so a window gets exactly what plain inference of that crop would give.

- semantic: the per-pixel class scores sum_q p(c | q) * sigmoid(m_q(x)) of every window covering a pixel are summed
  (mmsegmentation's slide mode) and the class map is their argmax. The sums live in a buffer of one window row (C x
  window x image width floats), and each row of the image is final once the next window row starts below it.
- instance and panoptic: per-window segments merged across window borders (`window_merge.WindowMerger`).

The full-size outputs are compact: an int32 class or segment map (4 bytes per pixel); nothing else of the image's
size is kept besides the image itself.
"""

from __future__ import annotations

import numpy as np
import torch

from .window_merge import WindowMerger
from .windows import WindowGrid, default_window_size

# windows per forward pass
WINDOW_BATCH = 4


def window_grid(loaded, height: int, width: int, options) -> WindowGrid:
    size = options.window_size or default_window_size(loaded.processor)
    return WindowGrid(height, width, size, options.window_overlap)


def as_window_source(image, processor) -> np.ndarray:
    """The image as an (H, W) or (H, W, C) array on the processor's 0-255 scale, from which windows are sliced
    (views: nothing of the image's size is copied for an 8-bit array)."""
    from PIL import Image

    from ..processing.image_modes import prepare_pil_image, to_8bit_scale
    from ..processing.image_ops import image_hw
    from ..processing.settings import channel_count

    scaling = getattr(processor, "scaling", "range")
    if isinstance(image, Image.Image):
        image = prepare_pil_image(image, scaling=scaling)
        return np.asarray(image)
    array = image.cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if array.ndim == 3:
        settings = {name: getattr(processor, name, None) for name in ("num_channels", "image_mean", "image_std")}
        height, width = image_hw(array, num_channels=channel_count(settings))
        if array.shape[:2] != (height, width):  # channels first
            array = array.transpose(1, 2, 0)
    if array.dtype != np.uint8 and (scaling == "minmax" or not np.issubdtype(array.dtype, np.floating)):
        # scale the whole image once: windows scaled one by one would each get their own min-max
        tensor = to_8bit_scale(torch.from_numpy(np.ascontiguousarray(array)), scaling=scaling)
        array = tensor.clamp_(0, 255).round_().to(torch.uint8).numpy()
    return array


def _forward(loaded, crops: list[np.ndarray]):
    """Model outputs of a batch of window crops, with the processor's pixel_mask and the crops' sizes."""
    inputs = loaded.processor(images=crops, do_resize=False, return_tensors="pt")
    with torch.inference_mode():
        outputs = loaded.model(
            pixel_values=inputs["pixel_values"].to(loaded.device), pixel_mask=inputs["pixel_mask"].to(loaded.device)
        )
    return outputs, inputs["pixel_mask"], [tuple(c.shape[:2]) for c in crops]


def _batches(grid: WindowGrid, row: int):
    """The windows of row `row`, `WINDOW_BATCH` at a time: lists of (column index, y0, x0)."""
    y0 = grid.rows[row]
    windows = [(c, y0, x0) for c, x0 in enumerate(grid.cols)]
    for start in range(0, len(windows), WINDOW_BATCH):
        yield windows[start : start + WINDOW_BATCH]


def _crops(array: np.ndarray, grid: WindowGrid, batch) -> list[np.ndarray]:
    h, w = grid.window_height, grid.window_width
    return [array[y0 : y0 + h, x0 : x0 + w] for _, y0, x0 in batch]


def sliding_semantic(loaded, array: np.ndarray, grid: WindowGrid) -> torch.Tensor:
    """(H, W) int32 class map: class scores summed over the windows covering each pixel."""
    processor = loaded.processor
    height, width = grid.height, grid.width
    labels = torch.empty((height, width), dtype=torch.int32)
    band, band_top = None, 0
    rows = grid.rows
    for r, y0 in enumerate(rows):
        y1 = y0 + grid.window_height
        fresh = None
        for batch in _batches(grid, r):
            outputs, pixel_mask, sizes = _forward(loaded, _crops(array, grid, batch))
            results = processor.post_process_semantic_segmentation(
                outputs, target_sizes=sizes, return_segmentation_scores=True, pixel_mask=pixel_mask
            )
            for (_, _, x0), result in zip(batch, results):
                scores = result["segmentation_scores"].cpu()  # (C, h, w)
                if fresh is None:
                    fresh = torch.zeros((scores.shape[0], y1 - y0, width), dtype=torch.float32)
                    if band is not None:  # rows shared with the previous window row keep their sums
                        shared = band_top + band.shape[1] - y0
                        fresh[:, :shared] = band[:, y0 - band_top :]
                    band, band_top = None, y0
                fresh[:, :, x0 : x0 + scores.shape[2]] += scores
            del outputs, results
        band, band_top = fresh, y0
        done = rows[r + 1] if r + 1 < len(rows) else height  # the rows no later window reaches
        labels[y0:done] = band[:, : done - y0].argmax(0).to(torch.int32)
    return labels


def sliding_segments(loaded, array: np.ndarray, grid: WindowGrid, options) -> dict:
    """Instance or panoptic segments of the whole image from its windows, merged across window borders."""
    from .segment import stuff_label_ids

    processor = loaded.processor
    fuse = set() if options.task == "instance" else stuff_label_ids(loaded.model.config)
    merger = WindowMerger(grid, instance=options.task == "instance", fuse_labels=fuse)
    thresholds = {
        "threshold": options.threshold,
        "mask_threshold": options.mask_threshold,
        "overlap_mask_area_threshold": options.overlap_mask_area_threshold,
    }
    if options.task == "instance":
        thing_ids = None if options.keep_all_classes else getattr(loaded.model.config, "thing_ids", None)
        post_process = processor.post_process_instance_segmentation
        thresholds["thing_ids"] = thing_ids
    else:
        post_process = processor.post_process_panoptic_segmentation
        thresholds["label_ids_to_fuse"] = fuse  # one segment per stuff class, as plain panoptic inference
    for r in range(len(grid.rows)):
        for batch in _batches(grid, r):
            outputs, pixel_mask, sizes = _forward(loaded, _crops(array, grid, batch))
            results = post_process(outputs, target_sizes=sizes, pixel_mask=pixel_mask, **thresholds)
            for (c, _, _), result in zip(batch, results):
                merger.add(r, c, result["segmentation"].cpu(), result["segments_info"])
            del outputs, results
    return merger.finish()


def segment_sliding(loaded, image, options):
    """Sliding-window result of one image, in the formats of plain inference (the class or segment map is int32)."""
    array = as_window_source(image, loaded.processor)
    grid = window_grid(loaded, array.shape[0], array.shape[1], options)
    if options.task == "semantic":
        return sliding_semantic(loaded, array, grid)
    return sliding_segments(loaded, array, grid, options)


__all__ = [
    "WINDOW_BATCH",
    "as_window_source",
    "segment_sliding",
    "sliding_semantic",
    "sliding_segments",
    "window_grid",
]
