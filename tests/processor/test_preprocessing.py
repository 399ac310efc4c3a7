"""Pre-processing and label encoding: equality with transformers' processor, input formats, round trips, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import Mask2FormerImageProcessor

from m2f_hf.image_processing_m2f import M2FImageProcessor

SIZE = {"shortest_edge": 64, "longest_edge": 100}
SIZES = [(97, 130), (64, 48), (97, 130), (120, 77)]


@pytest.fixture
def images():
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in SIZES]


@pytest.fixture
def semantic_maps():
    rng = np.random.default_rng(1)
    return [rng.integers(0, 6, (h, w), dtype=np.uint8) for h, w in SIZES]


def _transformers_like_ours(ours_output, **kwargs):
    """transformers' processor configured to do what ours does in "pad" mode: no stretching, same padded size."""
    height, width = ours_output["pixel_values"].shape[-2:]
    return Mask2FormerImageProcessor(size=SIZE, size_divisor=0, pad_size={"height": height, "width": width}, **kwargs)


def _assert_labels_equal(ours, theirs):
    # transformers fills the padding of binary target masks with ignore_index; ours leaves it 0 like Detectron2
    for i in range(len(ours["mask_labels"])):
        valid = ours["pixel_mask"][i].bool()
        assert ours["mask_labels"][i].dtype == torch.float32
        assert torch.equal(ours["mask_labels"][i][:, valid], theirs["mask_labels"][i][:, valid])
        assert torch.equal(ours["mask_labels"][i][:, ~valid], torch.zeros_like(ours["mask_labels"][i][:, ~valid]))
        assert ours["class_labels"][i].dtype == torch.int64
        assert torch.equal(ours["class_labels"][i], theirs["class_labels"][i])


def test_stretch_mode_equals_transformers(images, semantic_maps):
    ours = M2FImageProcessor(size=SIZE, size_divisor_mode="stretch", ignore_index=255)
    theirs = Mask2FormerImageProcessor(size=SIZE, ignore_index=255)
    a = ours(images, segmentation_maps=semantic_maps, return_tensors="pt")
    b = theirs(images, segmentation_maps=semantic_maps, return_tensors="pt")
    assert torch.equal(a["pixel_values"], b["pixel_values"])
    assert torch.equal(a["pixel_mask"], b["pixel_mask"])
    _assert_labels_equal(a, b)


@pytest.mark.parametrize("kind", ["pil", "numpy_chw", "torch_float"])
def test_pad_mode_equals_transformers_without_stretching(images, semantic_maps, kind):
    if kind == "pil":
        inputs = [Image.fromarray(image) for image in images]
    elif kind == "numpy_chw":
        inputs = [np.ascontiguousarray(image.transpose(2, 0, 1)) for image in images]
    else:
        inputs = [torch.from_numpy(image).permute(2, 0, 1).float() / 255 for image in images]
    ours = M2FImageProcessor(size=SIZE, ignore_index=255, do_rescale=kind != "torch_float")
    a = ours(inputs, segmentation_maps=semantic_maps)
    assert a["pixel_values"].shape[-2] % 32 == 0 and a["pixel_values"].shape[-1] % 32 == 0
    theirs = _transformers_like_ours(a, ignore_index=255, do_rescale=kind != "torch_float")
    b = theirs(inputs, segmentation_maps=semantic_maps, return_tensors="pt")
    assert torch.equal(a["pixel_values"], b["pixel_values"])
    assert torch.equal(a["pixel_mask"], b["pixel_mask"])
    _assert_labels_equal(a, b)


def test_pad_mode_keeps_aspect_ratio_and_pads_to_divisor():
    image = np.zeros((480, 640, 3), dtype=np.uint8)
    out = M2FImageProcessor(size={"shortest_edge": 512, "longest_edge": 2048})(image)
    assert tuple(out["pixel_values"].shape) == (1, 3, 512, 704)
    assert out["pixel_mask"][0].sum(0).max() == 512 and out["pixel_mask"][0].sum(1).max() == 682
    stretched = M2FImageProcessor(size={"shortest_edge": 512, "longest_edge": 2048}, size_divisor_mode="stretch")(
        image
    )
    assert tuple(stretched["pixel_values"].shape) == (1, 3, 512, 704) and stretched["pixel_mask"].all()


