"""Test-time augmentation on the bundled model's held-out set (docs/default_model.md: the validation split of seed 1,
100 images of 128 x 128): semantic mIoU and panoptic PQ with and without it, and the cost per image, in one run.

- semantic: `m2f_hf.inference.tta.segment_tta` (what `SegmentOptions(tta=True)` / `m2f-segment --tta` run), class
  scores averaged over the scales and flips, against plain inference.
- panoptic: an ensemble of the mask predictions (not shipped; measured here to decide): every pass's queries are
  matched to the plain pass's queries by mask IoU (Hungarian), matched class probabilities and mask probabilities
  are averaged at the image's resolution, and the averaged queries go through the plain panoptic inference. PQ with
  the evaluation settings of docs/default_model.md (score threshold 0.8, stuff fused).

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
from m2f_hf.evaluation import PanopticEvaluator, SemanticEvaluator
from m2f_hf.evaluation.convert import rgb_to_id
from m2f_hf.inference import SegmentOptions, load_segmentation_model, segment_image
from m2f_hf.inference.tta import _mirror, scaled_size
from m2f_hf.processing.postprocess import ImageGeometry, panoptic_inference, upsample_crop_resize

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


def _passes(loaded, image, scales, flip):
    """Per pass: (class probabilities (Q, C+1), mask logits (Q, H, W) at the image's size, mirrored back)."""
    processor = loaded.processor
    height, width = image.shape[:2]
    for scale in scales:
        overrides = {} if scale == 1.0 else {"size": scaled_size(dict(processor.size), scale)}
        inputs = processor(images=[image], return_tensors="pt", **overrides)
        for mirrored in (False, True) if flip else (False,):
            values, mask = inputs["pixel_values"], inputs["pixel_mask"]
            if mirrored:
                values, mask = _mirror(values, mask)
            with torch.inference_mode():
                outputs = loaded.model(pixel_values=values, pixel_mask=mask)
            geometry = processor._geometry(outputs.masks_queries_logits, [(height, width)], mask)[0]
            logits = upsample_crop_resize(outputs.masks_queries_logits[0].float(), geometry)
            yield outputs.class_queries_logits[0].float().softmax(-1), logits.flip(-1) if mirrored else logits


def panoptic_ensemble(loaded, image, scales, flip, stuff):
    from scipy.optimize import linear_sum_assignment

    passes = list(_passes(loaded, image, scales, flip))
    reference = scales.index(1.0) * (2 if flip else 1)
    probs, logits = passes[reference]
    prob_sum, mask_sum = probs.clone(), logits.sigmoid()
    count = torch.ones(probs.shape[0])
    ref_binary = (logits > 0).flatten(1).float()
    for index, (other_probs, other_logits) in enumerate(passes):
        if index == reference:
            continue
        binary = (other_logits > 0).flatten(1).float()
        inter = ref_binary @ binary.t()
        union = ref_binary.sum(1)[:, None] + binary.sum(1)[None] - inter
        iou = inter / union.clamp(min=1)
        rows, cols = linear_sum_assignment(-iou.numpy())
        for r, c in zip(rows.tolist(), cols.tolist()):
            if iou[r, c] >= 0.5:
                prob_sum[r] += other_probs[c]
                mask_sum[r] += other_logits[c].sigmoid()
                count[r] += 1
    probs = prob_sum / count[:, None]
    masks = (mask_sum / count[:, None, None]).clamp(1e-6, 1 - 1e-6)
    height, width = image.shape[:2]
    geometry = ImageGeometry((height, width), (height, width), (height, width))
    segmentation, segments = panoptic_inference(
        probs.log(),
        masks.logit(),
        geometry,
        threshold=0.8,
        mask_threshold=0.5,
        overlap_mask_area_threshold=0.8,
        label_ids_to_fuse=stuff,
    )
    return {"segmentation": segmentation, "segments_info": segments}


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
    stuff = {i for i in id2label if i not in things}
    report = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads",
        "images": len(samples),
        "semantic": {},
        "panoptic": {},
    }
    for name, config in CONFIGS.items():
        semantic = SemanticEvaluator(id2label)
        options = SegmentOptions(task="semantic")
        if config is not None:
            options = SegmentOptions(task="semantic", tta=True, tta_scales=config[0], tta_flip=config[1])
        start = time.perf_counter()
        for image, reference in samples:
            semantic.process([segment_image(loaded, image, options)], [reference])
        seconds = (time.perf_counter() - start) / len(samples)
        report["semantic"][name] = {
            "mIoU": round(semantic.evaluate()["mIoU"], 2),
            "ms_per_image": round(1e3 * seconds, 1),
        }

        panoptic = PanopticEvaluator(id2label, things)
        start = time.perf_counter()
        for image, reference in samples:
            if config is None:
                inputs = loaded.processor(images=[image], return_tensors="pt")
                with torch.inference_mode():
                    outputs = loaded.model(**inputs)
                prediction = loaded.processor.post_process_panoptic_segmentation(
                    outputs,
                    threshold=0.8,
                    overlap_mask_area_threshold=0.8,
                    label_ids_to_fuse=stuff,
                    target_sizes=[image.shape[:2]],
                )[0]
            else:
                prediction = panoptic_ensemble(loaded, image, config[0], config[1], stuff)
            panoptic.process([prediction], [reference])
        seconds = (time.perf_counter() - start) / len(samples)
        pq = panoptic.evaluate()
        report["panoptic"][name] = {
            "PQ": round(pq["PQ"], 2),
            "PQ_th": round(pq["PQ_th"], 2),
            "PQ_st": round(pq["PQ_st"], 2),
            "ms_per_image": round(1e3 * seconds, 1),
        }
        print(name, report["semantic"][name], report["panoptic"][name], flush=True)
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
