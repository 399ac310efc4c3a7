"""COCO `segmentation` fields decoded to masks, and overlapping masks stacked into layers of one segment-id map.

A COCO annotation's `segmentation` is one of:
- polygons: a list of `[x1, y1, x2, y2, ...]` lists (each at least 3 points), in pixel coordinates;
- uncompressed RLE: `{"size": [H, W], "counts": [n0, n1, ...]}` (column-major run lengths, background first), as
  COCO uses for crowd regions;
- compressed RLE: `{"size": [H, W], "counts": "..."}` (a string or bytes), as `pycocotools.mask.encode` writes it.

`pycocotools.mask` does the rasterising, so masks equal what COCO's own tools (and `COCOeval`) see.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from .formats import DataError


def _check_polygons(segmentation: Sequence, where: str) -> list[list[float]]:
    if len(segmentation) == 0:
        raise DataError(f"{where}: 'segmentation' is an empty polygon list; expected at least one polygon.")
    if all(isinstance(value, (int, float)) for value in segmentation):
        segmentation = [segmentation]  # one flat polygon (some exporters drop the outer list)
    polygons = []
    for k, polygon in enumerate(segmentation):
        if not isinstance(polygon, Sequence) or not all(isinstance(v, (int, float)) for v in polygon):
            raise DataError(f"{where}: polygon {k} is {str(polygon)[:80]}; expected a list of numbers x1, y1, ...")
        if len(polygon) % 2:
            raise DataError(f"{where}: polygon {k} has {len(polygon)} coordinates; expected x, y pairs (even).")
        if len(polygon) < 6:
            raise DataError(
                f"{where}: polygon {k} has {len(polygon) // 2} points; a polygon needs at least 3 (6 numbers)."
            )
        polygons.append([float(v) for v in polygon])
    return polygons


def _check_rle(segmentation: Mapping, height: int, width: int, where: str) -> None:
    if "size" not in segmentation or "counts" not in segmentation:
        raise DataError(f"{where}: an RLE 'segmentation' needs 'size' and 'counts', got keys {sorted(segmentation)}.")
    size = [int(s) for s in segmentation["size"]]
    if size != [height, width]:
        raise DataError(
            f"{where}: the RLE has size {size} but its image is {[height, width]} (height, width); an RLE must "
            "have the size of its image."
        )
    counts = segmentation["counts"]
    if isinstance(counts, list):  # uncompressed
        total = sum(int(c) for c in counts)
        if total != height * width:
            raise DataError(
                f"{where}: the uncompressed RLE counts sum to {total} pixels; expected height x width = "
                f"{height * width}."
            )
    elif not isinstance(counts, (str, bytes)):
        raise DataError(f"{where}: RLE 'counts' is a {type(counts).__name__}; expected a list of ints or a string.")


def check_segmentation(segmentation: Any, height: int, width: int, where: str) -> None:
    """Raise a `DataError` naming `where` when `segmentation` cannot be a valid mask of a `height x width` image
    (the checks of [`decode_segmentation`] without rasterising: cheap enough to run on a whole file up front)."""
    if segmentation is None:
        raise DataError(f"{where}: the annotation has no 'segmentation'; expected polygons or an RLE.")
    if isinstance(segmentation, Mapping):
        _check_rle(segmentation, height, width, where)
    elif isinstance(segmentation, Sequence) and not isinstance(segmentation, (str, bytes)):
        _check_polygons(segmentation, where)
    else:
        raise DataError(
            f"{where}: 'segmentation' is a {type(segmentation).__name__}; expected a list of polygons or an RLE dict."
        )


def decode_segmentation(segmentation: Any, height: int, width: int, where: str) -> np.ndarray:
    """The `(height, width)` bool mask of a COCO `segmentation` (polygons, uncompressed or compressed RLE).

    Raises:
        DataError: naming `where`: no segmentation, a polygon of fewer than 3 points, an RLE of another size, ...
    """
    from pycocotools import mask as mask_utils

    check_segmentation(segmentation, height, width, where)
    if not isinstance(segmentation, Mapping):
        rles = mask_utils.frPyObjects(_check_polygons(segmentation, where), height, width)
        return mask_utils.decode(mask_utils.merge(rles)).astype(bool)
    counts = segmentation["counts"]
    if isinstance(counts, list):
        rle = mask_utils.frPyObjects({"size": [height, width], "counts": [int(c) for c in counts]}, height, width)
    else:
        rle = {"size": [height, width], "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
    try:
        return mask_utils.decode(rle).astype(bool)
    except Exception as error:  # pycocotools raises bare errors on corrupt strings
        raise DataError(f"{where}: cannot decode the RLE 'counts' ({error}).") from error


def stack_in_layers(masks: Sequence[np.ndarray], height: int, width: int) -> tuple[torch.Tensor, list[int]]:
    """Segment ids 1..N of `masks` (in order) in an int64 map, one layer while no two masks overlap, else `(L, H, W)`.

    Each mask goes into the first layer where it overlaps no earlier mask, so a later annotation never overwrites an
    earlier one and every mask keeps all its pixels. Returns the map (`(H, W)` when one layer suffices) and each
    mask's layer.
    """
    layers: list[torch.Tensor] = []
    placed = []
    for segment_id, mask in enumerate(masks, start=1):
        mask = torch.from_numpy(np.asarray(mask, dtype=bool))
        index = next((k for k, layer in enumerate(layers) if not bool((layer[mask] != 0).any())), None)
        if index is None:
            layers.append(torch.zeros(height, width, dtype=torch.int64))
            index = len(layers) - 1
        layers[index][mask] = segment_id
        placed.append(index)
    if not layers:
        return torch.zeros(height, width, dtype=torch.int64), placed
    if len(layers) == 1:
        return layers[0], placed
    return torch.stack(layers), placed
