"""Panoptic quality (PQ, SQ, RQ) with the COCO panoptic definition (Kirillov et al., 2019; panopticapi)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import torch

from .base import (
    Evaluator,
    as_index_map,
    as_list,
    check_same_length,
    check_same_shape,
    normalize_id2label,
    normalize_thing_ids,
)
from .segments import compact_segment_map, parse_segments_info

__all__ = ["PanopticEvaluator", "pq_statistics"]

PREDICTION_LABEL_KEYS = ("label_id", "category_id")
REFERENCE_LABEL_KEYS = ("category_id", "label_id")


def pq_statistics(
    overlaps: np.ndarray,
    gt_classes: np.ndarray,
    gt_crowd: np.ndarray,
    pred_classes: np.ndarray,
    *,
    num_classes: int,
    match_threshold: float = 0.5,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-class TP, FP, FN and IoU sum of one image from its segment overlap table.

    Args:
        overlaps (`np.ndarray` of shape `(num_gt + 1, num_pred + 1)`): pixel counts of every (reference segment,
            predicted segment) pair; row 0 is reference void, column 0 is prediction void.
        gt_classes (`np.ndarray` of shape `(num_gt,)`): contiguous class index of each reference segment.
        gt_crowd (`np.ndarray` of shape `(num_gt,)`): crowd flag of each reference segment.
        pred_classes (`np.ndarray` of shape `(num_pred,)`): contiguous class index of each predicted segment.
        num_classes (`int`): length of the returned arrays.
        match_threshold (`float`): IoU above which a pair matches; 0.5 makes matches unique (PQ paper, sec. 4.1).

    Returns:
        `(tp, fp, fn, iou_sum)`, each of shape `(num_classes,)`.
    """
    intersection = overlaps[1:, 1:]  # (num_gt, num_pred)
    gt_area = overlaps[1:, :].sum(1)  # (num_gt,) including pixels the prediction leaves void
    pred_area = overlaps[:, 1:].sum(0)  # (num_pred,) including pixels over reference void
    pred_on_void = overlaps[0, 1:]  # (num_pred,)
    same_class = gt_classes[:, None] == pred_classes[None, :]  # (num_gt, num_pred)

    # The reference's void pixels are not counted against a prediction: they leave the union (COCO panoptic).
    union = gt_area[:, None] + pred_area[None, :] - intersection - pred_on_void[None, :]
    candidate = same_class & ~gt_crowd[:, None] & (intersection > 0)
    iou = np.divide(intersection, union, out=np.zeros(intersection.shape, dtype=np.float64), where=candidate)
    matched = candidate & (iou > match_threshold)
    gt_index, pred_index = np.nonzero(matched)

    tp = np.bincount(gt_classes[gt_index], minlength=num_classes)
    iou_sum = np.bincount(gt_classes[gt_index], weights=iou[gt_index, pred_index], minlength=num_classes)

    gt_unmatched = np.ones(len(gt_classes), dtype=bool)
    gt_unmatched[gt_index] = False
    fn_mask = gt_unmatched & ~gt_crowd & (gt_area > 0)
    fn = np.bincount(gt_classes[fn_mask], minlength=num_classes)

    # An unmatched prediction lying mostly on reference void, or on crowd regions of its class, is not penalised.
    pred_unmatched = np.ones(len(pred_classes), dtype=bool)
    pred_unmatched[pred_index] = False
    on_crowd = np.where(same_class & gt_crowd[:, None], intersection, 0).sum(0)
    ignored = (pred_on_void + on_crowd) > 0.5 * pred_area
    fp_mask = pred_unmatched & (pred_area > 0) & ~ignored
    fp = np.bincount(pred_classes[fp_mask], minlength=num_classes)
    return tp, fp, fn, iou_sum


