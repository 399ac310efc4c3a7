"""Test-time augmentation: the image segmented at several scales and mirrored, the predictions averaged.

Semantic segmentation averages the per-pixel class scores of every pass at the image's own resolution (the paper's
multi-scale inference; scores are sum_q p(c | q) * sigmoid(m_q(x)), as in plain inference). Scales are factors of
the processor's resize size (shortest edge 128 for the bundled model: 0.75 gives 96). With one scale of 1.0 and no
flip the result is plain inference's.

Panoptic and instance segmentation ensemble the mask predictions instead (`ensembled_queries`): the passes' queries
are matched to the plain pass's by mask IoU, averaged, and go through the task's plain inference.
"""

from __future__ import annotations

import math
import numbers

# measured on the bundled model's held-out set (benchmarks/bench_tta.py): scales help semantic mIoU; for panoptic
# and instance the flip helps (+0.8 PQ, +3.9 AP) and scales do not (they lower PQ; AP gains no more than the flip's)
DEFAULT_TTA_SCALES = {"semantic": (0.75, 1.0, 1.25), "panoptic": (1.0,), "instance": (1.0,)}


def default_tta_scales(task: str) -> tuple[float, ...]:
    return DEFAULT_TTA_SCALES.get(task, (1.0,))


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
    """`image` with test-time augmentation (`options.scales`, `options.tta_flip`): semantic, the (H, W) int64 class
    map of the averaged class scores; panoptic and instance, the ensembles of `panoptic_tta` and `instance_tta`."""
    import torch

    from .segment import image_size

    if options.task == "panoptic":
        return panoptic_tta(loaded, image, options)
    if options.task == "instance":
        return instance_tta(loaded, image, options)
    processor = loaded.processor
    height, width = image_size(image, processor)
    flips = (False, True) if options.tta_flip else (False,)
    total = None
    for scale in options.scales:
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


def _passes(loaded, image, scales, flip):
    """Per pass, in the order of `scales` (each unmirrored first): (class logits (Q, C+1), mask logits (Q, H, W) at
    the image's size, mirrored): the mask logits of a mirrored pass are yielded as the model saw them, mirrored
    (`mirrored` True), so that the consumer mirrors only what it uses. One pass's full-size logits are alive at a
    time."""
    import torch

    from ..processing.postprocess import upsample_crop_resize
    from .segment import image_size

    processor = loaded.processor
    height, width = image_size(image, processor)
    for scale in scales:
        overrides = {} if scale == 1.0 else {"size": scaled_size(dict(processor.size), scale)}
        inputs = processor(images=[image], return_tensors="pt", **overrides)
        for mirrored in (False, True) if flip else (False,):
            values, mask = inputs["pixel_values"], inputs["pixel_mask"]
            if mirrored:
                values, mask = _mirror(values, mask)
            with torch.inference_mode():
                outputs = loaded.model(pixel_values=values.to(loaded.device), pixel_mask=mask.to(loaded.device))
            mask_logits = outputs.masks_queries_logits.float()
            class_logits = outputs.class_queries_logits[0].float()
            geometry = processor._geometry(mask_logits, [(height, width)], mask.to(mask_logits.device))[0]
            del outputs
            logits = upsample_crop_resize(mask_logits[0], geometry)
            del mask_logits
            yield class_logits, logits, mirrored
            del logits


# the intersection products convert this many mask elements (masks x pixels) to float at a time (32 MB per stack)
_ELEMENTS_PER_BLOCK = 1 << 23


