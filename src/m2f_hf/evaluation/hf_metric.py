"""Helpers for the `evaluate` metric scripts shipped in `m2f_hf/metrics/`.

`evaluate` stores inputs in Arrow tables, so tensors come back as nested lists and missing dict keys as None. These
functions rebuild the formats the evaluators read and hold the `datasets` feature specifications.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

__all__ = ["instance_features", "panoptic_features", "semantic_features", "to_map", "to_panoptic"]


def _map_feature():
    import datasets

    return datasets.Sequence(datasets.Sequence(datasets.Value("int64")))


def _prediction_feature():
    import datasets

    return {
        "segmentation": _map_feature(),
        "segments_info": [
            {
                "id": datasets.Value("int64"),
                "label_id": datasets.Value("int64"),
                "score": datasets.Value("float64"),
                "was_fused": datasets.Value("bool"),
            }
        ],
    }


def _reference_feature():
    import datasets

    return {
        "segmentation": _map_feature(),
        "segments_info": [
            {"id": datasets.Value("int64"), "category_id": datasets.Value("int64"), "iscrowd": datasets.Value("int64")}
        ],
    }


def panoptic_features():
    import datasets

    return datasets.Features({"predictions": _prediction_feature(), "references": _reference_feature()})


instance_features = panoptic_features  # id-map instance predictions have the same fields


def semantic_features():
    import datasets

    return datasets.Features({"predictions": _map_feature(), "references": _map_feature()})


def to_map(value: Any) -> torch.Tensor:
    """A nested list / array from an Arrow row back to an int64 `(H, W)` tensor."""
    return torch.as_tensor(value if not isinstance(value, list) else [list(row) for row in value], dtype=torch.int64)


def to_panoptic(row: Mapping[str, Any]) -> dict[str, Any]:
    """A decoded prediction / reference row back to `{"segmentation": tensor, "segments_info": [...]}`."""
    segments = [
        {key: value for key, value in segment.items() if value is not None} for segment in row["segments_info"]
    ]
    return {"segmentation": to_map(row["segmentation"]), "segments_info": segments}
