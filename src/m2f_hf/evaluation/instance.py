"""COCO mask AP (AP, AP50, AP75, APs, APm, APl) through pycocotools' `COCOeval`.

AP needs every detection's mask at the end (the score ranking is global), so the evaluator keeps run-length encoded
masks, which are small next to the images, and runs `COCOeval` once in `evaluate()`.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from pycocotools import mask as mask_utils

from .base import (
    Evaluator,
    as_index_map,
    as_list,
    check_same_length,
    check_same_shape,
    normalize_id2label,
    normalize_thing_ids,
)
from .panoptic import PREDICTION_LABEL_KEYS, REFERENCE_LABEL_KEYS
from .segments import SegmentTable, compact_segment_map, parse_segments_info

__all__ = ["InstanceEvaluator", "decode_transformers_rle", "encode_masks"]


def encode_masks(masks: torch.Tensor | np.ndarray) -> list[dict[str, Any]]:
    """COCO RLE of each binary mask.

    Args:
        masks (`torch.Tensor` or `np.ndarray` of shape `(num_masks, H, W)`).

    Returns:
        `list[dict]`: one `{"size": [H, W], "counts": str}` per mask.
    """
    masks = torch.as_tensor(masks)
    return _encode_transposed(masks.transpose(1, 2).contiguous())


def _encode_transposed(masks_nwh: torch.Tensor) -> list[dict[str, Any]]:
    """RLE of masks given as a C-contiguous `(num_masks, W, H)` tensor.

    pycocotools reads `(H, W, N)` arrays in Fortran order, which is exactly the memory layout of a C-contiguous
    `(N, W, H)` array, so the transpose below is free.
    """
    if masks_nwh.shape[0] == 0:
        return []
    array = masks_nwh.detach().cpu().to(torch.uint8).numpy().transpose(2, 1, 0)  # (H, W, N), Fortran-contiguous
    encoded = mask_utils.encode(np.asfortranarray(array))
    for rle in encoded:
        rle["counts"] = rle["counts"].decode("ascii")
    return encoded


def _encode_compact(compact: torch.Tensor, indices: torch.Tensor) -> list[dict[str, Any]]:
    """RLE of the masks ``compact == index`` for each index, read straight from a `(H, W)` index map.

    COCO RLE lists alternating background / foreground run lengths in column-major order. The runs of every value
    come out of one pass over the map (where consecutive pixels differ), so no per-segment binary mask is built.
    """
    height, width = compact.shape
    flat = np.ravel(compact.numpy(), order="F")  # column-major, as COCO RLE reads pixels
    boundaries = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    starts = np.concatenate([[0], boundaries])
    ends = np.concatenate([boundaries, [flat.size]])
    run_values = flat[starts]
    order = np.argsort(run_values, kind="stable")  # runs grouped by value, each group in pixel order
    sorted_values = run_values[order]
    encoded = []
    for index in indices.tolist():
        low, high = np.searchsorted(sorted_values, [index, index + 1])
        run_starts, run_ends = starts[order[low:high]], ends[order[low:high]]
        previous_ends = np.concatenate([[0], run_ends[:-1]])
        counts = np.stack([run_starts - previous_ends, run_ends - run_starts], axis=1).reshape(-1)
        trailing = flat.size - (run_ends[-1] if high > low else 0)
        if trailing > 0:
            counts = np.append(counts, trailing)
        rle = mask_utils.frPyObjects({"counts": counts.tolist(), "size": [height, width]}, height, width)
        rle["counts"] = rle["counts"].decode("ascii")
        encoded.append(rle)
    return encoded


def _areas(rles: list[dict[str, Any]]) -> list[float]:
    return [float(area) for area in mask_utils.area(rles)] if rles else []


def decode_transformers_rle(runs: Sequence[int], height: int, width: int) -> torch.Tensor:
    """Decodes transformers' `binary_mask_to_rle` output (row-major ``[start (1-based), length, ...]``).

    Returns:
        `torch.Tensor` of shape `(height, width)`: bool mask.
    """
    runs_tensor = torch.as_tensor(list(runs), dtype=torch.int64).view(-1, 2)
    starts = runs_tensor[:, 0] - 1
    ends = starts + runs_tensor[:, 1]
    size = height * width
    if runs_tensor.numel() and (starts.min() < 0 or ends.max() > size):
        raise ValueError(f"run-length encoding covers pixels outside a {height}x{width} image.")
    delta = torch.zeros(size + 1, dtype=torch.int64)
    delta.index_add_(0, starts, torch.ones_like(starts))
    delta.index_add_(0, ends, -torch.ones_like(ends))
    return (delta.cumsum(0)[:size] > 0).view(height, width)


class InstanceEvaluator(Evaluator):
    """COCO mask AP over the thing classes, computed by pycocotools' `COCOeval(iouType="segm")`.

    Args:
        id2label (`Mapping[int, str]`): every class id that may appear, with its name.
        thing_ids (`Iterable[int]`): the classes that are scored; segments of other classes are dropped from both
            predictions and references (so panoptic predictions give AP^Th_pan directly).
        max_detections_per_image (`int`, *optional*, defaults to 100): COCO's `maxDets`; the highest-scoring
            detections are kept.

    Inputs of `process` (one list entry per image):
        predictions: as returned by `post_process_instance_segmentation` (or `post_process_panoptic_segmentation`):
            `{"segmentation": ..., "segments_info": [{"id", "label_id", "score"}]}` where segmentation is an
            `(H, W)` id map (unlisted ids <= 0 are background), an `(N, H, W)` stack of binary masks matching
            `segments_info` in order, a list of COCO RLE dicts in the order of `segments_info`, or transformers'
            list of row-major run lists (one per value of the id map, background first).
        references: panoptic-style `{"segmentation": (H, W) segment ids, "segments_info": [{"id", "category_id",
            "iscrowd"}]}`; crowd segments become COCO `iscrowd` regions. Overlapping instances: an optional
            `"segmentation_layers"` `(L, H, W)` map (each segment in one layer) is read instead of `segmentation`.
    """

    def __init__(
        self, id2label: Mapping[int, str], thing_ids: Iterable[int], max_detections_per_image: int = 100
    ) -> None:
        self.id2label = normalize_id2label(id2label)
        self.thing_ids = normalize_thing_ids(thing_ids, self.id2label)
        if not self.thing_ids:
            raise ValueError("`thing_ids` is empty; expected at least one thing class to compute AP on.")
        self.max_detections_per_image = int(max_detections_per_image)
        super().__init__()

    def reset(self) -> None:
        # One record per image: {"height", "width", "references": [...], "detections": [...]} with RLE masks.
        self._state = {"images": []}

    def process(self, predictions: Any, references: Any) -> None:
        predictions = as_list(predictions, "predictions")
        references = as_list(references, "references")
        check_same_length(predictions, references)
        for index, (prediction, reference) in enumerate(zip(predictions, references)):
            for name, item in (("predictions", prediction), ("references", reference)):
                if not isinstance(item, Mapping) or "segmentation" not in item:
                    raise ValueError(f"`{name}[{index}]` must be a dict with 'segmentation' and 'segments_info' keys.")
            ref_map = as_index_map(reference["segmentation"], f"references[{index}]['segmentation']")
            height, width = ref_map.shape
            self._state["images"].append(
                {
                    "height": height,
                    "width": width,
                    "references": self._encode_references(reference, ref_map, index),
                    "detections": self._encode_predictions(prediction, ref_map, index),
                }
            )

    def _encode_references(self, reference: Mapping, ref_map: torch.Tensor, index: int) -> list[dict]:
        table = parse_segments_info(
            reference.get("segments_info"),
            name=f"references[{index}]['segments_info']",
            id2label=self.id2label,
            label_keys=REFERENCE_LABEL_KEYS,
        )
        things = np.flatnonzero(np.isin(table.labels, list(self.thing_ids)))
        layers = reference.get("segmentation_layers")
        if layers is None:
            compact = compact_segment_map(
                ref_map, table.ids, name=f"references[{index}]['segmentation']", strict=False
            )
            rles = _encode_compact(compact, torch.from_numpy(things + 1))
        else:
            rles = self._layered_rles(layers, ref_map, table, things, index)
        # Segments listed in segments_info but absent from the map (e.g. lost in resizing) cannot be found: skip.
        return [
            {"segmentation": rle, "category_id": int(table.labels[k]), "iscrowd": int(table.iscrowd[k]), "area": area}
            for k, rle, area in zip(things, rles, _areas(rles))
            if area > 0
        ]

    def _layered_rles(self, layers: Any, ref_map: torch.Tensor, table: SegmentTable, things: np.ndarray, index: int):
        """RLEs of overlapping reference instances from `(L, H, W)` layers (`reference_from_sample` of a layered
        sample), where the flat `segmentation` has lost the overlaps; each segment lives in one layer."""
        name = f"references[{index}]['segmentation_layers']"
        layers = as_index_map(layers, name, ndim=3)
        if layers.shape[1:] != ref_map.shape:
            raise ValueError(
                f"`{name}` has shape {tuple(layers.shape)}; expected (layers, {ref_map.shape[0]}, {ref_map.shape[1]}), "
                "the size of its 'segmentation'."
            )
        per_layer = [
            _encode_compact(
                compact_segment_map(layer, table.ids, name=name, strict=False), torch.from_numpy(things + 1)
            )
            for layer in layers
        ]
        areas = np.array([_areas(rles) for rles in per_layer]).reshape(len(per_layer), len(things))
        return [per_layer[int(np.argmax(areas[:, k]))][k] for k in range(len(things))]

    def _encode_predictions(self, prediction: Mapping, ref_map: torch.Tensor, index: int) -> list[dict]:
        name = f"predictions[{index}]"
        segments_info = list(prediction.get("segments_info") or [])
        segmentation = prediction["segmentation"]
        if not segments_info or segmentation is None:
            return []
        for segment in segments_info:
            if "score" not in segment:
                raise ValueError(f"`{name}['segments_info']` entry {dict(segment)!r} has no 'score'; AP needs one.")
        if isinstance(segmentation, (list, tuple)):
            rles, table = self._rles_from_list(segmentation, segments_info, ref_map, name)
        else:
            segmentation = as_index_map(segmentation, f"{name}['segmentation']", ndim=segmentation.ndim)
            if segmentation.ndim == 3:  # (num_instances, H, W) binary maps, in the order of segments_info
                check_same_shape(segmentation, ref_map, index, shape_dims=slice(1, None))
                if segmentation.shape[0] != len(segments_info):
                    raise ValueError(
                        f"`{name}['segmentation']` has {segmentation.shape[0]} binary maps but segments_info has "
                        f"{len(segments_info)} entries; expected one map per entry."
                    )
                table = self._ordered_table(segments_info, name)
                rles = encode_masks(segmentation > 0)
            elif segmentation.ndim == 2:  # (H, W) map of segment ids
                check_same_shape(segmentation, ref_map, index)
                table = parse_segments_info(
                    segments_info,
                    name=f"{name}['segments_info']",
                    id2label=self.id2label,
                    label_keys=PREDICTION_LABEL_KEYS,
                )
                compact = compact_segment_map(segmentation, table.ids, name=f"{name}['segmentation']", strict=True)
                rles = _encode_compact(compact, torch.arange(1, len(table) + 1))
            else:
                raise ValueError(
                    f"`{name}['segmentation']` has shape {tuple(segmentation.shape)}; expected (H, W) or (N, H, W)."
                )
        detections = [
            {"segmentation": rle, "category_id": int(table.labels[k]), "score": float(table.scores[k]), "area": area}
            for k, (rle, area) in enumerate(zip(rles, _areas(rles)))
            if int(table.labels[k]) in self.thing_ids and area > 0
        ]
        detections.sort(key=lambda detection: -detection["score"])
        return detections[: self.max_detections_per_image]

    def _ordered_table(self, segments_info: list, name: str) -> SegmentTable:
        """Labels and scores in the order of `segments_info` (binary maps and RLE lists follow that order)."""
        tables = [
            parse_segments_info(
                [segment], name=f"{name}['segments_info']", id2label=self.id2label, label_keys=PREDICTION_LABEL_KEYS
            )
            for segment in segments_info
        ]
        return SegmentTable(
            ids=torch.cat([t.ids for t in tables]),
            labels=np.concatenate([t.labels for t in tables]),
            iscrowd=np.concatenate([t.iscrowd for t in tables]),
            scores=np.concatenate([t.scores for t in tables]),
        )

    def _rles_from_list(self, segmentation: list, segments_info: list, ref_map: torch.Tensor, name: str):
        height, width = ref_map.shape
        table = self._ordered_table(segments_info, name)
        if all(isinstance(item, Mapping) for item in segmentation):  # COCO RLE dicts, one per segment
            if len(segmentation) != len(segments_info):
                raise ValueError(
                    f"`{name}['segmentation']` has {len(segmentation)} RLEs but segments_info has "
                    f"{len(segments_info)} entries; expected one RLE per entry."
                )
            rles = []
            for rle in segmentation:
                if list(rle["size"]) != [height, width]:
                    raise ValueError(
                        f"`{name}['segmentation']` has an RLE of size {list(rle['size'])}, expected the reference "
                        f"size {[height, width]}."
                    )
                if isinstance(rle["counts"], list):  # uncompressed COCO RLE
                    rle = mask_utils.frPyObjects(dict(rle), height, width)
                rles.append(rle)
            return rles, table
        # transformers-style run lists (`binary_mask_to_rle`): one per segment in segments_info order, which is also
        # the order of ids in transformers' `convert_segmentation_to_rle`, where a background (-1) list comes first.
        masks = torch.stack([decode_transformers_rle(runs, height, width) for runs in segmentation])
        if len(segmentation) == len(segments_info) + 1:
            masks = masks[1:]
        elif len(segmentation) != len(segments_info):
            raise ValueError(
                f"`{name}['segmentation']` has {len(segmentation)} run lists for {len(segments_info)} segments; "
                "expected one per segment (plus one for background). Pass `return_binary_maps=True` instead."
            )
        return encode_masks(masks), table

    def evaluate(self) -> dict[str, Any]:
        """Returns AP, AP50, AP75, APs, APm, APl (percent; NaN where COCO reports -1) and `per_class_AP`."""
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

        images, references, detections = [], [], []
        for image_id, record in enumerate(self._state["images"], start=1):
            images.append({"id": image_id, "height": record["height"], "width": record["width"]})
            for target, source in ((references, record["references"]), (detections, record["detections"])):
                for annotation in source:
                    # COCOeval treats annotation id 0 as "unmatched", so ids start at 1.
                    target.append(
                        {
                            **annotation,
                            "id": len(target) + 1,
                            "image_id": image_id,
                            "bbox": mask_utils.toBbox(annotation["segmentation"]).tolist(),
                            "iscrowd": annotation.get("iscrowd", 0),
                        }
                    )
        thing_ids = sorted(self.thing_ids)
        categories = [{"id": class_id, "name": self.id2label[class_id]} for class_id in thing_ids]
        keys = ("AP", "AP50", "AP75", "APs", "APm", "APl")
        if not images:
            return {**dict.fromkeys(keys, float("nan")), "per_class_AP": {}}

        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
            coco_gt, coco_dt = COCO(), COCO()
            coco_gt.dataset = {"images": images, "annotations": references, "categories": categories}
            coco_dt.dataset = {"images": images, "annotations": detections, "categories": categories}
            coco_gt.createIndex()
            coco_dt.createIndex()
            coco_eval = COCOeval(coco_gt, coco_dt, iouType="segm")
            coco_eval.params.catIds = thing_ids
            coco_eval.params.maxDets = [1, 10, self.max_detections_per_image]
            coco_eval.evaluate()
            coco_eval.accumulate()
            coco_eval.summarize()

        def percent(value: float) -> float:
            return 100.0 * float(value) if value >= 0 else float("nan")

        results: dict[str, Any] = {key: percent(value) for key, value in zip(keys, coco_eval.stats[:6])}
        # precision: (iou thresholds, recall points, classes, area ranges, max detections); -1 where undefined.
        precision = coco_eval.eval["precision"][:, :, :, 0, -1]
        per_class = {}
        for k, class_id in enumerate(thing_ids):
            values = precision[:, :, k]
            values = values[values > -1]
            if values.size:
                per_class[self.id2label[class_id]] = 100.0 * float(values.mean())
        results["per_class_AP"] = per_class
        return results
