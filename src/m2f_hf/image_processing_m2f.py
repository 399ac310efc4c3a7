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
from transformers.image_processing_outputs import SemanticSegmentationPostProcessorOutput
from transformers.image_processing_utils import BaseImageProcessor, BatchFeature, get_size_dict
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from transformers.processing_utils import ImagesKwargs

from .processing.image_ops import (
    make_image_list,
    pad_bottom_right,
    rescale_and_normalize,
    resize_batch,
    resized_hw,
    round_up,
    to_chw_tensor,
)
from .processing.labels import check_panoptic_ids, encode_panoptic, encode_semantic_or_instance, label_map_to_tensor
from .processing.postprocess import (
    binary_mask_to_rle,
    instance_inference,
    panoptic_inference,
    resolve_geometry,
    semantic_inference,
)

_SIZE_DIVISOR_MODES = ("pad", "stretch")
# PIL resampling codes -> torch interpolation modes; transformers maps them the same way through torchvision
_RESAMPLE_MODES = {0: "nearest", 2: "bilinear", 3: "bicubic"}
# keys of transformers' config that have no meaning here; dropped on load so they are not saved back
_IGNORED_KEYS = (
    "image_processor_type",
    "processor_class",
    "feature_extractor_type",
    "_max_size",
    "data_format",
    "input_data_format",
    "default_to_square",
    "disable_grouping",
    "device",
    "return_tensors",
    "do_convert_rgb",
    "do_pad",
)


class M2FImageProcessorKwargs(ImagesKwargs, total=False):
    """Keyword arguments accepted by `M2FImageProcessor` (used by `from_pretrained(..., **overrides)`)."""

    size_divisor: int
    size_divisor_mode: str
    pad_size: dict | None
    ignore_index: int | None
    do_reduce_labels: bool
    num_labels: int | None
    mask_stride: int


