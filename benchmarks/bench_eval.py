"""Speed of the m2f_hf evaluators against torchmetrics on the same synthetic data, in one run.

Each image is a Voronoi partition into `--segments` segments (half things, half stuff with distinct classes, so that
torchmetrics' merging of stuff instances changes nothing); the prediction is the partition of jittered seeds with a
few labels changed. Prints one JSON line with the seconds each implementation took and the speed-up ratios.

    python benchmarks/bench_eval.py                      # 200 images of 512x512, 20 segments each
    python benchmarks/bench_eval.py --num_images 20      # quick run
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np
import torch

from m2f_hf.evaluation import InstanceEvaluator, PanopticEvaluator, SemanticEvaluator


def voronoi(seeds: torch.Tensor, size: int, grid: int) -> torch.Tensor:
    """(size, size) map of the nearest seed index, computed on a `grid` x `grid` lattice and upsampled."""
    coords = (torch.arange(grid, dtype=torch.float32) + 0.5) / grid
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    points = torch.stack([yy.reshape(-1), xx.reshape(-1)], dim=1)  # (grid * grid, 2)
    nearest = torch.cdist(points, seeds).argmin(1).view(1, 1, grid, grid).float()
    return torch.nn.functional.interpolate(nearest, size=(size, size), mode="nearest")[0, 0].to(torch.int32)


def make_data(num_images: int, size: int, num_segments: int, num_classes: int, seed: int):
    generator = torch.Generator().manual_seed(seed)
    thing_ids = list(range(num_classes // 2))
    stuff_ids = list(range(num_classes // 2, num_classes))
    num_things = num_segments // 2
    grid = min(size, 128)
    predictions, references = [], []
    for _ in range(num_images):
        seeds = torch.rand(num_segments, 2, generator=generator)
        things = torch.randint(0, len(thing_ids), (num_things,), generator=generator)
        stuffs = torch.randperm(len(stuff_ids), generator=generator)[: num_segments - num_things] + len(thing_ids)
        labels = torch.cat([things, stuffs])
        ref_index = voronoi(seeds, size, grid)
        pred_seeds = seeds + 0.03 * torch.randn(seeds.shape, generator=generator)
        pred_index = voronoi(pred_seeds, size, grid)
        pred_labels = labels.clone()
        flip = torch.rand(num_segments, generator=generator) < 0.15
        pred_labels[flip & (labels < len(thing_ids))] = torch.randint(0, len(thing_ids), (1,), generator=generator)
        # Reference: segment ids 1..n, a void band at the top; prediction: ids 1..n, no void. Cells that came out
        # empty are not listed (torchmetrics' MeanAveragePrecision would score an empty mask, we drop it).
        ref_map = ref_index + 1
        ref_map[: size // 32] = 0
        pred_map = pred_index + 1
        ref_present = torch.bincount(ref_map.view(-1).long(), minlength=num_segments + 1) > 0
        pred_present = torch.bincount(pred_map.view(-1).long(), minlength=num_segments + 1) > 0
        references.append(
            {
                "segmentation": ref_map,
                "segments_info": [
                    {"id": k + 1, "category_id": int(labels[k]), "iscrowd": 0}
                    for k in range(num_segments)
                    if ref_present[k + 1]
                ],
            }
        )
        scores = torch.rand(num_segments, generator=generator)
        predictions.append(
            {
                "segmentation": pred_map,
                "segments_info": [
                    {"id": k + 1, "label_id": int(pred_labels[k]), "score": float(scores[k]), "was_fused": False}
                    for k in range(num_segments)
                    if pred_present[k + 1]
                ],
            }
        )
    id2label = {class_id: f"class_{class_id}" for class_id in range(num_classes)}
    return predictions, references, id2label, thing_ids, stuff_ids


def to_category_instance(item: dict, label_key: str, void_category: int) -> torch.Tensor:
    """(H, W, 2) (category, instance) map, torchmetrics' panoptic input."""
    segmentation = item["segmentation"].long()
    category = torch.full((int(segmentation.max()) + 1,), void_category, dtype=torch.long)
    for segment in item["segments_info"]:
        category[segment["id"]] = segment[label_key]
    return torch.stack([category[segmentation], segmentation], dim=-1)


