"""Training reads images as inference does: 16-bit and float data on the 0-255 scale without rounding, and as many
channels as the model takes (grey, RGB + near-infrared, ...), through the real augmentation and collate path."""

import numpy as np
import pytest
import torch
from PIL import Image

from m2f_hf import M2FForUniversalSegmentation
from m2f_hf.data import (
    Collator,
    DataError,
    FormatAdapter,
    LabelSet,
    PhotometricDistortion,
    SegmentationDataset,
    build_train_transform,
    decode_image,
    training_channels,
)
from m2f_hf.image_processing_m2f import M2FImageProcessor
from m2f_hf.testing import tiny_config


def _label(size=(32, 32)):
    label = np.zeros(size, np.uint8)
    label[: size[0] // 2] = 1
    label[:, : size[1] // 4] = 2
    return label


def _adapter(**kwargs):
    return FormatAdapter(
        task="semantic", label_set=LabelSet.from_names(["a", "b", "c"]), image_column="image",
        label_column="annotation", **kwargs,
    )  # fmt: skip


def test_a_16_bit_image_trains_on_the_values_of_its_8_bit_twin():
    rng = np.random.default_rng(0)
    eight = rng.integers(0, 256, (32, 32), dtype=np.uint8)
    sixteen = Image.fromarray(eight.astype(np.uint16) * 257)  # the same picture on the full 16-bit range
    assert sixteen.mode.startswith("I;16")
    twin = _adapter()({"image": Image.fromarray(eight), "annotation": _label()}, "train sample 0").image
    deep = _adapter()({"image": sixteen, "annotation": _label()}, "train sample 1").image
    assert twin.dtype == torch.uint8 and deep.dtype == torch.float32
    assert deep.shape == twin.shape == (3, 32, 32)
    torch.testing.assert_close(deep, twin.float(), atol=1e-3, rtol=0)
    # a uint16 array reads the same as the PIL image
    array = _adapter()({"image": eight.astype(np.uint16) * 257, "annotation": _label()}, "train sample 2").image
    torch.testing.assert_close(array, deep)


def test_per_image_minmax_and_precision_kept():
    values = np.linspace(1000, 1255, 32 * 32).reshape(32, 32).astype(np.uint16)  # a narrow 16-bit range
    image = decode_image(values, "train sample 0", num_channels=1, scaling="minmax")
    assert image.shape == (1, 32, 32) and image.dtype == torch.float32
    assert image.min().item() == pytest.approx(0.0) and image.max().item() == pytest.approx(255.0)
    assert len(torch.unique(image)) > 256 - 1  # not rounded to 8 bits


def test_integer_values_beyond_8_bits_in_a_wide_type_are_an_error():
    with pytest.raises(
        DataError, match=r"train sample 4: column 'image': integer image values must lie in \[0, 255\]"
    ):
        _adapter()({"image": np.full((32, 32), 300, np.int64), "annotation": _label()}, "train sample 4")


def test_channel_mismatch_names_both_counts():
    processor = M2FImageProcessor()  # ImageNet's three means
    with pytest.raises(DataError, match="the model takes 4-channel images .* the image processor makes 3"):
        training_channels(processor, tiny_config(num_channels=4))
    assert training_channels(M2FImageProcessor(image_mean=0.5, image_std=0.25), tiny_config(num_channels=4)) == 4
    with pytest.raises(
        DataError,
        match=r"`train sample 0` must have 4 channels on the first or last axis; got ndarray of shape \(8, 8, 5\)",
    ):
        decode_image(np.zeros((8, 8, 5), np.uint8), "train sample 0", num_channels=4)


def test_photometric_distortion_on_bands_beyond_rgb_keeps_their_type():
    generator = torch.Generator().manual_seed(0)
    image = torch.rand(4, 16, 16) * 255
    for _ in range(8):
        out = PhotometricDistortion()(image, generator)
        assert out.dtype == torch.float32 and out.shape == image.shape
        assert 0 <= out.min() and out.max() <= 255
    rgb = PhotometricDistortion()(torch.randint(0, 256, (3, 16, 16), dtype=torch.uint8), generator)
    assert rgb.dtype == torch.uint8


def test_a_four_band_16_bit_dataset_trains_through_augmentation_and_collate():
    """RGB + near-infrared, 16-bit: decoded, augmented (semantic recipe: resize, crop, colour jitter, flip),
    collated and trained one step with a 4-channel model; the loss is finite and the backbone's first layer learns
    from the fourth band."""
    from datasets import Array2D, Array3D, Dataset, Features

    rng = np.random.default_rng(1)
    rows = {"image": [rng.integers(0, 65536, (48, 40, 4), dtype=np.uint16) for _ in range(4)]}
    rows["annotation"] = [_label((48, 40)) for _ in range(4)]
    features = Features(
        {"image": Array3D((48, 40, 4), dtype="uint16"), "annotation": Array2D((48, 40), dtype="uint8")}
    )
    split = Dataset.from_dict(rows, features=features)
    split.set_format("numpy")
    adapter = _adapter(num_channels=4)
    transform = build_train_transform("semantic", crop_size=(32, 32), min_scale=0.5, max_scale=1.5)
    dataset = SegmentationDataset(split, adapter, transform, split="train", seed=0)
    model = M2FForUniversalSegmentation(tiny_config(num_labels=3, num_channels=4))
    processor = M2FImageProcessor(num_channels=4, image_mean=0.5, image_std=0.25)
    assert training_channels(processor, model.config) == 4
    batch = Collator.from_image_processor(processor, pad_size=(32, 32))([dataset[0], dataset[1]])
    assert batch["pixel_values"].shape == (2, 4, 32, 32)
    assert batch["pixel_values"][:, 3].std() > 0.1  # the fourth band carries data, not zeros
    outputs = model(
        pixel_values=batch["pixel_values"], mask_labels=batch["mask_labels"], class_labels=batch["class_labels"]
    )
    assert torch.isfinite(outputs.loss)
    outputs.loss.backward()
    first = next(p for p in model.parameters() if p.ndim == 4 and p.shape[1] == 4)
    assert first.grad is not None and first.grad[:, 3].abs().sum() > 0
