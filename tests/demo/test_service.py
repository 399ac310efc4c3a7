"""The demo's computing side (m2f_hf.demo.service), without Gradio: models cached, images checked before decoding,
results identical to the CLI's, downloads, highlight from the JSON record."""

from __future__ import annotations

import json
import struct
import threading
import zlib

import numpy as np
import pytest
from demo_helpers import expected_rows, parse_rows
from PIL import Image

from m2f_hf.demo import service
from m2f_hf.inference import SegmentOptions, encode_mask, load_segmentation_model
from m2f_hf.inference.records import decode_mask
from m2f_hf.resources import example_images

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


@pytest.fixture(scope="module")
def loaded():
    return load_segmentation_model(None, "cpu")


def _png_header_only(path, width: int, height: int) -> None:
    """A PNG whose header says `width` x `height` (RGB) with a tiny, truncated body: opening it reads the size,
    decoding it would fail (or, with real data, need width * height * 3 bytes)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)))


def test_model_cache_loads_once_for_concurrent_requests_and_evicts_the_oldest(monkeypatch):
    from m2f_hf.inference import loading

    calls = []
    gate = threading.Event()

    def fake_load(spec, device):
        calls.append(spec)
        gate.wait(5)  # hold the first load so that the other threads arrive while it runs
        return f"model:{spec}"

    monkeypatch.setattr(loading, "load_segmentation_model", fake_load)
    cache = service.ModelCache("cpu", max_models=1)
    results = []
    threads = [threading.Thread(target=lambda: results.append(cache.get("  "))) for _ in range(4)]
    for thread in threads:
        thread.start()
    gate.set()
    for thread in threads:
        thread.join()
    assert calls == [None] and results == ["model:None"] * 4  # a blank box is the bundled model, loaded once
    assert cache.get("a/b") == "model:a/b" and "a/b" in cache and None not in cache  # max_models=1 evicted it
    with pytest.raises(ValueError, match="max_models must be at least 1"):
        service.ModelCache(max_models=0)


def test_a_model_that_fails_to_load_is_tried_again(monkeypatch):
    from m2f_hf.inference import loading

    attempts = []

    def flaky(spec, device):
        attempts.append(spec)
        if len(attempts) == 1:
            raise loading.ModelLoadError(f"model {spec!r}: offline")
        return "model"

    monkeypatch.setattr(loading, "load_segmentation_model", flaky)
    cache = service.ModelCache()
    with pytest.raises(loading.ModelLoadError, match="offline"):
        cache.get("owner/name")
    assert cache.get("owner/name") == "model" and attempts == ["owner/name", "owner/name"]


def test_read_image_refuses_non_images_and_oversized_images_before_decoding(tmp_path):
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    with pytest.raises(service.DemoInputError, match="'notes.png' is not an image file"):
        service.read_image(text)
    huge = tmp_path / "huge.png"
    _png_header_only(huge, 10000, 8000)
    with pytest.raises(service.DemoInputError, match=r"'huge.png' is 10000x8000 pixels \(80.0 MP\).*to 16.8 MP"):
        service.read_image(huge)
    _png_header_only(huge, 20000, 20000)  # Pillow itself refuses to open this one
    with pytest.raises(service.DemoInputError, match=r"more pixels than Pillow opens.*to 16.8 MP"):
        service.read_image(huge)
    with pytest.raises(service.DemoInputError, match="up to 0.0 MP"):
        service.read_image(example_images()[0], max_pixels=100)
    truncated = tmp_path / "cut.png"
    _png_header_only(truncated, 64, 64)  # small enough, but its data is cut short
    with pytest.raises(service.DemoInputError, match="'photo.png': cannot decode the image"):
        service.read_image(truncated, name="photo.png")
    image = service.read_image(example_images()[0])
    assert image.mode == "RGB" and image.size == (128, 128)


def test_segment_gives_the_cli_document_table_and_overlay(loaded, cli_documents, tmp_path):
    example = example_images()[0]
    image = service.read_image(example)
    result = service.segment(image, name=example.name, loaded=loaded, options=SegmentOptions(), alpha=0.5)
    reference = cli_documents[example.name]
    assert result.document["segments"] == reference["segments"]  # same records, RLE included
    assert {k: result.document[k] for k in ("height", "width", "model", "task")} == {
        k: reference[k] for k in ("height", "width", "model", "task")
    }
    assert result.document["image"] == example.name and result.is_default_model and result.seconds > 0
    assert parse_rows(service.table_rows(result.records)) == expected_rows(reference)
    np.testing.assert_array_equal(np.asarray(result.overlay), np.asarray(Image.open(reference["overlay"])))

    folders = service.ResultFolders(tmp_path / "results", keep=2)
    paths = [folders.write(result, service.output_stem("my photo (1).png")) for _ in range(3)]
    png, document = paths[-1]
    assert png.name == "my_photo__1.png" and document.name == "my_photo__1.json"
    with open(document) as handle:
        assert json.load(handle) == result.document
    assert not paths[0][0].exists() and paths[1][0].exists()  # only the newest `keep` folders stay


def test_semantic_rows_have_no_score_and_bad_options_name_the_control(loaded):
    image = service.read_image(example_images()[1])
    options = service.make_options("semantic", 0.5)
    result = service.segment(image, name="x.png", loaded=loaded, options=options, alpha=0.3)
    rows = service.table_rows(result.records)
    assert rows and all(score == "" for _, _, score, _ in rows)
    assert sum(area for *_, area in rows) == 128 * 128  # semantic classes cover every pixel once
    with pytest.raises(service.DemoInputError, match="task must be one of"):
        service.make_options("depth", 0.5)
    with pytest.raises(service.DemoInputError, match="threshold must lie in"):
        service.make_options("panoptic", 1.5)
    with pytest.raises(service.DemoInputError, match="opacity must lie in"):
        service.segment(image, name="x.png", loaded=loaded, options=options, alpha=2.0)


def test_highlight_decodes_the_record_and_find_record_by_id(loaded):
    mask = np.zeros((6, 9), dtype=bool)
    mask[1:4, 2:8] = True
    np.testing.assert_array_equal(decode_mask(encode_mask(mask)), mask)

    image = service.read_image(example_images()[0])
    result = service.segment(image, name="x.png", loaded=loaded, options=SegmentOptions(), alpha=0.5)
    record = service.find_record(result.records, str(result.records[2]["id"]))
    assert record is result.records[2]
    picture = np.asarray(service.highlight(image, record)).astype(int)
    original = np.asarray(image).astype(int)
    inside = decode_mask(record["segmentation"])
    assert (picture[~inside] < original[~inside]).mean() > 0.9  # the rest is darker
    assert np.abs(picture[inside] - original[inside]).sum() > 0  # the segment is tinted
    with pytest.raises(service.DemoInputError, match="no segment with id '99'"):
        service.find_record(result.records, "99")


def test_options_table_offers_only_fields_the_library_has(monkeypatch):
    monkeypatch.setattr(
        service,
        "EXTRA_OPTIONS",
        (
            service.OptionControl("mask_threshold", "Mask threshold", "slider", minimum=0.0, maximum=1.0, step=0.05),
            service.OptionControl("not_a_field", "Nothing", "checkbox"),
        ),
    )
    assert [c.name for c in service.available_options()] == ["mask_threshold"]
    size = service.OptionControl("window_size", "Window size", "number", integer=True)
    assert size.convert(256.0) == 256 and isinstance(size.convert(256.0), int) and size.convert(None) is None
    assert service.OptionControl("tta", "TTA", "checkbox").convert(1) is True
    assert service.default_option_value("mask_threshold") == SegmentOptions().mask_threshold
    assert service.make_options("instance", 0.7, mask_threshold=0.3) == SegmentOptions(
        task="instance", threshold=0.7, mask_threshold=0.3
    )