def to_semantic(item: dict, label_key: str, fill: int) -> torch.Tensor:
    segmentation = item["segmentation"].long()
    category = torch.full((int(segmentation.max()) + 1,), fill, dtype=torch.long)
    for segment in item["segments_info"]:
        category[segment["id"]] = segment[label_key]
    return category[segmentation]


def timed(function, *args) -> tuple[float, object]:
    start = time.perf_counter()
    result = function(*args)
    return time.perf_counter() - start, result


def batches(items: list, batch_size: int):
    for start in range(0, len(items), batch_size):
        yield items[start : start + batch_size]


def bench_pq(args, predictions, references, id2label, thing_ids, stuff_ids) -> dict:
    from torchmetrics.detection import PanopticQuality

    void = args.num_classes
    # torchmetrics' (category, instance) input is built beforehand and not timed.
    tm_preds = [to_category_instance(p, "label_id", void) for p in predictions]
    tm_refs = [to_category_instance(r, "category_id", void) for r in references]

    def ours():
        evaluator = PanopticEvaluator(id2label, thing_ids)
        for pred_batch, ref_batch in zip(batches(predictions, args.batch_size), batches(references, args.batch_size)):
            evaluator.process(pred_batch, ref_batch)
        return evaluator.evaluate()["PQ"]

    def theirs():
        metric = PanopticQuality(things=set(thing_ids), stuffs=set(stuff_ids), allow_unknown_preds_category=True)
        for pred_batch, ref_batch in zip(batches(tm_preds, args.batch_size), batches(tm_refs, args.batch_size)):
            metric.update(torch.stack(pred_batch), torch.stack(ref_batch))
        return 100.0 * metric.compute().item()

    ours_s, ours_pq = timed(ours)
    theirs_s, theirs_pq = timed(theirs)
    return {
        "pq_ours_s": ours_s,
        "pq_torchmetrics_s": theirs_s,
        "pq_speedup": theirs_s / ours_s,
        "pq": [ours_pq, theirs_pq],
    }


def bench_miou(args, predictions, references, id2label) -> dict:
    from torchmetrics.classification import MulticlassJaccardIndex
    from torchmetrics.segmentation import MeanIoU

    num_classes, ignore = args.num_classes, 255
    # mIoU on the panoptic maps merged by class; reference void becomes ignore_index.
    sem_preds = [to_semantic(p, "label_id", ignore) for p in predictions]
    sem_refs = [to_semantic(r, "category_id", ignore) for r in references]

    def ours():
        evaluator = SemanticEvaluator(id2label, ignore_index=ignore)
        for pred_batch, ref_batch in zip(batches(sem_preds, args.batch_size), batches(sem_refs, args.batch_size)):
            evaluator.process(pred_batch, ref_batch)
        return evaluator.evaluate()["mIoU"]

    def jaccard():
        metric = MulticlassJaccardIndex(num_classes=num_classes, ignore_index=ignore, average="macro")
        for pred_batch, ref_batch in zip(batches(sem_preds, args.batch_size), batches(sem_refs, args.batch_size)):
            metric.update(torch.stack(pred_batch), torch.stack(ref_batch))
        return 100.0 * metric.compute().item()

    def mean_iou():
        # MeanIoU has no ignore_index (ignored pixels become an extra class) and averages per-image IoUs.
        metric = MeanIoU(num_classes=num_classes + 1, input_format="index", per_class=True)
        for pred_batch, ref_batch in zip(batches(sem_preds, args.batch_size), batches(sem_refs, args.batch_size)):
            ref = torch.stack(ref_batch)
            metric.update(torch.stack(pred_batch), torch.where(ref == ignore, num_classes, ref))
        return metric.compute()

    ours_s, ours_miou = timed(ours)
    jaccard_s, jaccard_miou = timed(jaccard)
    results = {
        "miou_ours_s": ours_s,
        "miou_torchmetrics_jaccard_s": jaccard_s,
        "miou_speedup_vs_jaccard": jaccard_s / ours_s,
        "miou": [ours_miou, jaccard_miou],
    }
    if args.with_mean_iou:
        results["miou_torchmetrics_meaniou_s"], _ = timed(mean_iou)
        results["miou_speedup_vs_meaniou"] = results["miou_torchmetrics_meaniou_s"] / ours_s
    return results


