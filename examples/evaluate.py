#!/usr/bin/env python
"""Evaluate a Mask2Former (m2f_hf) checkpoint: PQ, mask AP or mIoU, printed as JSON and written to a file.

    python examples/evaluate.py --model_name_or_path out --dataset_name ./shapes-panoptic --task panoptic
    accelerate launch examples/evaluate.py --model_name_or_path out --dataset_name ./coco-panoptic \
        --task panoptic --with_panoptic_extras --output_file results.json
    python examples/evaluate.py --model_name_or_path out --dataset_name coco/annotations/instances_val2017.json \
        --image_dir coco/val2017 --task instance --predictions_file coco_instances_results.json

Each process evaluates its share of the split; the evaluators' statistics are then summed across processes
(`accelerator.reduce` for PQ / mIoU counts, `gather_object` for the run-length encoded masks of AP) and the main
process prints and writes the metrics. `--dataset_name` is a Hub id or a local path (a `save_to_disk` directory, an
imagefolder or parquet files). Default columns: semantic `image` + `annotation` (class ids); instance `image` +
`annotation` (class id in R, instance id in G); panoptic `image` + `label` (RGB ids, R + 256 G + 256^2 B) +
`segments_info`. Class names come from `--categories_file`, a `categories.json` beside a local dataset, or the
dataset's ClassLabel feature, in the order of the model's classes. A COCO instances JSON is scored by pycocotools
against the file itself, with the model's classes mapped to the file's category ids (`config.dataset_category_ids`,
else by name); `--predictions_file` writes the COCO results JSON (`COCO.loadRes` reads it). A COCO panoptic JSON
(with its PNG folder) gives PQ. See docs/evaluation.md.
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
from m2f_hf.data.coco import CocoDataset
from m2f_hf.data.objects import OBJECTS_COLUMN, ObjectsAdapter, ObjectsSplit, objects_label_set
from m2f_hf.evaluation import InstanceEvaluator, PanopticEvaluator, SemanticEvaluator
from m2f_hf.evaluation.coco_file import CocoFileEvaluator, category_mapping
from m2f_hf.evaluation.predict import post_process_for_evaluation
from m2f_hf.image_processing_m2f import M2FImageProcessor


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model_name_or_path", required=True, help="an m2f_hf checkpoint (directory or Hub id)")
    p.add_argument("--dataset_name", required=True, help="Hub dataset id, local path, or a COCO JSON file")
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
    p.add_argument("--image_dir", default=None, help="COCO JSON: folder of the images (default: the JSON's folder)")
    p.add_argument("--panoptic_dir", default=None, help="COCO panoptic JSON: PNG folder (default: JSON path - .json)")
    p.add_argument(
        "--predictions_file",
        default=None,
        help="instance task on a COCO JSON: also write the COCO results JSON (segm RLE, the dataset's category ids)",
    )
    args = p.parse_args(argv)
    if args.predictions_file and args.task != "instance":
        p.error("--predictions_file writes COCO instance results; it needs --task instance.")
    return args


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


def json_safe(value):
    """NaN (COCO's "undefined") becomes null so that the file is strict JSON."""
    if isinstance(value, dict):
        return {str(key): json_safe(item) for key, item in value.items()}
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def load_model_and_processor(args):
    model = M2FForUniversalSegmentation.from_pretrained(args.model_name_or_path)
    try:
        processor = M2FImageProcessor.from_pretrained(args.model_name_or_path)
    except (OSError, ValueError):
        processor = M2FImageProcessor()
    return model, processor


def check_classes(model, label_set) -> None:
    num_labels = len(model.config.id2label)
    if num_labels != len(label_set.names):
        raise ValueError(
            f"the model predicts {num_labels} classes but the dataset's label set has {len(label_set.names)} "
            "(`--categories_file` must list the model's classes in order)."
        )
    saved = model.config.dataset_category_ids
    if saved is not None and list(saved) != list(label_set.dataset_ids):
        raise ValueError(
            f"the model's classes have the dataset ids {list(saved)[:20]} (config.dataset_category_ids) but the "
            f"dataset's are {label_set.dataset_ids[:20]}; evaluate on the label set the model was trained with."
        )


def coco_instance_evaluator(model, source, label_set) -> CocoFileEvaluator:
    """AP against a COCO ground truth (the file itself, or one built from `objects` rows), with the model's classes
    mapped to its category ids."""
    id2label = {int(k): v for k, v in model.config.id2label.items()}
    categories = [{"id": i, "name": n} for i, n in zip(label_set.dataset_ids, label_set.names)]
    mapping, missing = category_mapping(id2label, model.config.dataset_category_ids, categories)
    thing_ids = model.config.thing_ids
    missing = [index for index in missing if thing_ids is None or index in thing_ids]
    name = getattr(source, "path", "the dataset")
    if missing:
        print(f"warning: model classes {[id2label[i] for i in missing]} have no category in {name}; dropped.")
    absent = sorted(set(label_set.dataset_ids) - set(mapping.values()))
    if absent:
        print(f"warning: categories {absent} of {name} are not among the model's classes; their AP is 0.")
    return CocoFileEvaluator(source.ground_truth, mapping, id2label)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    accelerator = Accelerator(mixed_precision=args.mixed_precision)
    model, processor = load_model_and_processor(args)
    eval_size = args.eval_size or (processor.size or {}).get("shortest_edge", 512)
    resize = ResizeShortestEdge(size=eval_size)

    coco = None
    if args.dataset_name.endswith(".json"):
        # Instances are scored against the file itself (pycocotools reads its masks): no masks to decode here.
        coco = CocoDataset(
            args.dataset_name,
            image_dir=args.image_dir,
            panoptic_dir=args.panoptic_dir,
            split=args.split,
            decode_masks=False,
        )
        expected = "panoptic" if coco.panoptic else "instance"
        if args.task != expected:
            raise ValueError(f"--dataset_name {args.dataset_name} is a COCO {expected} file; use --task {expected}.")
        label_set = coco.label_set
        coco.num_channels, coco.scaling = training_channels(processor, model.config), processor.scaling
        print(coco.summary())
        dataset = SegmentationDataset(coco, coco, resize, split=args.split, with_reference=True)
    else:
        split, local_dir = load_split(args)
    if coco is None and args.task == "instance" and OBJECTS_COLUMN in split.column_names:
        label_set = objects_label_set(split.features, OBJECTS_COLUMN, args.categories_file, local_dir)
        image_column = args.image_column_name or "image"
        coco = ObjectsSplit(split, ObjectsAdapter(label_set, image_column=image_column), args.split)
        adapter = ObjectsAdapter(label_set, image_column=image_column, decode_masks=False)
        adapter.num_channels, adapter.scaling = training_channels(processor, model.config), processor.scaling
        dataset = SegmentationDataset(split, adapter, resize, split=args.split, with_reference=True)
    elif coco is None:
        label_set = resolve_label_set(split.features, args.categories_file, local_dir)
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
        dataset = SegmentationDataset(split, adapter, resize, split=args.split, with_reference=True)
    # images are read as the processor reads them at inference: its channels, its 16-bit scaling
    dataset.adapter.num_channels = training_channels(processor, model.config)
    dataset.adapter.scaling = processor.scaling
    if args.predictions_file and (coco is None or coco.panoptic):
        raise ValueError(
            "--predictions_file needs instance data with COCO image and category ids: a COCO instances JSON or a "
            "dataset with an 'objects' column."
        )
    if coco is not None and not coco.panoptic:
        evaluators = {"": coco_instance_evaluator(model, coco, label_set)}
        thing_ids = model.config.thing_ids
    else:
        check_classes(model, label_set)
        thing_ids = list(label_set.thing_ids)
        evaluators = build_evaluators(args, label_set.id2label, thing_ids)
    stuff_ids = {index for index in label_set.id2label if index not in set(label_set.thing_ids)}

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
    start = time.perf_counter()
    with torch.no_grad():
        for batch in tqdm(dataloader, disable=not accelerator.is_local_main_process, desc="evaluating"):
            with accelerator.autocast():
                outputs = model(pixel_values=batch["pixel_values"].to(accelerator.device))
            predictions = post_process_for_evaluation(
                processor,
                outputs,
                args.task,
                target_sizes=batch["original_sizes"],
                pixel_mask=batch["pixel_mask"],
                stuff_ids=stuff_ids,
                thing_ids=thing_ids if coco is not None else None,
                threshold=args.threshold,
                overlap_mask_area_threshold=args.overlap_mask_area_threshold,
            )
            for evaluator in evaluators.values():
                if isinstance(evaluator, CocoFileEvaluator):
                    evaluator.process(predictions, [coco.image_ids[i] for i in batch["indices"]])
                else:
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
        if args.predictions_file:
            evaluators[""].write_results(args.predictions_file)
            print(f"wrote {len(evaluators[''].results)} COCO results to {args.predictions_file}")
    accelerator.wait_for_everyone()
    return results


if __name__ == "__main__":
    main()
