"""Evaluation of segmentation predictions: panoptic quality, COCO mask AP and mIoU.

All evaluators share the protocol ``reset() / process(predictions, references) / evaluate() -> dict`` and read
predictions exactly as the image processor's ``post_process_*_segmentation`` methods return them. See
docs/evaluation.md for the formats and definitions.
"""

from __future__ import annotations

from pathlib import Path

from .base import Evaluator
from .convert import instance_annotation_to_reference, panoptic_to_instance, panoptic_to_semantic, rgb_to_id
from .instance import InstanceEvaluator
from .panoptic import PanopticEvaluator
from .semantic import SemanticEvaluator

__all__ = [
    "Evaluator",
    "InstanceEvaluator",
    "PanopticEvaluator",
    "SemanticEvaluator",
    "instance_annotation_to_reference",
    "metric_path",
    "panoptic_to_instance",
    "panoptic_to_semantic",
    "rgb_to_id",
]

_METRICS_DIR = Path(__file__).resolve().parent.parent / "metrics"
METRIC_NAMES = ("panoptic_quality", "mask_ap", "mean_iou")


def metric_path(name: str) -> str:
    """Path of a metric shipped with the package, for `evaluate.load(metric_path("panoptic_quality"))`.

    Args:
        name (`str`): one of "panoptic_quality", "mask_ap", "mean_iou".
    """
    if name not in METRIC_NAMES:
        raise ValueError(f"`name` is {name!r}, expected one of {list(METRIC_NAMES)}.")
    return str(_METRICS_DIR / name)
