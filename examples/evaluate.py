#!/usr/bin/env python
"""Evaluate a Mask2Former (m2f_hf) checkpoint: PQ, mask AP or mIoU, printed as JSON and written to a file.

    python examples/evaluate.py --model_name_or_path out --dataset_name ./shapes-panoptic --task panoptic
    accelerate launch examples/evaluate.py --model_name_or_path out --dataset_name ./coco-panoptic \
        --task panoptic --with_panoptic_extras --output_file results.json

Each process evaluates its share of the split; the evaluators' statistics are then summed across processes
(`accelerator.reduce` for PQ / mIoU counts, `gather_object` for the run-length encoded masks of AP) and the main
process prints and writes the metrics. `--dataset_name` is a Hub id or a local path (a `save_to_disk` directory, an
imagefolder or parquet files). Default columns: semantic `image` + `annotation` (class ids); instance `image` +
`annotation` (class id in R, instance id in G); panoptic `image` + `label` (RGB ids, R + 256 G + 256^2 B) +
`segments_info`. Class names come from `--categories_file`, a `categories.json` beside a local dataset, or the
dataset's ClassLabel feature, in the order of the model's classes. See docs/evaluation.md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time

import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader, Subset
from tqdm.auto import tqdm

from m2f_hf import M2FForUniversalSegmentation
from m2f_hf.data import (
    Collator,
    FormatAdapter,
    ResizeShortestEdge,
    SegmentationDataset,
    resolve_label_set,
    training_channels,
)
from m2f_hf.evaluation import InstanceEvaluator, PanopticEvaluator, SemanticEvaluator
from m2f_hf.image_processing_m2f import M2FImageProcessor


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model_name_or_path", required=True, help="an m2f_hf checkpoint (directory or Hub id)")
    p.add_argument("--dataset_name", required=True, help="Hub dataset id or local path")
    p.add_argument("--dataset_config_name", default=None)
    p.add_argument("--task", choices=["semantic", "instance", "panoptic"], required=True)
    p.add_argument("--split", default="validation")
    p.add_argument("--image_column_name", default=None, help="default: image")
    p.add_argument("--label_column_name", default=None, help="default: annotation (semantic/instance), label")
    p.add_argument("--segments_info_column_name", default=None, help="default: segments_info (panoptic)")
    p.add_argument("--categories_file", default=None, help='JSON {"0": "name"} or [{"id", "name", "isthing"}]')
    p.add_argument("--ignore_index", type=int, default=255)
    p.add_argument("--do_reduce_labels", action="store_true", help="semantic maps whose 0 is 'other' (ADE20K)")
    p.add_argument("--eval_size", type=int, default=None, help="shorter side fed to the model; default: processor's")
    p.add_argument("--per_device_eval_batch_size", type=int, default=2)
    p.add_argument("--max_eval_samples", type=int, default=None)
    p.add_argument("--dataloader_num_workers", type=int, default=0)
    p.add_argument("--mixed_precision", choices=["no", "fp16", "bf16"], default=None)
    p.add_argument("--threshold", type=float, default=None, help="post-processing score threshold; default per task")
    p.add_argument("--overlap_mask_area_threshold", type=float, default=None, help="default per task")
    p.add_argument(
        "--with_panoptic_extras",
        action="store_true",
        help="panoptic task: also AP^Th_pan (thing segments scored as instances) and mIoU_pan (merged by class)",
    )
    p.add_argument("--output_file", default="eval_results.json")
    return p.parse_args(argv)


def load_split(args):
    """The evaluation split and its directory when local."""
    import datasets

    name = args.dataset_name
    local_dir = name if os.path.isdir(name) else None
    if local_dir and (
        os.path.isfile(os.path.join(name, "dataset_dict.json")) or os.path.isfile(os.path.join(name, "state.json"))
    ):
        loaded = datasets.load_from_disk(name)
    elif name.endswith(".parquet"):
        loaded = datasets.load_dataset("parquet", data_files={args.split: name})
    else:
        loaded = datasets.load_dataset(name, args.dataset_config_name)
    if isinstance(loaded, datasets.Dataset):
        return loaded, local_dir
    if args.split not in loaded:
        raise ValueError(f"`--split` is {args.split!r}, expected one of the dataset's splits {sorted(loaded)}.")
    return loaded[args.split], local_dir


def build_evaluators(args, id2label: dict[int, str], thing_ids: list[int]) -> dict[str, object]:
    """Evaluators by result-key prefix."""
    if args.task == "semantic":
        return {"": SemanticEvaluator(id2label, ignore_index=args.ignore_index)}
    if args.task == "instance":
        return {"": InstanceEvaluator(id2label, thing_ids)}
    evaluators = {"": PanopticEvaluator(id2label, thing_ids)}
    if args.with_panoptic_extras:
        # The paper's AP^Th_pan and mIoU_pan: the panoptic output read as instances (thing segments with their
        # scores) and merged by class. Both evaluators read panoptic predictions directly.
        evaluators["pan_"] = InstanceEvaluator(id2label, thing_ids)
        evaluators["pan_semantic_"] = SemanticEvaluator(id2label, ignore_index=args.ignore_index)
    return evaluators


def post_process(processor, outputs, args, sizes, pixel_mask, stuff_ids):
    kwargs = {"target_sizes": sizes, "pixel_mask": pixel_mask}
    if args.task == "semantic":
        return processor.post_process_semantic_segmentation(outputs, **kwargs)
    if args.task == "instance":
        # COCO AP ranks every detection: keep low scores and overlapping instances (Mask2Former's evaluation).
        return processor.post_process_instance_segmentation(
            outputs,
            threshold=0.0 if args.threshold is None else args.threshold,
            overlap_mask_area_threshold=0.0
            if args.overlap_mask_area_threshold is None
            else args.overlap_mask_area_threshold,
            return_binary_maps=True,
            **kwargs,
        )
    return processor.post_process_panoptic_segmentation(
        outputs,
        threshold=0.8 if args.threshold is None else args.threshold,
        overlap_mask_area_threshold=0.8
        if args.overlap_mask_area_threshold is None
        else args.overlap_mask_area_threshold,
        label_ids_to_fuse=stuff_ids,
        **kwargs,
    )


def to_cpu(prediction):
    if isinstance(prediction, dict):
        return {key: value.cpu() if torch.is_tensor(value) else value for key, value in prediction.items()}
    return prediction.cpu()


def json_safe(value):
    """NaN (COCO's "undefined") becomes null so that the file is strict JSON."""
    if isinstance(value, dict):
        return {str(key): json_safe(item) for key, item in value.items()}
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    accelerator = Accelerator(mixed_precision=args.mixed_precision)

    split, local_dir = load_split(args)
    label_set = resolve_label_set(split.features, args.categories_file, local_dir)
    model = M2FForUniversalSegmentation.from_pretrained(args.model_name_or_path)
    num_labels = len(model.config.id2label)
    if num_labels != len(label_set.names):
        raise ValueError(
            f"the model predicts {num_labels} classes but the dataset's label set has {len(label_set.names)} "
            "(`--categories_file` must list the model's classes in order)."
        )
    try:
        processor = M2FImageProcessor.from_pretrained(args.model_name_or_path)
    except (OSError, ValueError):
        processor = M2FImageProcessor()
    eval_size = args.eval_size or (processor.size or {}).get("shortest_edge", 512)
    id2label = label_set.id2label
    thing_ids = list(label_set.thing_ids)
    stuff_ids = {index for index in id2label if index not in set(thing_ids)}

    adapter = FormatAdapter.for_task(
        args.task,
        label_set,
        image_column=args.image_column_name,
        label_column=args.label_column_name,
        segments_info_column=args.segments_info_column_name,
        ignore_index=args.ignore_index,
        do_reduce_labels=args.do_reduce_labels,
        num_channels=training_channels(processor, model.config),
        scaling=processor.scaling,
    )
    dataset = SegmentationDataset(
        split, adapter, ResizeShortestEdge(size=eval_size), split=args.split, with_reference=True
    )
    indices = list(range(len(dataset)))[: args.max_eval_samples]
    # Each process takes every num_processes-th image (no padding duplicates, unlike a prepared loader), so the
    # summed statistics count every image once.
    shard = Subset(dataset, indices[accelerator.process_index :: accelerator.num_processes])
    dataloader = DataLoader(
        shard,
        batch_size=args.per_device_eval_batch_size,
        collate_fn=Collator.from_image_processor(processor),
        num_workers=args.dataloader_num_workers,
    )

    model.to(accelerator.device).eval()
    evaluators = build_evaluators(args, id2label, thing_ids)
    start = time.perf_counter()
    with torch.no_grad():
        for batch in tqdm(dataloader, disable=not accelerator.is_local_main_process, desc="evaluating"):
            with accelerator.autocast():
                outputs = model(pixel_values=batch["pixel_values"].to(accelerator.device))
            predictions = post_process(
                processor, outputs, args, batch["original_sizes"], batch["pixel_mask"], stuff_ids
            )
            predictions = [to_cpu(prediction) for prediction in predictions]
            for evaluator in evaluators.values():
                evaluator.process(predictions, batch["references"])

    results: dict = {}
    for prefix, evaluator in evaluators.items():
        evaluator.synchronize(accelerator if accelerator.num_processes > 1 else None)
        for key, value in evaluator.evaluate().items():
            results[prefix + key] = value
    results["num_images"] = len(indices)
    results["seconds"] = time.perf_counter() - start
    results = json_safe(results)
    if accelerator.is_main_process:
        text = json.dumps(results, indent=1, sort_keys=False)
        print(text)
        directory = os.path.dirname(os.path.abspath(args.output_file))
        os.makedirs(directory, exist_ok=True)
        with open(args.output_file, "w") as handle:
            handle.write(text + "\n")
    accelerator.wait_for_everyone()
    return results


if __name__ == "__main__":
    main()
