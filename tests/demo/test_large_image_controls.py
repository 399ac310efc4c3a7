"""The page offers the sliding-window and TTA controls of `SegmentOptions`, and their values reach the shared path."""

from __future__ import annotations

import numpy as np
import pytest
from demo_helpers import GRADIO_MISSING, GRADIO_REASON
from PIL import Image

from m2f_hf.demo import service
from m2f_hf.resources import example_images


def test_the_library_has_every_large_image_control():
    names = [control.name for control in service.available_options()]
    assert names == ["sliding_window", "window_size", "window_overlap", "tta", "keep_all_classes"]
    assert service.default_option_value("window_overlap") == 0.25
    assert service.default_option_value("window_size") is None and service.default_option_value("tta") is False


def test_controls_make_sliding_window_options_and_bad_values_name_the_field():
    controls = {control.name: control for control in service.available_options()}
    options = service.make_options(
        "semantic",
        0.5,
        sliding_window=controls["sliding_window"].convert(True),
        window_size=controls["window_size"].convert(64.0),
        window_overlap=controls["window_overlap"].convert(0.5),
    )
    assert options.sliding_window and options.window_size == 64 and options.window_overlap == 0.5
    with pytest.raises(service.DemoInputError, match="window_size must be a multiple of 32 .* got 100"):
        service.make_options("panoptic", 0.5, sliding_window=True, window_size=controls["window_size"].convert(100))
    with pytest.raises(service.DemoInputError, match="sliding_window and tta cannot be combined"):
        service.make_options("instance", 0.5, tta=True, sliding_window=True)


@pytest.mark.skipif(GRADIO_MISSING, reason=GRADIO_REASON)
def test_the_page_shows_the_controls_and_segments_with_sliding_windows(tmp_path):
    import gradio as gr

    from m2f_hf.demo import app as app_module

    demo_app = app_module.DemoApp(device="cpu", work_dir=tmp_path / "work")
    blocks = demo_app.build()
    labels = {getattr(b, "label", None) for b in blocks.blocks.values()}
    assert {"Sliding window", "Window size", "Window overlap", "Test-time augmentation"} <= labels
    assert any(isinstance(b, gr.Checkbox) and b.label == "Sliding window" for b in blocks.blocks.values())
    image = np.tile(np.asarray(Image.open(example_images()[0]).convert("RGB")), (2, 2, 1))
    Image.fromarray(image).save(tmp_path / "tiled.png")
    upload = {"path": str(tmp_path / "tiled.png"), "url": None, "orig_name": "tiled.png", "meta": {}}
    # controls in page order: sliding window, window size, overlap, tta, keep all classes
    windowed = demo_app.segment(upload, "", "panoptic", 0.5, 0.5, True, None, 0.25, False, False)
    plain = demo_app.segment(upload, "", "panoptic", 0.5, 0.5, False, None, 0.25, False, False)
    squares = [sum(row[1] == "square" for row in result[1]) for result in (windowed, plain)]
    assert squares[0] == 4 and squares[0] > squares[1]  # every tile's square, at the image's own resolution