class M2FImageProcessor(BaseImageProcessor):
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
        image_mean, image_std (`list[float]`, *optional*, default to ImageNet's):
            Per-channel mean and standard deviation.
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
        image_mean: list[float] | None = None,
        image_std: list[float] | None = None,
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
        max_size = kwargs.pop("max_size", None)
        for key in _IGNORED_KEYS:
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
        self.image_mean = list(image_mean if image_mean is not None else IMAGENET_DEFAULT_MEAN)
        self.image_std = list(image_std if image_std is not None else IMAGENET_DEFAULT_STD)
        self.size_divisor = int(size_divisor or 0)
        self.size_divisor_mode = size_divisor_mode
        self.pad_size = dict(pad_size) if pad_size is not None else None
        self.ignore_index = ignore_index
        self.do_reduce_labels = do_reduce_labels
        self.num_labels = num_labels
        self.mask_stride = int(mask_stride)
        self._validate_settings(self.__dict__)

    # ------------------------------------------------------------------ settings
    @staticmethod
    def _validate_settings(settings: dict[str, Any]) -> None:
        if settings["size_divisor_mode"] not in _SIZE_DIVISOR_MODES:
            raise ValueError(
                f"`size_divisor_mode` must be one of {_SIZE_DIVISOR_MODES}; got {settings['size_divisor_mode']!r}."
            )
        if settings["resample"] not in _RESAMPLE_MODES:
            raise ValueError(
                f"`resample` must be a PIL code among {sorted(_RESAMPLE_MODES)} (nearest, bilinear, bicubic); got "
                f"{settings['resample']!r}."
            )
        if settings["size_divisor"] < 0:
            raise ValueError(f"`size_divisor` must be >= 0; got {settings['size_divisor']}.")
        if settings["mask_stride"] < 1:
            raise ValueError(f"`mask_stride` must be >= 1; got {settings['mask_stride']}.")
        if len(settings["image_mean"]) != 3 or len(settings["image_std"]) != 3:
            raise ValueError(
                f"`image_mean` and `image_std` need 3 values (RGB); got {settings['image_mean']} and "
                f"{settings['image_std']}."
            )
        if any(value == 0 for value in settings["image_std"]):
            raise ValueError(f"`image_std` must not contain 0; got {settings['image_std']}.")

    def _settings(self, overrides: dict[str, Any]) -> dict[str, Any]:
        names = (
            "do_resize",
            "size",
            "resample",
            "do_rescale",
            "rescale_factor",
            "do_normalize",
            "image_mean",
            "image_std",
            "size_divisor",
            "size_divisor_mode",
            "pad_size",
            "ignore_index",
            "do_reduce_labels",
            "num_labels",
            "mask_stride",
        )
        unknown = set(overrides) - set(names) - {"reduce_labels"}
        if unknown:
            raise TypeError(f"unexpected keyword arguments {sorted(unknown)}; valid ones are {list(names)}.")
        settings = {name: getattr(self, name) for name in names}
        if "reduce_labels" in overrides:
            overrides = dict(overrides)
            overrides["do_reduce_labels"] = bool(overrides.pop("reduce_labels"))
        settings.update({key: value for key, value in overrides.items() if value is not None})
        settings["size"] = {
            key: value
            for key, value in dict(get_size_dict(settings["size"], default_to_square=False)).items()
            if value is not None
        }
        self._validate_settings(settings)
        return settings

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
            images: one image or a list of images (PIL, numpy HWC/CHW/HW, torch CHW/HW; uint8 or float), or a
                4-D batch. Grayscale is replicated to RGB; an alpha channel is dropped.
            segmentation_maps: one (H, W) label map per image: semantic classes, or instance ids with
                `instance_id_to_semantic_id`, or COCO panoptic maps (RGB-encoded ids, (H, W, 3)) with `segments_info`.
            instance_id_to_semantic_id: one mapping for all images, or one per image.
            segments_info: per image, the COCO panoptic `segments_info` list (`id`, `category_id`, `iscrowd`).
            return_tensors: `"pt"` (default behaviour) or `"np"`.
            kwargs: any constructor argument, overriding it for this call.

        Returns:
            `BatchFeature` with `pixel_values` (B, 3, H, W) float32, `pixel_mask` (B, H, W) int64 (1 = image, 0 =
            padding) and, with labels, `mask_labels` (list of (N_i, H, W) float32) and `class_labels` (list of
            (N_i,) int64).
        """
        kwargs.pop("input_data_format", None)
        kwargs.pop("data_format", None)
        settings = self._settings(kwargs)
        image_list = [to_chw_tensor(image, "images") for image in make_image_list(images)]
        batch_size = len(image_list)
        label_list = self._prepare_labels(
            segmentation_maps, instance_id_to_semantic_id, segments_info, image_list, settings
        )

        stretch = settings["size_divisor_mode"] == "stretch"
        resample = _RESAMPLE_MODES[settings["resample"]]
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
        pixel_values = torch.empty((batch_size, 3, *padded), dtype=torch.float32)
        pixel_mask = torch.empty((batch_size, *padded), dtype=torch.int64)
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
                    image_mean=settings["image_mean"],
                    image_std=settings["image_std"],
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

    def _prepare_labels(self, segmentation_maps, instance_id_to_semantic_id, segments_info, image_list, settings):
        if segmentation_maps is None:
            if segments_info is not None or instance_id_to_semantic_id is not None:
                raise ValueError(
                    "`segments_info` / `instance_id_to_semantic_id` were given without `segmentation_maps`."
                )
            return None
        panoptic = segments_info is not None
        if panoptic and instance_id_to_semantic_id is not None:
            raise ValueError("pass either `segments_info` (COCO panoptic) or `instance_id_to_semantic_id`, not both.")
        batch_size = len(image_list)
        # a single map is (H, W), or (H, W, 3) for an RGB-encoded panoptic map; one more axis is a batch
        single_rank = 3 if panoptic else 2
        if isinstance(segmentation_maps, (list, tuple)):
            maps = list(segmentation_maps)
        elif isinstance(segmentation_maps, (np.ndarray, torch.Tensor)) and segmentation_maps.ndim == single_rank + 1:
            maps = list(segmentation_maps)
        else:
            maps = [segmentation_maps]
        infos = None
        if panoptic:
            if not isinstance(segments_info, (list, tuple)):
                raise ValueError(f"`segments_info` must be a list; got {type(segments_info).__name__}.")
            one_image = len(segments_info) == 0 or isinstance(segments_info[0], dict)
            infos = [list(segments_info)] if one_image else [list(info) for info in segments_info]
        if len(maps) != batch_size:
            raise ValueError(f"got {batch_size} images but {len(maps)} segmentation maps; pass one map per image.")
        if infos is not None and len(infos) != batch_size:
            raise ValueError(f"got {batch_size} images but {len(infos)} segments_info lists; pass one per image.")
        if isinstance(instance_id_to_semantic_id, dict):
            mappings = [instance_id_to_semantic_id] * batch_size
        elif instance_id_to_semantic_id is None:
            mappings = [None] * batch_size
        else:
            mappings = list(instance_id_to_semantic_id)
            if len(mappings) != batch_size:
                raise ValueError(
                    f"got {batch_size} images but {len(mappings)} instance_id_to_semantic_id mappings; pass one "
                    "mapping, or one per image."
                )
        labels = []
        for index, label_map in enumerate(maps):
            tensor = label_map_to_tensor(label_map, index, panoptic=panoptic)
            image_hw = tuple(image_list[index].shape[-2:])
            if tuple(tensor.shape) != image_hw:
                raise ValueError(
                    f"segmentation_maps[{index}] has size {tuple(tensor.shape)} but its image has size {image_hw}; "
                    "a label map must have the size of its image."
                )
            if panoptic:
                check_panoptic_ids(tensor, infos[index], index)
            labels.append((tensor, mappings[index], infos[index] if panoptic else None))
        return labels

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

    # ------------------------------------------------------------------ post-processing
    def _outputs(self, outputs) -> tuple[torch.Tensor, torch.Tensor]:
        def get(name):
            value = getattr(outputs, name, None)
            if value is None and isinstance(outputs, dict):
                value = outputs.get(name)
            if value is None:
                raise ValueError(f"`outputs` must provide `{name}`; got {type(outputs).__name__}.")
            return value

        class_logits, mask_logits = get("class_queries_logits"), get("masks_queries_logits")
        if class_logits.ndim != 3 or mask_logits.ndim != 4 or class_logits.shape[:2] != mask_logits.shape[:2]:
            raise ValueError(
                "expected class_queries_logits (batch, queries, classes + 1) and masks_queries_logits (batch, "
                f"queries, height, width); got {tuple(class_logits.shape)} and {tuple(mask_logits.shape)}."
            )
        return class_logits.detach().float(), mask_logits.detach().float()

    def _geometry(self, mask_logits, target_sizes, pixel_mask):
        return resolve_geometry(
            tuple(mask_logits.shape[-2:]),
            mask_logits.shape[0],
            target_sizes=target_sizes,
            pixel_mask=pixel_mask,
            mask_stride=self.mask_stride,
            resized_size_fn=self.resized_size,
        )

    def post_process_semantic_segmentation(
        self,
        outputs,
        target_sizes: list[tuple[int, int]] | None = None,
        return_segmentation_scores: bool = False,
        *,
        pixel_mask: torch.Tensor | None = None,
        exact: bool = True,
    ):
        r"""Semantic segmentation maps from `M2FForUniversalSegmentation` outputs.

        Args:
            outputs: model outputs with `class_queries_logits` and `masks_queries_logits`.
            target_sizes (`list[tuple[int, int]]`, *optional*): per image, the output (height, width), normally the
                original image size. Without `pixel_mask` these are taken as the original sizes to find the
                unpadded region.
            return_segmentation_scores (`bool`): also return per-class scores (C, H, W).
            pixel_mask (`torch.Tensor`, *optional*): the `pixel_mask` returned by pre-processing; gives the padded
                and unpadded sizes exactly.
            exact (`bool`, defaults to `True`): the original Mask2Former's class map, which upsamples every query's
                mask logits before the sigmoid and the sum over queries (computed with bounds, so that only
                confident queries and undecided pixels cost full-resolution work). `False` combines the class scores at mask resolution
                and upsamples those instead: faster, but not the original's numbers (sigmoid and resizing do not
                commute; about 3% of pixels can change class).

        Returns:
            a list with one (H, W) int64 class map per image, or with `return_segmentation_scores` one
            `SemanticSegmentationPostProcessorOutput` (`segmentation`, `segmentation_scores`) per image. Without
            `target_sizes` the maps have the unpadded input size (with `pixel_mask`) or the padded input size.
        """
        class_logits, mask_logits = self._outputs(outputs)
        geometry = self._geometry(mask_logits, target_sizes, pixel_mask)
        results = []
        for i, geo in enumerate(geometry):
            segmentation, scores = semantic_inference(
                class_logits[i], mask_logits[i], geo, exact=exact, with_scores=return_segmentation_scores
            )
            if return_segmentation_scores:
                results.append(
                    SemanticSegmentationPostProcessorOutput(
                        data={"segmentation": segmentation, "segmentation_scores": scores}
                    )
                )
            else:
                results.append(segmentation)
        return results

    def post_process_instance_segmentation(
        self,
        outputs,
        threshold: float = 0.5,
        mask_threshold: float = 0.5,
        overlap_mask_area_threshold: float = 0.8,
        target_sizes: list[tuple[int, int]] | None = None,
        return_coco_annotation: bool | None = False,
        return_binary_maps: bool | None = False,
        *,
        pixel_mask: torch.Tensor | None = None,
    ) -> list[dict]:
        r"""Instance segmentation from `M2FForUniversalSegmentation` outputs.

        Args:
            outputs: model outputs with `class_queries_logits` and `masks_queries_logits`.
            threshold (`float`): minimum instance score (class probability x mean mask probability in the mask).
            mask_threshold (`float`): mask probability above which a pixel belongs to the instance's mask.
            overlap_mask_area_threshold (`float`): instances are painted by decreasing score; one whose visible part
                is below this fraction of its mask is dropped (use 0 to keep every instance, as for COCO AP).
            target_sizes, pixel_mask: as in `post_process_semantic_segmentation`.
            return_coco_annotation (`bool`): `segmentation` is a list with one run-length encoding (transformers'
                format) of each instance's full mask, in `segments_info` order.
            return_binary_maps (`bool`): `segmentation` is a (N, H, W) float tensor of the full (possibly
                overlapping) instance masks, in `segments_info` order.

        Returns:
            one dict per image: `segmentation` ((H, W) int32 map of segment ids, -1 for background, unless one of the
            options above) and `segments_info` (list of `id`, `label_id`, `was_fused`, `score`), by decreasing score.
        """
        if return_coco_annotation and return_binary_maps:
            raise ValueError("`return_coco_annotation` and `return_binary_maps` cannot both be True.")
        class_logits, mask_logits = self._outputs(outputs)
        geometry = self._geometry(mask_logits, target_sizes, pixel_mask)
        results = []
        for i, geo in enumerate(geometry):
            segmentation, segments, binary_maps = instance_inference(
                class_logits[i],
                mask_logits[i],
                geo,
                threshold=threshold,
                mask_threshold=mask_threshold,
                overlap_mask_area_threshold=overlap_mask_area_threshold,
            )
            if return_coco_annotation:
                segmentation = [binary_mask_to_rle(mask) for mask in binary_maps]
            elif return_binary_maps:
                segmentation = binary_maps
            results.append({"segmentation": segmentation, "segments_info": segments})
        return results

    def post_process_panoptic_segmentation(
        self,
        outputs,
        threshold: float = 0.5,
        mask_threshold: float = 0.5,
        overlap_mask_area_threshold: float = 0.8,
        label_ids_to_fuse: set[int] | None = None,
        target_sizes: list[tuple[int, int]] | None = None,
        *,
        pixel_mask: torch.Tensor | None = None,
    ) -> list[dict]:
        r"""Panoptic segmentation from `M2FForUniversalSegmentation` outputs.

        Args:
            outputs: model outputs with `class_queries_logits` and `masks_queries_logits`.
            threshold (`float`): queries whose best class probability is not above it are dropped.
            mask_threshold (`float`): a pixel joins its winning query's segment only if that query's mask
                probability reaches it.
            overlap_mask_area_threshold (`float`): a segment keeping less than this fraction of its own mask is dropped.
            label_ids_to_fuse (`set[int]`, *optional*): classes (typically "stuff") whose segments share one id.
            target_sizes, pixel_mask: as in `post_process_semantic_segmentation`.

        Returns:
            one dict per image: `segmentation` ((H, W) int32, 0 = no segment, ids from 1) and `segments_info`
            (one entry per id: `id`, `label_id`, `was_fused`, `score`).
        """
        class_logits, mask_logits = self._outputs(outputs)
        geometry = self._geometry(mask_logits, target_sizes, pixel_mask)
        fuse = set(label_ids_to_fuse) if label_ids_to_fuse is not None else set()
        results = []
        for i, geo in enumerate(geometry):
            segmentation, segments = panoptic_inference(
                class_logits[i],
                mask_logits[i],
                geo,
                threshold=threshold,
                mask_threshold=mask_threshold,
                overlap_mask_area_threshold=overlap_mask_area_threshold,
                label_ids_to_fuse=fuse,
            )
            results.append({"segmentation": segmentation, "segments_info": segments})
        return results


__all__ = ["M2FImageProcessor"]
