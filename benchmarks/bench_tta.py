"""Test-time augmentation on the bundled model's held-out set (docs/default_model.md: the validation split of seed 1,
100 images of 128 x 128): semantic mIoU, panoptic PQ and instance mask AP with and without it, and the cost per
image, in one run.

- semantic: `m2f_hf.inference.tta.segment_tta` (what `SegmentOptions(tta=True)` / `m2f-segment --tta` run), class
  scores averaged over the scales and flips, against plain inference.
- panoptic: `m2f_hf.inference.tta.panoptic_tta`, the ensemble of the mask predictions: every pass's queries are
  matched to the plain pass's queries by mask IoU (Hungarian), matched class probabilities and mask probabilities
  are averaged at the image's resolution, and the averaged queries go through the plain panoptic inference. PQ with
  the evaluation settings of docs/default_model.md (score threshold 0.8, stuff fused).
- instance: `m2f_hf.inference.tta.instance_tta`, the same ensemble through plain instance inference; COCO mask AP
  over the thing classes with examples/evaluate.py's settings (every query ranked, whole overlapping masks).

    flock /tmp/m2f-bench.lock env OMP_NUM_THREADS=2 python benchmarks/bench_tta.py [--num-images 100] [--output f]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np
import torch

from m2f_hf.data.synthetic import _row, categories, render_scene
from m2f_hf.evaluation import InstanceEvaluator, PanopticEvaluator, SemanticEvaluator
from m2f_hf.evaluation.convert import rgb_to_id
from m2f_hf.inference import SegmentOptions, load_segmentation_model, segment_image

CONFIGS = {
    "plain": None,
    "flip": ((1.0,), True),
    "scales 0.75,1,1.25": ((0.75, 1.0, 1.25), False),
    "scales 0.75,1,1.25 + flip": ((0.75, 1.0, 1.25), True),
    "scales 0.5-1.75 + flip (paper)": ((0.5, 0.75, 1.0, 1.25, 1.5, 1.75), True),
}


def held_out(count: int):
    """The held-out images (as `make_synthetic_dataset("panoptic", num_validation=count, size=128, seed=1)`)."""
    rng = np.random.default_rng([1, 1])
    samples = []
    for _ in range(count):
        row = _row("panoptic", *render_scene(rng, (128, 128)), rng)
        reference = {
            "segmentation": rgb_to_id(np.array(row["label"])),
            "segments_info": [
                {"id": s["id"], "category_id": s["category_id"] - 1, "iscrowd": s["iscrowd"]}
                for s in row["segments_info"]
            ],
        }
        samples.append((np.array(row["image"]), reference))
    return samples


def evaluate(loaded, samples, evaluator, settings: dict):
    """(the evaluator's metrics, seconds per image) of segmenting every sample with `SegmentOptions(**settings)`."""
    options = SegmentOptions(**settings)
    start = time.perf_counter()
    for image, reference in samples:
        evaluator.process([segment_image(loaded, image, options)], [reference])
    return evaluator.evaluate(), (time.perf_counter() - start) / len(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num-images", type=int, default=100)
    parser.add_argument("--output", default=None)
    args = parser.parse_args()
    torch.manual_seed(0)
    loaded = load_segmentation_model(None, "cpu")
    samples = held_out(args.num_images)
    id2label = loaded.id2label
    things = [c["id"] - 1 for c in categories("panoptic") if c["isthing"]]
    report = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads",
        "images": len(samples),
        "semantic": {},
        "panoptic": {},
        "instance": {},
    }
    for name, config in CONFIGS.items():
        tta = {} if config is None else {"tta": True, "tta_scales": config[0], "tta_flip": config[1]}
        semantic, seconds = evaluate(loaded, samples, SemanticEvaluator(id2label), {"task": "semantic", **tta})
        report["semantic"][name] = {"mIoU": round(semantic["mIoU"], 2), "ms_per_image": round(1e3 * seconds, 1)}
        # the evaluation settings of docs/default_model.md; the bundled model's stuff classes are fused
        panoptic_settings = {"task": "panoptic", "threshold": 0.8, "overlap_mask_area_threshold": 0.8, **tta}
        pq, seconds = evaluate(loaded, samples, PanopticEvaluator(id2label, things), panoptic_settings)
        report["panoptic"][name] = {key: round(pq[key], 2) for key in ("PQ", "PQ_th", "PQ_st")}
        report["panoptic"][name]["ms_per_image"] = round(1e3 * seconds, 1)
        # the evaluation settings of examples/evaluate.py: every query ranked, whole (overlapping) masks
        instance_settings = {"task": "instance", "threshold": 0.0, "overlap_mask_area_threshold": 0.0, **tta}
        instance_settings["full_instance_masks"] = True
        ap, seconds = evaluate(loaded, samples, InstanceEvaluator(id2label, things), instance_settings)
        report["instance"][name] = {key: round(ap[key], 2) for key in ("AP", "AP50", "AP75")}
        report["instance"][name]["ms_per_image"] = round(1e3 * seconds, 1)
        print(name, report["semantic"][name], report["panoptic"][name], report["instance"][name], flush=True)
    plain = report["semantic"]["plain"]["ms_per_image"]
    for entry in report["semantic"].values():
        entry["cost_vs_plain"] = round(entry["ms_per_image"] / plain, 2)
    text = json.dumps(report, indent=1)
    print(text)
    if args.output:
        with open(args.output, "w") as handle:
            handle.write(text)


if __name__ == "__main__":
    main()
