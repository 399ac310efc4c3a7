"""The shared inference path (m2f_hf.inference): records, options and model-loading errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

from m2f_hf.inference import ModelLoadError, SegmentOptions, load_segmentation_model, segments_to_records

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def test_records_of_a_panoptic_result_decode_back_with_pycocotools():
    segmentation = torch.zeros(6, 8, dtype=torch.int32)
    segmentation[1:3, 2:7] = 1
    segmentation[4:, :2] = 2
    result = {
        "segmentation": segmentation,
        "segments_info": [
            {"id": 1, "label_id": 3, "score": 0.9, "was_fused": False},
            {"id": 2, "label_id": 0, "score": 0.6, "was_fused": False},
        ],
    }
    records = segments_to_records(result, {0: "zero", 3: "three"})
    assert [r["label"] for r in records] == ["three", "zero"]
    assert records[0]["bbox"] == [2, 1, 5, 2] and records[0]["area"] == 10
    assert records[1]["bbox"] == [0, 4, 2, 2] and records[1]["area"] == 4
    for record, segment_id in zip(records, (1, 2)):
        rle = {"size": record["segmentation"]["size"], "counts": record["segmentation"]["counts"].encode()}
        np.testing.assert_array_equal(mask_utils.decode(rle).astype(bool), (segmentation == segment_id).numpy())


def test_semantic_records_are_one_per_class_without_score():
    class_map = torch.tensor([[0, 0, 2], [2, 2, 2]])
    records = segments_to_records(class_map, {0: "a", 2: "c"})
    assert [(r["label_id"], r["area"], r["score"]) for r in records] == [(0, 2, None), (2, 4, None)]


def test_options_reject_unknown_task_and_out_of_range_thresholds():
    with pytest.raises(ValueError, match="task must be one of"):
        SegmentOptions(task="depth")
    with pytest.raises(ValueError, match="mask_threshold must lie in"):
        SegmentOptions(mask_threshold=1.5)


def test_model_loading_errors_name_the_model(tmp_path):
    with pytest.raises(ModelLoadError, match="folder without config.json"):
        load_segmentation_model(str(tmp_path))
    with pytest.raises(ModelLoadError, match="no such file or directory"):
        load_segmentation_model(str(tmp_path / "missing" / "dir"))
    loaded = load_segmentation_model(None, "cpu")
    assert loaded.is_default_model and loaded.id2label[0] == "circle"
