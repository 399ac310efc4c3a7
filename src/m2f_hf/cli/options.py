"""The options of `m2f-segment`, and their checks. Standard library only: this runs before any heavy import.

Options come in groups, one function each (`OPTION_GROUPS`), and each group may register a check of its values
(`CHECKS`); a new capability adds its own group and check to these lists.
"""

from __future__ import annotations

import argparse
import sys

from .. import __version__

# m2f_hf.inference.windows (not imported here: this module runs before any heavy import)
WINDOW_MULTIPLE, MAX_WINDOW_OVERLAP = 32, 0.9

TASKS = ("panoptic", "instance", "semantic")
DEVICES = ("auto", "cpu", "cuda")
FORMATS = ("json", "coco")
SCALINGS = ("range", "minmax")  # m2f_hf.processing.image_modes
EXIT_OK, EXIT_IMAGE_ERRORS, EXIT_FATAL = 0, 1, 2

DESCRIPTION = """\
Segment images with Mask2Former (m2f_hf). INPUT is an image file, a folder (its images and videos), a glob pattern
(quote it: "photos/*.jpg", "data/**/*.png") or a video file (.mp4, .mov, .avi, .mkv, .webm, ...).

  m2f-segment --example
  m2f-segment photo.jpg more/*.png --task instance --output out --threshold 0.7
  m2f-segment photos/ --batch-size 4 --num-workers 2 --output out      (again: only new images are done)
  m2f-segment val2017/ --task instance --format coco --coco-images instances_val2017.json
  m2f-segment clip.mp4 --output out
  m2f-segment photo.jpg --model facebook/mask2former-swin-tiny-coco-panoptic
  m2f-segment aerial.tif --sliding-window --window-size 512 --window-overlap 0.25   (a large image, window by window)
  m2f-segment photo.jpg --task semantic --tta                          (test-time augmentation)
  accelerate launch -m m2f_hf photos/ --output out                     (the inputs split over the processes)
"""

EPILOG = """\
outputs (--format json), for each image NAME.EXT:
  OUTPUT/NAME.png   the image with each segment blended in its class's colour (instances of a class in shades of
                    it), outlined, labelled with class and score, and a legend of the classes with their counts
  OUTPUT/NAME.json  {"image": path, "height": H, "width": W, "model": ..., "task": ...,
                     "options": {the task and thresholds that made the segments}, "segments": [
                      {"id": segment id, "label_id": class index, "category_id": the dataset's id of the class
                       (config.dataset_category_ids, else the index), "label": class name,
                       "score": 0..1 (null for semantic), "area": pixels, "bbox": [x, y, width, height],
                       "segmentation": {"size": [H, W], "counts": "..."}  (COCO RLE: pycocotools.mask.decode)}]}
  The segments are those of transformers' pipeline("image-segmentation") with the same thresholds.
  Images of a folder keep their sub-folder (NAME = its path inside the folder); repeated names get -2, -3, ...
outputs (--format coco): NAME.json per image as above, and for the whole run
  instance:  OUTPUT/coco_instances_results.json (whole masks, for COCO.loadRes) + OUTPUT/coco_images.json
  semantic:  OUTPUT/coco_stuff_results.json + OUTPUT/coco_images.json
  panoptic:  OUTPUT/coco_panoptic.json + OUTPUT/coco_panoptic/NAME.png (COCO's panoptic layout)
outputs for a video NAME.EXT: OUTPUT/NAME.mp4 (annotated) and OUTPUT/NAME.jsonl (one document per frame, with
  "frame" and "time" in seconds)
resuming: an input whose outputs exist from an earlier run with the same model and options is skipped (and
  counted); --overwrite redoes it.
exit status: 0 all done; 1 some inputs could not be read (reported, the others processed); 2 nothing was run (a bad
option, a model or output folder that cannot be used).
The bundled default model knows only synthetic shapes (docs/default_model.md); pass --model for real images.
"""


class CLIError(Exception):
    """An error that stops the whole run (an option, the model, the device, the output folder); shown as is."""


def report_error(message: str) -> None:
    print(f"m2f-segment: error: {message}", file=sys.stderr)


