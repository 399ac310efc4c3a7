"""Dataset adapters, augmentations, collate and synthetic data: formats decode right, bad data names the sample."""

import json

import numpy as np
import pytest
import torch
from datasets import ClassLabel, Dataset, Features, Image, List, Value

from m2f_hf.data import (
    Collator,
    DataError,
    FormatAdapter,
    LabelSet,
    LargeScaleJitter,
    SegmentationDataset,
    SemanticAugment,
    encode_targets,
    find_class_label,
    load_categories_file,
    resolve_label_set,
)
from m2f_hf.data.formats import Sample
from m2f_hf.data.synthetic import categories, make_synthetic_dataset

NAMES = ["a", "b", "c"]


def semantic_adapter(**kwargs):
    return FormatAdapter(
        task="semantic",
        label_set=LabelSet.from_names(NAMES),
        image_column="image",
        label_column="annotation",
        **kwargs,
    )


def row(label, size=(8, 8)):
    return {"image": np.zeros((*size, 3), np.uint8), "annotation": np.asarray(label, np.uint8)}


def test_semantic_decoding_and_targets():
    label = np.zeros((8, 8), np.uint8)
    label[:4] = 2
    label[:, :2] = 255  # void
    sample = semantic_adapter()(row(label), "train sample 0")
    masks, classes = encode_targets(sample)
    assert sorted(classes.tolist()) == [0, 2]
    assert masks.dtype == torch.bool and masks.sum().item() == 64 - 16
    assert masks[classes.tolist().index(2)].sum().item() == 4 * 6


def test_label_map_size_mismatch_names_the_sample():
    with pytest.raises(DataError, match=r"train sample 7: the 'annotation' map has size \(6, 8\)"):
        semantic_adapter()(row(np.zeros((6, 8))), "train sample 7")


def test_class_outside_label_set_names_the_sample():
    with pytest.raises(DataError, match="validation sample 3: class id 5 is not in the label set"):
        semantic_adapter()(row(np.full((8, 8), 5)), "validation sample 3")


def test_missing_column_and_empty_dataset():
    data = Dataset.from_dict({"image": [np.zeros((4, 4, 3), np.uint8)], "label": [np.zeros((4, 4), np.uint8)]})
    with pytest.raises(DataError, match=r"train split has no column \['annotation'\]"):
        SegmentationDataset(data, semantic_adapter())
    with pytest.raises(DataError, match="train split is empty"):
        SegmentationDataset(data.select([]), semantic_adapter())


def test_errors_surface_through_the_dataset_with_the_index():
    labels = [np.zeros((8, 8), np.uint8), np.full((8, 8), 9, np.uint8)]
    data = Dataset.from_dict({"image": [np.zeros((8, 8, 3), np.uint8)] * 2, "annotation": labels})
    dataset = SegmentationDataset(data, semantic_adapter(), split="train")
    dataset[0]
    with pytest.raises(DataError, match="train sample 1: class id 9"):
        dataset[1]


def test_reduce_labels():
    label = np.array([[0, 1], [2, 255]], np.uint8)
    sample = semantic_adapter(do_reduce_labels=True)(row(label, (2, 2)), "s")
    _, classes = encode_targets(sample)
    assert sorted(classes.tolist()) == [0, 1]


def test_instance_and_panoptic_formats():
    instance = np.zeros((8, 8, 3), np.uint8)
    instance[:4, :4] = [1, 1, 0]
    instance[4:, 4:] = [1, 2, 0]  # same class, another instance
    instance[:4, 4:] = [2, 0, 0]  # instance id 0: void
    adapter = FormatAdapter(
        task="instance", label_set=LabelSet.from_names(NAMES), image_column="image", label_column="annotation"
    )
    masks, classes = encode_targets(adapter(row(instance), "s"))
    assert classes.tolist() == [1, 1] and masks.sum().item() == 32

    # COCO ids 10/20: model indices 0/1; a crowd segment is kept for evaluation but not trained on.
    labels = LabelSet(["x", "y"], [10, 20], [0])
    panoptic = np.zeros((8, 8, 3), np.uint8)
    panoptic[:4] = [7, 1, 0]  # id 7 + 256
    panoptic[4:] = [9, 0, 0]
    info = [{"id": 263, "category_id": 20, "iscrowd": 0}, {"id": 9, "category_id": 10, "iscrowd": 1}]
    adapter = FormatAdapter(
        task="panoptic", label_set=labels, image_column="image", label_column="label", segments_info_column="s"
    )
    sample = adapter({"image": np.zeros((8, 8, 3), np.uint8), "label": panoptic, "s": info}, "s")
    masks, classes = encode_targets(sample)
    assert classes.tolist() == [1] and masks.sum().item() == 32
    with pytest.raises(DataError, match="class id 30"):
        adapter({"image": np.zeros((8, 8, 3), np.uint8), "label": panoptic, "s": [{"id": 9, "category_id": 30}]}, "s")


