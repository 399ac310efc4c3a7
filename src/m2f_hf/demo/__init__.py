"""The web demo: a Gradio page over the same inference path as `m2f-segment` (`m2f-demo`, `python -m m2f_hf.demo`).

    pip install -e ".[demo]"
    m2f-demo                      # http://127.0.0.1:7860, the bundled model, offline
    m2f-demo --model facebook/mask2former-swin-tiny-coco-panoptic --port 8000

`service` computes (no Gradio needed), `app` builds the page, `cli` parses the command line, `browser` drives the
page in headless Chromium for tests and benchmarks. Importing this package imports none of them (nor Gradio).
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "build_demo": "app",
    "DemoApp": "app",
    "require_gradio": "app",
    "main": "cli",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