def _intersections(a, b):
    """(Qa, Qb) pixel counts of the intersections of two stacks of bool masks (Qa, H, W) and (Qb, H, W), a block
    of pixels at a time (no float copy of the whole stacks)."""
    import torch

    a, b = a.flatten(1), b.flatten(1)
    # float32 sums of 0/1 stay exact below 2**24 pixels per block; the total is kept in float64
    pixels = min(1 << 24, max(1, _ELEMENTS_PER_BLOCK // max(a.shape[0], b.shape[0], 1)))
    total = torch.zeros(a.shape[0], b.shape[0], dtype=torch.float64, device=a.device)
    for start in range(0, a.shape[1], pixels):
        block = slice(start, start + pixels)
        total += (a[:, block].float() @ b[:, block].float().t()).double()
    return total


def _areas(masks):
    """(Q,) float64 pixel counts of a stack of bool masks (Q, H, W), a block of pixels at a time (a plain `sum`
    converts the whole stack to int64 first)."""
    import torch

    masks = masks.flatten(1)
    pixels = max(1, _ELEMENTS_PER_BLOCK // max(masks.shape[0], 1))
    total = torch.zeros(masks.shape[0], dtype=torch.float64, device=masks.device)
    for start in range(0, masks.shape[1], pixels):
        total += masks[:, start : start + pixels].sum(1)
    return total


def ensembled_queries(loaded, image, options):
    """(class logits (Q, C+1), mask logits (Q, H, W) at the image's size) of an ensemble of passes: every pass's
    queries are matched to the first scale-1 pass's queries by mask IoU (Hungarian, IoU >= 0.5), and matched class
    and mask probabilities are averaged. One pass: that pass's logits unchanged.

    The passes are run one after the other and summed as they come, so the full-size state is the sum of mask
    probabilities, the reference pass's binary masks and one pass's logits (about 10 bytes per query and pixel)."""
    import torch
    from scipy.optimize import linear_sum_assignment

    scales = list(options.scales)
    first = scales.index(1.0) if 1.0 in scales else 0
    passes = _passes(loaded, image, [scales[first], *scales[:first], *scales[first + 1 :]], options.tta_flip)
    class_logits, mask_logits, _ = next(passes)  # scale 1 (or the first scale), not mirrored
    if len(scales) == 1 and not options.tta_flip:
        return class_logits, mask_logits
    probs = class_logits.softmax(-1)
    ref_binary = mask_logits > 0
    ref_area = _areas(ref_binary)
    masks = mask_logits.sigmoid_()  # the reference's logits are not needed any more: its probabilities in place
    del mask_logits
    count = torch.ones(probs.shape[0], device=probs.device)
    for other_class, other_masks, mirrored in passes:
        binary = (other_masks > 0).flip(-1) if mirrored else other_masks > 0
        inter = _intersections(ref_binary, binary)
        iou = inter / (ref_area[:, None] + _areas(binary)[None] - inter).clamp(min=1)
        del binary
        rows, cols = linear_sum_assignment(-iou.cpu().numpy())
        for r, c in zip(rows.tolist(), cols.tolist()):
            if iou[r, c] >= 0.5:
                probs[r] += other_class[c].softmax(-1)
                masks[r] += (other_masks[c].flip(-1) if mirrored else other_masks[c]).sigmoid()
                count[r] += 1
        del other_masks
    class_logits = (probs / count[:, None]).log()
    mask_logits = masks.div_(count[:, None, None]).clamp_(1e-6, 1 - 1e-6).logit_()
    return class_logits, mask_logits


def panoptic_tta(loaded, image, options) -> dict:
    """Panoptic result of the ensemble of `ensembled_queries`, through plain panoptic inference (same thresholds,
    stuff fused)."""
    from ..processing.postprocess import panoptic_inference
    from .segment import stuff_label_ids

    class_logits, mask_logits = ensembled_queries(loaded, image, options)
    segmentation, segments = panoptic_inference(
        class_logits,
        mask_logits,
        _identity_geometry(mask_logits),
        **_thresholds(options),
        label_ids_to_fuse=stuff_label_ids(loaded.model.config),
    )
    return {"segmentation": segmentation.cpu(), "segments_info": segments}


def instance_tta(loaded, image, options) -> dict:
    """Instance result of the ensemble of `ensembled_queries`, through plain instance inference (same thresholds,
    thing classes only unless `keep_all_classes`; whole masks with `full_instance_masks`)."""
    from ..processing.postprocess import instance_inference

    class_logits, mask_logits = ensembled_queries(loaded, image, options)
    thing_ids = None if options.keep_all_classes else getattr(loaded.model.config, "thing_ids", None)
    segmentation, segments, binary_maps = instance_inference(
        class_logits,
        mask_logits,
        _identity_geometry(mask_logits),
        **_thresholds(options),
        thing_ids=frozenset(thing_ids) if thing_ids is not None else None,
    )
    segmentation = binary_maps if options.full_instance_masks else segmentation
    return {"segmentation": segmentation.cpu(), "segments_info": segments}


def _thresholds(options) -> dict:
    """The plain inference thresholds of `options`, for the ensembled queries."""
    return {
        "threshold": options.threshold,
        "mask_threshold": options.mask_threshold,
        "overlap_mask_area_threshold": options.overlap_mask_area_threshold,
    }


def _identity_geometry(mask_logits):
    from ..processing.postprocess import ImageGeometry

    size = tuple(mask_logits.shape[-2:])
    return ImageGeometry(size, size, size)


def _mirror(pixel_values, pixel_mask):
    """Mirror the valid part of each padded image left-right, keeping the padding at the right (bottom-right padding
    is what the model was run with)."""
    valid_width = int(pixel_mask[0].bool().any(0).sum())
    values = pixel_values.clone()
    values[..., :valid_width] = pixel_values[..., :valid_width].flip(-1)
    return values, pixel_mask


__all__ = [
    "DEFAULT_TTA_SCALES",
    "check_tta_scales",
    "default_tta_scales",
    "ensembled_queries",
    "instance_tta",
    "panoptic_tta",
    "scaled_size",
    "segment_tta",
]
