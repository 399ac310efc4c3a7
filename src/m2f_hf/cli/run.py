"""The work of `m2f-segment` once its options are valid: expand the inputs, load the model, segment the images in
batches and the videos frame by frame, write and report. Everything it does is a library call of
`m2f_hf.inference`; this module only wires options to them and prints."""

from __future__ import annotations

import argparse
import functools
import os
import sys

from .options import EXIT_IMAGE_ERRORS, EXIT_OK, CLIError, report_error

# Up to this many images, each one's output files are printed; beyond, the progress bar and the summary say it.
LIST_EACH_UP_TO = 20
# Without --num-workers, one worker process reads images per this many CPU cores, at most MAX_DEFAULT_WORKERS: the
# model uses every core, so on 2 cores workers only compete with it (docs/benchmarks.md: 2 workers were 5-10% slower).
CORES_PER_DEFAULT_WORKER, MAX_DEFAULT_WORKERS = 4, 4
DEFAULT_MODEL_NOTE = (
    "note: the bundled default model knows only synthetic shapes (circle, square, triangle on grass, water, sand); "
    "for real images pass --model a real checkpoint, e.g. --model facebook/mask2former-swin-tiny-coco-panoptic "
    "(docs/default_model.md)."
)


def _load_model(spec: str | None, device, dtype: str | None = None):
    from ..inference.loading import ModelLoadError, load_segmentation_model

    if dtype == "int8" and device == "auto":
        device = "cpu"  # int8 dynamic quantisation is a CPU path
    try:
        return load_segmentation_model(spec, device, dtype=dtype)
    except ModelLoadError as error:
        message = str(error)
        if message.startswith(("model ", "device ")):  # name the option the value came from
            message = f"--{message}"
        raise CLIError(message) from error


def _collect(args: argparse.Namespace):
    from ..inference.inputs import InputItem, collect_inputs
    from ..resources import example_images

    inputs = collect_inputs(list(args.inputs), recursive=args.recursive)
    if args.example:
        examples = example_images()
        if not examples:
            raise CLIError("no bundled example images found; reinstall m2f_hf.")
        inputs.items.insert(0, InputItem(path=str(examples[0]), name=examples[0].stem))
    return inputs


def _skipped(message: str) -> str:
    """`message` as a line saying that its input was skipped (no doubled full stop)."""
    return f"{message.rstrip().rstrip('.')}; skipped."


def _report_inputs(inputs) -> None:
    for message in inputs.errors:
        report_error(_skipped(message))
    if inputs.ignored:
        shown = ", ".join(inputs.ignored[:5])
        if len(inputs.ignored) > 5:
            shown += f" and {len(inputs.ignored) - 5} more"
        print(
            f"left out {len(inputs.ignored)} files that are not images or videos (by extension): {shown}",
            file=sys.stderr,
        )


def _device(args: argparse.Namespace, state):
    if args.device == "auto" and state.num_processes > 1:
        return state.device  # accelerate gives each process its own GPU
    return args.device


def _make_writer(args, loaded, options, items):
    from ..inference.coco_results import CocoResultsWriter
    from ..inference.writers import DrawOptions, ImageWriter

    if args.format == "coco":
        try:
            writer = CocoResultsWriter(args.output, loaded, options, items, reference=args.coco_images)
        except ValueError as error:
            raise CLIError(f"--coco-images: {error}") from error
        if args.task == "instance" and (args.threshold > 0 or args.overlap_mask_area_threshold > 0):
            print(
                "note: COCO AP ranks every detection; the original evaluates with no score threshold "
                "(--threshold 0 --overlap-mask-area-threshold 0).",
                file=sys.stderr,
            )
        return writer
    return ImageWriter(
        args.output, loaded, options, draw=DrawOptions(alpha=args.alpha, show_labels=not args.no_labels)
    )


def _large_image_options(args: argparse.Namespace) -> dict:
    """The SegmentOptions fields of --sliding-window and --tta (the library's defaults for options not given)."""
    from .options import parse_scales

    fields = {"sliding_window": args.sliding_window, "window_size": args.window_size, "tta": args.tta}
    if args.window_overlap is not None:
        fields["window_overlap"] = args.window_overlap
    if args.tta_scales is not None:
        fields["tta_scales"] = parse_scales(args.tta_scales)
    if args.no_tta_flip:
        fields["tta_flip"] = False
    return fields