class PanopticEvaluator(Evaluator):
    """Panoptic quality over a dataset, with the matching, void and crowd rules of the COCO panoptic benchmark.

    A predicted and a reference segment of the same class match when their IoU exceeds 0.5, where the union leaves
    out the pixels that are void in the reference. Unmatched reference segments are false negatives unless crowd;
    unmatched predictions are false positives unless more than half of them lies on reference void or on crowd regions
    of their class. Averages run over the classes with at least one TP, FP or FN.

    Args:
        id2label (`Mapping[int, str]`): every class id that may appear, with its name.
        thing_ids (`Iterable[int]`): the class ids that are things; the others are stuff.

    Inputs of `process` (one list entry per image):
        predictions: `{"segmentation": (H, W) int tensor of segment ids, "segments_info": [{"id", "label_id", ...}]}`
            as returned by `post_process_panoptic_segmentation`; unlisted ids <= 0 are unassigned pixels.
        references: `{"segmentation": (H, W) int tensor of segment ids, "segments_info": [{"id", "category_id",
            "iscrowd"}]}`; 0 and ids absent from `segments_info` are void.
    """

    def __init__(self, id2label: Mapping[int, str], thing_ids: Iterable[int]) -> None:
        self.id2label = normalize_id2label(id2label)
        self.thing_ids = normalize_thing_ids(thing_ids, self.id2label)
        self.class_ids = list(self.id2label)
        self._class_index = {class_id: index for index, class_id in enumerate(self.class_ids)}
        super().__init__()

    def reset(self) -> None:
        num_classes = len(self.class_ids)
        self._state = {
            "tp": torch.zeros(num_classes, dtype=torch.int64),
            "fp": torch.zeros(num_classes, dtype=torch.int64),
            "fn": torch.zeros(num_classes, dtype=torch.int64),
            "iou_sum": torch.zeros(num_classes, dtype=torch.float64),
        }

    def _class_indices(self, labels: np.ndarray) -> np.ndarray:
        return np.array([self._class_index[int(label)] for label in labels], dtype=np.int64)

    def process(self, predictions: Any, references: Any) -> None:
        predictions = as_list(predictions, "predictions")
        references = as_list(references, "references")
        check_same_length(predictions, references)
        num_classes = len(self.class_ids)
        totals = [np.zeros(num_classes, dtype=np.int64) for _ in range(3)] + [np.zeros(num_classes)]
        for index, (prediction, reference) in enumerate(zip(predictions, references)):
            for part, value in zip(totals, self._image_statistics(prediction, reference, index)):
                part += value
        for key, value in zip(("tp", "fp", "fn", "iou_sum"), totals):
            self._state[key] += torch.from_numpy(value)

    def _image_statistics(self, prediction: Mapping, reference: Mapping, index: int):
        for name, item in (("predictions", prediction), ("references", reference)):
            if not isinstance(item, Mapping) or "segmentation" not in item:
                raise ValueError(f"`{name}[{index}]` must be a dict with 'segmentation' and 'segments_info' keys.")
        ref_map = as_index_map(reference["segmentation"], f"references[{index}]['segmentation']")
        pred_map = prediction["segmentation"]
        if pred_map is None:  # transformers documents None for "nothing detected"
            pred_map = torch.zeros_like(ref_map)
        pred_map = as_index_map(pred_map, f"predictions[{index}]['segmentation']")
        check_same_shape(pred_map, ref_map, index)

        pred_table = parse_segments_info(
            prediction.get("segments_info"),
            name=f"predictions[{index}]['segments_info']",
            id2label=self.id2label,
            label_keys=PREDICTION_LABEL_KEYS,
        )
        ref_table = parse_segments_info(
            reference.get("segments_info"),
            name=f"references[{index}]['segments_info']",
            id2label=self.id2label,
            label_keys=REFERENCE_LABEL_KEYS,
        )
        pred_compact = compact_segment_map(
            pred_map, pred_table.ids, name=f"predictions[{index}]['segmentation']", strict=True
        )
        ref_compact = compact_segment_map(
            ref_map, ref_table.ids, name=f"references[{index}]['segmentation']", strict=False
        )
        num_pred, num_gt = len(pred_table) + 1, len(ref_table) + 1
        # All pairwise overlaps in one pass: the pair (gt, pred) is encoded as gt * num_pred + pred.
        overlaps = torch.bincount((ref_compact * num_pred + pred_compact).view(-1), minlength=num_gt * num_pred)
        overlaps = overlaps.view(num_gt, num_pred).numpy()  # (num_gt + 1, num_pred + 1)
        return pq_statistics(
            overlaps,
            self._class_indices(ref_table.labels),
            ref_table.iscrowd,
            self._class_indices(pred_table.labels),
            num_classes=len(self.class_ids),
        )

    def evaluate(self) -> dict[str, Any]:
        """Returns PQ, SQ, RQ (percent) over all, thing (`_th`) and stuff (`_st`) classes, and `per_class`."""
        tp = self._state["tp"].double()
        fp = self._state["fp"].double()
        fn = self._state["fn"].double()
        iou_sum = self._state["iou_sum"]
        denominator = tp + 0.5 * fp + 0.5 * fn
        counted = denominator > 0
        sq = torch.where(tp > 0, iou_sum / tp.clamp(min=1), 0.0)
        rq = torch.where(counted, tp / denominator.clamp(min=1e-12), 0.0)
        pq = sq * rq

        is_thing = torch.tensor([class_id in self.thing_ids for class_id in self.class_ids], dtype=torch.bool)
        results: dict[str, Any] = {}
        for suffix, subset in (("", torch.ones_like(is_thing)), ("_th", is_thing), ("_st", ~is_thing)):
            selected = subset & counted
            for key, values in (("PQ", pq), ("SQ", sq), ("RQ", rq)):
                results[key + suffix] = 100.0 * values[selected].mean().item() if selected.any() else 0.0
        results["per_class"] = {
            self.id2label[class_id]: {
                "PQ": 100.0 * pq[index].item(),
                "SQ": 100.0 * sq[index].item(),
                "RQ": 100.0 * rq[index].item(),
                "TP": int(tp[index].item()),
                "FP": int(fp[index].item()),
                "FN": int(fn[index].item()),
            }
            for index, class_id in enumerate(self.class_ids)
            if counted[index]
        }
        return results