def test_label_sets(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps([{"id": 5, "name": "p", "isthing": 1}, {"id": 2, "name": "s", "isthing": 0}]))
    labels = load_categories_file(path)
    assert labels.names == ["s", "p"] and labels.dataset_ids == [2, 5] and labels.thing_ids == [1]
    path.write_text(json.dumps({"1": "b", "0": "a"}))
    assert load_categories_file(path).names == ["a", "b"]
    features = Features({"x": List({"category_id": ClassLabel(names=["u", "v"])})})
    assert find_class_label(features).names == ["u", "v"]
    assert resolve_label_set(features, None).names == ["u", "v"]
    with pytest.raises(DataError, match="--categories_file"):
        resolve_label_set(Features({"image": Image(), "n": Value("int64")}), None)


def test_augmentations_keep_image_and_labels_aligned():
    # The image encodes its segment ids in the red channel, so alignment survives any geometric transform.
    segments = torch.randint(0, 4, (40, 50))
    sample = Sample(image=(segments * 60).to(torch.uint8).expand(3, -1, -1).clone(), segments=segments,
                    classes={1: 0, 2: 1, 3: 2}, crowd={})  # fmt: skip
    for seed in range(5):
        generator = torch.Generator().manual_seed(seed)
        out = LargeScaleJitter(crop_size=(32, 32), min_scale=0.1, max_scale=2.0)(sample, generator)
        assert out.image.shape[-2] <= 32 and out.image.shape[-1] <= 32
        assert out.image.shape[-2:] == out.segments.shape
        semantic = SemanticAugment(crop_size=(32, 32), min_scale=0.5, max_scale=2.0, photometric=False)
        out = semantic(sample, torch.Generator().manual_seed(seed))
        assert out.image.shape[-2:] == out.segments.shape and max(out.segments.shape) <= 32
        # nearest resize of ids: away from edges the image's value is 60 * id
        assert set(torch.unique(out.segments).tolist()) <= {0, 1, 2, 3}
    # Same generator seed, same result.
    a = LargeScaleJitter(crop_size=(32, 32), min_scale=0.1, max_scale=2.0)(sample, torch.Generator().manual_seed(3))
    b = LargeScaleJitter(crop_size=(32, 32), min_scale=0.1, max_scale=2.0)(sample, torch.Generator().manual_seed(3))
    assert torch.equal(a.image, b.image) and torch.equal(a.segments, b.segments)


def test_collate_pads_images_and_masks():
    collate = Collator(image_mean=[0.5] * 3, image_std=[0.5] * 3, size_divisor=32)
    items = [
        {"index": 0, "image": torch.zeros(3, 20, 30, dtype=torch.uint8), "mask_labels": torch.ones(2, 20, 30, dtype=torch.bool), "class_labels": torch.tensor([0, 1])},
        {"index": 1, "image": torch.zeros(3, 40, 10, dtype=torch.uint8), "mask_labels": torch.zeros(0, 40, 10, dtype=torch.bool), "class_labels": torch.zeros(0, dtype=torch.long)},
    ]  # fmt: skip
    batch = collate(items)
    assert batch["pixel_values"].shape == (2, 3, 64, 32)
    assert batch["pixel_mask"][0].sum() == 600 and batch["pixel_mask"][1].sum() == 400
    assert batch["mask_labels"][0].shape == (2, 64, 32) and batch["mask_labels"][0].sum() == 1200
    assert batch["pixel_values"][0, 0, 0, 0].item() == pytest.approx(-1.0)


@pytest.mark.parametrize("task", ["semantic", "instance", "panoptic"])
def test_synthetic_dataset_is_deterministic_and_decodes(task):
    data = make_synthetic_dataset(task, num_train=3, num_validation=1, size=48, seed=1)
    again = make_synthetic_dataset(task, num_train=3, num_validation=1, size=48, seed=1)
    other = make_synthetic_dataset(task, num_train=3, num_validation=1, size=48, seed=2)
    first = np.array(data["train"][0]["image"])
    assert np.array_equal(first, np.array(again["train"][0]["image"]))
    assert not np.array_equal(first, np.array(other["train"][0]["image"]))
    cats = categories(task)
    labels = LabelSet(
        [c["name"] for c in cats], [c["id"] for c in cats], [i for i, c in enumerate(cats) if c["isthing"]]
    )
    columns = {
        "semantic": ("annotation", None),
        "instance": ("annotation", None),
        "panoptic": ("label", "segments_info"),
    }[task]
    adapter = FormatAdapter(
        task=task, label_set=labels, image_column="image", label_column=columns[0], segments_info_column=columns[1]
    )
    for index in range(3):
        masks, classes = encode_targets(adapter(data["train"][index], f"train sample {index}"))
        assert len(classes) >= 1 and masks.any(dim=(1, 2)).all()
        if task != "instance":
            assert len(set(classes.tolist()) & {3, 4, 5}) >= 1  # stuff present
