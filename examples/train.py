#!/usr/bin/env python
"""Train Mask2Former (m2f_hf) for semantic, instance or panoptic segmentation with Accelerate.

    accelerate launch examples/train.py --task panoptic --dataset_name ./shapes-panoptic \
        --model_name_or_path config.json --output_dir out --max_train_steps 1000

`--model_name_or_path` is one of our checkpoints, a transformers-native Mask2Former checkpoint (converted on load), or
a config JSON (ours or transformers') to train from scratch. `--dataset_name` is a Hub id or a local path (a
`save_to_disk` directory, an imagefolder or parquet files). See docs/training.md for the formats and recipes.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import time

import torch
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import DataLoaderConfiguration, set_seed
from torch.utils.data import DataLoader, Subset
from tqdm.auto import tqdm

from m2f_hf import M2FConfig, M2FForUniversalSegmentation
from m2f_hf.data import (
    Collator,
    DataError,
    FormatAdapter,
    ResizeShortestEdge,
    SegmentationDataset,
    build_train_transform,
    resolve_label_set,
    training_channels,
)
from m2f_hf.data.objects import OBJECTS_COLUMN, ObjectsAdapter, ObjectsSplit, objects_label_set
from m2f_hf.image_processing_m2f import M2FImageProcessor
from m2f_hf.matcher import unmatched_targets

logger = get_logger(__name__)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model_name_or_path", required=True, help="our checkpoint, a transformers one, or a config JSON")
    p.add_argument(
        "--dataset_name", required=True, help="Hub dataset id, local path, or a COCO instances / panoptic JSON file"
    )
    p.add_argument("--image_dir", default=None, help="COCO JSON: folder of the images (default: the JSON's folder)")
    p.add_argument("--panoptic_dir", default=None, help="COCO panoptic JSON: PNG folder (default: JSON path - .json)")
    p.add_argument("--validation_annotation_file", default=None, help="COCO JSON of the validation images")
    p.add_argument("--validation_image_dir", default=None, help="default: the validation JSON's folder")
    p.add_argument("--validation_panoptic_dir", default=None, help="default: validation JSON path - .json")
    p.add_argument("--dataset_config_name", default=None)
    p.add_argument("--task", choices=["semantic", "instance", "panoptic"], required=True)
    p.add_argument("--train_split_name", default="train")
    p.add_argument("--validation_split_name", default="validation")
    p.add_argument("--image_column_name", default=None, help="default: image")
    p.add_argument("--label_column_name", default=None, help="default: annotation (semantic/instance), label")
    p.add_argument("--segments_info_column_name", default=None, help="default: segments_info (panoptic)")
    p.add_argument("--categories_file", default=None, help='JSON {"0": "name"} or [{"id", "name", "isthing"}]')
    p.add_argument("--ignore_index", type=int, default=255)
    p.add_argument("--do_reduce_labels", action="store_true", help="semantic maps whose 0 is 'other' (ADE20K)")
    p.add_argument("--output_dir", required=True)
    p.add_argument("--num_train_epochs", type=int, default=1)
    p.add_argument("--max_train_steps", type=int, default=None, help="overrides --num_train_epochs")
    p.add_argument("--per_device_train_batch_size", type=int, default=2)
    p.add_argument("--per_device_eval_batch_size", type=int, default=2)
    p.add_argument("--gradient_accumulation_steps", type=int, default=1)
    p.add_argument("--learning_rate", type=float, default=1e-4)
    p.add_argument("--weight_decay", type=float, default=0.05)
    p.add_argument("--backbone_lr_multiplier", type=float, default=0.1)
    p.add_argument("--lr_scheduler_type", choices=["step", "poly", "constant"], default="step")
    p.add_argument("--lr_steps", type=float, nargs="+", default=[0.9, 0.95], help="step decay points (fractions)")
    p.add_argument("--lr_gamma", type=float, default=0.1)
    p.add_argument("--poly_power", type=float, default=0.9)
    p.add_argument("--num_warmup_steps", type=int, default=0)
    p.add_argument(
        "--max_grad_norm",
        type=float,
        default=0.01,
        help="clip of the full model's gradient norm (the original's 0.01); 0: off",
    )
    p.add_argument("--mixed_precision", choices=["no", "fp16", "bf16"], default=None)
    p.add_argument("--crop_size", type=int, nargs="+", default=[1024], help="H [W] of the training crop")
    p.add_argument("--min_scale", type=float, default=None, help="default 0.1 (LSJ) or 0.5 (semantic)")
    p.add_argument("--max_scale", type=float, default=None, help="default 2.0")
    p.add_argument("--eval_size", type=int, default=None, help="shorter side at evaluation; default min(crop)")
    p.add_argument("--dataloader_num_workers", type=int, default=0)
    p.add_argument("--logging_steps", type=int, default=10)
    p.add_argument("--checkpointing_steps", type=str, default=None, help="an int (every N steps) or 'epoch'")
    p.add_argument("--resume_from_checkpoint", type=str, default=None, help="a checkpoint dir or 'latest'")
    p.add_argument(
        "--eval_steps",
        type=int,
        default=None,
        help="evaluate on the validation split every N steps and at the end (default: at the end only; 0: never)",
    )
    p.add_argument("--max_eval_samples", type=int, default=None)
    p.add_argument("--with_tracking", action="store_true", help="log to TensorBoard in output_dir")
    p.add_argument("--push_to_hub", action="store_true")
    p.add_argument("--hub_model_id", default=None)
    p.add_argument("--hub_token", default=None)
    p.add_argument("--seed", type=int, default=42)
    args = p.parse_args(argv)
    if len(args.crop_size) not in (1, 2):
        p.error(f"--crop_size takes 1 or 2 values, got {args.crop_size}")
    args.crop_size = (args.crop_size[0], args.crop_size[-1])
    if args.validation_annotation_file and not args.dataset_name.endswith(".json"):
        p.error("--validation_annotation_file goes with --dataset_name a COCO JSON file.")
    return args


# ----------------------------------------------------------------------------------------------------------- data
def load_splits(args):
    """The dataset as a `DatasetDict`-like mapping of splits, and its directory when local."""
    import datasets

    name = args.dataset_name
    local_dir = name if os.path.isdir(name) else None
    if local_dir and (
        os.path.isfile(os.path.join(name, "dataset_dict.json")) or os.path.isfile(os.path.join(name, "state.json"))
    ):
        loaded = datasets.load_from_disk(name)
        if isinstance(loaded, datasets.Dataset):
            loaded = datasets.DatasetDict({args.train_split_name: loaded})
    elif name.endswith(".parquet"):
        loaded = datasets.load_dataset("parquet", data_files={args.train_split_name: name})
    else:
        # a Hub id, or a local folder of images (imagefolder) or parquet files: `load_dataset` detects the builder
        loaded = datasets.load_dataset(name, args.dataset_config_name)
    return loaded, local_dir


def load_coco(args, log):
    """The training (and validation) COCO files as datasets that are their own adapters, and their label set."""
    from m2f_hf.data.coco import CocoDataset

    train = CocoDataset(args.dataset_name, image_dir=args.image_dir, panoptic_dir=args.panoptic_dir)
    expected = "panoptic" if train.panoptic else "instance"
    if args.task != expected:
        raise DataError(f"--dataset_name {args.dataset_name} is a COCO {expected} file; use --task {expected}.")
    log.info(train.summary())
    unannotated = train.unannotated_warning()
    if unannotated:
        log.warning(unannotated)
    validation = None
    if args.validation_annotation_file:
        validation = CocoDataset(
            args.validation_annotation_file,
            image_dir=args.validation_image_dir,
            panoptic_dir=args.validation_panoptic_dir,
            label_set=train.label_set,
            split="validation",
            decode_masks=train.panoptic,  # instances are scored against the file itself (pycocotools)
        )
        if validation.panoptic != train.panoptic:
            raise DataError(
                f"--validation_annotation_file {args.validation_annotation_file} is not a COCO {expected} file "
                f"like --dataset_name {args.dataset_name}."
            )
        log.info(validation.summary())
    return train, validation, train.label_set


def build_label_set(args, splits, local_dir):
    features = splits[args.train_split_name].features
    return resolve_label_set(features, args.categories_file, local_dir)


# ---------------------------------------------------------------------------------------------------------- model
def set_classes(config, label_set) -> None:
    """The dataset's classes in the config: names, thing classes, and each class's id in the dataset (so that
    predictions are written back with the dataset's category ids: m2f-segment, evaluate.py)."""
    id2label = label_set.id2label
    config.id2label = id2label
    config.label2id = {name: index for index, name in id2label.items()}
    config.thing_ids = list(label_set.thing_ids)
    config.dataset_category_ids = list(label_set.dataset_ids)


def load_model(args, label_set, log):
    """Our checkpoint, a transformers-native one, or a new model from a config JSON; the class head is re-initialised
    when its size differs from the dataset's label set."""
    from transformers import AutoConfig

    path = args.model_name_or_path
    id2label = label_set.id2label
    if path.endswith(".json"):
        with open(path) as handle:
            data = json.load(handle)
        if data.get("model_type") == "mask2former":
            from transformers import Mask2FormerConfig

            from m2f_hf.convert import config_from_transformers

            config = config_from_transformers(Mask2FormerConfig.from_dict(data))
        else:
            config = M2FConfig.from_dict(data)
        set_classes(config, label_set)
        log.info(f"Training from scratch with the config {path}")
        return M2FForUniversalSegmentation(config)
    source_type = AutoConfig.from_pretrained(path).model_type
    if source_type == "mask2former":
        from m2f_hf.convert import from_transformers_pretrained

        model = from_transformers_pretrained(path)
    else:
        model = M2FForUniversalSegmentation.from_pretrained(path)
    if model.config.num_labels != len(id2label):
        head = model.class_predictor
        model.class_predictor = torch.nn.Linear(head.in_features, len(id2label) + 1)
        model._init_weights(model.class_predictor)
        log.info(
            f"Re-initialised the class head: the checkpoint has {model.config.num_labels} classes, the dataset "
            f"{len(id2label)} ({list(id2label.values())[:10]}...)."
        )
    set_classes(model.config, label_set)
    model.criterion = None  # rebuilt from the updated config on the first training step
    return model


def load_processor(args, label_set, num_channels: int = 3):
    processor = None
    # A config JSON holds model settings, not processor ones: from_pretrained would read it as a processor with
    # the default 800-pixel size (and every model key as an attribute), so a new model gets a new processor.
    if not args.model_name_or_path.endswith(".json"):
        try:
            processor = M2FImageProcessor.from_pretrained(args.model_name_or_path)
        except (OSError, ValueError):
            pass
    if processor is None:
        eval_size = args.eval_size or min(args.crop_size)
        settings = {}
        if num_channels != 3:
            # ImageNet's statistics are per RGB channel; other bands get their average until the dataset's own are
            # given (a checkpoint folder whose preprocessor_config.json has one image_mean / image_std per channel)
            settings = {"num_channels": num_channels, "image_mean": 0.449, "image_std": 0.226}
            logger.warning(
                f"The model takes {num_channels}-channel images: normalising every channel with mean 0.449 and std "
                "0.226 (of values scaled to 0-1). For the dataset's own statistics pass a checkpoint folder whose "
                "preprocessor_config.json has one image_mean / image_std value per channel."
            )
        processor = M2FImageProcessor(size={"shortest_edge": eval_size}, ignore_index=args.ignore_index, **settings)
    processor.num_labels = len(label_set.names)
    processor.ignore_index = args.ignore_index
    return processor


def build_optimizer(model, args):
    """AdamW; the backbone's learning rate is scaled by `backbone_lr_multiplier` (paper 4.2), and norm layers and
    learned embeddings get no weight decay (as in the original)."""
    groups = {}
    norm_types = (torch.nn.LayerNorm, torch.nn.GroupNorm, torch.nn.modules.batchnorm._BatchNorm)
    no_decay = set()
    for module_name, module in model.named_modules():
        for param_name, _ in module.named_parameters(recurse=False):
            full = f"{module_name}.{param_name}" if module_name else param_name
            if isinstance(module, norm_types) or isinstance(module, torch.nn.Embedding) or "level_embed" in full:
                no_decay.add(full)
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        backbone = name.startswith("model.backbone.")
        decay = 0.0 if name in no_decay else args.weight_decay
        key = (backbone, decay)
        if key not in groups:
            lr = args.learning_rate * (args.backbone_lr_multiplier if backbone else 1.0)
            groups[key] = {"params": [], "lr": lr, "weight_decay": decay}
        groups[key]["params"].append(param)
    return torch.optim.AdamW(list(groups.values()), lr=args.learning_rate, weight_decay=args.weight_decay)


def build_scheduler(optimizer, args, total_steps: int):
    """Step decay (x`lr_gamma` at `lr_steps` fractions, paper 4.2), poly (ADE20K recipe) or constant, after a linear
    warm-up."""
    milestones = [int(fraction * total_steps) for fraction in args.lr_steps]

    def factor(step: int) -> float:
        warm = min(1.0, (step + 1) / args.num_warmup_steps) if args.num_warmup_steps else 1.0
        if args.lr_scheduler_type == "step":
            return warm * args.lr_gamma ** sum(step >= m for m in milestones)
        if args.lr_scheduler_type == "poly":
            return warm * (1 - min(step, total_steps) / total_steps) ** args.poly_power
        return warm

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


# ----------------------------------------------------------------------------------------------------- evaluation
def build_evaluators(task: str, label_set, ignore_index: int, coco=None):
    from m2f_hf.evaluation import InstanceEvaluator, PanopticEvaluator, SemanticEvaluator
    from m2f_hf.evaluation.coco_file import CocoFileEvaluator

    id2label = label_set.id2label
    if coco is not None and not coco.panoptic:  # AP against the validation file itself, with its category ids
        return {"": CocoFileEvaluator(coco.ground_truth, dict(enumerate(label_set.dataset_ids)), id2label)}
    if task == "semantic":
        return {"": SemanticEvaluator(id2label, ignore_index=ignore_index)}
    if task == "instance":
        return {"": InstanceEvaluator(id2label, thing_ids=label_set.thing_ids)}
    return {"": PanopticEvaluator(id2label, thing_ids=label_set.thing_ids)}


@torch.no_grad()
def evaluate(model, processor, dataloader, accelerator, args, label_set, coco=None) -> dict[str, float]:
    """Metrics of the validation split with `examples/evaluate.py`'s post-processing (the same figures)."""
    from m2f_hf.evaluation.coco_file import CocoFileEvaluator
    from m2f_hf.evaluation.predict import post_process_for_evaluation

    model.eval()
    evaluators = build_evaluators(args.task, label_set, args.ignore_index, coco)
    unwrapped = accelerator.unwrap_model(model)
    stuff = {i for i in range(len(label_set.names)) if i not in set(label_set.thing_ids)}
    for batch in dataloader:
        outputs = unwrapped(pixel_values=batch["pixel_values"].to(accelerator.device))
        predictions = post_process_for_evaluation(
            processor,
            outputs,
            args.task,
            target_sizes=batch["original_sizes"],
            pixel_mask=batch["pixel_mask"],
            stuff_ids=stuff,
        )
        for evaluator in evaluators.values():
            if isinstance(evaluator, CocoFileEvaluator):
                evaluator.process(predictions, [coco.image_ids[i] for i in batch["indices"]])
            else:
                evaluator.process(predictions, batch["references"])
    metrics = {}
    for prefix, evaluator in evaluators.items():
        evaluator.synchronize(accelerator if accelerator.num_processes > 1 else None)
        for key, value in evaluator.evaluate().items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                metrics[f"eval_{prefix}{key}"] = float(value)
    model.train()
    return metrics


def format_metrics(step: int, metrics: dict[str, float]) -> str:
    """One console line of the headline metrics (all of them are in train_log.jsonl)."""
    headline = [k for k in ("eval_PQ", "eval_SQ", "eval_RQ", "eval_PQ_th", "eval_PQ_st", "eval_AP", "eval_AP50",
                            "eval_AP75", "eval_mIoU", "eval_pixel_accuracy") if k in metrics]  # fmt: skip
    return f"step {step} evaluation: " + ", ".join(f"{k[len('eval_') :]} {metrics[k]:.2f}" for k in headline)


# ----------------------------------------------------------------------------------------------------------- main
def save_final(accelerator, model, processor, args, metrics, log):
    unwrapped = accelerator.unwrap_model(model)
    unwrapped.save_pretrained(
        args.output_dir, is_main_process=accelerator.is_main_process, save_function=accelerator.save
    )
    if not accelerator.is_main_process:
        return
    processor.save_pretrained(args.output_dir)
    card = None
    try:
        from m2f_hf import modelcard  # written by another issue; optional
    except ImportError:
        modelcard = None
    if modelcard is not None and hasattr(modelcard, "generate_model_card"):
        try:
            card = modelcard.generate_model_card(unwrapped, metrics=metrics, training_args=vars(args))
        except Exception as error:  # a card problem must not lose a finished training run
            log.warning(f"model card generator failed ({error}); writing a simple README.md")
    if card is None:
        lines = [
            "---",
            "library_name: m2f_hf",
            "tags: [image-segmentation, mask2former]",
            "---",
            f"# Mask2Former ({args.task} segmentation)",
            "",
            f"Trained with `examples/train.py` on `{args.dataset_name}` from `{args.model_name_or_path}`.",
            "",
            f"Classes: {', '.join(unwrapped.config.id2label.values())}",
            "",
            "## Evaluation",
            "",
        ]
        lines += [f"- {k}: {v:.4f}" for k, v in metrics.items()] or ["Not evaluated."]
        lines += ["", "## Training arguments", "", "```json", json.dumps(vars(args), indent=1, default=str), "```"]
        card = "\n".join(lines) + "\n"
    with open(os.path.join(args.output_dir, "README.md"), "w") as handle:
        handle.write(str(card))


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    accelerator = Accelerator(
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        mixed_precision=args.mixed_precision,
        log_with="tensorboard" if args.with_tracking else None,
        project_dir=args.output_dir,
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
    )
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    if accelerator.is_main_process:
        os.makedirs(args.output_dir, exist_ok=True)
    set_seed(args.seed)

    coco_train = coco_validation = eval_adapter = None
    if args.dataset_name.endswith(".json"):
        coco_train, coco_validation, label_set = load_coco(args, logger)
        train_rows, train_adapter = coco_train, coco_train
        eval_rows, eval_adapter = coco_validation, coco_validation
    else:
        splits, local_dir = load_splits(args)
        if args.train_split_name not in splits:
            raise DataError(f"the dataset has no split {args.train_split_name!r} (splits: {list(splits)}).")
        train_rows = splits[args.train_split_name]
        eval_rows = splits.get(args.validation_split_name) if args.validation_split_name in splits else None
        if args.task == "instance" and OBJECTS_COLUMN in train_rows.column_names:
            # rows with an `objects` column: overlapping instances, scored by pycocotools like a COCO file
            label_set = objects_label_set(train_rows.features, OBJECTS_COLUMN, args.categories_file, local_dir)
            image_column = args.image_column_name or "image"
            train_adapter = ObjectsAdapter(label_set, image_column=image_column)
            if eval_rows is not None:
                eval_adapter = ObjectsAdapter(label_set, image_column=image_column, decode_masks=False)
                coco_validation = ObjectsSplit(eval_rows, train_adapter, args.validation_split_name)
            logger.info(f"Reading the {OBJECTS_COLUMN!r} column as instances of {label_set.names[:10]}")
        else:
            label_set = build_label_set(args, splits, local_dir)
            train_adapter = eval_adapter = FormatAdapter.for_task(
                args.task,
                label_set,
                image_column=args.image_column_name,
                label_column=args.label_column_name,
                segments_info_column=args.segments_info_column_name,
                ignore_index=args.ignore_index,
                do_reduce_labels=args.do_reduce_labels,
            )
    transform = build_train_transform(
        args.task, crop_size=args.crop_size, min_scale=args.min_scale, max_scale=args.max_scale
    )
    train_dataset = SegmentationDataset(
        train_rows, train_adapter, transform, split=args.train_split_name, seed=args.seed
    )

    model = load_model(args, label_set, logger)
    processor = load_processor(args, label_set, model.config.num_channels)
    # the images are read as the processor reads them at inference: its channels, its 16-bit scaling
    channels = training_channels(processor, model.config)
    for reader in (train_adapter, eval_adapter):
        if reader is not None:
            reader.num_channels, reader.scaling = channels, processor.scaling
    collate = Collator.from_image_processor(processor, pad_size=args.crop_size)
    train_dataloader = DataLoader(
        train_dataset,
        batch_size=args.per_device_train_batch_size,
        shuffle=True,
        collate_fn=collate,
        num_workers=args.dataloader_num_workers,
        # Its own generator: creating an iterator then draws nothing from the global RNG, whose state (saved in
        # checkpoints) drives the loss's point sampling, so a resumed run samples the same points.
        generator=torch.Generator().manual_seed(args.seed),
    )
    eval_dataloader = None
    if args.eval_steps != 0 and eval_rows is not None:
        eval_dataset = SegmentationDataset(
            eval_rows,
            eval_adapter,
            ResizeShortestEdge(size=args.eval_size or min(args.crop_size)),
            split=args.validation_split_name,
            with_reference=True,
        )
        indices = list(range(len(eval_dataset)))[: args.max_eval_samples]
        # Each process evaluates its own share, without the padding duplicates of a prepared loader; the evaluators
        # then add the statistics of all processes.
        shard = Subset(eval_dataset, indices[accelerator.process_index :: accelerator.num_processes])
        eval_dataloader = DataLoader(
            shard, batch_size=args.per_device_eval_batch_size, collate_fn=Collator.from_image_processor(processor)
        )

    optimizer = build_optimizer(model, args)
    steps_per_epoch = math.ceil(len(train_dataloader) / accelerator.num_processes / args.gradient_accumulation_steps)
    if args.max_train_steps is None:
        args.max_train_steps = args.num_train_epochs * steps_per_epoch
    num_epochs = math.ceil(args.max_train_steps / max(1, steps_per_epoch))
    scheduler = build_scheduler(optimizer, args, args.max_train_steps)
    model, optimizer, train_dataloader, scheduler = accelerator.prepare(model, optimizer, train_dataloader, scheduler)
    if args.with_tracking:
        accelerator.init_trackers(
            "m2f_train", {k: v for k, v in vars(args).items() if isinstance(v, (int, float, str, bool))}
        )

    completed_steps = 0
    start_epoch = 0
    skip_batches = 0
    if args.resume_from_checkpoint:
        path = args.resume_from_checkpoint
        if path == "latest":
            candidates = [d for d in os.listdir(args.output_dir) if d.startswith("step_")]
            path = os.path.join(args.output_dir, max(candidates, key=lambda d: int(d.split("_")[1])))
        accelerator.load_state(path)
        completed_steps = int(os.path.basename(os.path.normpath(path)).split("_")[1])
        start_epoch = completed_steps // steps_per_epoch
        skip_batches = (completed_steps % steps_per_epoch) * args.gradient_accumulation_steps
        logger.info(f"Resumed from {path} at step {completed_steps}")

    log_path = os.path.join(args.output_dir, "train_log.jsonl")
    if accelerator.is_main_process and not args.resume_from_checkpoint and os.path.exists(log_path):
        os.remove(log_path)
    progress = tqdm(total=args.max_train_steps, initial=completed_steps, disable=not accelerator.is_local_main_process)
    model.train()
    running, running_count, metrics = 0.0, 0, {}
    # Targets of crowded images beyond the model's queries get no loss (see m2f_hf.loss); counted per logged step.
    num_queries = accelerator.unwrap_model(model).config.num_queries
    running_targets = torch.zeros(2, dtype=torch.long, device=accelerator.device)  # (unmatched, all) targets
    start = time.time()
    for epoch in range(start_epoch, num_epochs):
        train_dataset.set_epoch(epoch)
        train_dataloader.set_epoch(epoch)
        loader = train_dataloader
        if epoch == start_epoch and skip_batches:
            loader = accelerator.skip_first_batches(train_dataloader, skip_batches)
        for batch in loader:
            with accelerator.accumulate(model):
                outputs = model(
                    pixel_values=batch["pixel_values"],
                    mask_labels=batch["mask_labels"],
                    class_labels=batch["class_labels"],
                )
                loss = outputs.loss
                accelerator.backward(loss)
                if accelerator.sync_gradients and args.max_grad_norm:
                    accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
            running += accelerator.reduce(loss.detach(), reduction="mean").item()
            running_count += 1
            counts = [sum(unmatched_targets(batch["class_labels"], num_queries)), sum(map(len, batch["class_labels"]))]
            running_targets += accelerator.reduce(torch.tensor(counts, device=accelerator.device), reduction="sum")
            if not accelerator.sync_gradients:
                continue
            completed_steps += 1
            progress.update(1)
            lr = scheduler.get_last_lr()[-1]
            progress.set_postfix(loss=f"{loss.item():.3f}", lr=f"{lr:.2e}")
            record = None
            if completed_steps % args.logging_steps == 0 or completed_steps == args.max_train_steps:
                record = {"step": completed_steps, "epoch": epoch, "loss": running / running_count, "lr": lr}
                record["unmatched_targets"], record["targets"] = running_targets.tolist()
                running, running_count = 0.0, 0
                running_targets.zero_()
            if eval_dataloader is not None and (
                (args.eval_steps and completed_steps % args.eval_steps == 0) or completed_steps == args.max_train_steps
            ):
                metrics = evaluate(model, processor, eval_dataloader, accelerator, args, label_set, coco_validation)
                if accelerator.is_main_process:
                    progress.write(format_metrics(completed_steps, metrics))
                record = {**(record or {"step": completed_steps, "epoch": epoch, "lr": lr}), **metrics}
            if record is not None:
                record["time"] = round(time.time() - start, 2)
                if accelerator.is_main_process:
                    with open(log_path, "a") as handle:
                        handle.write(json.dumps(record) + "\n")
                if args.with_tracking:
                    accelerator.log({k: v for k, v in record.items() if k != "step"}, step=completed_steps)
            if (
                args.checkpointing_steps
                and args.checkpointing_steps.isdigit()
                and completed_steps % int(args.checkpointing_steps) == 0
            ):
                accelerator.save_state(os.path.join(args.output_dir, f"step_{completed_steps}"))
            if completed_steps >= args.max_train_steps:
                break
        if args.checkpointing_steps == "epoch":
            accelerator.save_state(os.path.join(args.output_dir, f"step_{completed_steps}"))
        if completed_steps >= args.max_train_steps:
            break
    progress.close()
    accelerator.wait_for_everyone()
    save_final(accelerator, model, processor, args, metrics, logger)
    if args.with_tracking:
        accelerator.end_training()
    if args.push_to_hub and accelerator.is_main_process:
        from huggingface_hub import HfApi

        repo_id = args.hub_model_id or os.path.basename(os.path.abspath(args.output_dir))
        api = HfApi(token=args.hub_token)
        repo_id = api.create_repo(repo_id, exist_ok=True).repo_id
        api.upload_folder(
            repo_id=repo_id,
            folder_path=args.output_dir,
            ignore_patterns=["step_*", "step_*/**", "m2f_train/**"],
            commit_message="Upload m2f_hf model trained with examples/train.py",
        )
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        summary = f" ({format_metrics(completed_steps, metrics)})" if metrics else ""
        print(f"Saved the trained model to {os.path.abspath(args.output_dir)}{summary}", flush=True)
    return {"completed_steps": completed_steps, "metrics": metrics}


if __name__ == "__main__":
    main()
