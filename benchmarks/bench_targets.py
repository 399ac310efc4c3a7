#!/usr/bin/env python
"""Memory of the training targets: dense `N x H x W` masks vs `SegmentIndexMap` index maps (issue 13).

Two images of 1024x1024 with 300 segments each (a jittered grid of cells, random classes), mask predictions at 1/4
resolution for 300 queries (every segment matched) and the paper's K = 12544 points. Each form runs in its own
subprocess (inputs built first: the decoded samples, the predictions): encode the samples' targets (`encode_targets` / `encode_target_map`, what `SegmentationDataset` does),
collate (`Collator`), then the matcher and the criterion (forward; `--backward` adds the backward). Memory is the
peak resident size above the level after the inputs were built (the kernel's high-water mark is reset there,
`/proc/self/clear_refs`), and on a GPU the peak CUDA allocation above the inputs; also the bytes of the collated
targets and of the criterion's own copy of them. Both forms draw the same points, so their losses must agree.

    python benchmarks/bench_targets.py [--size 1024] [--segments 300] [--queries 300] [--batch 2] [--aux 0]
                                       [--backward] [--device cpu|cuda] [--threads N]

Prints one JSON line with both forms' figures and the ratios dense / index map (higher is better for the map).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import torch


def make_samples(batch: int, size: int, segments: int, num_labels: int):
    """`batch` Samples whose segment maps hold `segments` cells of a jittered grid (each touching its neighbours)."""
    from m2f_hf.data.formats import Sample

    generator = torch.Generator().manual_seed(0)
    samples = []
    rows = int(segments**0.5)
    cols = -(-segments // rows)
    for _ in range(batch):
        # cell boundaries jittered per image: segments of different sizes, some touching the border
        ys = torch.linspace(0, size, rows + 1) + torch.randn(rows + 1, generator=generator) * size / rows / 6
        xs = torch.linspace(0, size, cols + 1) + torch.randn(cols + 1, generator=generator) * size / cols / 6
        row = torch.bucketize(torch.arange(size) + 0.5, ys[1:-1])  # (size,)
        col = torch.bucketize(torch.arange(size) + 0.5, xs[1:-1])
        cell = row[:, None] * cols + col[None, :]  # (size, size), 0 .. rows * cols - 1
        ids = torch.where(cell < segments, cell + 1, 0)  # cells beyond `segments` are void
        classes = {i: int(torch.randint(0, num_labels, (), generator=generator)) for i in range(1, segments + 1)}
        image = torch.randint(0, 256, (3, size, size), dtype=torch.uint8, generator=generator)
        samples.append(Sample(image=image, segments=ids.to(torch.int64), classes=classes, crowd={}))
    return samples


def rss_bytes(field: str) -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")  # resets VmHWM to the current resident size
        return True
    except OSError:
        return False


def target_bytes(targets) -> int:
    from m2f_hf.segment_targets import SegmentIndexMap

    tensor = targets.index_map if isinstance(targets, SegmentIndexMap) else targets
    return tensor.numel() * tensor.element_size()


def worker(form: str, args) -> dict:
    from m2f_hf.data import Collator, encode_target_map, encode_targets
    from m2f_hf.loss import Mask2FormerCriterion

    device = torch.device(args.device)
    num_labels = 80
    samples = make_samples(args.batch, args.size, args.segments, num_labels)
    generator = torch.Generator().manual_seed(1)
    low = args.size // 4

    def predictions():
        masks = torch.randn(args.batch, args.queries, low, low, generator=generator).to(device)
        classes = torch.randn(args.batch, args.queries, num_labels + 1, generator=generator).to(device)
        return masks.requires_grad_(), classes.requires_grad_()

    masks, classes = predictions()
    auxiliary = [dict(zip(("masks_queries_logits", "class_queries_logits"), predictions())) for _ in range(args.aux)]
    criterion = Mask2FormerCriterion(
        num_labels=num_labels,
        class_weight=2.0,
        mask_weight=5.0,
        dice_weight=5.0,
        no_object_weight=0.1,
        num_points=args.points,
        oversample_ratio=3.0,
        importance_sample_ratio=0.75,
    )
    collate = Collator(image_mean=[123.675, 116.28, 103.53], image_std=[58.395, 57.12, 57.375], rescale_factor=1.0)
    encode = encode_targets if form == "dense" else encode_target_map

    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        cuda_before = torch.cuda.memory_allocated()
    rss_before = rss_bytes("VmRSS")
    hwm_reset = reset_peak_rss()
    torch.manual_seed(123)
    start = time.perf_counter()
    items = []
    for index, sample in enumerate(samples):
        mask_labels, class_labels = encode(sample)
        items.append({"index": index, "image": sample.image, "mask_labels": mask_labels, "class_labels": class_labels})
    batch = collate(items)
    del items
    mask_labels = [m.to(device) for m in batch["mask_labels"]]
    class_labels = [c.to(device) for c in batch["class_labels"]]
    collate_s = time.perf_counter() - start
    peak_collate = (rss_bytes("VmHWM") if hwm_reset else rss_bytes("VmRSS")) - rss_before
    losses = criterion(masks, classes, mask_labels, class_labels, auxiliary or None)
    loss = sum(losses.values())
    if args.backward:
        loss.backward()
    if device.type == "cuda":
        torch.cuda.synchronize()
    total_s = time.perf_counter() - start
    result = {
        "form": form,
        "collate_s": collate_s,
        "collate_matcher_loss_s": total_s,
        "peak_rss_above_inputs_bytes": (rss_bytes("VmHWM") if hwm_reset else rss_bytes("VmRSS")) - rss_before,
        "peak_rss_after_collate_bytes": peak_collate,
        "peak_rss_is_high_water_mark": hwm_reset,
        "collated_target_bytes": sum(target_bytes(m) for m in batch["mask_labels"]),
        "num_targets": [len(c) for c in class_labels],
        "loss": float(loss.detach()),
        "losses": {k: float(v.detach()) for k, v in losses.items()},
    }
    if device.type == "cuda":
        result["peak_cuda_above_inputs_bytes"] = torch.cuda.max_memory_allocated() - cuda_before
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--segments", type=int, default=300)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--points", type=int, default=12544, help="K of matcher and loss (the paper's 112 x 112)")
    parser.add_argument("--aux", type=int, default=0, help="extra (deep supervision) predictions")
    parser.add_argument("--backward", action="store_true")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--worker", choices=["dense", "map"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.worker:
        print(json.dumps(worker(args.worker, args)))
        return
    results = {}
    for form in ("dense", "map"):
        command = [sys.executable, __file__, "--worker", form] + [
            a for a in sys.argv[1:] if a not in ("--worker", "dense", "map")
        ]
        output = subprocess.run(command, capture_output=True, text=True, check=False)
        if output.returncode != 0:
            raise SystemExit(f"{form} worker failed:\n{output.stderr[-3000:]}")
        results[form] = json.loads(output.stdout.strip().splitlines()[-1])
    dense, index_map = results["dense"], results["map"]
    summary = {
        "benchmark": "targets",
        "device": args.device,
        "threads": args.threads or torch.get_num_threads(),
        "image_size": args.size,
        "batch": args.batch,
        "segments_per_image": args.segments,
        "queries": args.queries,
        "points": args.points,
        "aux_predictions": args.aux,
        "backward": args.backward,
        "dense": dense,
        "map": index_map,
        "peak_rss_ratio_dense_over_map": dense["peak_rss_above_inputs_bytes"]
        / index_map["peak_rss_above_inputs_bytes"],
        "collated_target_bytes_ratio": dense["collated_target_bytes"] / index_map["collated_target_bytes"],
        "time_ratio_dense_over_map": dense["collate_matcher_loss_s"] / index_map["collate_matcher_loss_s"],
        "max_abs_loss_difference": max(abs(dense["losses"][k] - index_map["losses"][k]) for k in dense["losses"]),
    }
    if "peak_cuda_above_inputs_bytes" in dense:
        summary["peak_cuda_ratio_dense_over_map"] = (
            dense["peak_cuda_above_inputs_bytes"] / index_map["peak_cuda_above_inputs_bytes"]
        )
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
