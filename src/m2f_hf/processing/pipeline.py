"""Support for `pipeline("image-segmentation")` with our models.

transformers' `ImageSegmentationPipeline` pre-processes images one at a time and, with `batch_size > 1`, collates
them with `torch.cat` on `pixel_values`, which fails for images of different sizes (and its `pixel_mask` padding
only pads the height). It also logs an error for any model class missing from its static name tables, which models
registered through `Auto*.register` are.

`register_image_segmentation_pipeline()` installs a subclass of that pipeline for the task. For our image processor
it pads `pixel_values` and `pixel_mask` bottom/right to a common size (what pre-processing the batch together
would do), and it accepts models registered with the Auto classes; every other model keeps transformers' behaviour.
Post-processing learns each image's unpadded size from its original size (`target_size`) and the processor's
resize rule, so the padding added here is cropped off again.

For our processor the pipeline also reads images with `image_modes` instead of transformers' `load_image`, whose
`convert("RGB")` turns 16-bit images white (`scaling="minmax"` stretches each image's range), and instance
segmentation keeps only the model's thing classes (`config.thing_ids`) unless `keep_all_classes=True`; panoptic
segmentation merges the segments of each stuff class into one, as the original does (when the config knows them).
"""

from __future__ import annotations

import base64
import binascii
import collections.abc
import os

import numpy as np
import torch
from PIL import Image, ImageOps
from torch.utils.data import DataLoader
from transformers.pipelines import PIPELINE_REGISTRY
from transformers.pipelines.base import pad_collate_fn
from transformers.pipelines.image_segmentation import ImageSegmentationPipeline
from transformers.pipelines.pt_utils import PipelineDataset, PipelineIterator

from .image_modes import check_scaling, load_image, load_image_bytes
from .image_ops import pad_bottom_right, round_up

_IMAGE_KEYS = ("pixel_values", "pixel_mask")
# call arguments that segment the image itself (m2f_hf.inference.SegmentOptions fields)
WHOLE_IMAGE_ARGUMENTS = ("sliding_window", "window_size", "window_overlap", "tta", "tta_scales", "tta_flip")


def _mask_image(mask: np.ndarray) -> Image.Image:
    return Image.fromarray(np.where(mask, 255, 0).astype(np.uint8), mode="L")


def _pad_images_collate(image_processor, default_collate):
    divisor = getattr(image_processor, "size_divisor", 0)

    def collate(items):
        heights = [item["pixel_values"].shape[-2] for item in items]
        widths = [item["pixel_values"].shape[-1] for item in items]
        padded = (round_up(max(heights), divisor), round_up(max(widths), divisor))
        batch = default_collate([{k: v for k, v in item.items() if k not in _IMAGE_KEYS} for item in items])
        for key in _IMAGE_KEYS:
            if key in items[0]:
                batch[key] = torch.cat([pad_bottom_right(item[key], padded, 0) for item in items], dim=0)
        return batch

    return collate


def load_pipeline_image(image, *, timeout: float | None = None, scaling: str = "range") -> Image.Image:
    """What the pipeline accepts (a local path, an http(s) URL, a base64 string, a PIL image) as a PIL image for
    our processor, EXIF orientation applied: files through `image_modes.load_image`; a PIL image as it is (the
    processor reads every mode, with float values on the 0-255 scale)."""
    if isinstance(image, Image.Image):
        return ImageOps.exif_transpose(image)
    if not isinstance(image, str):
        raise TypeError(
            "`images` must be a local path, an http(s) URL, a base64 string or a PIL image; got "
            f"{type(image).__name__}."
        )
    if image.startswith(("http://", "https://")):
        import httpx

        return load_image_bytes(httpx.get(image, timeout=timeout, follow_redirects=True).content, scaling=scaling)
    if os.path.isfile(image):
        return load_image(image, scaling=scaling)
    encoded = image.split(",", 1)[1] if image.startswith("data:image/") else image
    try:
        data = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError) as error:
        raise ValueError(
            f"`images` entry {image[:80]!r} is neither an existing file, an http(s) URL nor base64 image data."
        ) from error
    return load_image_bytes(data, scaling=scaling)


