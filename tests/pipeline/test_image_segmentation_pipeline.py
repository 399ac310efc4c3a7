"""`pipeline("image-segmentation")` on a tiny random checkpoint: three subtasks, batching mixed sizes, odd inputs."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoImageProcessor, pipeline

import m2f_hf
from m2f_hf.image_processing_m2f import M2FImageProcessor
from m2f_hf.processing.pipeline import M2FImageSegmentationPipeline, register_image_segmentation_pipeline
from m2f_hf.testing import tiny_config

# until `import m2f_hf` does it (see docs/processor.md); both calls are idempotent
AutoImageProcessor.register(
    m2f_hf.M2FConfig,
    image_processor_classes={"torchvision": M2FImageProcessor, "pil": M2FImageProcessor},
    exist_ok=True,
)
register_image_segmentation_pipeline()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tiny_m2f")
    torch.manual_seed(0)
    m2f_hf.M2FForUniversalSegmentation(tiny_config()).eval().save_pretrained(directory)
    M2FImageProcessor(size={"shortest_edge": 64, "longest_edge": 96}).save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def segmenter(checkpoint):
    return pipeline("image-segmentation", model=str(checkpoint))


def _images():
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (50, 70, 3), dtype=np.uint8))
    gray = Image.fromarray(rng.integers(0, 256, (90, 40), dtype=np.uint8))  # mode "L"
    rgba = Image.fromarray(rng.integers(0, 256, (64, 64, 4), dtype=np.uint8), mode="RGBA")
    return [rgb, gray, rgba]


def test_pipeline_loads_our_classes_without_errors(checkpoint, caplog):
    with caplog.at_level(logging.ERROR):
        segmenter = pipeline("image-segmentation", model=str(checkpoint))
    assert isinstance(segmenter, M2FImageSegmentationPipeline)
    assert isinstance(segmenter.model, m2f_hf.M2FForUniversalSegmentation)
    assert isinstance(segmenter.image_processor, M2FImageProcessor)
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]


@pytest.mark.parametrize("subtask", ["panoptic", "instance", "semantic"])
@pytest.mark.parametrize("batch_size", [1, 3])
def test_subtasks_with_mixed_sizes_grayscale_and_rgba(segmenter, subtask, batch_size):
    images = _images()
    labels = set(segmenter.model.config.id2label.values())
    results = segmenter(images, subtask=subtask, batch_size=batch_size, threshold=0.0, overlap_mask_area_threshold=0.0)
    assert len(results) == len(images)
    for image, found in zip(images, results):
        assert len(found) >= 1
        covered = np.zeros((image.height, image.width), dtype=bool)
        for annotation in found:
            assert annotation["label"] in labels
            assert annotation["mask"].size == image.size and annotation["mask"].mode == "L"
            mask = np.asarray(annotation["mask"]) > 0
            if subtask == "semantic":
                assert annotation["score"] is None
                assert not (covered & mask).any()  # a class map: masks are disjoint and cover the image
                covered |= mask
            else:
                assert 0.0 <= annotation["score"] <= 1.0
        if subtask == "semantic":
            assert covered.all()


def test_batch_matches_single_images_for_equal_sizes(segmenter):
    """Images of one size need no extra padding, so batching must not change any result."""
    rng = np.random.default_rng(1)
    images = [Image.fromarray(rng.integers(0, 256, (50, 70, 3), dtype=np.uint8)) for _ in range(3)]
    batched = segmenter(images, subtask="semantic", batch_size=3)
    single = segmenter(images, subtask="semantic", batch_size=1)
    for a, b in zip(batched, single):
        assert [x["label"] for x in a] == [x["label"] for x in b]
        for x, y in zip(a, b):
            assert np.array_equal(np.asarray(x["mask"]), np.asarray(y["mask"]))


def _masks(results):
    return [(r["label"], np.asarray(r["mask"]).tobytes()) for r in results]


def test_16bit_files_and_images_segment_like_their_8bit_twin(segmenter, tmp_path):
    grey = np.random.default_rng(2).integers(0, 256, (50, 70), dtype=np.uint8)
    Image.fromarray(grey).save(tmp_path / "grey8.png")
    sixteen = Image.fromarray(grey.astype(np.uint16) * 257)  # mode I;16
    sixteen.save(tmp_path / "grey16.png")
    expected = _masks(segmenter(str(tmp_path / "grey8.png"), subtask="semantic"))
    assert _masks(segmenter(str(tmp_path / "grey16.png"), subtask="semantic")) == expected
    assert _masks(segmenter(sixteen, subtask="semantic")) == expected
    # min-max: the image spans 0..255 already (after the 16-bit scaling), so stretching changes little, but it runs
    assert segmenter(str(tmp_path / "grey16.png"), subtask="semantic", scaling="minmax")
    with pytest.raises(ValueError, match="`scaling` must be one of"):
        segmenter(sixteen, scaling="gamma")


def test_instance_subtask_keeps_thing_classes(segmenter):
    images = _images()[:1]
    config = segmenter.model.config
    kwargs = dict(subtask="instance", threshold=0.0, overlap_mask_area_threshold=0.0)
    try:
        config.thing_ids = [0]
        kept = {r["label"] for r in segmenter(images, **kwargs)[0]}
        every = {r["label"] for r in segmenter(images, keep_all_classes=True, **kwargs)[0]}
    finally:
        config.thing_ids = None
    assert kept == {"class_0"}
    assert every - {"class_0"}  # the random model predicts other classes too: kept only when asked for
    assert every == {r["label"] for r in segmenter(images, **kwargs)[0]}  # unknown things: every class
