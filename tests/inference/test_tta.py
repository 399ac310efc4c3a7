"""Test-time augmentation: one scale without a flip is plain inference; flips and scales change the class scores
that are averaged; the options and the pipeline's arguments."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from m2f_hf.cli import main
from m2f_hf.inference import tta
from m2f_hf.inference.segment import SegmentOptions, segment_image
from m2f_hf.inference.tta import _areas, _intersections, _mirror, check_tta_scales, scaled_size
from m2f_hf.resources import default_model_path, example_images


@pytest.fixture(scope="module")
def images():
    pictures = [np.asarray(Image.open(path).convert("RGB")) for path in example_images()]
    # not square, and not at the model's size: the resize and the padding are exercised
    pictures.append(np.ascontiguousarray(np.concatenate([pictures[0], pictures[1][:, :70]], 1)[:100]))
    return pictures


def test_one_scale_and_no_flip_is_plain_inference(loaded, images):
    options = SegmentOptions(task="semantic", tta=True, tta_scales=(1.0,), tta_flip=False)
    for image in images:
        assert torch.equal(
            segment_image(loaded, image, options), segment_image(loaded, image, SegmentOptions(task="semantic"))
        )


def test_the_flip_pass_is_the_mirrored_images_scores_mirrored_back(loaded, images):
    """TTA of a mirrored image with flip on equals TTA of the image, mirrored (the two passes swap)."""
    options = SegmentOptions(task="semantic", tta=True, tta_scales=(1.0,), tta_flip=True)
    for image in images:
        mirrored = np.ascontiguousarray(image[:, ::-1])
        a = segment_image(loaded, mirrored, options)
        b = segment_image(loaded, image, options).flip(-1)
        assert (a == b).float().mean() > 0.999  # equal up to float ties of the summed scores


def test_mirror_keeps_the_padding_at_the_right():
    values = torch.arange(2 * 6, dtype=torch.float32).view(1, 1, 2, 6)
    mask = torch.tensor([[[1, 1, 1, 1, 0, 0]] * 2])
    mirrored, same_mask = _mirror(values, mask)
    assert mirrored[0, 0, 0].tolist() == [3, 2, 1, 0, 4, 5] and same_mask is mask


def test_several_scales_give_a_result_at_the_images_size(loaded, images):
    options = SegmentOptions(task="semantic", tta=True)
    assert options.scales == (0.75, 1.0, 1.25) and options.tta_flip
    for image in images:
        result = segment_image(loaded, image, options)
        plain = segment_image(loaded, image, SegmentOptions(task="semantic"))
        assert result.shape == plain.shape == image.shape[:2]
        assert (result == plain).float().mean() > 0.9


def test_tta_options_are_checked():
    assert check_tta_scales([1, 1.5]) == (1.0, 1.5) and check_tta_scales(2) == (2.0,)
    for bad in ([], [0.5, -1], "1,2", [float("nan")]):
        with pytest.raises(ValueError, match="tta_scales must be a non-empty list of positive numbers"):
            SegmentOptions(task="semantic", tta=True, tta_scales=bad)
    assert scaled_size({"shortest_edge": 128, "longest_edge": None}, 0.75) == {"shortest_edge": 96}
    with pytest.raises(ValueError, match="sliding_window and tta cannot be combined"):
        SegmentOptions(task="instance", tta=True, sliding_window=True)
    assert SegmentOptions(task="semantic", tta=True, tta_scales=(1, 2)).as_dict()["tta_scales"] == [1.0, 2.0]
    assert SegmentOptions(task="panoptic", tta=True).scales == (1.0,)  # the flip only: scales lowered PQ
    assert SegmentOptions(task="instance", tta=True).scales == (1.0,)  # the flip only: scales added no AP
    assert SegmentOptions(task="semantic", tta=True).as_dict()["tta_scales"] == [0.75, 1.0, 1.25]  # the default
    assert SegmentOptions(task="semantic").as_dict()["tta_scales"] is None


def test_panoptic_tta_of_one_pass_is_plain_and_the_flip_ensemble_keeps_the_segments(loaded, images):
    for image in images:
        plain = segment_image(loaded, image, SegmentOptions(task="panoptic"))
        one = segment_image(loaded, image, SegmentOptions(task="panoptic", tta=True, tta_flip=False))
        assert torch.equal(plain["segmentation"], one["segmentation"])
        assert plain["segments_info"] == one["segments_info"]
        flipped = segment_image(loaded, image, SegmentOptions(task="panoptic", tta=True))
        assert flipped["segmentation"].shape == plain["segmentation"].shape
        if image.shape == (128, 128, 3):  # at the model's size the classes found are the same
            labels = sorted(s["label_id"] for s in flipped["segments_info"])
            assert labels == sorted(s["label_id"] for s in plain["segments_info"])


@pytest.mark.parametrize("full_masks", [False, True])
def test_instance_tta_of_one_pass_is_plain_and_the_flip_ensemble_finds_the_same_things(loaded, images, full_masks):
    settings = {"task": "instance", "full_instance_masks": full_masks}
    for image in images:
        plain = segment_image(loaded, image, SegmentOptions(**settings))
        one = segment_image(loaded, image, SegmentOptions(**settings, tta=True, tta_flip=False))
        assert torch.equal(plain["segmentation"], one["segmentation"])
        assert plain["segments_info"] == one["segments_info"]
        flipped = segment_image(loaded, image, SegmentOptions(**settings, tta=True))
        assert flipped["segmentation"].shape[-2:] == image.shape[:2]
        # thing classes only, as plain instance inference (the bundled model's things: circle, square, triangle)
        assert {s["label_id"] for s in flipped["segments_info"]} <= set(loaded.model.config.thing_ids)
        if image.shape == (128, 128, 3):
            labels = sorted(s["label_id"] for s in flipped["segments_info"])
            assert labels == sorted(s["label_id"] for s in plain["segments_info"])


def test_the_pipeline_takes_the_large_image_and_tta_arguments(images):
    from transformers import pipeline

    import m2f_hf  # noqa: F401  (registers the pipeline)

    segmenter = pipeline("image-segmentation", model=str(default_model_path()))
    picture = Image.fromarray(np.ascontiguousarray(np.tile(images[0], (2, 2, 1))))
    windowed = segmenter(picture, sliding_window=True, subtask="panoptic", threshold=0.5)
    plain = segmenter(picture, subtask="panoptic", threshold=0.5)
    assert {a["label"] for a in windowed} >= {"grass", "water", "square", "triangle"}
    assert sum(a["label"] == "square" for a in windowed) > sum(a["label"] == "square" for a in plain)
    assert all(a["mask"].size == picture.size for a in windowed)
    tta = segmenter(picture, subtask="semantic", tta=True, tta_scales=[1.0], tta_flip=False)
    semantic = segmenter(picture, subtask="semantic")
    masks = {a["label"]: np.asarray(a["mask"]) for a in semantic}
    assert {a["label"] for a in tta} == set(masks)
    assert all(np.array_equal(np.asarray(a["mask"]), masks[a["label"]]) for a in tta)
    with pytest.raises(ValueError, match="batch_size=1"):
        segmenter([picture, picture], sliding_window=True, batch_size=2)


def test_the_command_runs_instance_tta_and_records_its_scales(tmp_path, capsys):
    assert main(["--example", "--task", "instance", "--tta", "--output", str(tmp_path)]) == 0
    documents = [json.loads(path.read_text()) for path in sorted(tmp_path.glob("*.json"))]
    assert documents and all(d["options"]["tta"] and d["options"]["tta_scales"] == [1.0] for d in documents)
    assert all(s["label"] in {"circle", "square", "triangle"} for d in documents for s in d["segments"])
    assert any(d["segments"] for d in documents)


@pytest.mark.parametrize("elements_per_block", [1, 7 * 5, 1 << 23])
def test_intersections_in_blocks_count_every_pixel(monkeypatch, elements_per_block):
    monkeypatch.setattr(tta, "_ELEMENTS_PER_BLOCK", elements_per_block)
    generator = torch.Generator().manual_seed(0)
    a = torch.rand(5, 9, 11, generator=generator) > 0.5
    b = torch.rand(7, 9, 11, generator=generator) > 0.3
    expected = (a[:, None] & b[None]).flatten(2).sum(-1).double()
    assert torch.equal(_intersections(a, b), expected)
    assert torch.equal(_areas(b), b.flatten(1).sum(1).double())
