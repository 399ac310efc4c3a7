"""Test-time augmentation: the image segmented at several scales and mirrored, the predictions averaged.

Semantic segmentation averages the per-pixel class scores of every pass at the image's own resolution (the paper's
multi-scale inference; scores are sum_q p(c | q) * sigmoid(m_q(x)), as in plain inference). Scales are factors of
the processor's resize size (shortest edge 128 for the bundled model: 0.75 gives 96). With one scale of 1.0 and no
flip the result is plain inference's.
"""

from __future__ import annotations

import math
import numbers

DEFAULT_TTA_SCALES = (0.75, 1.0, 1.25)


def check_tta_scales(scales) -> tuple[float, ...]:
    """`scales` as a tuple of positive floats; `ValueError` naming the value otherwise."""
    if isinstance(scales, numbers.Real):
        scales = (scales,)
    try:
        values = tuple(float(s) for s in scales)
    except (TypeError, ValueError):
        values = ()
    if not values or any(not math.isfinite(s) or s <= 0 for s in values) or isinstance(scales, (str, bytes)):
        raise ValueError(
            f"tta_scales must be a non-empty list of positive numbers (e.g. 0.75,1,1.25); got {scales!r}."
        )
    return values


def scaled_size(size: dict, scale: float) -> dict:
    """The processor's `size` dict with every side multiplied by `scale` (rounded; at least 1)."""
    return {key: max(1, int(round(value * scale))) for key, value in size.items() if value}


def segment_tta(loaded, image, options):
    """The semantic class map ((H, W) int64) of `image` with test-time augmentation (`options.tta_scales`,
    `options.tta_flip`)."""
    import torch

    from .segment import image_size

    if options.task != "semantic":
        raise ValueError(
            f"tta is for task='semantic'; got task={options.task!r} (docs/inference.md: flip and scale ensembling of "
            "instance and panoptic masks was measured and did not help)."
        )
    processor = loaded.processor
    height, width = image_size(image, processor)
    flips = (False, True) if options.tta_flip else (False,)
    total = None
    for scale in options.tta_scales:
        overrides = {} if scale == 1.0 else {"size": scaled_size(dict(processor.size), scale)}
        inputs = processor(images=[image], return_tensors="pt", **overrides)
        for flip in flips:
            pixel_values, pixel_mask = inputs["pixel_values"], inputs["pixel_mask"]
            if flip:
                pixel_values, pixel_mask = _mirror(pixel_values, pixel_mask)
            with torch.inference_mode():
                outputs = loaded.model(
                    pixel_values=pixel_values.to(loaded.device), pixel_mask=pixel_mask.to(loaded.device)
                )
            scores = processor.post_process_semantic_segmentation(
                outputs, target_sizes=[(height, width)], return_segmentation_scores=True, pixel_mask=pixel_mask
            )[0]["segmentation_scores"]
            if flip:
                scores = scores.flip(-1)
            total = scores if total is None else total.add_(scores)
            del outputs, scores
    # the mean's argmax is the sum's: no division needed
    return total.argmax(0).cpu()


def _mirror(pixel_values, pixel_mask):
    """Mirror the valid part of each padded image left-right, keeping the padding at the right (bottom-right padding
    is what the model was run with)."""
    valid_width = int(pixel_mask[0].bool().any(0).sum())
    values = pixel_values.clone()
    values[..., :valid_width] = pixel_values[..., :valid_width].flip(-1)
    return values, pixel_mask


__all__ = ["DEFAULT_TTA_SCALES", "check_tta_scales", "scaled_size", "segment_tta"]
