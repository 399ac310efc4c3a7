"""Reading `segments_info` lists and turning segment-id maps into compact indices.

Segment-id maps (panoptic post-processing, COCO panoptic PNGs) hold arbitrary ids (up to 256**3 for COCO). Every
metric here works on compact indices instead: ``0`` for void and ``k + 1`` for the k-th listed segment, so that the
pairwise overlaps of two maps come out of a single `bincount`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

__all__ = ["SegmentTable", "compact_segment_map", "parse_segments_info"]

# Above this id range, `compact_segment_map` searches sorted ids instead of building a lookup table.
LOOKUP_TABLE_LIMIT = 1 << 16


@dataclass
class SegmentTable:
    """The segments of one image, sorted by id.

    Attributes:
        ids (`torch.Tensor` of shape `(num_segments,)`): segment ids, int64, ascending.
        labels (`np.ndarray` of shape `(num_segments,)`): class id of each segment.
        iscrowd (`np.ndarray` of shape `(num_segments,)`): bool, crowd flag (always False for predictions).
        scores (`np.ndarray` of shape `(num_segments,)`): float64 confidence, NaN where none was given.
    """

    ids: torch.Tensor
    labels: np.ndarray
    iscrowd: np.ndarray
    scores: np.ndarray

    def __len__(self) -> int:
        return int(self.ids.numel())


def _label_of(segment: Mapping[str, Any], label_keys: Sequence[str], name: str) -> int:
    for key in label_keys:
        if key in segment:
            return int(segment[key])
    raise ValueError(f"`{name}` entry {dict(segment)!r} has no class id; expected one of the keys {list(label_keys)}.")


def parse_segments_info(
    segments_info: Sequence[Mapping[str, Any]] | None,
    *,
    name: str,
    id2label: Mapping[int, str],
    label_keys: Sequence[str],
) -> SegmentTable:
    """Validates `segments_info` and returns its segments sorted by id.

    The same id may appear several times with the same class: transformers' panoptic post-processing appends one
    entry per query fused into a stuff segment. The same id with two different classes is an error.
    """
    by_id: dict[int, tuple[int, bool, float]] = {}
    for segment in segments_info or []:
        if not isinstance(segment, Mapping) or "id" not in segment:
            raise ValueError(f"`{name}` entries must be dicts with an 'id' key, got {segment!r}.")
        segment_id = int(segment["id"])
        label = _label_of(segment, label_keys, name)
        if label not in id2label:
            raise ValueError(
                f"`{name}` has segment {segment_id} with class id {label}, expected one of the class ids "
                f"of `id2label` ({sorted(id2label)})."
            )
        entry = (label, bool(segment.get("iscrowd", 0)), float(segment.get("score", float("nan"))))
        previous = by_id.get(segment_id)
        if previous is not None and previous[0] != label:
            raise ValueError(
                f"`{name}` lists segment {segment_id} twice with different class ids ({previous[0]} and {label}); "
                "expected one class per segment id."
            )
        if previous is None or entry[2] > previous[2]:
            by_id[segment_id] = entry
    ordered = sorted(by_id.items())
    return SegmentTable(
        ids=torch.tensor([segment_id for segment_id, _ in ordered], dtype=torch.int64),
        labels=np.array([entry[0] for _, entry in ordered], dtype=np.int64),
        iscrowd=np.array([entry[1] for _, entry in ordered], dtype=bool),
        scores=np.array([entry[2] for _, entry in ordered], dtype=np.float64),
    )


def compact_segment_map(segmentation: torch.Tensor, ids: torch.Tensor, *, name: str, strict: bool) -> torch.Tensor:
    """Maps a segment-id map to compact indices: 0 for void, ``k + 1`` where the pixel holds ``ids[k]``.

    Args:
        segmentation (`torch.Tensor` of any shape): integer segment ids.
        ids (`torch.Tensor` of shape `(num_segments,)`): the listed segment ids, ascending.
        name (`str`): the argument named in errors.
        strict (`bool`): if True a positive id that is not in `ids` is an error (a prediction must describe all
            its segments); if False it is void (the reference convention). Ids <= 0 that are not listed are void in
            both cases: transformers marks unassigned pixels with 0 (panoptic) or -1 (instance).

    Returns:
        `torch.Tensor` of the shape of `segmentation`: int32 compact indices in `[0, num_segments]`.
    """
    num_segments = ids.numel()
    if segmentation.numel() == 0:
        return torch.zeros_like(segmentation, dtype=torch.int32)
    low, high = (value.item() for value in torch.aminmax(segmentation))
    if high - low < LOOKUP_TABLE_LIMIT:
        # Small id range (predictions, most datasets): one gather through a table indexed by id - low. Unlisted
        # positive ids go to the extra index num_segments + 1 so that strict mode can find them afterwards.
        table = torch.zeros(high - low + 1, dtype=torch.int32)
        if strict and high > 0:
            table[max(1, low) - low :] = num_segments + 1
        inside = (ids >= low) & (ids <= high)
        table[ids[inside] - low] = torch.arange(1, num_segments + 1, dtype=torch.int32)[inside]
        index = segmentation - low if low != 0 else segmentation
        if index.dtype not in (torch.int32, torch.int64):
            index = index.int()  # uint8 indices would be read as a boolean mask
        compact = table[index]
        unlisted = compact > num_segments if strict else None
    else:
        # Large ids (COCO panoptic PNGs encode ids as R + 256 G + 256^2 B): binary search in the sorted ids.
        flat = segmentation.reshape(-1).long()
        if num_segments == 0:
            compact = torch.zeros_like(flat, dtype=torch.int32)
            hit = torch.zeros_like(flat, dtype=torch.bool)
        else:
            position = torch.searchsorted(ids, flat).clamp_(max=num_segments - 1)
            hit = ids[position] == flat
            compact = torch.where(hit, position + 1, 0).int()
        compact = compact.view(segmentation.shape)
        unlisted = (~hit & (flat > 0)).view(segmentation.shape) if strict else None
    if strict and bool(unlisted.any()):
        missing = torch.unique(segmentation[unlisted])[:10].tolist()
        raise ValueError(
            f"`{name}` holds segment ids {missing} that are not in its segments_info (listed ids: "
            f"{ids.tolist()[:20]}); expected every positive id in the map to be described in segments_info."
        )
    return compact