def instance_target(item: dict, label_key: str, thing_ids: set[int], with_scores: bool) -> dict:
    segmentation = item["segmentation"].long()
    kept = [s for s in item["segments_info"] if s[label_key] in thing_ids]
    ids = torch.tensor([s["id"] for s in kept], dtype=torch.long)
    target = {
        "masks": segmentation[None] == ids[:, None, None],  # (instances, H, W)
        "labels": torch.tensor([s[label_key] for s in kept], dtype=torch.long),
    }
    if with_scores:
        target["scores"] = torch.tensor([s["score"] for s in kept])
    else:
        target["iscrowd"] = torch.zeros(len(kept), dtype=torch.long)
    return target


def bench_ap(args, predictions, references, id2label, thing_ids) -> dict:
    from torchmetrics.detection import MeanAveragePrecision

    things = set(thing_ids)
    # torchmetrics gets binary masks built beforehand (not timed); it keeps them all until compute().
    tm_preds = [
        [instance_target(p, "label_id", things, True) for p in b] for b in batches(predictions, args.batch_size)
    ]
    tm_refs = [
        [instance_target(r, "category_id", things, False) for r in b] for b in batches(references, args.batch_size)
    ]

    def ours():
        evaluator = InstanceEvaluator(id2label, thing_ids)
        for pred_batch, ref_batch in zip(batches(predictions, args.batch_size), batches(references, args.batch_size)):
            evaluator.process(pred_batch, ref_batch)
        return evaluator.evaluate()["AP"]

    def theirs():
        # COCOeval's float64 thresholds (torchmetrics' float32 defaults shift recall sampling slightly).
        metric = MeanAveragePrecision(
            iou_type="segm",
            backend="pycocotools",
            iou_thresholds=np.linspace(0.5, 0.95, 10).tolist(),
            rec_thresholds=np.linspace(0.0, 1.0, 101).tolist(),
        )
        for pred_batch, ref_batch in zip(tm_preds, tm_refs):
            metric.update(pred_batch, ref_batch)
        return 100.0 * metric.compute()["map"].item()

    ours_s, ours_ap = timed(ours)
    theirs_s, theirs_ap = timed(theirs)
    return {
        "ap_ours_s": ours_s,
        "ap_torchmetrics_s": theirs_s,
        "ap_speedup": theirs_s / ours_s,
        "ap": [ours_ap, theirs_ap],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num_images", type=int, default=200)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--segments", type=int, default=20)
    parser.add_argument("--num_classes", type=int, default=100)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads for both implementations")
    parser.add_argument(
        "--skip_ap", action="store_true", help="skip mask AP (torchmetrics keeps every mask in memory)"
    )
    parser.add_argument(
        "--with_mean_iou", action="store_true", help="also time torchmetrics MeanIoU (one-hot based, much slower)"
    )
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    predictions, references, id2label, thing_ids, stuff_ids = make_data(
        args.num_images, args.size, args.segments, args.num_classes, args.seed
    )
    results: dict[str, object] = {
        "num_images": args.num_images,
        "size": args.size,
        "segments": args.segments,
        "batch_size": args.batch_size,
        "torch_threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
    }
    results.update(bench_pq(args, predictions, references, id2label, thing_ids, stuff_ids))
    results.update(bench_miou(args, predictions, references, id2label))
    if not args.skip_ap:
        results.update(bench_ap(args, predictions, references, id2label, thing_ids))

    def rounded(value):
        if isinstance(value, float):
            return round(value, 4)
        return [rounded(v) for v in value] if isinstance(value, list) else value

    print(json.dumps({key: rounded(value) for key, value in results.items()}))


if __name__ == "__main__":
    main()
