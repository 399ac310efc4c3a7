"""Training augmentations (paper 4.2) acting on a `Sample` (uint8 image + segment-id map), with an explicit generator.

The segment map may be `(H, W)` or layered `(L, H, W)` (overlapping instances): every layer moves with the image.

- `LargeScaleJitter` (instance, panoptic): random scale of the crop size in [0.1, 2.0] keeping the aspect ratio, a
  fixed-size random crop (padded when the image is smaller), horizontal flip.
- `SemanticAugment` (semantic, MaskFormer's ADE20K recipe): random resize of the shorter side to the crop size times
  a scale in [0.5, 2.0], random crop, photometric distortion (SSD's), horizontal flip.

Every random choice comes from the `torch.Generator` passed in, so a sample's augmentation depends only on the seed
the dataset derives for it (seed, epoch, index): runs are reproducible and resumable whatever the worker layout.
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch

from ..processing.image_ops import resize_batch
from .formats import Sample


def _uniform(generator: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * torch.rand((), generator=generator).item()


def _coin(generator: torch.Generator, probability: float = 0.5) -> bool:
    return torch.rand((), generator=generator).item() < probability


def resize_sample(sample: Sample, height: int, width: int) -> Sample:
    """Bilinear image, nearest segment ids."""
    image = resize_batch(sample.image[None], (height, width), "bilinear")[0]
    leading = sample.segments.shape[:-2]  # () or (layers,)
    layers = sample.segments.reshape(1, -1, *sample.segments.shape[-2:])  # (1, layers, H, W)
    segments = resize_batch(layers, (height, width), "nearest")[0].reshape(*leading, height, width)
    return replace(sample, image=image, segments=segments)


def random_crop(sample: Sample, crop: tuple[int, int], generator: torch.Generator) -> Sample:
    """Crop to at most `crop` at a random position (no padding here; the collate pads)."""
    height, width = sample.image.shape[-2:]
    crop_h, crop_w = min(crop[0], height), min(crop[1], width)
    top = int(torch.randint(0, height - crop_h + 1, (), generator=generator))
    left = int(torch.randint(0, width - crop_w + 1, (), generator=generator))
    return replace(
        sample,
        image=sample.image[:, top : top + crop_h, left : left + crop_w],
        segments=sample.segments[..., top : top + crop_h, left : left + crop_w],
    )


def horizontal_flip(sample: Sample) -> Sample:
    return replace(sample, image=sample.image.flip(-1), segments=sample.segments.flip(-1))


class LargeScaleJitter:
    """Large-scale jittering (LSJ): scale, fixed-size crop, flip.

    Args:
        crop_size (`tuple[int, int]`): `(height, width)` of the crop (1024 x 1024 in the paper).
        min_scale, max_scale (`float`): range of the random scale of the crop size (0.1 to 2.0 in the paper).
        flip_probability (`float`): probability of a horizontal flip.
    """

    def __init__(
        self, *, crop_size: tuple[int, int], min_scale: float, max_scale: float, flip_probability: float = 0.5
    ) -> None:
        if not 0 < min_scale <= max_scale:
            raise ValueError(f"need 0 < min_scale <= max_scale, got {min_scale} and {max_scale}.")
        self.crop_size = tuple(crop_size)
        self.min_scale = min_scale
        self.max_scale = max_scale
        self.flip_probability = flip_probability

    def __call__(self, sample: Sample, generator: torch.Generator) -> Sample:
        if _coin(generator, self.flip_probability):
            sample = horizontal_flip(sample)
        height, width = sample.image.shape[-2:]
        scale = _uniform(generator, self.min_scale, self.max_scale)
        # The image fits a box of the scaled crop size, keeping its aspect ratio (Detectron2's ResizeScale).
        factor = min(scale * self.crop_size[0] / height, scale * self.crop_size[1] / width)
        sample = resize_sample(sample, max(1, round(height * factor)), max(1, round(width * factor)))
        return random_crop(sample, self.crop_size, generator)


class PhotometricDistortion:
    """SSD's colour jitter, each step with probability 1/2: brightness (+-32), contrast and saturation (x0.5-1.5) and
    hue (+-18 degrees), contrast either before or after saturation/hue."""

    def __init__(
        self,
        *,
        brightness_delta: float = 32.0,
        contrast_range: tuple[float, float] = (0.5, 1.5),
        saturation_range: tuple[float, float] = (0.5, 1.5),
        hue_delta: float = 18.0,
    ) -> None:
        self.brightness_delta = brightness_delta
        self.contrast_range = contrast_range
        self.saturation_range = saturation_range
        self.hue_delta = hue_delta

    def __call__(self, image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        from torchvision.transforms.v2 import functional as TF

        dtype = image.dtype
        colour = image.shape[0] == 3  # saturation and hue exist for RGB only
        image = image.float()
        if _coin(generator):
            image = image + _uniform(generator, -self.brightness_delta, self.brightness_delta)
        contrast_first = _coin(generator)

        def contrast(x):
            if _coin(generator):
                factor = _uniform(generator, *self.contrast_range)
                if colour:
                    x = TF.adjust_contrast(x.clamp(0, 255) / 255, factor) * 255
                else:  # towards the image's mean, as adjust_contrast does with RGB's grey mean
                    x = x.clamp(0, 255)
                    x = (x - x.mean()) * factor + x.mean()
            return x

        if contrast_first:
            image = contrast(image)
        if _coin(generator) and colour:
            image = TF.adjust_saturation(image.clamp(0, 255) / 255, _uniform(generator, *self.saturation_range)) * 255
        if _coin(generator) and colour:
            hue = _uniform(generator, -self.hue_delta, self.hue_delta) / 360.0
            image = TF.adjust_hue(image.clamp(0, 255) / 255, hue) * 255
        if not contrast_first:
            image = contrast(image)
        image = image.clamp(0, 255)
        # 8-bit images stay 8-bit; deeper ones (16-bit, float, on the 0-255 scale) keep their precision
        return image.round().to(torch.uint8) if dtype == torch.uint8 else image


class SemanticAugment:
    """Random resize, crop, photometric distortion and flip for semantic segmentation.

    Args:
        crop_size (`tuple[int, int]`): `(height, width)` of the crop (512 x 512 for ADE20K).
        min_scale, max_scale (`float`): the shorter side is resized to `min(crop_size) * scale` (0.5 to 2.0).
        flip_probability (`float`): probability of a horizontal flip.
    """

    def __init__(
        self,
        *,
        crop_size: tuple[int, int],
        min_scale: float,
        max_scale: float,
        flip_probability: float = 0.5,
        photometric: bool = True,
    ) -> None:
        if not 0 < min_scale <= max_scale:
            raise ValueError(f"need 0 < min_scale <= max_scale, got {min_scale} and {max_scale}.")
        self.crop_size = tuple(crop_size)
        self.min_scale = min_scale
        self.max_scale = max_scale
        self.flip_probability = flip_probability
        self.photometric = PhotometricDistortion() if photometric else None

    def __call__(self, sample: Sample, generator: torch.Generator) -> Sample:
        height, width = sample.image.shape[-2:]
        short = min(self.crop_size) * _uniform(generator, self.min_scale, self.max_scale)
        factor = short / min(height, width)
        sample = resize_sample(
            sample, max(1, math.floor(height * factor + 0.5)), max(1, math.floor(width * factor + 0.5))
        )
        sample = random_crop(sample, self.crop_size, generator)
        if self.photometric is not None:
            sample = replace(sample, image=self.photometric(sample.image, generator))
        if _coin(generator, self.flip_probability):
            sample = horizontal_flip(sample)
        return sample


class ResizeShortestEdge:
    """Deterministic evaluation resize: shorter side to `size`, longer side at most `max_size`."""

    def __init__(self, *, size: int, max_size: int | None = None) -> None:
        self.size = size
        self.max_size = max_size

    def __call__(self, sample: Sample, generator: torch.Generator | None = None) -> Sample:
        height, width = sample.image.shape[-2:]
        factor = self.size / min(height, width)
        if self.max_size is not None:
            factor = min(factor, self.max_size / max(height, width))
        return resize_sample(sample, max(1, round(height * factor)), max(1, round(width * factor)))


def build_train_transform(task: str, *, crop_size: tuple[int, int], min_scale: float | None, max_scale: float | None):
    """The paper's augmentation for `task`, with the default scale range of its recipe when not given."""
    if task == "semantic":
        return SemanticAugment(
            crop_size=crop_size,
            min_scale=0.5 if min_scale is None else min_scale,
            max_scale=2.0 if max_scale is None else max_scale,
        )
    return LargeScaleJitter(
        crop_size=crop_size,
        min_scale=0.1 if min_scale is None else min_scale,
        max_scale=2.0 if max_scale is None else max_scale,
    )
