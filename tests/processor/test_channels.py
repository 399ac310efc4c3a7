"""Inputs beyond RGB: 1-, 4- and 13-band images through the processor and the model, scalar or per-channel
statistics, and the transformers compatibility points that go with them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from m2f_hf import M2FConfig, M2FForUniversalSegmentation
from m2f_hf.image_processing_m2f import M2FImageProcessor
from m2f_hf.processing.postprocess import binary_mask_to_rle
from m2f_hf.testing import tiny_backbone_config, tiny_config

SIZE = {"shortest_edge": 64, "longest_edge": 96}


def _bands(channels: int, height: int = 40, width: int = 56, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, channels), dtype=np.uint8)


@pytest.mark.parametrize(("backbone", "channels"), [("resnet", 1), ("resnet", 13), ("timm:test_convnext", 4)])
def test_multiband_images_train_and_infer(backbone, channels):
    torch.manual_seed(0)
    config = tiny_config(backbone, num_labels=3, num_channels=channels)
    model = M2FForUniversalSegmentation(config)
    mean = [0.1 * (i + 1) for i in range(channels)]
    processor = M2FImageProcessor(size=SIZE, image_mean=mean, image_std=[0.25] * channels)
    image = _bands(channels)
    labels = np.zeros(image.shape[:2], np.uint8)
    labels[10:30, 5:40] = 1
    labels[:, 45:] = 2
    inputs = processor(image, segmentation_maps=labels, return_tensors="pt")
    assert inputs["pixel_values"].shape[:2] == (1, channels)
    # normalisation is per band: band i of the input is (x / 255 - mean_i) / 0.25
    h, w = inputs["pixel_mask"][0].sum(0).max(), inputs["pixel_mask"][0].sum(1).max()
    unnormalised = inputs["pixel_values"][0, :, :w, :h] * 0.25 + torch.tensor(mean).view(-1, 1, 1)
    assert unnormalised.min() >= -1e-5 and unnormalised.max() <= 1 + 1e-5
    outputs = model(**inputs)  # train: the loss reaches the first convolution's weights
    outputs.loss.backward()
    first_conv = next(p for n, p in model.named_parameters() if p.ndim == 4)
    assert first_conv.shape[1] == channels and first_conv.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        semantic = processor.post_process_semantic_segmentation(model(pixel_values=inputs["pixel_values"]))
    assert semantic[0].shape == tuple(inputs["pixel_values"].shape[-2:])


def test_config_carries_num_channels_to_both_backbones(tmp_path):
    assert tiny_config().num_channels == 3
    config = tiny_config(num_channels=4)
    assert config.backbone_config.num_channels == 4
    assert tiny_config("timm:test_convnext", num_channels=13).timm_backbone_kwargs["in_chans"] == 13
    # unset, it is the backbone's own; saved and loaded it stays
    assert M2FConfig(backbone_config=tiny_backbone_config(), timm_backbone=None).num_channels == 3
    backbone = tiny_backbone_config()
    backbone.num_channels = 1
    assert M2FConfig(backbone_config=backbone).num_channels == 1
    config.save_pretrained(tmp_path)
    assert M2FConfig.from_pretrained(tmp_path).num_channels == 4
    with pytest.raises(ValueError, match=r"num_channels=3 but backbone_config.num_channels=1"):
        M2FConfig(backbone_config=backbone, num_channels=3)
    with pytest.raises(ValueError, match=r"in_chans.*=2"):
        tiny_config("timm:test_convnext", num_channels=5, timm_backbone_kwargs={"in_chans": 2})
    with pytest.raises(ValueError, match="num_channels=0 must be a positive integer"):
        tiny_config(num_channels=0)


def test_model_names_the_channel_mismatch():
    model = M2FForUniversalSegmentation(tiny_config(num_channels=1)).eval()
    with pytest.raises(ValueError, match=r"3 channels .* expects 1 \(config.num_channels\).*image_mean"):
        model(pixel_values=torch.zeros(1, 3, 64, 64))


def test_scalar_and_per_channel_statistics():
    image = _bands(3)
    per_channel = M2FImageProcessor(size=SIZE, image_mean=[0.5] * 3, image_std=[0.25] * 3)(image)["pixel_values"]
    for mean, std in ((0.5, 0.25), (0.5, [0.25] * 3), ([0.5] * 3, 0.25)):
        # a scalar applies to every channel
        processor = M2FImageProcessor(size=SIZE, image_mean=mean, image_std=std)
        assert torch.equal(processor(image)["pixel_values"], per_channel)
    # a list of one value is one channel's statistics (as in transformers): a grey model
    one = M2FImageProcessor(size=SIZE, image_mean=[0.5], image_std=[0.25])
    assert torch.equal(one(image[..., 0])["pixel_values"], per_channel[:, :1])
    # transformers' test_call_numpy_4_channels: scalar statistics keep all 4 channels
    processor = M2FImageProcessor(size=SIZE)
    four = processor(_bands(4), image_mean=0, image_std=1, input_data_format="channels_last")["pixel_values"]
    assert four.shape[1] == 4
    assert processor(_bands(4))["pixel_values"].shape[1] == 3  # ImageNet statistics: RGB, alpha dropped
    saved = M2FImageProcessor(image_mean=0, image_std=1).to_dict()
    assert saved["image_mean"] == 0.0 and saved["image_std"] == 1.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"image_mean": [0.5, 0.5], "image_std": [1, 1, 1]}, r"image_mean` \(2 values\) and `image_std` \(3 values\)"),
        ({"num_channels": 4}, r"matching num_channels=4"),
        ({"image_mean": "grey"}, "must be a number or a non-empty list"),
        ({"image_std": 0}, "must not contain 0"),
        ({"num_channels": 0}, "`num_channels` must be a positive integer"),
    ],
)
def test_bad_statistics_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        M2FImageProcessor(**kwargs)


def test_channel_matching_for_grey_models():
    processor = M2FImageProcessor(size=SIZE, num_channels=1, image_mean=0.5, image_std=0.25)
    grey = _bands(1)[..., 0]
    expected = processor(grey)["pixel_values"]
    assert expected.shape[1] == 1
    assert torch.equal(processor(np.stack([grey] * 3, -1))["pixel_values"], expected)  # RGB of equal channels
    assert torch.equal(processor(np.stack([grey, grey], -1))["pixel_values"], expected)  # grey + alpha
    with pytest.raises(ValueError, match="has 3 channels but the processor makes 1-channel inputs.*grayscale"):
        processor(_bands(3))
    with pytest.raises(ValueError, match=r"images\[1\]` has 13 channels but the processor makes 3"):
        M2FImageProcessor(size=SIZE)([_bands(3), _bands(13)], input_data_format="channels_last")
    with pytest.raises(ValueError, match="different channel counts"):
        M2FImageProcessor(size=SIZE, image_mean=0.5, image_std=0.5)([_bands(3), _bands(4)])


def test_input_data_format_decides_an_ambiguous_channel_axis():
    image = np.random.default_rng(0).integers(0, 256, (3, 40, 3), dtype=np.uint8)  # CHW or HWC?
    processor = M2FImageProcessor(do_resize=False, size_divisor=0)
    assert processor(image)["pixel_values"].shape[-2:] == (40, 3)  # transformers' rule: channels first
    last = processor(image, input_data_format="channels_last")["pixel_values"]
    assert last.shape[-2:] == (3, 40)
    with pytest.raises(ValueError, match="`input_data_format` must be"):
        processor(image, input_data_format="sideways")


def test_binary_mask_to_rle_takes_numpy_and_torch():
    mask = np.zeros((20, 50))
    mask[0, 20:] = 1
    mask[1, :15] = 1
    mask[5, :10] = 1
    # runs over the flattened mask, 1-based: pixels 21-65 (row 0 from column 20 through row 1 column 14), 251-260
    assert binary_mask_to_rle(mask) == [21, 45, 251, 10]
    assert binary_mask_to_rle(torch.from_numpy(mask)) == binary_mask_to_rle(mask.astype(bool))
    with pytest.raises(ValueError, match=r"\(height, width\) mask"):
        binary_mask_to_rle(np.zeros((2, 3, 4)))


def test_transformers_argument_names():
    processor = M2FImageProcessor.from_dict({"size": 32}, size=42, max_size=84, size_divisibility=8)
    assert processor.size == {"shortest_edge": 42, "longest_edge": 84} and processor.size_divisor == 8
    image = _bands(3)
    assert torch.equal(
        processor(image, pad_and_return_pixel_mask=True)["pixel_values"], processor(image)["pixel_values"]
    )
