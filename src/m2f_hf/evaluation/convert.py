"""Small conversions between the prediction / annotation formats the evaluators read.

- `panoptic_to_semantic`: a panoptic prediction (or reference) merged by class, for mIoU_pan.
- `panoptic_to_instance`: the thing segments of a panoptic prediction, for AP^Th_pan.
- `rgb_to_id`, `instance_annotation_to_reference`: dataset annotations (COCO panoptic PNGs, R=class / G=instance
  PNGs) to the panoptic-style reference dict.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import torch

from .base import as_index_map
from .segments import compact_segment_map

__all__ = ["instance_annotation_to_reference", "panoptic_to_instance", "panoptic_to_semantic", "rgb_to_id"]


def _segment_labels(segments_info: Iterable[Mapping[str, Any]] | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Sorted segment ids and their class ids (`label_id`, else `category_id`)."""
    pairs = {}
    for segment in segments_info or []:
        label = segment["label_id"] if "label_id" in segment else segment["category_id"]
        pairs[int(segment["id"])] = int(label)
    ids = sorted(pairs)
    return torch.tensor(ids, dtype=torch.int64), torch.tensor([pairs[i] for i in ids], dtype=torch.int64)


def panoptic_to_semantic(panoptic: Mapping[str, Any], fill_value: int = 255) -> torch.Tensor:
    """Merges a panoptic prediction or reference by class.

    Args:
        panoptic (`dict`): `{"segmentation": (H, W) segment ids, "segments_info": [{"id", "label_id" or
            "category_id", ...}]}`.
        fill_value (`int`, *optional*, defaults to 255): the value of pixels that belong to no listed segment.

    Returns:
        `torch.Tensor` of shape `(H, W)`: int64 class ids.
    """
    segmentation = as_index_map(panoptic["segmentation"], "panoptic['segmentation']")
    ids, labels = _segment_labels(panoptic.get("segments_info"))
    compact = compact_segment_map(segmentation, ids, name="panoptic['segmentation']", strict=False)
    lookup = torch.cat([torch.tensor([fill_value], dtype=torch.int64), labels])  # compact index -> class id
    return lookup[compact]


def panoptic_to_instance(panoptic: Mapping[str, Any], thing_ids: Iterable[int]) -> dict[str, Any]:
    """Keeps the thing segments of a panoptic prediction, in the id-map format of instance post-processing.

    The `InstanceEvaluator` also reads panoptic predictions directly (it drops stuff classes itself); this is for
    callers that want the instance-format dict, e.g. to save it.

    Returns:
        `dict`: `{"segmentation": (H, W) int64 map with -1 outside things, "segments_info": thing segments}`.
    """
    things = {int(class_id) for class_id in thing_ids}
    segmentation = as_index_map(panoptic["segmentation"], "panoptic['segmentation']")
    kept = [
        dict(segment)
        for segment in panoptic.get("segments_info") or []
        if int(segment["label_id"] if "label_id" in segment else segment["category_id"]) in things
    ]
    kept_ids = torch.tensor(sorted({int(segment["id"]) for segment in kept}), dtype=torch.int64)
    keep = torch.isin(segmentation, kept_ids)
    return {"segmentation": torch.where(keep, segmentation, -1), "segments_info": kept}


def rgb_to_id(rgb: Any) -> torch.Tensor:
    """COCO panoptic PNG colour to segment id: ``R + 256 * G + 256**2 * B``.

    Args:
        rgb (`PIL.Image`, `np.ndarray` or `torch.Tensor` of shape `(H, W, 3)`).

    Returns:
        `torch.Tensor` of shape `(H, W)`: int64 segment ids.
    """
    array = torch.as_tensor(np.asarray(rgb)).to(torch.int64)
    if array.ndim != 3 or array.shape[-1] < 3:
        raise ValueError(f"`rgb` must have shape (H, W, 3), got {tuple(array.shape)}.")
    return array[..., 0] + 256 * array[..., 1] + 256 * 256 * array[..., 2]


def instance_annotation_to_reference(
    annotation: Any, *, label_offset: int = 0, background_ids: Iterable[int] = ()
) -> dict[str, Any]:
    """Converts an instance annotation image (class id in R, instance id in G) to a panoptic-style reference.

    Every distinct (class, instance) pair with instance id > 0 becomes one segment; instance id 0 is void.

    Args:
        annotation (`PIL.Image`, `np.ndarray` or `torch.Tensor` of shape `(H, W, >=2)`).
        label_offset (`int`, *optional*, defaults to 0): subtracted from R to give the model's class id (e.g. 1 when
            the dataset keeps 0 for background and the model's classes start at 0).
        background_ids (`Iterable[int]`, *optional*): raw R values that are void whatever the instance id.

    Returns:
        `dict`: `{"segmentation": (H, W) int64 segment ids, "segments_info": [{"id", "category_id", "iscrowd"}]}`.
    """
    array = torch.as_tensor(np.asarray(annotation)).to(torch.int64)
    if array.ndim != 3 or array.shape[-1] < 2:
        raise ValueError(f"`annotation` must have shape (H, W, C) with C >= 2, got {tuple(array.shape)}.")
    semantic, instance = array[..., 0], array[..., 1]
    keep = instance > 0
    background = torch.tensor(sorted(int(i) for i in background_ids), dtype=torch.int64)
    if background.numel():
        keep &= ~torch.isin(semantic, background)
    # Segment id unique per (class, instance); +1 keeps 0 free for void.
    segment = torch.where(keep, semantic * 256 + instance + 1, 0)
    ids = torch.unique(segment)
    ids = ids[ids > 0]
    segments_info = [
        {"id": int(i), "category_id": int((i - 1) // 256) - label_offset, "iscrowd": 0} for i in ids.tolist()
    ]
    return {"segmentation": segment, "segments_info": segments_info}
