"""With the bundled model: every image mode segments like its 8-bit twin, and instances are thing classes only."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from m2f_hf.inference import SegmentOptions, load_segmentation_model, segment_image
from m2f_hf.processing.image_modes import load_image
from m2f_hf.resources import example_images

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


@pytest.fixture(scope="module")
def loaded():
    return load_segmentation_model(None, "cpu")


@pytest.fixture(scope="module")
def example():
    # 128 x 128, the processor's shortest edge: no resize, so equal inputs must give equal results
    return Image.open(example_images()[0]).convert("RGB")


def _twins(example: Image.Image):
    """(file name, image in another mode as saved, as given to the processor, its 8-bit twin)."""
    grey = example.convert("L")
    grey_values = np.asarray(grey)
    sixteen = Image.fromarray(grey_values.astype(np.uint16) * 257)
    palette = example.quantize(colors=64)
    # a float file holds 0..1; a float image given to the processor is on the 0-255 scale (transformers' convention)
    float_file = Image.fromarray(grey_values.astype(np.float32) / 255, mode="F")
    float_image = Image.fromarray(grey_values.astype(np.float32), mode="F")
    return [
        ("grey16.png", sixteen, sixteen, grey),
        ("float.tif", float_file, float_image, grey),
        ("palette.gif", palette, palette, palette.convert("RGB")),
        ("cmyk.tif", example.convert("CMYK"), example.convert("CMYK"), example),
        ("rgba.png", example.convert("RGBA"), example.convert("RGBA"), example),
    ]


@torch.inference_mode()
def test_each_mode_segments_like_its_8bit_twin(tmp_path, loaded, example):
    images, names = [], []
    for name, saved, image, twin in _twins(example):
        saved.save(tmp_path / name)
        images += [twin, load_image(tmp_path / name), image]  # the file, and the PIL image straight to the processor
        names.append(name)
    # one batch through the model (all are 128 x 128), then each image's panoptic segmentation
    inputs = loaded.processor(images)
    outputs = loaded.model(**inputs)
    results = loaded.processor.post_process_panoptic_segmentation(outputs, pixel_mask=inputs["pixel_mask"])
    for index, name in enumerate(names):
        expected, from_file, direct = results[3 * index : 3 * index + 3]
        assert expected["segments_info"], name
        for result in (from_file, direct):
            assert torch.equal(result["segmentation"], expected["segmentation"]), name
            assert result["segments_info"] == expected["segments_info"], name


def test_phone_photo_is_segmented_upright(tmp_path, loaded, example):
    exif = Image.Exif()
    exif[0x0112] = 8  # stored turned 90 degrees clockwise; display = rotate 90 degrees counter-clockwise
    example.transpose(Image.Transpose.ROTATE_270).save(tmp_path / "phone.png", exif=exif)
    options = SegmentOptions(task="semantic")
    assert torch.equal(
        segment_image(loaded, load_image(tmp_path / "phone.png"), options), segment_image(loaded, example, options)
    )


def test_instance_segmentation_keeps_thing_classes(loaded, example):
    config = loaded.model.config
    assert config.thing_ids == [0, 1, 2] and config.stuff_ids == [3, 4, 5]  # circle, square, triangle | grass, ...
    kept = segment_image(loaded, example, SegmentOptions(task="instance", threshold=0.0))
    every = segment_image(loaded, example, SegmentOptions(task="instance", threshold=0.0, keep_all_classes=True))
    kept_labels = {s["label_id"] for s in kept["segments_info"]}
    every_labels = {s["label_id"] for s in every["segments_info"]}
    assert kept_labels and kept_labels <= {0, 1, 2}
    assert every_labels & {3, 4, 5}  # the example has grass and water: all classes report them as instances


@pytest.mark.parametrize("layout", ["chw", "hwc"])
def test_multiband_arrays_segment_at_their_own_size(layout):
    from m2f_hf import M2FForUniversalSegmentation
    from m2f_hf.image_processing_m2f import M2FImageProcessor
    from m2f_hf.inference import LoadedModel
    from m2f_hf.testing import tiny_config

    torch.manual_seed(0)
    model = M2FForUniversalSegmentation(tiny_config(num_channels=13)).eval()
    processor = M2FImageProcessor(size={"shortest_edge": 64}, image_mean=[0.5] * 13, image_std=[0.25] * 13)
    bands = np.random.default_rng(0).integers(0, 256, (13, 40, 60), dtype=np.uint8)
    image = bands if layout == "chw" else bands.transpose(1, 2, 0)
    result = segment_image(LoadedModel(model, processor, "tiny"), image, SegmentOptions(task="semantic"))
    assert result.shape == (40, 60)
