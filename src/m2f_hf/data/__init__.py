"""Training data: dataset formats and adapters, augmentations, collate, and a synthetic dataset generator."""

from .dataset import TARGET_IGNORE_INDEX, Collator, SegmentationDataset, encode_target_map, encode_targets
from .formats import (
    DEFAULT_COLUMNS,
    TASKS,
    DataError,
    FormatAdapter,
    LabelSet,
    Sample,
    decode_image,
    find_class_label,
    load_categories_file,
    reference_from_sample,
    resolve_label_set,
    training_channels,
)
from .transforms import (
    LargeScaleJitter,
    PhotometricDistortion,
    ResizeShortestEdge,
    SemanticAugment,
    build_train_transform,
)

__all__ = [
    "DEFAULT_COLUMNS",
    "TASKS",
    "Collator",
    "DataError",
    "TARGET_IGNORE_INDEX",
    "FormatAdapter",
    "LabelSet",
    "LargeScaleJitter",
    "PhotometricDistortion",
    "ResizeShortestEdge",
    "Sample",
    "SegmentationDataset",
    "SemanticAugment",
    "build_train_transform",
    "decode_image",
    "encode_target_map",
    "encode_targets",
    "find_class_label",
    "load_categories_file",
    "reference_from_sample",
    "resolve_label_set",
    "training_channels",
]
