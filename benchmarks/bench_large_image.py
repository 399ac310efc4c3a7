"""Peak memory and time of `m2f-segment` on large images, with and without `--sliding-window`, in one run.

Images: mosaics of the bundled model's synthetic scenes (`large_images.shapes_mosaic`, 128 x 128 tiles), saved as
PNG: 10000 x 10000 (300 MB of RGB pixels) and 4000 x 3000. Each case runs the command end to end in a subprocess of
its own (read the file, load the model, segment, write the JSON with every segment's RLE and the overlay PNG), and
its peak RSS is that process's (`os.wait4`). Plain (whole-image) inference of the 10000 x 10000 image is refused by
the command before it runs out of memory; that case records the refusal. Prints JSON.

    flock /tmp/m2f-bench.lock env OMP_NUM_THREADS=2 python benchmarks/bench_large_image.py [--output f.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from large_images import save_mosaic  # noqa: E402

CASES = [
    # (image, task, sliding window)
    ("10000x10000", "panoptic", True),
    ("10000x10000", "semantic", True),
    ("4000x3000", "panoptic", False),
    ("4000x3000", "panoptic", True),
    ("4000x3000", "semantic", False),
    ("4000x3000", "semantic", True),
    ("10000x10000", "panoptic", False),
]


def run_case(image: Path, task: str, windowed: bool, output: Path) -> dict:
    command = [sys.executable, "-m", "m2f_hf", str(image), "--task", task, "--output", str(output), "--overwrite"]
    if windowed:
        command.append("--sliding-window")
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    out, err = process.stdout.read(), process.stderr.read()
    code = os.waitstatus_to_exitcode(status)
    result = {
        "image": image.stem.replace("mosaic_", ""),
        "task": task,
        "sliding_window": windowed,
        "exit_status": code,
        "seconds": round(seconds, 1),
        "peak_rss_gb": round(usage.ru_maxrss / 1e6, 2),  # ru_maxrss is in KB on Linux
    }
    if code == 0:
        document = json.loads((output / f"{image.stem}.json").read_text())
        result["segments"] = len(document["segments"])
        result["json_mb"] = round((output / f"{image.stem}.json").stat().st_size / 1e6, 1)
        result["overlay_mb"] = round((output / f"{image.stem}.png").stat().st_size / 1e6, 1)
    else:
        result["message"] = next((line for line in err.splitlines() if "error" in line), err[-300:])
    del out
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", default=None)
    parser.add_argument("--only", default=None, help="run only the cases of this image (e.g. 10000x10000)")
    parser.add_argument("--sliding-only", action="store_true", help="run only the --sliding-window cases")
    parser.add_argument(
        "--work-dir", default=None, help="where the images and outputs go (default: a temporary folder)"
    )
    args = parser.parse_args()
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="m2f-large-"))
    work.mkdir(parents=True, exist_ok=True)
    images = {}
    for name, (height, width) in (("4000x3000", (3000, 4000)), ("10000x10000", (10000, 10000))):
        path = work / f"mosaic_{name}.png"
        if not path.exists():
            save_mosaic(str(path), height, width)
        images[name] = path
    report = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}",
        "model": "bundled default (20 queries, window 128 = its training size, overlap 0.25)",
        "cases": [],
    }
    for image, task, windowed in CASES:
        if (args.only and image != args.only) or (args.sliding_only and not windowed):
            continue
        result = run_case(images[image], task, windowed, work / "out")
        report["cases"].append(result)
        print(json.dumps(result), flush=True)
        if args.output:  # what has been measured so far
            Path(args.output).write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
