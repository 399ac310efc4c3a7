"""Inference beyond one forward pass: loading a model for segmentation, segmenting an image the way
`pipeline("image-segmentation")` does, and the JSON records of `m2f-segment`.

The CLI, batch runs and the web demo all call these functions, so they post-process and report alike. Submodules
are imported on first use (`from m2f_hf.inference import segment_image`), so importing the package costs nothing.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "LoadedModel": "loading",
    "ModelLoadError": "loading",
    "load_segmentation_model": "loading",
    "resolve_device": "loading",
    "SegmentOptions": "segment",
    "segment_image": "segment",
    "encode_mask": "records",
    "segment_record": "records",
    "segments_to_records": "records",
    "result_document": "records",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
