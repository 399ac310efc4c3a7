"""m2f_hf: Mask2Former for universal image segmentation, Hugging Face style.

Importing the package registers the config, the models and the image processor with transformers' Auto classes.
"""

from .configuration_m2f import M2FConfig
from .modeling_m2f import (
    M2FForUniversalSegmentation,
    M2FForUniversalSegmentationOutput,
    M2FModel,
    M2FModelOutput,
    M2FPreTrainedModel,
)

__version__ = "0.1.0"

__all__ = [
    "M2FConfig",
    "M2FForUniversalSegmentation",
    "M2FForUniversalSegmentationOutput",
    "M2FModel",
    "M2FModelOutput",
    "M2FPreTrainedModel",
]


def _register_auto_classes() -> None:
    from transformers import AutoConfig, AutoModel, AutoModelForUniversalSegmentation

    AutoConfig.register(M2FConfig.model_type, M2FConfig, exist_ok=True)
    AutoModel.register(M2FConfig, M2FModel, exist_ok=True)
    AutoModelForUniversalSegmentation.register(M2FConfig, M2FForUniversalSegmentation, exist_ok=True)


_register_auto_classes()