@pytest.mark.parametrize("reduce", [False, True])
def test_instance_maps_equal_transformers(images, reduce):
    rng = np.random.default_rng(2)
    maps = [rng.integers(1 if reduce else 0, 5, (h, w), dtype=np.int32) for h, w in SIZES]
    mapping = {0: 7, 1: 3, 2: 3, 3: 9, 4: 1, 5: 2}
    kwargs = {"ignore_index": 255, "do_reduce_labels": reduce}
    a = M2FImageProcessor(size=SIZE, **kwargs)(images, segmentation_maps=maps, instance_id_to_semantic_id=mapping)
    b = _transformers_like_ours(a, **kwargs)(
        images, segmentation_maps=maps, instance_id_to_semantic_id=mapping, return_tensors="pt"
    )
    _assert_labels_equal(a, b)


def test_reduce_labels_equal_transformers(images, semantic_maps):
    kwargs = {"ignore_index": 255, "do_reduce_labels": True}
    a = M2FImageProcessor(size=SIZE, **kwargs)(images, segmentation_maps=semantic_maps)
    b = _transformers_like_ours(a, **kwargs)(images, segmentation_maps=semantic_maps, return_tensors="pt")
    _assert_labels_equal(a, b)
    assert all(0 <= int(c.min()) and int(c.max()) <= 4 for c in a["class_labels"])  # labels 1..5 became 0..4


def test_coco_panoptic_labels_ignore_crowd_and_void():
    ids = np.zeros((40, 60), dtype=np.int64)
    ids[:20, :30] = 1001
    ids[20:, :30] = 2002
    ids[:, 30:] = 300  # crowd
    ids[:5, :5] = 0  # void
    rgb = np.stack([ids % 256, ids // 256 % 256, ids // 65536], axis=-1).astype(np.uint8)
    info = [
        {"id": 2002, "category_id": 5, "iscrowd": 0},
        {"id": 300, "category_id": 1, "iscrowd": 1},
        {"id": 1001, "category_id": 3, "iscrowd": 0},
    ]
    image = np.zeros((40, 60, 3), dtype=np.uint8)
    out = M2FImageProcessor(do_resize=False)(image, segmentation_maps=Image.fromarray(rgb), segments_info=info)
    assert out["class_labels"][0].tolist() == [5, 3]
    masks = out["mask_labels"][0]
    assert masks.shape == (2, 64, 64)  # padded to a multiple of 32
    assert torch.equal(masks[0, :40, :60].bool(), torch.from_numpy(ids == 2002))
    assert torch.equal(masks[1, :40, :60].bool(), torch.from_numpy(ids == 1001))
    assert masks[:, :, 30:].sum() == 0  # crowd region belongs to no target


def test_padded_batch_equals_single_images(images):
    processor = M2FImageProcessor(size=SIZE)
    batch = processor(images)
    for i, image in enumerate(images):
        single = processor(image)
        h, w = single["pixel_mask"][0].sum(0).max().item(), single["pixel_mask"][0].sum(1).max().item()
        assert torch.equal(batch["pixel_values"][i, :, :h, :w], single["pixel_values"][0, :, :h, :w])
        assert (
            batch["pixel_values"][i, :, h:, :].abs().sum() == 0 and batch["pixel_values"][i, :, :, w:].abs().sum() == 0
        )


def test_grayscale_and_rgba_inputs():
    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    gray = rgb[..., 0]
    processor = M2FImageProcessor(size=SIZE)
    from_gray = processor(Image.fromarray(gray))["pixel_values"]
    from_gray_np = processor(gray)["pixel_values"]
    assert torch.equal(from_gray, from_gray_np)
    expected = processor(np.stack([gray] * 3, axis=-1))["pixel_values"]
    assert torch.equal(from_gray, expected)
    rgba = np.concatenate([rgb, rng.integers(0, 256, (30, 40, 1), dtype=np.uint8)], axis=-1)
    assert torch.equal(processor(Image.fromarray(rgba, mode="RGBA"))["pixel_values"], processor(rgb)["pixel_values"])
    assert torch.equal(
        processor(torch.from_numpy(rgba).permute(2, 0, 1))["pixel_values"], processor(rgb)["pixel_values"]
    )


def test_save_load_round_trip(tmp_path):
    processor = M2FImageProcessor(size={"shortest_edge": 512, "longest_edge": 2048}, ignore_index=255, num_labels=150)
    processor.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "preprocessor_config.json").read_text())
    assert saved["image_processor_type"] == "M2FImageProcessor"
    loaded = M2FImageProcessor.from_pretrained(tmp_path)
    assert loaded.to_dict() == processor.to_dict()
    override = M2FImageProcessor.from_pretrained(tmp_path, size_divisor_mode="stretch")
    assert override.size_divisor_mode == "stretch"


