"""COCO-format datasets (m2f_hf.data.coco): the Samples they give, checked against pycocotools' own COCO API."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from coco_data import disc, make_instances, make_panoptic, rectangle

from m2f_hf.data import DataError
from m2f_hf.data.annotations import decode_segmentation, stack_in_layers
from m2f_hf.data.coco import CocoDataset


def segment_mask(sample, segment_id):
    """The bool mask of one segment of a (H, W) or layered (L, H, W) map."""
    segments = sample.segments if sample.segments.ndim == 3 else sample.segments[None]
    return (segments == segment_id).any(0).numpy()


def test_instances_give_whole_overlapping_masks_crowd_and_contiguous_classes(tmp_path):
    from pycocotools.coco import COCO

    path = make_instances(tmp_path)
    dataset = CocoDataset(path)
    assert dataset.label_set.names == ["disc", "square", "bar"]  # sorted by category id 3, 7, 90
    assert dataset.label_set.dataset_ids == [3, 7, 90]
    assert dataset.label_set.thing_ids == [0, 1, 2]
    assert dataset.image_ids == [11, 12]
    coco = COCO(str(path))

    first = dataset(dataset[0], "train sample 0")
    assert first.image.shape == (3, 48, 64) and first.image.dtype == torch.uint8
    # The disc overlaps the square: two layers; the bar fits into the first one.
    assert first.segments.shape == (2, 48, 64)
    assert first.classes == {1: 1, 2: 0, 3: 2}
    assert first.crowd == {1: False, 2: False, 3: False}
    for segment_id, annotation_id in ((1, 1), (2, 2), (3, 3)):
        expected = coco.annToMask(coco.anns[annotation_id]).astype(bool)
        assert (segment_mask(first, segment_id) == expected).all(), segment_id
    # The later annotation (the disc) did not overwrite the earlier (the square): both keep their overlap.
    overlap = segment_mask(first, 1) & segment_mask(first, 2)
    assert overlap.sum() > 50
    # Every pixel of a layer holds one id; every segment lives in one layer.
    for segment_id in (1, 2, 3):
        assert sum(bool((layer == segment_id).any()) for layer in first.segments) == 1
    # Hand check of the polygon: the rectangle (4, 4)-(30, 30) covers its inside and nothing far away.
    assert segment_mask(first, 1)[10:25, 10:25].all() and not segment_mask(first, 1)[35:, :].any()

    second = dataset(dataset[1], "train sample 1")
    assert second.segments.shape == (40, 40)  # no overlap: one layer, a plain (H, W) map
    assert second.classes == {1: 0, 2: 1}
    assert second.crowd == {1: False, 2: True}
    assert (segment_mask(second, 1) == disc(40, 40, 12, 12, 8)).all()  # the hand-made uncompressed RLE
    crowd = np.zeros((40, 40), bool)
    crowd[25:38, 20:38] = True
    assert (segment_mask(second, 2) == crowd).all()


def test_crowd_regions_are_not_trained_on(tmp_path):
    from m2f_hf.data import encode_targets

    dataset = CocoDataset(make_instances(tmp_path))
    masks, classes = encode_targets(dataset(dataset[1], "train sample 1"))
    assert classes.tolist() == [0]  # the disc only; the crowd square gives no target
    assert (masks[0].numpy() == disc(40, 40, 12, 12, 8)).all()


def test_images_under_image_dir_and_skipped_annotations_are_counted(tmp_path):
    path = make_instances(tmp_path)
    data = json.loads(path.read_text())
    data["annotations"].append({"id": 9, "image_id": 12, "category_id": 3, "segmentation": [], "bbox": [1, 1, 4, 4]})
    data["images"].append({"id": 13, "file_name": "a.png", "height": 48, "width": 64})
    (tmp_path / "other").mkdir()
    moved = tmp_path / "other" / "elsewhere.json"
    moved.write_text(json.dumps(data))
    with pytest.raises(DataError, match=r"image id 11 \('a.png'\): no image file at .*--image_dir"):
        CocoDataset(moved)
    dataset = CocoDataset(moved, image_dir=tmp_path)
    assert dataset.skipped == {
        "annotations without a segmentation": 1,
        "images without annotations (trained as background only)": 1,
    }
    assert "1 annotations without a segmentation" in dataset.summary()
    empty = dataset(dataset[2], "train sample 2")
    assert empty.classes == {} and not empty.segments.any()


def test_categories_without_annotations_are_kept_and_reported(tmp_path):
    # Roboflow's COCO export: category 0 is the dataset's own name (supercategory "none"), with no annotations
    path = make_instances(tmp_path)
    data = json.loads(path.read_text())
    data["categories"].insert(0, {"id": 0, "name": "shapes", "supercategory": "none"})
    exported = tmp_path / "_annotations.coco.json"
    exported.write_text(json.dumps(data))
    dataset = CocoDataset(exported)
    assert dataset.label_set.dataset_ids == [0, 3, 7, 90]  # kept: the ids stay the dataset's
    assert dataset.unannotated_categories() == ["0 'shapes'"]
    assert "1 of 4 categories have no annotation and cannot be learnt" in dataset.unannotated_warning()
    assert CocoDataset(path).unannotated_warning() is None
    panoptic = CocoDataset(make_panoptic(tmp_path), image_dir=tmp_path / "train")
    assert panoptic.unannotated_categories() == []  # segments_info counted


def test_panoptic_official_layout(tmp_path):
    path = make_panoptic(tmp_path)
    dataset = CocoDataset(path, image_dir=tmp_path / "train")
    assert dataset.panoptic
    assert dataset.label_set.names == ["person", "sky"] and dataset.label_set.thing_ids == [0]
    sample = dataset(dataset[0], "train sample 0")
    assert sample.segments.shape == (32, 32)
    assert sample.classes == {5000: 1, 1234567: 0, 777: 0}
    assert sample.crowd == {5000: False, 1234567: False, 777: True}
    assert (sample.segments[:16] == 5000).all() and (sample.segments[20:30, 4:14] == 1234567).all()
    assert (sample.segments[16:20] == 0).all()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d["annotations"][0].update(segmentation=[[1, 1, 5, 5]]), r"image id 11 \('a.png'\).*2 points"),
        (
            lambda d: d["annotations"][1]["segmentation"].update(size=[40, 40]),
            r"image id 11 \('a.png'\).*RLE has size \[40, 40\] but its image is \[48, 64\]",
        ),
        (lambda d: d["annotations"][3].update(category_id=4), r"image id 12 \('b.png'\).*category id 4 is not"),
        (lambda d: d["annotations"][0].update(image_id=99), r"image id 99, which is not in 'images'"),
        (lambda d: d.update(categories=[]), r"'categories' is empty"),
        (lambda d: d.pop("annotations"), r"expected a list 'annotations'"),
    ],
)
def test_bad_annotations_name_the_image_and_what_was_expected(tmp_path, change, message):
    path = make_instances(tmp_path)
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))
    with pytest.raises(DataError, match=message):
        CocoDataset(path)


def test_empty_malformed_and_missing_files(tmp_path):
    path = make_instances(tmp_path)
    path.write_text("")
    with pytest.raises(DataError, match="is empty"):
        CocoDataset(path)
    path.write_text('{"images": [')
    with pytest.raises(DataError, match="not valid JSON"):
        CocoDataset(path)
    with pytest.raises(DataError, match="does not exist"):
        CocoDataset(tmp_path / "nothing.json")
    make_instances(tmp_path)
    (tmp_path / "b.png").unlink()
    with pytest.raises(DataError, match=r"image id 12 \('b.png'\): no image file at .*1 of 2 images are missing"):
        CocoDataset(path)


def test_image_size_must_match_the_json(tmp_path):
    path = make_instances(tmp_path)
    data = json.loads(path.read_text())
    data["images"][1].update(height=41)
    data["annotations"] = data["annotations"][:3]
    path.write_text(json.dumps(data))
    dataset = CocoDataset(path)
    with pytest.raises(DataError, match=r"image id 12 \('b.png'\).*file is 40x40 .* JSON says 41x40"):
        dataset(dataset[1], "train sample 1")


def test_layers_keep_order_and_reuse_free_layers():
    a, b, c = (np.zeros((4, 4), bool) for _ in range(3))
    a[:2, :2] = True
    b[1:3, 1:3] = True  # overlaps a
    c[3, 3] = True  # overlaps nothing: first layer
    segments, layers = stack_in_layers([a, b, c], 4, 4)
    assert layers == [0, 1, 0]
    assert (segments[0] == 1).sum() == 4 and (segments[1] == 2).sum() == 4 and segments[0, 3, 3] == 3


def test_decode_segmentation_checks():
    with pytest.raises(DataError, match="odd|even"):
        decode_segmentation([[1, 2, 3, 4, 5, 6, 7]], 8, 8, "here")
    mask = decode_segmentation(rectangle(0, 0, 8, 8), 8, 8, "a flat polygon")
    assert mask.all()
    with pytest.raises(DataError, match="counts sum to 10 pixels; expected height x width = 64"):
        decode_segmentation({"size": [8, 8], "counts": [4, 6]}, 8, 8, "here")
