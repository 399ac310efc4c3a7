"""Folder throughput of batch runs (`m2f_hf.inference.batch`, what `m2f-segment DIR` does) on the bundled model,
against transformers' `pipeline("image-segmentation")` called image by image, and the start-up time of the
command (`--help`) against `import m2f_hf`, in one run.

Images: `--num-images` synthetic scenes of 128x128 (the bundled model's size, `m2f_hf.data.synthetic`), written as
PNG to a temporary folder. Each configuration segments the whole folder (panoptic, the command's thresholds),
reading the files; "segment" runs keep the results in memory (as the pipeline does), "write" runs also draw and
write the PNG overlay and JSON of every image (the command's default output). Configurations run alternately,
`--repeats` times after a warm-up; the figures are medians. Prints JSON.

    flock /tmp/m2f-bench.lock python benchmarks/bench_batch.py [--num-images 32] [--repeats 3] [--output out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from m2f_hf.data.synthetic import render_scene
from m2f_hf.inference import SegmentOptions, load_segmentation_model
from m2f_hf.inference.batch import run_images
from m2f_hf.inference.inputs import collect_inputs
from m2f_hf.inference.writers import DrawOptions, ImageWriter
from m2f_hf.resources import default_model_path

SIZE = (128, 128)
THRESHOLDS = {"threshold": 0.5, "mask_threshold": 0.5, "overlap_mask_area_threshold": 0.8}


class KeepInMemory:
    """A writer that keeps nothing on disk (segmentation alone, as the pipeline returns it)."""

    def is_done(self, item) -> bool:
        return False

    def write(self, item, image, result):
        return [], 0


def _make_folder(folder: Path, count: int) -> list[str]:
    rng = np.random.default_rng(0)
    paths = []
    for index in range(count):
        image = render_scene(rng, SIZE)[0]
        path = folder / f"scene_{index:03d}.png"
        Image.fromarray(np.asarray(image)).save(path)
        paths.append(str(path))
    return paths


def _median_seconds(command: list[str], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True, timeout=300)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-images", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--startup-repeats", type=int, default=5)
    parser.add_argument("--output", default=None, help="also write the JSON to this file")
    args = parser.parse_args()

    from transformers import pipeline
    from transformers.utils import logging as hf_logging

    import m2f_hf  # noqa: F401  (registers the pipeline for our models)

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    work = Path(tempfile.mkdtemp(prefix="m2f-bench-batch-"))
    try:
        (work / "images").mkdir()
        paths = _make_folder(work / "images", args.num_images)
        items = collect_inputs([str(work / "images")]).images
        loaded = load_segmentation_model(None, "cpu")
        segmenter = pipeline("image-segmentation", model=str(default_model_path()), device="cpu")
        options = SegmentOptions(task="panoptic", **THRESHOLDS)

        def pipeline_one_by_one():
            for path in paths:
                segmenter(path, subtask="panoptic", **THRESHOLDS)

        def ours(workers: int, batch_size: int, write: bool):
            def run():
                output = work / "out"
                shutil.rmtree(output, ignore_errors=True)
                writer = ImageWriter(output, loaded, options, draw=DrawOptions()) if write else KeepInMemory()
                summary = run_images(loaded, items, options, writer, batch_size=batch_size, num_workers=workers)
                assert summary.processed == len(items), summary

            return run

        configurations = {"pipeline, image by image": pipeline_one_by_one}
        for write in (False, True):
            for workers in (0, 2):
                for batch_size in (1, 4):
                    name = f"ours {'write' if write else 'segment'}, {workers} workers, batch {batch_size}"
                    configurations[name] = ours(workers, batch_size, write)
        for run in configurations.values():  # warm-up
            run()
        times = {name: [] for name in configurations}
        for _ in range(args.repeats):
            for name, run in configurations.items():
                start = time.perf_counter()
                run()
                times[name].append(time.perf_counter() - start)
        rates = {name: len(paths) / statistics.median(values) for name, values in times.items()}
        reference = rates["pipeline, image by image"]

        startup = {
            "python -m m2f_hf --help": _median_seconds(
                [sys.executable, "-m", "m2f_hf", "--help"], args.startup_repeats
            ),
            "python -c 'import m2f_hf' (what --help cost before)": _median_seconds(
                [sys.executable, "-c", "import m2f_hf"], max(1, args.startup_repeats // 2)
            ),
        }
        script = shutil.which("m2f-segment")
        if script:
            startup["m2f-segment --help"] = _median_seconds([script, "--help"], args.startup_repeats)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report = {
        "benchmark": "folder throughput and start-up of m2f-segment",
        "images": f"{len(paths)} PNG of {SIZE[0]}x{SIZE[1]}",
        "machine": {
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(),
        },
        "images_per_second": {name: round(rate, 2) for name, rate in rates.items()},
        "speedup_vs_pipeline": {name: round(rate / reference, 2) for name, rate in rates.items()},
        "startup_seconds": {name: round(value, 3) for name, value in startup.items()},
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.output:
        Path(args.output).write_text(text + "\n")


if __name__ == "__main__":
    main()
