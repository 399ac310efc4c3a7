"""Checkpoint conversion: key-mapping tables between our layout and transformers' or the original Detectron2's."""

from .transformers_native import (
    config_from_transformers,
    config_to_transformers,
    from_transformers_pretrained,
    state_dict_from_transformers,
    state_dict_to_transformers,
)

__all__ = [
    "config_from_transformers",
    "config_to_transformers",
    "from_transformers_pretrained",
    "state_dict_from_transformers",
    "state_dict_to_transformers",
]