class M2FImageSegmentationPipeline(ImageSegmentationPipeline):
    """`ImageSegmentationPipeline` that batches images of different sizes for `M2FImageProcessor`, reads every
    image mode, and keeps only thing classes in instance segmentation.

    Extra call arguments: `scaling` (`"range"` or `"minmax"`, for 16-bit and float images), `keep_all_classes`
    (instance segmentation: also return instances of the stuff classes), and the large-image and test-time
    augmentation arguments of `m2f_hf.inference.SegmentOptions`: `sliding_window`, `window_size`,
    `window_overlap`, `tta`, `tta_scales`, `tta_flip` (one image per forward pass: `batch_size` 1).
    """

    def _sanitize_parameters(self, **kwargs):
        preprocess_params, forward_params, postprocess_params = super()._sanitize_parameters(**kwargs)
        if "scaling" in kwargs:
            preprocess_params["scaling"] = check_scaling(kwargs["scaling"])
        if "keep_all_classes" in kwargs:
            postprocess_params["keep_all_classes"] = bool(kwargs["keep_all_classes"])
        whole = {name: kwargs[name] for name in WHOLE_IMAGE_ARGUMENTS if name in kwargs}
        if whole:
            preprocess_params["whole_image"] = True
            postprocess_params["whole_image"] = whole
        return preprocess_params, forward_params, postprocess_params

    def _ours(self) -> bool:
        from ..image_processing_m2f import M2FImageProcessor

        return isinstance(self.image_processor, M2FImageProcessor)

    def preprocess(self, image, subtask=None, timeout=None, scaling=None, whole_image=False):
        if not self._ours():
            if scaling is not None or whole_image:
                raise ValueError(
                    "`scaling`, `sliding_window` and `tta` need the m2f_hf image processor (M2FImageProcessor)."
                )
            return super().preprocess(image, subtask=subtask, timeout=timeout)
        scaling = scaling if scaling is not None else self.image_processor.scaling
        image = load_pipeline_image(image, timeout=timeout, scaling=scaling)
        if whole_image:  # sliding windows and TTA pre-process the image themselves, after the forward step
            return {"whole_image": image}
        # the processor scales PIL images as they come (for a file already scaled, that is the identity)
        inputs = self.image_processor(images=[image], return_tensors="pt", scaling=scaling).to(self.dtype)
        inputs["target_size"] = [(image.height, image.width)]
        return inputs

    def _forward(self, model_inputs):
        if "whole_image" in model_inputs:
            return model_inputs
        return super()._forward(model_inputs)

    def postprocess(
        self,
        model_outputs,
        subtask=None,
        threshold=0.9,
        mask_threshold=0.5,
        overlap_mask_area_threshold=0.5,
        keep_all_classes=False,
        whole_image=None,
    ):
        if whole_image is not None:
            return self._whole_image(
                model_outputs["whole_image"],
                whole_image,
                task=subtask,
                threshold=threshold,
                mask_threshold=mask_threshold,
                overlap_mask_area_threshold=overlap_mask_area_threshold,
                keep_all_classes=keep_all_classes,
            )
        if subtask not in {"instance", "panoptic", None} or not self._ours():
            return super().postprocess(
                model_outputs,
                subtask=subtask,
                threshold=threshold,
                mask_threshold=mask_threshold,
                overlap_mask_area_threshold=overlap_mask_area_threshold,
            )
        from ..inference.segment import stuff_label_ids

        common = {
            "threshold": threshold,
            "mask_threshold": mask_threshold,
            "overlap_mask_area_threshold": overlap_mask_area_threshold,
            "target_sizes": model_outputs["target_size"],
        }
        if subtask == "instance":
            thing_ids = None if keep_all_classes else getattr(self.model.config, "thing_ids", None)
            result = self.image_processor.post_process_instance_segmentation(
                model_outputs, thing_ids=thing_ids, **common
            )[0]
        else:  # panoptic (also transformers' choice when no subtask is given)
            result = self.image_processor.post_process_panoptic_segmentation(
                model_outputs, label_ids_to_fuse=stuff_label_ids(self.model.config), **common
            )[0]
        segmentation = result["segmentation"].cpu().numpy()
        annotations = []
        for segment in result["segments_info"]:
            mask = Image.fromarray(np.where(segmentation == segment["id"], 255, 0).astype(np.uint8), mode="L")
            label = self.model.config.id2label[segment["label_id"]]
            annotations.append({"score": segment["score"], "label": label, "mask": mask})
        return annotations

    def _whole_image(self, image, arguments: dict, *, task, **thresholds) -> list[dict]:
        """Segment `image` with sliding windows or TTA (`m2f_hf.inference`), as pipeline annotations."""
        from types import SimpleNamespace

        from ..inference.segment import SegmentOptions, segment_whole_image

        if task is None:
            task = "semantic" if arguments.get("tta") else "panoptic"
        if "tta_scales" in arguments:
            arguments = {**arguments, "tta_scales": tuple(arguments["tta_scales"])}
        options = SegmentOptions(task=task, **thresholds, **arguments)
        loaded = SimpleNamespace(model=self.model, processor=self.image_processor, device=self.model.device)
        result = segment_whole_image(loaded, image, options)
        id2label = self.model.config.id2label
        if task == "semantic":
            class_map = result.numpy()
            return [
                {"score": None, "label": id2label[c], "mask": _mask_image(class_map == c)}
                for c in np.unique(class_map).tolist()
            ]
        segmentation = result["segmentation"].numpy()
        return [
            {"score": s["score"], "label": id2label[s["label_id"]], "mask": _mask_image(segmentation == s["id"])}
            for s in result["segments_info"]
        ]

    def check_model_type(self, supported_models):
        # transformers compares against its built-in class names only; a class registered with one of the Auto
        # segmentation mappings is supported as well, and so is an exported model run by onnxruntime
        if getattr(type(self.model), "m2f_pipeline_compatible", False):
            return
        from transformers.models.auto.modeling_auto import (
            MODEL_FOR_IMAGE_SEGMENTATION_MAPPING,
            MODEL_FOR_INSTANCE_SEGMENTATION_MAPPING,
            MODEL_FOR_SEMANTIC_SEGMENTATION_MAPPING,
            MODEL_FOR_UNIVERSAL_SEGMENTATION_MAPPING,
        )

        for mapping in (
            MODEL_FOR_IMAGE_SEGMENTATION_MAPPING,
            MODEL_FOR_SEMANTIC_SEGMENTATION_MAPPING,
            MODEL_FOR_INSTANCE_SEGMENTATION_MAPPING,
            MODEL_FOR_UNIVERSAL_SEGMENTATION_MAPPING,
        ):
            registered = mapping._extra_content.values()
            if any(self.model.__class__ is model_class for model_class in registered):
                return
        super().check_model_type(supported_models)

    def get_iterator(self, inputs, num_workers, batch_size, preprocess_params, forward_params, postprocess_params):
        from ..image_processing_m2f import M2FImageProcessor

        if batch_size > 1 and preprocess_params.get("whole_image"):
            raise ValueError("sliding_window and tta segment one image at a time: use batch_size=1.")
        if batch_size <= 1 or not isinstance(self.image_processor, M2FImageProcessor):
            return super().get_iterator(
                inputs, num_workers, batch_size, preprocess_params, forward_params, postprocess_params
            )
        # the same chain as transformers' `Pipeline.get_iterator`, with a collate function that pads images
        if isinstance(inputs, collections.abc.Sized):
            dataset = PipelineDataset(inputs, self.preprocess, preprocess_params)
        else:
            num_workers = min(num_workers, 1)  # an iterable dataset cannot be split between workers
            dataset = PipelineIterator(inputs, self.preprocess, preprocess_params)
        collate = _pad_images_collate(self.image_processor, pad_collate_fn(None, self.image_processor))
        dataloader = DataLoader(dataset, num_workers=num_workers, batch_size=batch_size, collate_fn=collate)
        model_iterator = PipelineIterator(dataloader, self.forward, forward_params, loader_batch_size=batch_size)
        return PipelineIterator(model_iterator, self.postprocess, postprocess_params)


def register_image_segmentation_pipeline() -> None:
    """Use `M2FImageSegmentationPipeline` for the "image-segmentation" task and let it load our models.

    Idempotent. Only the pipeline class of the task entry is replaced; models and defaults stay as transformers
    registered them, plus `M2FForUniversalSegmentation` under `AutoModelForImageSegmentation`, which is how the
    pipeline loads a checkpoint whose architecture is not a transformers class.
    """
    from transformers import AutoModelForImageSegmentation

    from ..configuration_m2f import M2FConfig
    from ..modeling_m2f import M2FForUniversalSegmentation

    AutoModelForImageSegmentation.register(M2FConfig, M2FForUniversalSegmentation, exist_ok=True)
    task = PIPELINE_REGISTRY.supported_tasks["image-segmentation"]
    if task["impl"] is not M2FImageSegmentationPipeline:
        # write the entry directly: `register_pipeline` would log a warning about overwriting a built-in task
        PIPELINE_REGISTRY.supported_tasks["image-segmentation"] = {**task, "impl": M2FImageSegmentationPipeline}