def run(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    inputs = _collect(args)
    if not inputs.items:
        _report_inputs(inputs)
        report_error("nothing to segment.")
        return EXIT_IMAGE_ERRORS

    from transformers.utils import logging as hf_logging

    import m2f_hf

    from ..inference.batch import load_rgb_image, run_images, split_for_this_process
    from ..inference.segment import SegmentOptions
    from ..inference.video import VideoError, probe_video, run_video, video_is_done, video_outputs
    from ..inference.writers import DrawOptions

    m2f_hf.load_api()  # register with transformers, as `import m2f_hf` does outside the command
    hf_logging.disable_progress_bar()  # "Loading weights" bars would bury the lines that say what was written
    from accelerate.utils import parse_flag_from_env

    # on the CPU, accelerate joins the launcher's processes only when told to (`--device cpu` or ACCELERATE_USE_CPU=1)
    on_cpu = args.device == "cpu" or parse_flag_from_env("ACCELERATE_USE_CPU")
    mine, state = split_for_this_process(inputs.items, cpu=on_cpu)
    # the inputs are expanded alike in every process; the main one reports (and counts) what could not be
    failures = len(inputs.errors) if state.is_main_process else 0
    if state.is_main_process:
        _report_inputs(inputs)
    loaded = _load_model(args.model, _device(args, state), getattr(args, "dtype", None))
    if loaded.is_default_model and state.is_main_process:
        print(DEFAULT_MODEL_NOTE, file=sys.stderr)
    try:
        os.makedirs(args.output, exist_ok=True)
    except OSError as error:
        raise CLIError(f"cannot create the output folder --output {args.output!r}: {error}") from error

    options = SegmentOptions(
        task=args.task,
        threshold=args.threshold,
        mask_threshold=args.mask_threshold,
        overlap_mask_area_threshold=args.overlap_mask_area_threshold,
        keep_all_classes=args.all_classes,
        full_instance_masks=args.format == "coco" and args.task == "instance",
        **_large_image_options(args),
    )
    writer = _make_writer(args, loaded, options, inputs.items)
    unknown = {item.path for item in getattr(writer, "unknown", [])}
    if state.is_main_process:
        for path in sorted(unknown):
            report_error(f"{path}: not among the images of --coco-images {args.coco_images}; skipped.")
        failures += len(unknown)
    images = [item for item in mine if item.kind == "image" and item.path not in unknown]
    videos = [item for item in mine if item.kind == "video"]
    num_workers = args.num_workers
    if num_workers is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        several = len(images) > args.batch_size or videos
        num_workers = min(MAX_DEFAULT_WORKERS, cores // CORES_PER_DEFAULT_WORKER) if several else 0
    prefix = f"[process {state.process_index + 1}/{state.num_processes}] " if state.num_processes > 1 else ""

    def written(item, paths, num_segments):
        if len(images) <= LIST_EACH_UP_TO:
            tqdm.write(f"{prefix}{item.path}: {num_segments} segments -> wrote {' and '.join(map(str, paths))}")

    def unreadable(item, reason):
        progress.clear()
        report_error(_skipped(f"{prefix}{item.path}: {reason}"))

    progress = tqdm(
        total=len(images), desc=f"{prefix}segmenting", unit=" images", disable=len(images) < 2, file=sys.stderr
    )
    summary = run_images(
        loaded,
        images,
        options,
        writer,
        batch_size=args.batch_size,
        num_workers=num_workers,
        overwrite=args.overwrite,
        load_image=functools.partial(load_rgb_image, scaling=args.scaling),
        progress=progress,
        on_written=written,
        on_error=unreadable,
    )
    progress.close()
    failures += len(summary.failed)
    if len(images) > LIST_EACH_UP_TO or summary.skipped:
        print(
            f"{prefix}segmented {summary.processed} images in {summary.seconds:.1f} s "
            f"({summary.images_per_second:.2f} images/s), outputs in {args.output}",
            file=sys.stderr,
        )
    if summary.skipped:
        print(
            f"{prefix}skipped {summary.skipped} of {len(images)} images whose outputs exist in {args.output} "
            "(pass --overwrite to redo them)",
            file=sys.stderr,
        )

    draw = DrawOptions(alpha=args.alpha, show_labels=not args.no_labels)
    for item in videos:
        if not args.overwrite and video_is_done(args.output, item, loaded, options):
            print(f"{prefix}{item.path}: outputs exist, skipped (pass --overwrite to redo it)", file=sys.stderr)
            continue
        try:
            info = probe_video(item.path)
        except VideoError as error:
            failures += 1
            report_error(_skipped(f"{prefix}{item.path}: {error}"))
            continue
        bar = tqdm(total=info.frames, desc=f"{prefix}{os.path.basename(item.path)}", unit=" frames", file=sys.stderr)
        try:
            result = run_video(
                loaded,
                item,
                options,
                args.output,
                draw=draw,
                batch_size=args.batch_size,
                num_workers=num_workers,
                progress=bar,
            )
        except VideoError as error:
            failures += 1
            report_error(_skipped(f"{prefix}{item.path}: {error}"))
            continue
        finally:
            bar.close()
        if result.error:
            failures += 1
            report_error(f"{prefix}{item.path}: {result.error}; the {result.frames} frames before it were written.")
        video_path, lines_path = video_outputs(args.output, item)
        print(f"{prefix}{item.path}: {result.frames} frames -> wrote {video_path} and {lines_path}")

    # every process finishes its share before any exits: a launcher stops all processes when one exits with an error
    state.wait_for_everyone()
    if args.format == "coco" and state.is_main_process:
        paths = writer.finish([item for item in inputs.items if item.kind == "image"])
        print(f"wrote {' and '.join(map(str, paths))}")
    if failures:
        total = len(inputs.items) + len(inputs.errors)
        report_error(f"{prefix}{failures} of {total} inputs could not be read (see above).")
        return EXIT_IMAGE_ERRORS
    return EXIT_OK
