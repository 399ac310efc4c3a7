"""Speed of our image processor vs transformers' default (torchvision) Mask2Former processor, in one run.

Pre-processing: 8 images of 480x640 (uint8) resized to shortest edge 512. Post-processing (each task): one image,
100 queries, 133 classes, masks of 128x128, results at 480x640. Both processors get the same inputs and their
default thresholds, alternately. Prints JSON (median milliseconds over `--repeats` runs after one warm-up).

    python benchmarks/bench_processor.py [--repeats 10] [--threads N] [--output results.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn.functional as F
from transformers import Mask2FormerImageProcessor

from m2f_hf.image_processing_m2f import M2FImageProcessor

NUM_IMAGES, IMAGE_HW, SHORTEST_EDGE, LONGEST_EDGE = 8, (480, 640), 512, 2048
NUM_QUERIES, NUM_CLASSES, MASK_HW = 100, 133, (128, 128)
CONFIDENT_QUERIES = 20  # a typical prediction: a few confident queries, the rest predict "no object"


def _interleaved_ms(theirs, ours, repeats: int) -> tuple[float, float]:
    """Median milliseconds of two callables run alternately (so both see the same machine state)."""
    theirs(), ours()  # warm-up
    times = ([], [])
    for _ in range(repeats):
        for fn, bucket in zip((theirs, ours), times):
            start = time.perf_counter()
            fn()
            bucket.append((time.perf_counter() - start) * 1000)
    return statistics.median(times[0]), statistics.median(times[1])


def _model_outputs(seed: int = 0, confident: int = CONFIDENT_QUERIES) -> SimpleNamespace:
    """Outputs shaped like Mask2Former's: smooth blob masks, `confident` queries with a clear class."""
    generator = torch.Generator().manual_seed(seed)
    class_logits = torch.randn(1, NUM_QUERIES, NUM_CLASSES + 1, generator=generator)
    class_logits[0, confident:, -1] += 8  # "no object"
    labels = torch.randint(0, NUM_CLASSES, (confident,), generator=generator)
    class_logits[0, torch.arange(confident), labels] += 8
    coarse = torch.randn(1, NUM_QUERIES, 8, 8, generator=generator) * 6
    mask_logits = F.interpolate(coarse, size=MASK_HW, mode="bilinear", align_corners=False)
    return SimpleNamespace(class_queries_logits=class_logits, masks_queries_logits=mask_logits)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--output", type=str, default=None, help="also write the JSON to this file")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    size = {"shortest_edge": SHORTEST_EDGE, "longest_edge": LONGEST_EDGE}
    theirs = Mask2FormerImageProcessor(size=size)
    ours = M2FImageProcessor(size=size)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (*IMAGE_HW, 3), dtype=np.uint8) for _ in range(NUM_IMAGES)]

    def timed(their_fn, our_fn) -> dict:
        theirs_ms, ours_ms = _interleaved_ms(their_fn, our_fn, args.repeats)
        return {
            "transformers_ms": round(theirs_ms, 2),
            "m2f_hf_ms": round(ours_ms, 2),
            "speedup": round(theirs_ms / ours_ms, 2),
        }

    results = {
        "preprocess_8_images": timed(
            lambda: theirs(images, return_tensors="pt"), lambda: ours(images, return_tensors="pt")
        ),
        "post_process_per_image": {},
    }
    post = results["post_process_per_image"]
    outputs = _model_outputs()
    target_sizes = [IMAGE_HW]
    # masks of 128x128 come from a 512x512 model input: the processor that made them resized to 512x512
    ours_post = M2FImageProcessor(size={"height": 4 * MASK_HW[0], "width": 4 * MASK_HW[1]})
    for task in ("semantic", "instance", "panoptic"):
        name = f"post_process_{task}_segmentation"
        their_fn, our_fn = getattr(theirs, name), getattr(ours_post, name)
        kwargs = {"label_ids_to_fuse": set()} if task == "panoptic" else {}
        post[task] = timed(
            lambda f=their_fn, k=kwargs: f(outputs, target_sizes=target_sizes, **k),
            lambda f=our_fn, k=kwargs: f(outputs, target_sizes=target_sizes, **k),
        )
    # opt-in approximation (class scores combined at mask resolution), not the original's numbers
    post["semantic_exact_false"] = timed(
        lambda: theirs.post_process_semantic_segmentation(outputs, target_sizes=target_sizes),
        lambda: ours_post.post_process_semantic_segmentation(outputs, target_sizes=target_sizes, exact=False),
    )
    # The default semantic path's cost depends on the prediction (how many queries are confident, how much their
    # masks overlap): five more draws of the same kind, and the worst case where every query is confident.
    for key, draws in (
        ("semantic_seeds_1_to_5", [(seed, CONFIDENT_QUERIES) for seed in range(1, 6)]),
        ("semantic_all_queries_confident", [(0, NUM_QUERIES)]),
    ):
        entries = []
        for seed, confident in draws:
            drawn = _model_outputs(seed, confident)
            entries.append(
                timed(
                    lambda o=drawn: theirs.post_process_semantic_segmentation(o, target_sizes=target_sizes),
                    lambda o=drawn: ours_post.post_process_semantic_segmentation(o, target_sizes=target_sizes),
                )
            )
        post[key] = entries[0] if len(entries) == 1 else {"per_seed": entries}
        if len(entries) > 1:
            post[key]["speedup_min"] = min(entry["speedup"] for entry in entries)
    results["setup"] = {
        "images": f"{NUM_IMAGES} x {IMAGE_HW[0]}x{IMAGE_HW[1]} uint8, shortest edge {SHORTEST_EDGE}",
        "outputs": f"{NUM_QUERIES} queries, {NUM_CLASSES} classes, masks {MASK_HW[0]}x{MASK_HW[1]} -> {IMAGE_HW}",
        "repeats": args.repeats,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
    }
    text = json.dumps(results, indent=2)
    print(text)
    if args.output:
        with open(args.output, "w") as handle:
            handle.write(text + "\n")


if __name__ == "__main__":
    main()
