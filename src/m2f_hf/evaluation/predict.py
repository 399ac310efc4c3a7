"""The post-processing used for evaluation, shared by `examples/train.py` (in-training evaluation) and
`examples/evaluate.py`, so that both report the same figures for the same weights.

The thresholds are the original Mask2Former's evaluation settings: panoptic keeps queries scoring above 0.8 whose
visible part keeps 0.8 of their mask, stuff classes fused; instance keeps every query (COCO AP ranks them all) with
its whole, possibly overlapping mask.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

DEFAULT_THRESHOLDS = {"panoptic": (0.8, 0.8), "instance": (0.0, 0.0)}


def post_process_for_evaluation(
    processor,
    outputs,
    task: str,
    *,
    target_sizes,
    pixel_mask=None,
    stuff_ids: Iterable[int] = (),
    thing_ids: Iterable[int] | None = None,
    threshold: float | None = None,
    overlap_mask_area_threshold: float | None = None,
) -> list:
    """One prediction per image, on the CPU, in the form the evaluators read (see `m2f_hf.evaluation`)."""
    kwargs = {"target_sizes": target_sizes, "pixel_mask": pixel_mask}
    if task == "semantic":
        predictions = processor.post_process_semantic_segmentation(outputs, **kwargs)
        return [prediction.cpu() for prediction in predictions]
    default_threshold, default_overlap = DEFAULT_THRESHOLDS[task]
    kwargs["threshold"] = default_threshold if threshold is None else threshold
    kwargs["overlap_mask_area_threshold"] = (
        default_overlap if overlap_mask_area_threshold is None else overlap_mask_area_threshold
    )
    if task == "instance":
        if thing_ids is not None:
            kwargs["thing_ids"] = list(thing_ids)
        predictions = processor.post_process_instance_segmentation(outputs, return_binary_maps=True, **kwargs)
    else:
        predictions = processor.post_process_panoptic_segmentation(outputs, label_ids_to_fuse=set(stuff_ids), **kwargs)
    return [{k: v.cpu() if torch.is_tensor(v) else v for k, v in p.items()} for p in predictions]
