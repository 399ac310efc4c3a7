"""Hub-style datasets with an `objects` column (m2f_hf.data.objects): Samples, COCO ground truth, train/evaluate."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from coco_data import rectangle
from PIL import Image

from m2f_hf.data import DataError
from m2f_hf.data.objects import ObjectsAdapter, ObjectsSplit, objects_label_set

ROOT = Path(__file__).resolve().parents[2]


def polygon_rows():
    """Two rows in the common Hub layout: objects as a Sequence of {bbox, category (ClassLabel), segmentation}."""
    from datasets import ClassLabel, Dataset, Features, List, Value
    from datasets import Image as ImageFeature

    features = Features(
        {
            "image": ImageFeature(),
            "objects": List(
                {
                    "bbox": List(Value("float32")),
                    "category": ClassLabel(names=["cat", "dog"]),
                    "segmentation": List(List(Value("float32"))),
                    "iscrowd": Value("int64"),
                }
            ),
        }
    )
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (32, 40, 3), dtype=np.uint8)) for _ in range(2)]
    objects = [
        [  # two overlapping objects
            {"bbox": [2, 2, 18, 18], "category": 1, "segmentation": [rectangle(2, 2, 20, 20)], "iscrowd": 0},
            {"bbox": [10, 10, 20, 16], "category": 0, "segmentation": [rectangle(10, 10, 30, 26)], "iscrowd": 0},
        ],
        [{"bbox": [0, 0, 8, 8], "category": 0, "segmentation": [rectangle(0, 0, 8, 8)], "iscrowd": 1}],
    ]
    return Dataset.from_dict({"image": images, "objects": objects}, features=features)


def test_objects_rows_give_layered_samples_and_a_coco_ground_truth():
    from pycocotools import mask as mask_utils
    from pycocotools.coco import COCO

    rows = polygon_rows()
    labels = objects_label_set(rows.features, "objects", None, None)
    assert labels.names == ["cat", "dog"]
    adapter = ObjectsAdapter(labels)
    sample = adapter(rows[0], "train sample 0")
    assert sample.segments.shape == (2, 32, 40)  # the overlap keeps both objects whole
    assert sample.classes == {1: 1, 2: 0} and sample.crowd == {1: False, 2: False}
    for segment_id, polygon in ((1, rectangle(2, 2, 20, 20)), (2, rectangle(10, 10, 30, 26))):
        expected = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects([polygon], 32, 40))).astype(bool)
        assert ((sample.segments == segment_id).any(0).numpy() == expected).all()
    assert adapter(rows[1], "train sample 1").crowd == {1: True}

    truth = ObjectsSplit(rows, adapter).ground_truth
    coco = COCO()
    coco.dataset = truth
    coco.createIndex()
    assert [image["id"] for image in truth["images"]] == [1, 2]
    assert [a["category_id"] for a in truth["annotations"]] == [1, 0, 0]
    assert [a["iscrowd"] for a in truth["annotations"]] == [0, 0, 1]
    assert coco.annToMask(truth["annotations"][0]).sum() == (sample.segments == 1).sum()


def test_objects_without_masks_or_with_unknown_classes_are_errors():
    adapter = ObjectsAdapter(objects_label_set(polygon_rows().features, "objects", None, None))
    image = Image.new("RGB", (8, 8))
    with pytest.raises(DataError, match=r"train sample 3, object 0: expected a category .* boxes alone"):
        adapter({"image": image, "objects": {"bbox": [[0, 0, 2, 2]], "category": [0]}}, "train sample 3")
    with pytest.raises(DataError, match=r"object 0: category 5 is not among the classes \[0, 1\]"):
        adapter({"image": image, "objects": [{"category": 5, "segmentation": [rectangle(0, 0, 4, 4)]}]}, "s")
    with pytest.raises(DataError, match="2 points"):
        adapter({"image": image, "objects": [{"category": 0, "segmentation": [[0, 0, 4, 4]]}]}, "s")


def test_objects_dataset_trains_and_evaluates_with_rle(tmp_path):
    """An objects dataset with RLE masks on disk (save_to_disk): train.py trains, evaluate.py writes results."""
    from datasets import ClassLabel, Dataset, DatasetDict, Features, List, Value
    from datasets import Image as ImageFeature

    from m2f_hf.data.synthetic import save_synthetic_coco
    from m2f_hf.testing import tiny_config

    splits = {}
    for split, path in zip(
        ("train", "validation"), save_synthetic_coco(str(tmp_path / "coco"), num_train=6, num_validation=3)
    ):
        data = json.loads(Path(path).read_text())
        order = {c["id"]: k for k, c in enumerate(data["categories"])}
        rows = {"image": [], "objects": []}
        for image in data["images"]:
            rows["image"].append(Image.open(tmp_path / "coco" / image["file_name"]).convert("RGB"))
            rows["objects"].append(
                [
                    {"category": order[a["category_id"]], "segmentation": a["segmentation"], "bbox": a["bbox"]}
                    for a in data["annotations"]
                    if a["image_id"] == image["id"]
                ]
            )
        features = Features(
            {
                "image": ImageFeature(),
                "objects": List(
                    {
                        "category": ClassLabel(names=[c["name"] for c in data["categories"]]),
                        "segmentation": {"size": List(Value("int64")), "counts": Value("string")},
                        "bbox": List(Value("float32")),
                    }
                ),
            }
        )
        splits[split] = Dataset.from_dict(rows, features=features)
    DatasetDict(splits).save_to_disk(str(tmp_path / "objects"))
    config = tmp_path / "tiny3.json"
    tiny_config(num_labels=3).to_json_file(str(config))
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    train = [
        sys.executable, str(ROOT / "examples" / "train.py"), "--task", "instance",
        "--dataset_name", str(tmp_path / "objects"), "--model_name_or_path", str(config),
        "--output_dir", str(tmp_path / "out"), "--max_train_steps", "2", "--crop_size", "64", "--eval_size", "64",
    ]  # fmt: skip
    result = subprocess.run(train, capture_output=True, text=True, env=env, cwd=ROOT, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "step 2 evaluation: AP " in result.stdout
    saved = json.loads((tmp_path / "out" / "config.json").read_text())
    assert saved["dataset_category_ids"] == [0, 1, 2]
    evaluate = [
        sys.executable, str(ROOT / "examples" / "evaluate.py"), "--model_name_or_path", str(tmp_path / "out"),
        "--dataset_name", str(tmp_path / "objects"), "--task", "instance",
        "--output_file", str(tmp_path / "m.json"), "--predictions_file", str(tmp_path / "p.json"),
    ]  # fmt: skip
    result = subprocess.run(evaluate, capture_output=True, text=True, env=env, cwd=ROOT, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    predictions = json.loads((tmp_path / "p.json").read_text())
    assert predictions and {r["image_id"] for r in predictions} <= {1, 2, 3}
    torch.set_num_threads(torch.get_num_threads())
