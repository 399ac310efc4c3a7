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
"""

from __future__ import annotations

import collections.abc

import torch
from torch.utils.data import DataLoader
from transformers.pipelines import PIPELINE_REGISTRY
from transformers.pipelines.base import pad_collate_fn
from transformers.pipelines.image_segmentation import ImageSegmentationPipeline
from transformers.pipelines.pt_utils import PipelineDataset, PipelineIterator

from .image_ops import pad_bottom_right, round_up

_IMAGE_KEYS = ("pixel_values", "pixel_mask")


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


class M2FImageSegmentationPipeline(ImageSegmentationPipeline):
    """`ImageSegmentationPipeline` that batches images of different sizes for `M2FImageProcessor`."""

    def check_model_type(self, supported_models):
        # transformers compares against its built-in class names only; a class registered with one of the Auto
        # segmentation mappings is supported as well
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
