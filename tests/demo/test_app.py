"""The page's handlers (m2f_hf.demo.app) called directly, without a browser: the same results as the CLI, every
expected failure turned into a message on the page, and the server state intact after each."""

from __future__ import annotations

import json

import numpy as np
import pytest
from demo_helpers import GRADIO_MISSING, GRADIO_REASON, expected_rows, parse_rows
from PIL import Image

from m2f_hf.resources import example_images

pytestmark = [
    pytest.mark.skipif(GRADIO_MISSING, reason=GRADIO_REASON),
    pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning"),
]


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    from m2f_hf.demo.app import DemoApp

    demo_app = DemoApp(device="cpu", work_dir=tmp_path_factory.mktemp("demo-work"))
    demo_app.preload()
    return demo_app


def _upload(path, name=None):
    """The Image component's raw value for an uploaded file (what the handler gets with preprocess=False)."""
    return {"path": str(path), "url": None, "orig_name": name or path.name, "meta": {"_type": "gradio.FileData"}}


def _segment(app, payload, model="", task="panoptic", threshold=0.5, alpha=0.5):
    from m2f_hf.demo.app import _page_errors

    return _page_errors(app.segment)(payload, model, task, threshold, alpha)


def test_segment_matches_the_cli_and_writes_its_files(app, cli_documents):
    example = example_images()[2]
    overlay, rows, png, document, status, state = _segment(app, _upload(example))
    reference = cli_documents[example.name]
    assert parse_rows(rows) == expected_rows(reference)
    with open(document) as handle:
        assert json.load(handle)["segments"] == reference["segments"]
    expected_picture = np.asarray(Image.open(reference["overlay"]))
    np.testing.assert_array_equal(np.asarray(overlay), expected_picture)
    np.testing.assert_array_equal(np.asarray(Image.open(png)), expected_picture)
    assert f"{len(rows)} segments" in status and "knows only synthetic shapes" in status
    assert state == {"image": str(example), "name": example.name, "overlay": png, "json": document}


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("none", "no image: upload one"),
        ("text", "&#x27;notes.png&#x27; is not an image file"),  # HTML-escaped for the page
        ("huge", "this page segments images of up to 0.0 MP"),
        ("missing model", "no such file or directory"),
        ("folder without config", "folder without config.json"),
        ("bad task", "task must be one of"),
    ],
)
def test_expected_failures_become_page_errors_and_the_next_request_works(app, tmp_path, case, message, monkeypatch):
    import gradio as gr

    payload, kwargs = _upload(example_images()[0]), {}
    if case == "none":
        payload = None
    elif case == "text":
        (tmp_path / "notes.png").write_text("hello")
        payload = _upload(tmp_path / "notes.png")
    elif case == "huge":
        monkeypatch.setattr(app, "max_pixels", 100)
    elif case == "missing model":
        kwargs["model"] = str(tmp_path / "no" / "such" / "model")
    elif case == "folder without config":
        kwargs["model"] = str(tmp_path)
    elif case == "bad task":
        kwargs["task"] = "depth"
    with pytest.raises(gr.Error, match=message):
        _segment(app, payload, **kwargs)
    monkeypatch.undo()
    assert parse_rows(_segment(app, _upload(example_images()[0]))[1])  # the app still serves


def test_a_hub_id_that_cannot_be_fetched_is_a_page_error(app, monkeypatch):
    import gradio as gr
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # what a machine without network reports, at once
    with pytest.raises(gr.Error, match="could not be fetched from the Hugging Face Hub"):
        _segment(app, _upload(example_images()[0]), model="facebook/mask2former-swin-tiny-coco-panoptic")
    assert "facebook/mask2former-swin-tiny-coco-panoptic" not in app.models  # not cached: tried again next time


def test_selecting_a_row_highlights_that_segment(app):
    from m2f_hf.demo import service
    from m2f_hf.demo.app import _page_errors

    example = example_images()[0]
    *_, state = _segment(app, _upload(example))
    with open(state["json"]) as handle:
        records = json.load(handle)["segments"]
    image = service.read_image(example)
    select = _page_errors(app.select)
    by_value, status = select(state, [records[1]["id"], records[1]["label"], "", 0], 1)
    np.testing.assert_array_equal(np.asarray(by_value), np.asarray(service.highlight(image, records[1])))
    assert status.startswith(f"Highlighted segment {records[1]['id']}")
    by_index, _ = select(state, None, 3)  # no row value: the row's position
    np.testing.assert_array_equal(np.asarray(by_index), np.asarray(service.highlight(image, records[3])))
    import gradio as gr

    with pytest.raises(gr.Error, match="segment an image first"):
        select(None, [1, "x", "", 0], 0)


def test_page_has_the_api_endpoint_and_the_controls_of_extra_options(monkeypatch):
    import gradio as gr

    from m2f_hf.demo import app as app_module
    from m2f_hf.demo import service

    monkeypatch.setattr(
        service,
        "EXTRA_OPTIONS",
        (service.OptionControl("mask_threshold", "Mask threshold", "slider", minimum=0.0, maximum=1.0, step=0.1),),
    )
    demo_app = app_module.DemoApp(device="cpu")
    blocks = demo_app.build()
    assert "/segment" in blocks.get_api_info()["named_endpoints"]
    sliders = [b for b in blocks.blocks.values() if isinstance(b, gr.Slider) and b.label == "Mask threshold"]
    assert len(sliders) == 1 and sliders[0].value == 0.5
    seen = []
    monkeypatch.setattr(service, "make_options", lambda task, threshold, **extra: seen.append(extra) or 1 / 0)
    with pytest.raises(ZeroDivisionError):
        demo_app.segment(_upload(example_images()[0]), "", "panoptic", 0.5, 0.5, 0.9)
    assert seen == [{"mask_threshold": 0.9}]  # the control's value reaches SegmentOptions by its field name


def test_sliding_window_mode_has_its_own_size_limit(app, monkeypatch):
    import types

    import gradio as gr

    from m2f_hf.demo import service

    windowed = types.SimpleNamespace(task="panoptic", sliding_window=True)
    monkeypatch.setattr(service, "make_options", lambda task, threshold, **extra: windowed)
    monkeypatch.setattr(app, "max_pixels", 100)  # whole-image limit: not the one that applies
    monkeypatch.setattr(app, "max_pixels_windowed", 200)
    with pytest.raises(
        gr.Error,
        match=r"is 128x128 pixels \(0.0 MP\); this page segments images of up to 0.0 MP in sliding-window mode",
    ):
        _segment(app, _upload(example_images()[0]))


def test_a_too_large_error_of_the_shared_path_is_shown_with_its_message(app, monkeypatch):
    import gradio as gr

    from m2f_hf.demo import service

    class TooLarge(MemoryError):
        pass

    def refuse(*args, **kwargs):
        raise TooLarge("this image needs 40 GB for plain post-processing; use sliding windows")

    monkeypatch.setattr(service, "segment", refuse)
    with pytest.raises(gr.Error, match="needs 40 GB for plain post-processing; use sliding windows"):
        _segment(app, _upload(example_images()[0]))