def test_transformers_native_config_loads_into_original_behaviour(tmp_path, images):
    Mask2FormerImageProcessor(size=SIZE, ignore_index=255, do_reduce_labels=True).save_pretrained(tmp_path)
    assert json.loads((tmp_path / "preprocessor_config.json").read_text())["image_processor_type"] == (
        "Mask2FormerImageProcessor"
    )
    loaded = M2FImageProcessor.from_pretrained(tmp_path)
    assert loaded.size == SIZE and loaded.ignore_index == 255 and loaded.do_reduce_labels
    assert loaded.size_divisor == 32 and loaded.size_divisor_mode == "pad"
    assert torch.equal(loaded(images)["pixel_values"], M2FImageProcessor(size=SIZE)(images)["pixel_values"])


def test_legacy_transformers_keys(tmp_path):
    (tmp_path / "preprocessor_config.json").write_text(
        json.dumps(
            {
                "image_processor_type": "Mask2FormerImageProcessor",
                "size": 384,
                "max_size": 640,
                "reduce_labels": True,
                "ignore_index": 255,
                "size_divisor": 32,
                "do_pad": True,
            }
        )
    )
    loaded = M2FImageProcessor.from_pretrained(tmp_path)
    assert loaded.size == {"shortest_edge": 384, "longest_edge": 640} and loaded.do_reduce_labels


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ([], "empty list"),
        (np.zeros((0, 10, 3), dtype=np.uint8), "size 0"),
        (np.zeros((10, 10, 3), dtype=np.int32), "dtype"),
        (torch.zeros(10, 10, 3, dtype=torch.bool), "dtype"),
        (np.zeros((2, 2, 10, 10, 3), dtype=np.uint8), "rank"),
        (np.zeros((10, 10, 5), dtype=np.uint8), "channels"),
        ("not an image", "str"),
    ],
)
def test_bad_images_raise(bad, message):
    with pytest.raises(ValueError, match=message):
        M2FImageProcessor(size=SIZE)(bad)


def test_bad_labels_raise():
    image = np.zeros((20, 30, 3), dtype=np.uint8)
    processor = M2FImageProcessor(size=SIZE, num_labels=4)
    with pytest.raises(ValueError, match=r"size \(20, 31\) but its image has size \(20, 30\)"):
        processor(image, segmentation_maps=np.zeros((20, 31), dtype=np.uint8))
    with pytest.raises(ValueError, match="class id 7 .* out of range"):
        processor(image, segmentation_maps=np.full((20, 30), 7, dtype=np.uint8))
    with pytest.raises(ValueError, match="integer labels"):
        processor(image, segmentation_maps=np.zeros((20, 30), dtype=np.float32))
    with pytest.raises(ValueError, match="instance id 3 .* missing"):
        processor(image, segmentation_maps=np.full((20, 30), 3), instance_id_to_semantic_id={1: 0})
    with pytest.raises(ValueError, match="segment id 99, which does not occur"):
        processor(
            image, segmentation_maps=np.zeros((20, 30, 3), np.uint8), segments_info=[{"id": 99, "category_id": 1}]
        )
    with pytest.raises(ValueError, match="2 images but 1 segmentation maps"):
        processor([image, image], segmentation_maps=[np.zeros((20, 30), np.uint8)])
    with pytest.raises(ValueError, match="size_divisor_mode"):
        M2FImageProcessor(size_divisor_mode="crop")
