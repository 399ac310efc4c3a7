"""Semantic segmentation metrics (mIoU, fwIoU, pixel and mean accuracy) from a dataset-level confusion matrix."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from .base import Evaluator, as_index_map, as_list, check_same_length, check_same_shape, normalize_id2label
from .convert import panoptic_to_semantic

__all__ = ["SemanticEvaluator"]

# Id ranges up to this size are counted as raw (reference, prediction) value pairs: a table of at most 1M bins.
DIRECT_COUNT_LIMIT = 1024


class SemanticEvaluator(Evaluator):
    """mIoU and friends, accumulated in one `(num_classes, num_classes + 1)` confusion matrix over the dataset.

    Reference pixels equal to `ignore_index` are left out. A prediction pixel equal to `ignore_index` (e.g. a void
    pixel of a panoptic prediction merged by class, for mIoU_pan) counts as a miss for the reference class and as a
    prediction of no class: that is the extra confusion column.

    Args:
        id2label (`Mapping[int, str]`): every class id that may appear, with its name.
        ignore_index (`int`, *optional*, defaults to 255): the reference value of unlabelled pixels.

    Inputs of `process` (one list entry per image, or a `(batch, H, W)` tensor):
        predictions: `(H, W)` int class-id maps as returned by `post_process_semantic_segmentation`, or panoptic
            predictions (`{"segmentation", "segments_info"}` dicts), merged by class.
        references: `(H, W)` int class-id maps, or panoptic-style reference dicts (void becomes `ignore_index`).
    """

    def __init__(self, id2label: Mapping[int, str], ignore_index: int = 255) -> None:
        self.id2label = normalize_id2label(id2label)
        self.ignore_index = int(ignore_index)
        if self.ignore_index in self.id2label:
            raise ValueError(
                f"`ignore_index` is {self.ignore_index}, which is also a class id of `id2label`; "
                "expected a value that is not a class."
            )
        self.class_ids = list(self.id2label)
        num_classes = len(self.class_ids)
        # Pixels are counted by raw value pairs over [low, high] (`code = value - low`), then folded into classes.
        # `_code_to_row` maps a code to its confusion index: the class index, `num_classes` for ignore_index and
        # `num_classes + 1` for values that are neither (reported as errors).
        self._low = min(self.class_ids[0], self.ignore_index)
        self._high = max(self.class_ids[-1], self.ignore_index)
        num_codes = self._high - self._low + 1
        self._code_to_row = torch.full((num_codes,), num_classes + 1, dtype=torch.int64)
        self._code_to_row[torch.tensor(self.class_ids) - self._low] = torch.arange(num_classes)
        self._code_to_row[self.ignore_index - self._low] = num_classes
        # With few distinct values the raw pairs are counted directly (no per-pixel lookup); with a wide id range
        # (e.g. ignore_index 65535) pixels go through `_code_to_row` first to keep the count table small.
        self._direct = num_codes <= DIRECT_COUNT_LIMIT
        self._code_to_row32 = self._code_to_row.to(torch.int32)
        super().__init__()

    def reset(self) -> None:
        num_classes = len(self.class_ids)
        self._state = {"confusion": torch.zeros(num_classes, num_classes + 1, dtype=torch.int64)}

    def _to_class_map(self, item: Any, name: str) -> torch.Tensor:
        if isinstance(item, Mapping):
            item = panoptic_to_semantic(item, fill_value=self.ignore_index)
        return as_index_map(item, name)

    def _codes(self, values: torch.Tensor, name: str) -> torch.Tensor:
        """Per-pixel codes (int32), checking that every value lies in [low, high]."""
        low, high = (value.item() for value in torch.aminmax(values))
        if low < self._low or high > self._high:
            raise ValueError(
                f"`{name}` holds class ids in [{low}, {high}], expected ids of `id2label` "
                f"({self.class_ids[0]}..{self.class_ids[-1]}) or ignore_index {self.ignore_index}."
            )
        codes = values.reshape(-1).to(torch.int32)
        if self._low != 0:
            codes = codes - self._low
        return codes if self._direct else self._code_to_row32[codes]

    def process(self, predictions: Any, references: Any) -> None:
        predictions = as_list(predictions, "predictions")
        references = as_list(references, "references")
        check_same_length(predictions, references)
        num_classes = len(self.class_ids)
        rows = self._code_to_row if self._direct else torch.arange(num_classes + 2)
        num_codes = rows.numel()
        counts = torch.zeros(num_codes * num_codes, dtype=torch.int64)
        for index, (prediction, reference) in enumerate(zip(predictions, references)):
            pred_map = self._to_class_map(prediction, f"predictions[{index}]")
            ref_map = self._to_class_map(reference, f"references[{index}]")
            check_same_shape(pred_map, ref_map, index)
            if ref_map.numel() == 0:
                continue
            pred_codes = self._codes(pred_map, f"predictions[{index}]")
            ref_codes = self._codes(ref_map, f"references[{index}]")
            # One bincount over (reference, prediction) code pairs; int32 keeps the pass memory-light.
            counts += torch.bincount(ref_codes * num_codes + pred_codes, minlength=num_codes * num_codes)
        counts = counts.view(num_codes, num_codes)  # (reference code, prediction code)
        for axis, name in ((1, "references"), (0, "predictions")):
            unknown = (counts.sum(axis) > 0) & (rows > num_classes)
            if unknown.any():
                values = self._unknown_values(predictions if axis == 0 else references, name)
                raise ValueError(
                    f"`{name}` holds class ids {values} that are not in `id2label`; expected ids of `id2label` "
                    f"or ignore_index {self.ignore_index}."
                )
        # Fold codes into (num_classes + 2)^2 confusion indices; the ignore row and the unknown row/column are
        # dropped, the ignore column stays (predictions of no class).
        folded = torch.zeros(num_classes + 2, num_classes + 2, dtype=torch.int64)
        folded.index_put_((rows[:, None].expand_as(counts), rows[None, :].expand_as(counts)), counts, accumulate=True)
        self._state["confusion"] += folded[:num_classes, : num_classes + 1]

    def _unknown_values(self, items: list, name: str) -> list[int]:
        known = torch.tensor([*self.class_ids, self.ignore_index])
        found: set[int] = set()
        for index, item in enumerate(items):
            values = torch.unique(self._to_class_map(item, f"{name}[{index}]"))
            found.update(values[~torch.isin(values, known)].tolist())
        return sorted(found)[:10]

    def evaluate(self) -> dict[str, Any]:
        """Returns `mIoU`, `fwIoU`, `pixel_accuracy`, `mean_accuracy` (percent) and `per_class_IoU`.

        Classes that appear neither in the references nor in the predictions are left out of the means and of
        `per_class_IoU`; accuracies average over the classes present in the references.
        """
        confusion = self._state["confusion"].double()
        num_classes = len(self.class_ids)
        true_positive = confusion.diagonal()
        reference_count = confusion.sum(1)  # includes pixels predicted as ignore
        predicted_count = confusion[:, :num_classes].sum(0)
        union = reference_count + predicted_count - true_positive
        valid = union > 0
        present = reference_count > 0
        iou = torch.where(valid, true_positive / union.clamp(min=1), 0.0)
        accuracy = torch.where(present, true_positive / reference_count.clamp(min=1), 0.0)
        total = reference_count.sum()

        def mean(values: torch.Tensor, mask: torch.Tensor) -> float:
            return 100.0 * values[mask].mean().item() if mask.any() else 0.0

        return {
            "mIoU": mean(iou, valid),
            "fwIoU": 100.0 * (iou * reference_count).sum().item() / total.item() if total > 0 else 0.0,
            "pixel_accuracy": 100.0 * true_positive.sum().item() / total.item() if total > 0 else 0.0,
            "mean_accuracy": mean(accuracy, present),
            "per_class_IoU": {
                self.id2label[class_id]: 100.0 * iou[index].item()
                for index, class_id in enumerate(self.class_ids)
                if valid[index]
            },
        }
