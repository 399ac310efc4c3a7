"""Load: 20 concurrent requests through gradio_client (the queue on) all come back with the CLI's results, and the
server's resident memory returns to its level before them."""

from __future__ import annotations

import json
import threading
import time
import urllib.request

import pytest
from demo_helpers import artifacts_dir, expected_rows, parse_rows, record_artifact

from m2f_hf.resources import example_images

CONCURRENT = 20
# What the server may keep after a burst beyond its level before it: measured +2 to +4 MiB per burst once the worker
# threads exist (docs/demo.md, "Memory"); one leaked 128x128 result per request would add several MiB per burst,
# and the full-size mask stack that post-processing allocates, far more.
MEMORY_SLACK_MIB = 24


def _burst(client, examples):
    from gradio_client import handle_file

    from m2f_hf.demo.service import available_options, default_option_value

    # the page's option rows beyond task and threshold (sliding window, TTA, ...), at the CLI's defaults
    extra = [default_option_value(control.name) for control in available_options()]
    jobs = [
        client.submit(
            handle_file(str(examples[i % len(examples)])), "", "panoptic", 0.5, 0.5, *extra, api_name="/segment"
        )
        for i in range(CONCURRENT)
    ]
    return [job.result(timeout=600) for job in jobs]


def test_twenty_concurrent_requests_give_the_cli_results_and_memory_comes_back(demo_server, cli_documents):
    gradio_client = pytest.importorskip("gradio_client", reason="gradio_client comes with gradio (the demo extra)")
    client = gradio_client.Client(demo_server.url, verbose=False, download_files=False)
    examples = example_images()
    _burst(client, examples)  # warm-up: the queue's worker threads (and their heaps) come into being
    time.sleep(1)
    before = demo_server.rss_bytes()

    peak, sampling = [before], threading.Event()

    def sample():
        while not sampling.is_set():
            peak.append(demo_server.rss_bytes())
            time.sleep(0.05)

    sampler = threading.Thread(target=sample)
    sampler.start()
    start = time.perf_counter()
    try:
        results = _burst(client, examples)
    finally:
        seconds = time.perf_counter() - start
        sampling.set()
        sampler.join()
    time.sleep(1)
    after = demo_server.rss_bytes()

    assert len(results) == CONCURRENT
    for i, (overlay, table, png, document, status) in enumerate(results):
        reference = cli_documents[examples[i % len(examples)].name]
        assert parse_rows(table["data"]) == expected_rows(reference), i
        with urllib.request.urlopen(document["url"], timeout=30) as response:
            assert json.load(response)["segments"] == reference["segments"], i
        assert overlay["url"] and png["url"] and f"{len(reference['segments'])} segments" in status
    mib = 2**20
    figures = {
        "requests": CONCURRENT,
        "seconds": seconds,
        "rss_before_mib": before / mib,
        "rss_peak_mib": max(peak) / mib,
        "rss_after_mib": after / mib,
    }
    record_artifact(artifacts_dir() / "demo-load.json").write_text(json.dumps(figures, indent=1))
    assert after - before < MEMORY_SLACK_MIB * mib, figures
