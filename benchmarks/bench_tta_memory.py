"""Peak memory of test-time augmentation against plain inference, per task, on one large image, in one run.

Each case runs in a subprocess of its own: load the bundled model, read a bundled example enlarged to
`--width` x `--height`, then segment it once with `SegmentOptions(task=..., tta=...)` (TTA defaults: semantic
scales 0.75, 1, 1.25 + flip; panoptic and instance the flip). Reported: the growth of peak RSS during the
segmentation (the model and the image are loaded before), and that growth per query and pixel, the unit of
`m2f_hf.inference.limits` (`BYTES_PER_QUERY_PIXEL`, `TTA_ENSEMBLE_BYTES_PER_QUERY_PIXEL`). Prints JSON.

    OMP_NUM_THREADS=2 python benchmarks/bench_tta_memory.py [--width 2000] [--height 1500]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = """
import json, resource, sys, time
import numpy as np, torch
from PIL import Image
from m2f_hf.inference import SegmentOptions, load_segmentation_model, segment_image
from m2f_hf.resources import example_images
task, tta, width, height = sys.argv[1], sys.argv[2] == "tta", int(sys.argv[3]), int(sys.argv[4])
torch.set_num_threads(2)
loaded = load_segmentation_model(None, "cpu")
image = np.asarray(Image.open(example_images()[0]).convert("RGB").resize((width, height)))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
start = time.perf_counter()
segment_image(loaded, image, SegmentOptions(task=task, tta=tta))
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
queries = loaded.model.config.num_queries
print(json.dumps({"extra_peak_gb": round((peak - before) / 1e9, 3), "seconds": round(seconds, 2),
                  "bytes_per_query_pixel": round((peak - before) / (queries * width * height), 1)}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--width", type=int, default=2000)
    parser.add_argument("--height", type=int, default=1500)
    args = parser.parse_args()
    report = {"image": f"{args.width}x{args.height}", "cases": {}}
    for task in ("semantic", "panoptic", "instance"):
        for mode in ("plain", "tta"):
            command = [sys.executable, "-c", CHILD, task, mode, str(args.width), str(args.height)]
            result = subprocess.run(command, capture_output=True, text=True, check=True)
            report["cases"][f"{task} {mode}"] = json.loads(result.stdout.strip().splitlines()[-1])
    for task in ("semantic", "panoptic", "instance"):
        plain, tta = report["cases"][f"{task} plain"], report["cases"][f"{task} tta"]
        report["cases"][f"{task} tta"]["x_plain_memory"] = round(tta["extra_peak_gb"] / plain["extra_peak_gb"], 2)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