def add_input_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="*", metavar="INPUT", help="image files, folders, glob patterns or videos")
    group = parser.add_argument_group("inputs")
    group.add_argument("--example", action="store_true", help="also segment a sample image bundled with m2f_hf")
    group.add_argument("--recursive", action="store_true", help="also take the images in sub-folders of a folder")
    group.add_argument(
        "--scaling",
        default="range",
        help="16-bit and float images: 'range' maps the full 16-bit range (0..1 for float) to 8 bits (default); "
        "'minmax' stretches each image's own minimum..maximum (usual for microscopy)",
    )


def add_model_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model")
    group.add_argument(
        "--model",
        default=None,
        help="checkpoint directory (ours or transformers-native) or Hub id; default: the bundled model",
    )
    group.add_argument("--task", default="panoptic", help=f"one of {', '.join(TASKS)} (default: panoptic)")
    group.add_argument("--device", default="auto", help="auto (CUDA when available), cpu or cuda")


def add_segment_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("segments")
    group.add_argument(
        "--threshold",
        type=float,
        default=0.5,
        help="panoptic/instance: minimum segment score (default: 0.5); unused for semantic",
    )
    group.add_argument(
        "--mask-threshold", type=float, default=0.5, help="mask probability for a pixel to join a segment (0.5)"
    )
    group.add_argument(
        "--overlap-mask-area-threshold",
        type=float,
        default=0.8,
        help="drop a segment that keeps less than this fraction of its mask (0.8)",
    )
    group.add_argument(
        "--all-classes",
        action="store_true",
        help="instance: also report stuff classes as instances (default: only the model's thing classes, when its "
        "config lists them)",
    )


def add_output_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("outputs")
    group.add_argument("--output", default="m2f-output", help="folder for the output files (default: m2f-output)")
    group.add_argument(
        "--format",
        default="json",
        help="json: a PNG overlay and a JSON per image (default); coco: COCO results files for the whole run",
    )
    group.add_argument(
        "--coco-images",
        default=None,
        metavar="FILE",
        help="--format coco: a COCO annotation file whose images give the image ids (matched by file name)",
    )
    group.add_argument("--overwrite", action="store_true", help="redo inputs whose outputs exist already")


def add_picture_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("pictures")
    group.add_argument("--alpha", type=float, default=0.5, help="opacity of the colour fill in the PNG (0.5)")
    group.add_argument("--no-labels", action="store_true", help="do not write class names and scores on segments")


def add_batch_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("batches")
    group.add_argument("--batch-size", type=int, default=1, help="images per forward pass (default: 1)")
    group.add_argument(
        "--num-workers",
        type=int,
        default=None,
        help="processes reading and pre-processing images (default: one per 4 CPU cores, at most 4; 0 for one image)",
    )


DTYPES = ("float32", "bfloat16", "int8")  # m2f_hf.export.precision.PRECISIONS


def add_precision_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("precision")
    group.add_argument(
        "--dtype",
        default="float32",
        help="float32 (default); bfloat16: the model in bf16 (fast on CPUs with AVX-512 BF16 / AMX, and on GPUs); "
        "int8: linear layers dynamically quantised to int8 (CPU only). Post-processing is float32 in every case "
        "(docs/deployment.md gives the speed and quality of each)",
    )


def add_large_image_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "large images and test-time augmentation",
        "--sliding-window segments each image at its own resolution in overlapping windows: memory follows\n"
        "the window, not the image (a 10000x10000 image in under 3 GB); an image that fits in one window is\n"
        "segmented whole. --tta averages the predictions of several scales (semantic) and a mirrored copy.",
    )
    group.add_argument(
        "--sliding-window", action="store_true", help="segment large images window by window (docs/inference.md)"
    )
    group.add_argument(
        "--window-size",
        type=int,
        default=None,
        metavar="N",
        help="window side in pixels, a multiple of 32 (default: the model's training size, its processor's "
        "shortest edge: 128 for the bundled model)",
    )
    group.add_argument(
        "--window-overlap",
        type=float,
        default=None,
        metavar="FRACTION",
        help=f"fraction of a window shared with each neighbour, 0 to {MAX_WINDOW_OVERLAP} (default: 0.25)",
    )
    group.add_argument(
        "--tta",
        action="store_true",
        help="test-time augmentation: semantic, class scores averaged over --tta-scales and a horizontal flip; "
        "panoptic and instance, the mask predictions of the image and its mirror image ensembled",
    )
    group.add_argument(
        "--tta-scales",
        default=None,
        metavar="S,S,...",
        help="--tta: factors of the model's input size (default: semantic 0.75,1,1.25; panoptic, instance 1: the flip only)",
    )
    group.add_argument("--no-tta-flip", action="store_true", help="--tta: do not add the mirrored image")


