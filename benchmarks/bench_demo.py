"""The web demo's speed: start-up time and time from *Segment* to the overlay in a real browser, against the CLI.

    python benchmarks/bench_demo.py [--repeats 5] [--startups 2] [--image PATH] [--threads N]

Ours: `python -m m2f_hf.demo` started `--startups` times in a fresh process (start of the process to the page's
first HTTP 200: imports, the bundled model, the server), and, in headless Chromium (Debian's `chromium`, driven by
Playwright), `--repeats` submissions of one image after a warm-up, each timed from the click to the overlay and the
table being shown. Reference, in the same run: `m2f-segment` on the same image in a fresh process (its whole run:
imports, model, one image, files written), and in this process the page's own computation (`segment_image`, the
records and the drawing, through m2f_hf.demo.service) on the same image, whose median the page's time is compared
with. Memory (`--bursts N`, 0 to skip): a fresh server per setting, one request, then N bursts of 20 concurrent
requests through gradio_client (the bundled examples in turn), the server's resident memory read 1 s after each
burst; with the server's glibc tuning (two heaps, a trim after each request) and without it
(`M2F_DEMO_MALLOC_TUNING=0`). Prints one JSON line; medians in seconds, memory in MiB.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time


def time_cli(image: str, env: dict) -> float:
    with tempfile.TemporaryDirectory() as output:
        start = time.perf_counter()
        command = [sys.executable, "-m", "m2f_hf", image, "--output", output, "--device", "cpu"]
        subprocess.run(command, check=True, env=env, capture_output=True)
        return time.perf_counter() - start


def time_computation(image: str, repeats: int) -> list[float]:
    from m2f_hf.demo import service
    from m2f_hf.inference import SegmentOptions, load_segmentation_model

    loaded = load_segmentation_model(None, "cpu")
    picture = service.read_image(image)
    times = []
    for i in range(repeats + 1):
        start = time.perf_counter()
        service.segment(picture, name="image", loaded=loaded, options=SegmentOptions(), alpha=0.5)
        if i:  # the first is a warm-up
            times.append(time.perf_counter() - start)
    return times


def memory_after_bursts(env: dict, bursts: int, concurrent: int = 20) -> list[float]:
    """The server's RSS (MiB) after one request, then after each of `bursts` bursts of `concurrent` requests."""
    from gradio_client import Client, handle_file

    from m2f_hf.demo.browser import DemoServer
    from m2f_hf.demo.service import available_options, default_option_value
    from m2f_hf.resources import example_images

    examples = [str(p) for p in example_images()]
    # the page's option rows beyond task and threshold (sliding window, TTA, ...), at the CLI's defaults
    extra = [default_option_value(control.name) for control in available_options()]
    with DemoServer("--device", "cpu", env=env) as server:
        client = Client(server.url, verbose=False, download_files=False)
        client.predict(handle_file(examples[0]), "", "panoptic", 0.5, 0.5, *extra, api_name="/segment")
        rss = [server.rss_bytes() / 2**20]
        for _ in range(bursts):
            jobs = [
                client.submit(
                    handle_file(examples[i % len(examples)]), "", "panoptic", 0.5, 0.5, *extra, api_name="/segment"
                )
                for i in range(concurrent)
            ]
            for job in jobs:
                job.result(timeout=600)
            time.sleep(1)
            rss.append(server.rss_bytes() / 2**20)
    return rss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--startups", type=int, default=2)
    parser.add_argument("--image", default=None, help="default: the first bundled example")
    parser.add_argument("--bursts", type=int, default=5, help="bursts of 20 requests for the memory figures")
    parser.add_argument("--threads", type=int, default=None, help="torch threads in every process (default: torch's)")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    from m2f_hf.demo.browser import DemoPage, DemoServer, launch_chromium
    from m2f_hf.resources import example_images

    image = args.image or str(example_images()[0])
    env = {**os.environ}
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
        env["OMP_NUM_THREADS"] = str(args.threads)
    startups, cli_runs = [], []
    for _ in range(args.startups):  # interleaved: the two fresh-process figures see the same machine
        with DemoServer("--device", "cpu", env=env) as server:
            startups.append(server.startup_seconds)
        cli_runs.append(time_cli(image, env))

    page_times = []
    with DemoServer("--device", "cpu", env=env) as server, sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        page = DemoPage(browser.new_page(viewport={"width": 1280, "height": 1000}), server.url).open()
        page.upload(image)
        for i in range(args.repeats + 1):
            seconds = page.submit()
            if page.errors():
                raise RuntimeError(f"the page showed an error: {page.errors()}")
            if i:  # the first is a warm-up
                page_times.append(seconds)
        browser.close()
    computation = time_computation(image, args.repeats)
    memory = {}
    if args.bursts:
        memory = {
            "rss_after_bursts_tuned_mib": memory_after_bursts(env, args.bursts),
            "rss_after_bursts_untuned_mib": memory_after_bursts({**env, "M2F_DEMO_MALLOC_TUNING": "0"}, args.bursts),
        }

    page_median, computation_median = statistics.median(page_times), statistics.median(computation)
    result = {
        "image": os.path.basename(image),
        "threads": args.threads,
        "demo_startup_s": statistics.median(startups),
        "demo_startup_runs_s": startups,
        "cli_cold_run_s": statistics.median(cli_runs),
        "startup_vs_cli_cold_run": statistics.median(startups) / statistics.median(cli_runs),
        "submit_to_overlay_s": page_median,
        "submit_to_overlay_runs_s": page_times,
        "computation_s": computation_median,
        "page_overhead_s": page_median - computation_median,
        "submit_to_overlay_vs_computation": page_median / computation_median,
        **memory,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
