"""Refuse, with a suggestion, an image too large for plain (whole-image) inference before it runs the machine out of
memory.

Plain post-processing upsamples each query's mask logits to the image's full size (one float per query and pixel),
and works on about as much again (sigmoids, binary masks): roughly 9 bytes x queries x pixels (the bundled model,
20 queries, measured 2.14 GB for a 4000x3000 photo: 8.9 bytes per query and pixel; a 100-query COCO model needs
about 11 GB for the same photo). An image is refused when that is more than `FREE_FRACTION` of the free memory (the
rest is the model, the image itself and whatever else runs). Sliding windows (`SegmentOptions(sliding_window=True)`, `m2f-segment --sliding-window`) need
memory for one window instead.
"""

from __future__ import annotations

# bytes per query and pixel that plain post-processing needs at its peak (logits and their sigmoids, float32)
BYTES_PER_QUERY_PIXEL = 9
# test-time augmentation of panoptic and instance results ensembles full-size mask predictions (`tta.py`): the
# sum of mask probabilities, the reference pass's masks and one pass's logits, then plain inference on the result
# (the bundled model, flip, 2000x1500: 11.7 bytes per query and pixel for post-processing alone, against 4.5 plain;
# benchmarks/bench_tta_memory.py; the margin covers drawing and writing, as plain's 9 does)
TTA_ENSEMBLE_BYTES_PER_QUERY_PIXEL = 18
# semantic test-time augmentation adds the sum of class scores and one pass's scores (float32), with a margin
TTA_SEMANTIC_BYTES_PER_CLASS_PIXEL = 12
FREE_FRACTION = 0.75


class ImageTooLargeError(MemoryError):
    """An image needs more memory for plain inference than the machine has free; the message says what to do."""


def available_memory(device=None) -> int | None:
    """Free bytes where post-processing runs: the GPU's free memory on CUDA, else the system's available memory
    (`MemAvailable` of /proc/meminfo, or psutil's); None when unknown."""
    if device is not None and getattr(device, "type", str(device)) == "cuda":
        import torch

        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        import psutil
    except ImportError:
        return None
    return int(psutil.virtual_memory().available)


def plain_inference_bytes(num_queries: int, height: int, width: int, options=None, num_classes: int = 0) -> int:
    """About how many bytes plain post-processing of a (height, width) image needs at its peak; with `options.tta`,
    what test-time augmentation needs (semantic: plus the class-score sums; panoptic, instance: the ensemble)."""
    pixels = int(height) * int(width)
    if getattr(options, "tta", False):
        if options.task == "semantic":
            per_pixel = BYTES_PER_QUERY_PIXEL * int(num_queries) + TTA_SEMANTIC_BYTES_PER_CLASS_PIXEL * int(
                num_classes
            )
            return per_pixel * pixels
        return TTA_ENSEMBLE_BYTES_PER_QUERY_PIXEL * int(num_queries) * pixels
    return BYTES_PER_QUERY_PIXEL * int(num_queries) * pixels


def check_plain_inference_fits(loaded, image_sizes, options) -> None:
    """Raise `ImageTooLargeError` when plain post-processing of one of `image_sizes` ((height, width) each) would
    need more memory than is free."""
    config = getattr(loaded.model, "config", None)
    num_queries = getattr(config, "num_queries", None)
    if not num_queries or not image_sizes:
        return
    height, width = max(image_sizes, key=lambda size: size[0] * size[1])
    needed = plain_inference_bytes(num_queries, height, width, options, getattr(config, "num_labels", 0) or 0)
    free = available_memory(getattr(loaded, "device", None))
    if free is None or needed <= FREE_FRACTION * free:
        return
    if getattr(options, "tta", False):
        plain = plain_inference_bytes(num_queries, height, width)
        raise ImageTooLargeError(
            f"a {width}x{height} image needs about {needed / 1e9:.1f} GB for whole-image inference with test-time "
            f"augmentation ({plain / 1e9:.1f} GB without it): {num_queries} masks at full size; only "
            f"{free / 1e9:.1f} GB are free. Leave out test-time augmentation, or segment it with sliding windows "
            "(without it), whose memory follows the window: SegmentOptions(sliding_window=True), m2f-segment "
            "--sliding-window (docs/inference.md)."
        )
    raise ImageTooLargeError(
        f"a {width}x{height} image needs about {needed / 1e9:.1f} GB for plain (whole-image) inference: "
        f"{num_queries} masks at full size; only {free / 1e9:.1f} GB are free. Segment it with sliding windows, "
        "whose memory follows the window: SegmentOptions(sliding_window=True), m2f-segment --sliding-window "
        "(docs/inference.md)."
    )


__all__ = [
    "BYTES_PER_QUERY_PIXEL",
    "TTA_ENSEMBLE_BYTES_PER_QUERY_PIXEL",
    "TTA_SEMANTIC_BYTES_PER_CLASS_PIXEL",
    "ImageTooLargeError",
    "available_memory",
    "check_plain_inference_fits",
    "plain_inference_bytes",
]