OPTION_GROUPS = [
    add_input_options,
    add_model_options,
    add_segment_options,
    add_output_options,
    add_picture_options,
    add_batch_options,
    add_precision_options,
    add_large_image_options,
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="m2f-segment",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"m2f-segment (m2f_hf) {__version__}")
    for add_group in OPTION_GROUPS:
        add_group(parser)
    return parser


def _check_choices(args: argparse.Namespace) -> None:
    for name, choices in (("task", TASKS), ("device", DEVICES), ("format", FORMATS), ("scaling", SCALINGS)):
        value = getattr(args, name)
        if value not in choices:
            raise CLIError(f"--{name} must be one of {', '.join(choices)}; got {value!r}.")
    if args.coco_images is not None and args.format != "coco":
        raise CLIError(f"--coco-images is for --format coco; got --format {args.format}.")


def _check_fractions(args: argparse.Namespace) -> None:
    for name in ("threshold", "mask_threshold", "overlap_mask_area_threshold", "alpha"):
        value = getattr(args, name)
        if not 0.0 <= value <= 1.0:
            raise CLIError(f"--{name.replace('_', '-')} must lie in [0, 1]; got {value}.")


def _check_batches(args: argparse.Namespace) -> None:
    if args.batch_size < 1:
        raise CLIError(f"--batch-size must be at least 1; got {args.batch_size}.")
    if args.num_workers is not None and args.num_workers < 0:
        raise CLIError(f"--num-workers must be 0 or more; got {args.num_workers}.")


def _check_inputs(args: argparse.Namespace) -> None:
    if not args.inputs and not args.example:
        raise CLIError("no images given: pass images, folders, glob patterns or videos, or --example.")


def _check_precision(args: argparse.Namespace) -> None:
    if args.dtype not in DTYPES:
        raise CLIError(f"--dtype must be one of {', '.join(DTYPES)}; got {args.dtype!r}.")
    if args.dtype == "int8" and args.device == "cuda":
        raise CLIError("--dtype int8 (dynamic quantisation) runs on the CPU; use --device cpu or --dtype bfloat16.")


def parse_scales(text: str) -> tuple[float, ...]:
    """`--tta-scales` as floats ("0.75,1,1.25"); `CLIError` naming the value otherwise."""
    try:
        scales = tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        scales = ()
    if not scales or any(not 0 < s < float("inf") for s in scales):
        raise CLIError(f"--tta-scales must be positive numbers separated by commas (e.g. 0.75,1,1.25); got {text!r}.")
    return scales


def _check_large_images(args: argparse.Namespace) -> None:
    windowed = [name for name in ("window_size", "window_overlap") if getattr(args, name) is not None]
    if windowed and not args.sliding_window:
        raise CLIError(f"--{windowed[0].replace('_', '-')} is for --sliding-window; add --sliding-window.")
    if args.window_size is not None and (args.window_size <= 0 or args.window_size % WINDOW_MULTIPLE):
        raise CLIError(
            f"--window-size must be a positive multiple of {WINDOW_MULTIPLE} pixels (the model's coarsest feature "
            f"stride); got {args.window_size}."
        )
    if args.window_overlap is not None and not 0.0 <= args.window_overlap <= MAX_WINDOW_OVERLAP:
        raise CLIError(f"--window-overlap must lie in [0, {MAX_WINDOW_OVERLAP}]; got {args.window_overlap}.")
    if (args.tta_scales is not None or args.no_tta_flip) and not args.tta:
        raise CLIError("--tta-scales and --no-tta-flip are for --tta; add --tta.")
    if args.tta_scales is not None:
        parse_scales(args.tta_scales)
    if args.tta and args.sliding_window:
        raise CLIError("--tta and --sliding-window cannot be combined; choose one.")
    if args.sliding_window and args.format == "coco" and args.task == "instance":
        raise CLIError(
            "--sliding-window cannot write --format coco --task instance (COCO AP wants each instance's whole, "
            "overlapping mask; sliding windows merge the visible parts): use --format json, or leave out "
            "--sliding-window."
        )


CHECKS = [_check_choices, _check_fractions, _check_batches, _check_inputs, _check_precision, _check_large_images]


def check_args(args: argparse.Namespace) -> None:
    """Raise `CLIError` for the first option value that cannot be used."""
    for check in CHECKS:
        check(args)
