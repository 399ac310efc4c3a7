"""The page in a real browser (headless Chromium driven by Playwright): upload a bundled example, submit, read the
overlay and the table and compare them with `m2f-segment`'s output for the same image; download the JSON; click a
row; then a file that is not an image shows an error on the page and the next good request still works.

The screenshot and the measured submit-to-overlay times are written under `test-artifacts/demo/` (or
`$M2F_TEST_ARTIFACTS/demo/`); the paths are printed at the end of the run.
"""

from __future__ import annotations

import io
import json
import time

import numpy as np
import pytest
from demo_helpers import artifacts_dir, expected_rows, parse_rows, record_artifact
from PIL import Image

from m2f_hf.resources import example_images

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


@pytest.fixture(scope="module")
def browser():
    pytest.importorskip("playwright", reason="playwright (Python) is not installed; CI installs it with .[dev]")
    from playwright.sync_api import sync_playwright

    from m2f_hf.demo.browser import chromium_path, launch_chromium

    if chromium_path() is None:
        pytest.skip("no Chromium to drive: `apt-get install -y chromium` (what .ci/run does) or set $M2F_CHROMIUM")
    with sync_playwright() as playwright:
        chromium = launch_chromium(playwright)
        yield chromium
        chromium.close()


def _shown_picture(page, src: str) -> np.ndarray:
    response = page.request.get(src)
    assert response.ok, src
    return np.asarray(Image.open(io.BytesIO(response.body())).convert("RGB"))


def test_page_segments_like_the_cli_and_survives_a_bad_file(demo_server, browser, cli_documents, tmp_path):
    from m2f_hf.demo import service
    from m2f_hf.demo.browser import DemoPage

    context = browser.new_context(viewport={"width": 1280, "height": 1000}, accept_downloads=True)
    page = DemoPage(context.new_page(), demo_server.url)
    start = time.perf_counter()
    page.open()
    timings = {"server_startup_s": demo_server.startup_seconds, "page_load_s": time.perf_counter() - start}
    assert "knows only synthetic shapes" in page.page.locator("#model-note").inner_text()

    # an upload, as the CLI's output for the same file
    example = example_images()[0]
    reference = cli_documents[example.name]
    page.upload(example)
    timings["submit_to_overlay_s"] = [page.submit()]
    assert page.errors() == []
    assert parse_rows(page.table()) == expected_rows(reference)
    overlay_src = page.overlay_src()
    expected_overlay = np.asarray(Image.open(reference["overlay"]).convert("RGB"))
    np.testing.assert_array_equal(_shown_picture(page.page, overlay_src), expected_overlay)
    assert "knows only synthetic shapes" in page.status() and "inference" in page.status()
    screenshot = record_artifact(page.screenshot(artifacts_dir() / "demo-page.png"))
    assert screenshot.stat().st_size > 10_000

    with page.page.expect_download() as download:
        page.page.click("#download-json")
    with open(download.value.path()) as handle:
        assert json.load(handle)["segments"] == reference["segments"]

    # a click on a row shows that segment highlighted, computed from the JSON record
    record = reference["segments"][2]
    page.click_row(2)
    assert page.status().startswith(f"Highlighted segment {record['id']}")
    highlighted = _shown_picture(page.page, page.overlay_src())
    expected = np.asarray(service.highlight(service.read_image(example), record))
    np.testing.assert_array_equal(highlighted, expected)

    # a file that is not an image: a message on the page, no stale result
    not_an_image = tmp_path / "not-an-image.png"
    not_an_image.write_text("this is a text file with an image's name\n")
    page.upload(not_an_image)
    page.submit()
    errors = page.errors()
    assert any("'not-an-image.png' is not an image file" in message for message in errors), errors
    assert page.table() == [] and page.overlay_src() is None
    assert page.status().startswith("The request failed")
    record_artifact(page.screenshot(artifacts_dir() / "demo-page-error.png"))

    # ... and the server still serves the next request
    second = example_images()[1]
    page.upload(second)
    timings["submit_to_overlay_s"].append(page.submit())
    assert parse_rows(page.table()) == expected_rows(cli_documents[second.name])
    np.testing.assert_array_equal(
        _shown_picture(page.page, page.overlay_src()),
        np.asarray(Image.open(cli_documents[second.name]["overlay"]).convert("RGB")),
    )
    context.close()
    timings_file = artifacts_dir() / "demo-timings.json"
    timings_file.write_text(json.dumps(timings, indent=1))
    record_artifact(timings_file)
