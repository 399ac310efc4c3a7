"""`m2f-segment` (also `python -m m2f_hf`): segment images and write, for each, a PNG overlay and a JSON of segments.

    m2f-segment --example
    m2f-segment photo.jpg more/*.png --task instance --output out --threshold 0.7
    m2f-segment photo.jpg --model facebook/mask2former-swin-tiny-coco-panoptic

The default model is the small one bundled with the package (trained on the synthetic shapes dataset, see
docs/default_model.md), so the command works offline. `--model` takes one of our checkpoints (a directory or a Hub
id) or a transformers-native Mask2Former checkpoint (config `model_type` "mask2former"), converted on load.

For each image `NAME.EXT` the command writes `OUTPUT/NAME.png` (the image with coloured segments, labels and a
legend) and `OUTPUT/NAME.json`: the image's size, the model and task, and one entry per segment with `id`,
`label_id`, `label`, `score` (null for semantic classes), `area` (pixels), `bbox` (COCO `[x, y, width, height]`) and
`segmentation` (COCO run-length encoding of its mask, `counts` as a string, readable with
`pycocotools.mask.decode`). The segments are those of `pipeline("image-segmentation")` with the same thresholds.

An image that cannot be read is reported on stderr and skipped; the others are still processed, and the exit status
is then 1. A model that cannot be loaded or an output folder that cannot be created stops the run with status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

TASKS = ("panoptic", "instance", "semantic")
DEVICES = ("auto", "cpu", "cuda")
EXIT_OK, EXIT_IMAGE_ERRORS, EXIT_FATAL = 0, 1, 2


class CLIError(Exception):
    """An error that stops the whole run (model, device or output folder); its message is shown as is."""


# ---------------------------------------------------------------------------------------------------- arguments
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="m2f-segment",
        description="Segment images with Mask2Former (m2f_hf); writes a PNG overlay and a JSON of segments per image.",
        epilog="See docs/default_model.md for the bundled model and its classes.",
    )
    parser.add_argument("images", nargs="*", metavar="IMAGE", help="image files to segment")
    parser.add_argument(
        "--model",
        default=None,
        help="checkpoint directory (ours or transformers-native) or Hub id; default: the bundled model",
    )
    parser.add_argument("--task", default="panoptic", help=f"one of {', '.join(TASKS)} (default: panoptic)")
    parser.add_argument(
        "--output", default="m2f-output", help="folder for the PNG and JSON files (default: m2f-output)"
    )
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cpu or cuda")
    parser.add_argument(
        "--threshold",
        type=float,
        default=0.5,
        help="panoptic/instance: minimum segment score (default: 0.5); unused for semantic",
    )
    parser.add_argument(
        "--mask-threshold", type=float, default=0.5, help="mask probability for a pixel to join a segment (0.5)"
    )
    parser.add_argument(
        "--overlap-mask-area-threshold",
        type=float,
        default=0.8,
        help="drop a segment that keeps less than this fraction of its mask (0.8)",
    )
    parser.add_argument(
        "--all-classes",
        action="store_true",
        help="instance: also report stuff classes as instances (default: only the model's thing classes, when its "
        "config lists them)",
    )
    parser.add_argument(
        "--scaling",
        default="range",
        choices=("range", "minmax"),
        help="16-bit and float images: 'range' maps the full 16-bit range (0..1 for float) to 8 bits (default); "
        "'minmax' stretches each image's own minimum..maximum (usual for microscopy)",
    )
    parser.add_argument("--alpha", type=float, default=0.5, help="opacity of the colour fill in the PNG (0.5)")
    parser.add_argument("--example", action="store_true", help="also segment a sample image bundled with m2f_hf")
    return parser


def _check_args(args: argparse.Namespace) -> None:
    if args.task not in TASKS:
        raise CLIError(f"--task must be one of {', '.join(TASKS)}; got {args.task!r}.")
    if args.device not in DEVICES:
        raise CLIError(f"--device must be one of {', '.join(DEVICES)}; got {args.device!r}.")
    for name in ("threshold", "mask_threshold", "overlap_mask_area_threshold", "alpha"):
        value = getattr(args, name)
        if not 0.0 <= value <= 1.0:
            raise CLIError(f"--{name.replace('_', '-')} must lie in [0, 1]; got {value}.")
    if not args.images and not args.example:
        raise CLIError("no images given: pass image paths, or --example to segment a bundled sample image.")


# --------------------------------------------------------------------------------------------------------- model
def load_model(spec: str | None, device_name: str):
    """The model of `--model` (the bundled one when None) on `--device`; a `CLIError` when it cannot be used."""
    from .inference.loading import ModelLoadError, load_segmentation_model

    try:
        return load_segmentation_model(spec, device_name)
    except ModelLoadError as error:
        message = str(error)
        if message.startswith(("model ", "device ")):  # name the option the value came from
            message = f"--{message}"
        raise CLIError(message) from error


# ------------------------------------------------------------------------------------------------------- images
def load_image(path: str, *, scaling: str = "range"):
    """The image at `path` ready for the model (EXIF orientation applied; 16-bit, float, palette, CMYK, ... handled
    by `m2f_hf.processing.image_modes.load_image`); `OSError` with a readable reason when it cannot be read."""
    from .processing.image_modes import load_image as load_image_file

    return load_image_file(path, scaling=scaling)


def _output_stems(paths: list[str]) -> list[str]:
    """One file stem per input, made unique (`a.png` and `dir/a.jpg` become `a` and `a-2`)."""
    stems, seen = [], {}
    for path in paths:
        stem = Path(path).stem or "image"
        count = seen.get(stem, 0) + 1
        seen[stem] = count
        stems.append(stem if count == 1 else f"{stem}-{count}")
    return stems


# ------------------------------------------------------------------------------------------------------ segments
def write_outputs(image, result, records: list[dict], loaded, source: str, stem: str, args) -> Path:
    from .inference.records import result_document
    from .visualization import draw_segmentation

    output = Path(args.output)
    picture_path = output / f"{stem}.png"
    draw_segmentation(image, result, loaded.id2label, alpha=args.alpha, output_path=picture_path)
    document = result_document(
        image=source, height=image.height, width=image.width, model=loaded.source, task=args.task, records=records
    )
    with open(output / f"{stem}.json", "w") as handle:
        json.dump(document, handle, indent=1)
    return picture_path


# ----------------------------------------------------------------------------------------------------------- main
def _error(message: str) -> None:
    print(f"m2f-segment: error: {message}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from .resources import example_images

    _check_args(args)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # "Loading weights" bars would bury the lines that say what was written
    paths = list(args.images)
    if args.example:
        examples = example_images()
        if not examples:
            raise CLIError("no bundled example images found; reinstall m2f_hf.")
        paths.insert(0, str(examples[0]))
    loaded = load_model(args.model, args.device)
    try:
        os.makedirs(args.output, exist_ok=True)
    except OSError as error:
        raise CLIError(f"cannot create the output folder --output {args.output!r}: {error}") from error

    from .inference.records import segments_to_records
    from .inference.segment import SegmentOptions, segment_image

    options = SegmentOptions(
        task=args.task,
        threshold=args.threshold,
        mask_threshold=args.mask_threshold,
        overlap_mask_area_threshold=args.overlap_mask_area_threshold,
        keep_all_classes=args.all_classes,
    )
    failures = 0
    # A bar helps with many images; for one it would only add noise to the printed path.
    progress = tqdm(paths, desc="segmenting", unit="image", disable=len(paths) < 2, file=sys.stderr)
    for path, stem in zip(progress, _output_stems(paths)):
        try:
            image = load_image(path, scaling=args.scaling)
        except OSError as error:
            failures += 1
            progress.clear()
            _error(f"{path}: {error}; skipped.")
            continue
        result = segment_image(loaded, image, options)
        records = segments_to_records(result, loaded.id2label)
        picture = write_outputs(image, result, records, loaded, path, stem, args)
        tqdm.write(f"{path}: {len(records)} segments -> wrote {picture} and {picture.with_suffix('.json')}")
    progress.close()
    if failures:
        _error(f"{failures} of {len(paths)} images could not be read (see above).")
        return EXIT_IMAGE_ERRORS
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    """Entry point of `m2f-segment` and `python -m m2f_hf`; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except CLIError as error:
        _error(str(error))
        return EXIT_FATAL


if __name__ == "__main__":
    sys.exit(main())
