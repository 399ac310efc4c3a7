"""Image processor for Mask2Former: pre-processing, label encoding and post-processing for the three tasks.

Pre-processing and label encoding reproduce transformers' `Mask2FormerImageProcessor` exactly, with one deliberate
difference: transformers stretches every image so its sides are multiples of `size_divisor`, while the original
Mask2Former (Detectron2) keeps the aspect ratio and pads the batch to a multiple of `size_divisor`. We pad by
default; `size_divisor_mode="stretch"` reproduces transformers.

Post-processing keeps transformers' signatures and return formats and follows the original geometry (see
`processing/postprocess.py`), so code written for transformers works unchanged.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np
import torch
from transformers.image_processing_utils import BaseImageProcessor, BatchFeature, get_size_dict
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from transformers.processing_utils import ImagesKwargs
from transformers.utils import logging

from .processing.image_modes import warn_if_already_rescaled
from .processing.image_ops import (
    make_image_list,
    pad_bottom_right,
    rescale_and_normalize,
    resize_batch,
    resized_hw,
    round_up,
    to_chw_tensor,
)
from .processing.labels import encode_panoptic, encode_semantic_or_instance, prepare_labels
from .processing.postprocess_api import PostProcessingMixin
from .processing.settings import (
    IGNORED_KEYS,
    RESAMPLE_MODES,
    SETTING_NAMES,
    as_given_statistic,
    channel_count,
    resolve_settings,
    statistics,
    validate_settings,
)

logger = logging.get_logger(__name__)


class M2FImageProcessorKwargs(ImagesKwargs, total=False):
    """Keyword arguments accepted by `M2FImageProcessor` (used by `from_pretrained(..., **overrides)`)."""

    num_channels: int | None
    scaling: str
    size_divisor: int
    size_divisor_mode: str
    pad_size: dict | None
    ignore_index: int | None
    do_reduce_labels: bool
    num_labels: int | None
    mask_stride: int
    # transformers' older names, accepted by `from_dict` / `from_pretrained` overrides
    max_size: int
    size_divisibility: int
    reduce_labels: bool


class M2FImageProcessor(PostProcessingMixin, BaseImageProcessor):
    r"""Mask2Former image processor, vectorised in torch.

    Args:
        do_resize (`bool`, *optional*, defaults to `True`):
            Whether to resize images.
        size (`dict` or `int`, *optional*, defaults to `{"shortest_edge": 800, "longest_edge": 1333}`):
            Resize target: `shortest_edge` (optionally capped by `longest_edge`), `height` and `width`, or
            `max_height` and `max_width`. An `int` means `shortest_edge`.
        resample (`int`, *optional*, defaults to 2 (bilinear)):
            PIL resampling code: 0 nearest, 2 bilinear, 3 bicubic.
        do_rescale (`bool`, *optional*, defaults to `True`):
            Whether to multiply pixel values by `rescale_factor`.
        rescale_factor (`float`, *optional*, defaults to 1/255):
            Factor applied by rescaling.
        do_normalize (`bool`, *optional*, defaults to `True`):
            Whether to normalise with `image_mean` and `image_std`.
        image_mean, image_std (`float` or `list[float]`, *optional*, default to ImageNet's):
            Mean and standard deviation: one value for every channel, or one value per channel.
        num_channels (`int`, *optional*):
            Channels of the model input (the model config's `num_channels`). Unset, it is the number of per-channel
            values of `image_mean` / `image_std` (3 by default), or, with scalar statistics, each image's own. For 3
            channels grey images are replicated and alpha dropped; for 1, alpha is dropped (see
            `processing/image_ops.match_channels`).
        scaling (`str`, *optional*, defaults to `"range"`):
            How images deeper than 8 bits come onto the 0-255 scale: `"range"` divides 16-bit values by 257 (65535
            becomes 255; float images are taken as already on the 0-255 scale); `"minmax"` stretches every image's
            own minimum..maximum to 0..255 (usual for microscopy). See `processing/image_modes.py`.
        size_divisor (`int`, *optional*, defaults to 32):
            The padded batch (or, with `size_divisor_mode="stretch"`, each image) has sides divisible by it.
        size_divisor_mode (`str`, *optional*, defaults to `"pad"`):
            `"pad"`: keep the aspect ratio and pad the batch bottom/right to a multiple of `size_divisor` (the
            original Detectron2 behaviour). `"stretch"`: resize each image to a multiple of `size_divisor`, then pad
            to the largest image (transformers' behaviour).
        pad_size (`dict`, *optional*):
            Fixed `{"height", "width"}` to pad every batch to, instead of the batch maximum.
        ignore_index (`int`, *optional*):
            Label value that belongs to no mask (e.g. 255).
        do_reduce_labels (`bool`, *optional*, defaults to `False`):
            Map label 0 to `ignore_index` and decrement the others (ADE20k-style maps).
        num_labels (`int`, *optional*):
            Number of classes; when set, class ids of the labels are checked to lie in `[0, num_labels)`.
        mask_stride (`int`, *optional*, defaults to 4):
            Ratio between the model input size and the size of `masks_queries_logits` (Mask2Former's pixel
            decoder predicts masks at 1/4 resolution). Post-processing uses it to find the padded input size when
            `pixel_mask` is not passed.
    """

    model_input_names = ["pixel_values", "pixel_mask"]
    valid_kwargs = M2FImageProcessorKwargs

    def __init__(
        self,
        do_resize: bool = True,
        size: dict[str, int] | int | None = None,
        resample: int = 2,
        do_rescale: bool = True,
        rescale_factor: float = 1 / 255,
        do_normalize: bool = True,
        image_mean: float | list[float] | None = None,
        image_std: float | list[float] | None = None,
        num_channels: int | None = None,
        scaling: str = "range",
        size_divisor: int = 32,
        size_divisor_mode: str = "pad",
        pad_size: dict[str, int] | None = None,
        ignore_index: int | None = None,
        do_reduce_labels: bool = False,
        num_labels: int | None = None,
        mask_stride: int = 4,
        **kwargs,
    ) -> None:
        # names used by older transformers configs
        if "reduce_labels" in kwargs:
            do_reduce_labels = bool(kwargs.pop("reduce_labels"))
        if kwargs.get("size_divisibility") is not None:
            size_divisor = kwargs.pop("size_divisibility")
        kwargs.pop("size_divisibility", None)
        max_size = kwargs.pop("max_size", None)
        for key in IGNORED_KEYS:
            kwargs.pop(key, None)
        super().__init__(**kwargs)
        if size is None:
            size = {"shortest_edge": 800, "longest_edge": 1333}
        size = dict(get_size_dict(size, max_size=max_size, default_to_square=False))
        self.do_resize = do_resize
        self.size = {key: value for key, value in size.items() if value is not None}
        self.resample = int(resample)
        self.do_rescale = do_rescale
        self.rescale_factor = rescale_factor
        self.do_normalize = do_normalize
        self.image_mean = as_given_statistic(image_mean if image_mean is not None else IMAGENET_DEFAULT_MEAN)
        self.image_std = as_given_statistic(image_std if image_std is not None else IMAGENET_DEFAULT_STD)
        self.num_channels = num_channels
        self.scaling = scaling
        self.size_divisor = int(size_divisor or 0)
        self.size_divisor_mode = size_divisor_mode
        self.pad_size = dict(pad_size) if pad_size is not None else None
        self.ignore_index = ignore_index
        self.do_reduce_labels = do_reduce_labels
        self.num_labels = num_labels
        self.mask_stride = int(mask_stride)
        validate_settings(self._defaults())

    # ------------------------------------------------------------------ settings
    def _defaults(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in SETTING_NAMES}

    def _settings(self, overrides: dict[str, Any]) -> dict[str, Any]:
        return resolve_settings(self._defaults(), overrides)

    def to_dict(self) -> dict[str, Any]:
        output = {key: value for key, value in self.__dict__.items() if not key.startswith("_")}
        output["image_processor_type"] = type(self).__name__
        return output

    def resized_size(self, height: int, width: int, **overrides) -> tuple[int, int]:
        """The (height, width) an image of size (height, width) has after the resize step (before padding)."""
        settings = self._settings(overrides)
        if not settings["do_resize"]:
            return height, width
        return resized_hw(
            height,
            width,
            settings["size"],
            settings["size_divisor"],
            stretch_to_divisor=settings["size_divisor_mode"] == "stretch",
        )

    # ------------------------------------------------------------------ pre-processing
    def __call__(self, images, segmentation_maps=None, **kwargs) -> BatchFeature:
        return self.preprocess(images, segmentation_maps=segmentation_maps, **kwargs)

    def preprocess(
        self,
        images,
        segmentation_maps=None,
        instance_id_to_semantic_id: list[dict[int, int]] | dict[int, int] | None = None,
        segments_info: list[list[dict]] | list[dict] | None = None,
        return_tensors: str | None = None,
        **kwargs,
    ) -> BatchFeature:
        r"""Resize, rescale, normalise and pad images; optionally encode their labels.

        Args:
            images: one image or a list of images (PIL of any mode, numpy HWC/CHW/HW, torch CHW/HW; uint8, uint16
                or float), or a 4-D batch. 16-bit values are scaled by `scaling`; float values are taken on the
                0-255 scale. Channels are matched to `num_channels` (for RGB: grey replicated, alpha dropped).
            segmentation_maps: one (H, W) label map per image: semantic classes, or instance ids with
                `instance_id_to_semantic_id`, or COCO panoptic maps (RGB-encoded ids, (H, W, 3)) with `segments_info`.
            instance_id_to_semantic_id: one mapping for all images, or one per image.
            segments_info: per image, the COCO panoptic `segments_info` list (`id`, `category_id`, `iscrowd`).
            return_tensors: `"pt"` (default behaviour) or `"np"`.
            kwargs: any constructor argument, overriding it for this call; also `input_data_format`
                (`"channels_first"` / `"channels_last"`) for arrays whose channel axis cannot be told from the shape.

        Returns:
            `BatchFeature` with `pixel_values` (B, C, H, W) float32, `pixel_mask` (B, H, W) int64 (1 = image, 0 =
            padding) and, with labels, `mask_labels` (list of (N_i, H, W) float32) and `class_labels` (list of
            (N_i,) int64).
        """
        input_data_format = kwargs.pop("input_data_format", None)
        kwargs.pop("data_format", None)  # the output is always channels-first
        if kwargs.pop("pad_and_return_pixel_mask", True) is False:  # transformers' removed argument
            logger.warning_once("`pad_and_return_pixel_mask=False` is ignored: batches are always padded.")
        settings = self._settings(kwargs)
        num_channels = channel_count(settings)
        raw_images = make_image_list(images)
        if settings["do_rescale"] and settings["scaling"] == "range":
            warn_if_already_rescaled(raw_images)
        image_list = [
            to_chw_tensor(
                image,
                "images" if index == 0 and not isinstance(images, (list, tuple)) else f"images[{index}]",
                num_channels=num_channels,
                input_data_format=input_data_format,
                scaling=settings["scaling"],
            )
            for index, image in enumerate(raw_images)
        ]
        channels = {image.shape[0] for image in image_list}
        if len(channels) > 1:
            raise ValueError(
                f"`images` have different channel counts {sorted(channels)}; one batch needs one count (set "
                "`num_channels`, or per-channel `image_mean` / `image_std`, to convert grey and RGBA images)."
            )
        batch_size = len(image_list)
        label_list = prepare_labels(
            segmentation_maps, instance_id_to_semantic_id, segments_info, [tuple(i.shape[-2:]) for i in image_list]
        )

        stretch = settings["size_divisor_mode"] == "stretch"
        resample = RESAMPLE_MODES[settings["resample"]]
        if settings["do_resize"]:
            new_sizes = [
                resized_hw(*image.shape[-2:], settings["size"], settings["size_divisor"], stretch_to_divisor=stretch)
                for image in image_list
            ]
        else:
            new_sizes = [tuple(image.shape[-2:]) for image in image_list]
        if settings["pad_size"] is not None:
            padded = (settings["pad_size"]["height"], settings["pad_size"]["width"])
        else:
            padded = (max(h for h, _ in new_sizes), max(w for _, w in new_sizes))
            if not stretch:
                # Detectron2's ImageList pads the batch to a multiple of size_divisibility
                padded = (round_up(padded[0], settings["size_divisor"]), round_up(padded[1], settings["size_divisor"]))
        if any(h > padded[0] or w > padded[1] for h, w in new_sizes):
            raise ValueError(f"`pad_size` {padded} is smaller than a resized image (sizes {new_sizes}).")

        # written image by image and padding by padding: filling whole buffers first costs as much as the images
        pixel_values = torch.empty((batch_size, channels.pop(), *padded), dtype=torch.float32)
        pixel_mask = torch.empty((batch_size, *padded), dtype=torch.int64)
        image_mean, image_std = statistics(settings)
        # images of equal size and dtype are resized as one batch
        groups = defaultdict(list)
        for index, image in enumerate(image_list):
            groups[(tuple(image.shape), image.dtype)].append(index)
        for indices in groups.values():
            # stacked as (group, H, W, 3) and viewed as (group, 3, H, W): channels-last memory, which torch's
            # antialiased uint8 resize needs anyway (it would otherwise convert)
            hwc = [image_list[i].permute(1, 2, 0) for i in indices]
            if hwc[0].device.type == "cpu" and hwc[0].dtype != torch.bfloat16:
                # numpy's single-threaded copy; torch's threaded copy of small uint8 tensors is slow on busy CPUs
                stacked = torch.from_numpy(np.stack([image.numpy() for image in hwc])).permute(0, 3, 1, 2)
            else:
                stacked = torch.stack(hwc).permute(0, 3, 1, 2)
            new_h, new_w = new_sizes[indices[0]]
            stacked = resize_batch(stacked, (new_h, new_w), resample)
            for position, index in enumerate(indices):
                rescale_and_normalize(
                    stacked[position],
                    do_rescale=settings["do_rescale"],
                    rescale_factor=settings["rescale_factor"],
                    do_normalize=settings["do_normalize"],
                    image_mean=image_mean,
                    image_std=image_std,
                    out=pixel_values[index, :, :new_h, :new_w],
                )
                for target, inside in ((pixel_values[index], None), (pixel_mask[index], 1)):
                    if inside is not None:
                        target[:new_h, :new_w] = inside
                    target[..., new_h:, :] = 0
                    target[..., :new_h, new_w:] = 0

        data = {"pixel_values": pixel_values, "pixel_mask": pixel_mask}
        if label_list is not None:
            data["mask_labels"], data["class_labels"] = self._encode_labels(label_list, new_sizes, padded, settings)
        if return_tensors == "np":
            data = {
                key: value.numpy() if isinstance(value, torch.Tensor) else [v.numpy() for v in value]
                for key, value in data.items()
            }
        elif return_tensors not in (None, "pt"):
            raise ValueError(f"`return_tensors` must be None, 'pt' or 'np'; got {return_tensors!r}.")
        return BatchFeature(data=data)

    def _encode_labels(self, label_list, new_sizes, padded, settings):
        mask_labels, class_labels = [], []
        for index, (label_map, mapping, info) in enumerate(label_list):
            if settings["do_resize"]:
                # nearest-exact keeps label values, as transformers' processor does
                label_map = resize_batch(label_map[None, None], new_sizes[index], "nearest-exact")[0, 0]
            if info is not None:
                masks, classes = encode_panoptic(label_map, info, index, num_labels=settings["num_labels"])
            else:
                masks, classes = encode_semantic_or_instance(
                    label_map,
                    index,
                    instance_id_to_semantic_id=mapping,
                    ignore_index=settings["ignore_index"],
                    do_reduce_labels=settings["do_reduce_labels"],
                    num_labels=settings["num_labels"],
                )
            # padding belongs to no segment (Detectron2 pads target masks with 0); transformers fills ignore_index
            mask_labels.append(pad_bottom_right(masks, padded, 0.0))
            class_labels.append(classes)
        return mask_labels, class_labels


__all__ = ["M2FImageProcessor"]
