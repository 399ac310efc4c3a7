"""The public API of m2f_hf, and its registration with transformers' Auto classes (importing this module does it).

`m2f_hf/__init__.py` imports it at once, except while the `m2f-segment` command starts (`m2f_hf._startup`).
"""

from .configuration_m2f import M2FConfig
from .image_processing_m2f import M2FImageProcessor
from .modeling_m2f import (
    M2FForUniversalSegmentation,
    M2FForUniversalSegmentationOutput,
    M2FModel,
    M2FModelOutput,
    M2FPreTrainedModel,
)
from .resources import default_model_path, example_images

__all__ = [
    "M2FConfig",
    "M2FForUniversalSegmentation",
    "M2FForUniversalSegmentationOutput",
    "M2FImageProcessor",
    "M2FModel",
    "M2FModelOutput",
    "M2FPreTrainedModel",
    "default_model_path",
    "example_images",
]


def _register_auto_classes() -> None:
    from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoModelForUniversalSegmentation

    from .processing.pipeline import register_image_segmentation_pipeline

    AutoConfig.register(M2FConfig.model_type, M2FConfig, exist_ok=True)
    AutoModel.register(M2FConfig, M2FModel, exist_ok=True)
    AutoModelForUniversalSegmentation.register(M2FConfig, M2FForUniversalSegmentation, exist_ok=True)
    # transformers 5 looks up the "torchvision" (fast) slot first; ours serves both.
    AutoImageProcessor.register(
        M2FConfig, image_processor_classes={"torchvision": M2FImageProcessor, "pil": M2FImageProcessor}, exist_ok=True
    )
    # pipeline("image-segmentation") loads through AutoModelForImageSegmentation and needs our batching-safe class.
    register_image_segmentation_pipeline()


_register_auto_classes()
