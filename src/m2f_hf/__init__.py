"""m2f_hf: Mask2Former for universal image segmentation, Hugging Face style.

Importing the package registers the config, the models and the image processor with transformers' Auto classes
(`m2f_hf._api`). Only while the `m2f-segment` command starts (see `m2f_hf._startup`) is that deferred to the first
use of the API, so that the command parses its options before the heavy imports.
"""

from ._startup import started_as_command

__version__ = "0.1.0"

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

if started_as_command():

    def __getattr__(name: str):
        if name not in __all__:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        return getattr(load_api(), name)

else:
    from ._api import (
        M2FConfig,
        M2FForUniversalSegmentation,
        M2FForUniversalSegmentationOutput,
        M2FImageProcessor,
        M2FModel,
        M2FModelOutput,
        M2FPreTrainedModel,
        default_model_path,
        example_images,
    )


def load_api():
    """Import the package's API and register it with transformers (what `import m2f_hf` does, when deferred)."""
    from . import _api

    globals().update({name: getattr(_api, name) for name in __all__})
    return _api
