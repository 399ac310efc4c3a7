"""Checkpoint conversion: key-mapping tables between our layout and transformers' or the original Detectron2's."""

from .datasets_meta import DATASETS, DatasetMeta, get_dataset_meta
from .detectron2 import (
    CheckpointError,
    ShapeMismatchError,
    UnsafePickleError,
    UnsupportedBackboneError,
    config_from_zoo,
    convert_checkpoint,
    load_detectron2_checkpoint,
    state_dict_from_detectron2,
    state_dict_to_detectron2,
)
from .model_zoo import ZOO, ZooEntry, get_zoo_entry
from .transformers_native import (
    config_from_transformers,
    config_to_transformers,
    from_transformers_pretrained,
    state_dict_from_transformers,
    state_dict_to_transformers,
)

__all__ = [
    "DATASETS",
    "ZOO",
    "CheckpointError",
    "DatasetMeta",
    "ShapeMismatchError",
    "UnsafePickleError",
    "UnsupportedBackboneError",
    "ZooEntry",
    "config_from_transformers",
    "config_from_zoo",
    "config_to_transformers",
    "convert_checkpoint",
    "from_transformers_pretrained",
    "get_dataset_meta",
    "get_zoo_entry",
    "load_detectron2_checkpoint",
    "state_dict_from_detectron2",
    "state_dict_from_transformers",
    "state_dict_to_detectron2",
    "state_dict_to_transformers",
]
