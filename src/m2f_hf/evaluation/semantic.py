"""Semantic segmentation metrics (mIoU, fwIoU, pixel and mean accuracy) from a dataset-level confusion matrix."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from .base import Evaluator, as_index_map, as_list, check_same_length, check_same_shape, normalize_id2label
from .convert import panoptic_to_semantic

__all__ = ["SemanticEvaluator"]


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
        # Lookup table from raw value (offset by `_low`) to row / column: class index, `num_classes` for ignore,
        # -1 for unknown values.
        self._low = min(self.class_ids[0], self.ignore_index)
        high = max(self.class_ids[-1], self.ignore_index)
        self._lookup = torch.full((high - self._low + 1,), -1, dtype=torch.int64)
        self._lookup[torch.tensor(self.class_ids) - self._low] = torch.arange(num_classes)
        self._lookup[self.ignore_index - self._low] = num_classes
        super().__init__()

    def reset(self) -> None:
        num_classes = len(self.class_ids)
        self._state = {"confusion": torch.zeros(num_classes, num_classes + 1, dtype=torch.int64)}

    def _to_class_map(self, item: Any, name: str) -> torch.Tensor:
        if isinstance(item, Mapping):
            item = panoptic_to_semantic(item, fill_value=self.ignore_index)
        return as_index_map(item, name)

    def _to_rows(self, values: torch.Tensor, name: str) -> torch.Tensor:
        """Maps raw class ids to confusion-matrix indices, raising on values that are neither class nor ignore."""
        if values.numel() == 0:
            return values
        low, high = values.min().item(), values.max().item()
        if low < self._low or high >= self._low + self._lookup.numel():
            raise ValueError(
                f"`{name}` holds class ids in [{low}, {high}], expected ids of `id2label` "
                f"({self.class_ids[0]}..{self.class_ids[-1]}) or ignore_index {self.ignore_index}."
            )
        rows = self._lookup[values - self._low]
        if bool((rows < 0).any()):
            unknown = torch.unique(values[rows < 0])[:10].tolist()
            raise ValueError(
                f"`{name}` holds class ids {unknown} that are not in `id2label`; expected ids of `id2label` "
                f"or ignore_index {self.ignore_index}."
            )
        return rows

    def process(self, predictions: Any, references: Any) -> None:
        predictions = as_list(predictions, "predictions")
        references = as_list(references, "references")
        check_same_length(predictions, references)
        if not predictions:
            return
        pred_flat, ref_flat = [], []
        for index, (prediction, reference) in enumerate(zip(predictions, references)):
            pred_map = self._to_class_map(prediction, f"predictions[{index}]")
            ref_map = self._to_class_map(reference, f"references[{index}]")
            check_same_shape(pred_map, ref_map, index)
            pred_flat.append(pred_map.reshape(-1))
            ref_flat.append(ref_map.reshape(-1))
        num_classes = len(self.class_ids)
        pred_rows = self._to_rows(torch.cat(pred_flat), "predictions")
        ref_rows = self._to_rows(torch.cat(ref_flat), "references")
        # One bincount for the whole batch over (reference, prediction) pairs; the last reference row holds the
        # ignored pixels and is dropped.
        counts = torch.bincount(ref_rows * (num_classes + 1) + pred_rows, minlength=(num_classes + 1) ** 2)
        self._state["confusion"] += counts.view(num_classes + 1, num_classes + 1)[:num_classes]

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
