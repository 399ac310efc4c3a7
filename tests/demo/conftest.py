"""Shared pieces of the demo tests: the CLI's JSON for the bundled examples, the demo server, headless Chromium,
and the folder the browser test leaves its screenshot and timings in."""

from __future__ import annotations

import json

import pytest
from demo_helpers import ARTIFACTS, GRADIO_MISSING, GRADIO_REASON

from m2f_hf.resources import example_images

# pycocotools' decode warns about numpy 2's `copy` keyword; not ours to fix
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def pytest_terminal_summary(terminalreporter):
    for path in ARTIFACTS:
        terminalreporter.write_line(f"demo test artifact: {path}")


@pytest.fixture(scope="session")
def cli_documents(tmp_path_factory) -> dict[str, dict]:
    """`m2f-segment`'s JSON document of each bundled example (default options), by file name."""
    from m2f_hf.cli import main

    output = tmp_path_factory.mktemp("cli-output")
    examples = example_images()
    assert main([*map(str, examples), "--output", str(output), "--device", "cpu"]) == 0
    documents = {}
    for path in examples:
        with open(output / f"{path.stem}.json") as handle:
            documents[path.name] = json.load(handle)
        documents[path.name]["overlay"] = output / f"{path.stem}.png"
    return documents


@pytest.fixture(scope="session")
def demo_server():
    """`python -m m2f_hf.demo` on a free loopback port (the bundled model, CPU), for the whole session."""
    if GRADIO_MISSING:
        pytest.skip(GRADIO_REASON)
    from m2f_hf.demo.browser import DemoServer

    server = DemoServer("--device", "cpu").start()
    yield server
    server.stop()
