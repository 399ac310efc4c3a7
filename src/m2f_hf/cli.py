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
import re
import sys
from dataclasses import dataclass
from pathlib import Path

TASKS = ("panoptic", "instance", "semantic")
DEVICES = ("auto", "cpu", "cuda")
EXIT_OK, EXIT_IMAGE_ERRORS, EXIT_FATAL = 0, 1, 2
# A Hub repo id: "name" or "owner/name" of letters, digits, "-", "_", "."; anything else must be a local path.
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


class CLIError(Exception):
    """An error that stops the whole run (model, device or output folder); its message is shown as is."""


@dataclass
class LoadedModel:
    model: object
    processor: object
    source: str  # where it came from, for the JSON


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
def resolve_device(name: str):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise CLIError("--device cuda was asked for but torch sees no CUDA device; use --device cpu or auto.")
    return torch.device(name)


def _model_type(spec: str, local: bool) -> str | None:
    """`model_type` of the checkpoint's config.json (a local folder or a Hub repo)."""
    if local:
        config_file = Path(spec) / "config.json"
        if not config_file.is_file():
            raise CLIError(f"--model {spec!r} is a folder without config.json; expected a checkpoint directory.")
    else:
        from huggingface_hub import hf_hub_download

        try:
            config_file = hf_hub_download(spec, "config.json")
        except Exception as error:  # offline, unknown repo, gated repo: all end the run with the Hub's reason
            raise CLIError(
                f"--model {spec!r} is not a local folder, and its config.json could not be fetched from the Hugging "
                f"Face Hub ({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''})."
            ) from error
    try:
        with open(config_file) as handle:
            return json.load(handle).get("model_type")
    except (OSError, ValueError) as error:
        raise CLIError(f"cannot read {config_file} of --model {spec!r}: {error}") from error


def load_model(spec: str | None, device) -> LoadedModel:
    """Our checkpoint, a transformers-native one (converted on load), or the bundled default model when `spec` is
    None; evaluation mode, on `device`."""
    from .image_processing_m2f import M2FImageProcessor
    from .modeling_m2f import M2FForUniversalSegmentation
    from .resources import default_model_path

    if spec is None:
        try:
            path = str(default_model_path())
        except FileNotFoundError as error:
            raise CLIError(str(error)) from error
        spec_for_json = "m2f_hf default model"
    else:
        path = os.path.expanduser(spec)
        spec_for_json = spec
    local = os.path.exists(path)
    if not local and (spec is None or not _HUB_ID.match(path)):
        raise CLIError(f"--model {spec!r}: no such file or directory (and not a Hub id such as 'owner/name').")
    if local and not os.path.isdir(path):
        raise CLIError(f"--model {spec!r} is a file; expected a checkpoint directory with config.json.")
    model_type = _model_type(path, local)
    try:
        if model_type == "mask2former":
            from .convert import from_transformers_pretrained

            model = from_transformers_pretrained(path)
        else:
            model = M2FForUniversalSegmentation.from_pretrained(path)
    except CLIError:
        raise
    except Exception as error:  # a broken checkpoint: say which and why, without a traceback
        raise CLIError(f"cannot load the model {spec_for_json!r}: {type(error).__name__}: {error}") from error
    try:
        processor = M2FImageProcessor.from_pretrained(path)
    except (OSError, ValueError, TypeError) as error:
        raise CLIError(
            f"cannot load the image processor of {spec_for_json!r} (preprocessor_config.json): {error}"
        ) from error
    return LoadedModel(model=model.to(device).eval(), processor=processor, source=spec_for_json)


# ------------------------------------------------------------------------------------------------------- images
def load_image(path: str):
    """The image at `path` as RGB (EXIF orientation applied, as `transformers.image_utils.load_image` does)."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    if not os.path.exists(path):
        raise OSError("no such file")
    if os.path.isdir(path):
        raise OSError("is a directory, expected an image file")
    try:
        with Image.open(path) as handle:
            image = ImageOps.exif_transpose(handle)
            image.load()
    except UnidentifiedImageError as error:
        raise OSError("not an image file that Pillow can read") from error
    except (OSError, SyntaxError, ValueError) as error:  # truncated or corrupt data
        raise OSError(f"cannot decode the image ({error})") from error
    return image.convert("RGB")


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
def segment_image(image, loaded: LoadedModel, task: str, args) -> dict:
    """The post-processing result for one RGB image, computed as `pipeline("image-segmentation")` does."""
    import torch

    device = next(loaded.model.parameters()).device
    inputs = loaded.processor(images=[image], return_tensors="pt")
    inputs = {key: value.to(device) for key, value in inputs.items()}
    with torch.inference_mode():
        outputs = loaded.model(**inputs)
    target_sizes = [(image.height, image.width)]
    processor = loaded.processor
    if task == "semantic":
        return processor.post_process_semantic_segmentation(outputs, target_sizes=target_sizes)[0].cpu()
    post_process = (
        processor.post_process_panoptic_segmentation
        if task == "panoptic"
        else processor.post_process_instance_segmentation
    )
    result = post_process(
        outputs,
        threshold=args.threshold,
        mask_threshold=args.mask_threshold,
        overlap_mask_area_threshold=args.overlap_mask_area_threshold,
        target_sizes=target_sizes,
    )[0]
    return {"segmentation": result["segmentation"].cpu(), "segments_info": result["segments_info"]}


def encode_mask(mask) -> dict:
    """COCO run-length encoding of a (H, W) bool mask, `counts` as str (JSON-ready; pycocotools reads it back)."""
    import numpy as np
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask, dtype=np.uint8))
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}


def _segment_record(mask, segment_id: int, label_id: int, score, id2label: dict) -> dict:
    import numpy as np

    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    bbox = [0, 0, 0, 0]
    if rows.size:
        bbox = [int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1)]
    return {
        "id": int(segment_id),
        "label_id": int(label_id),
        "label": id2label.get(int(label_id), str(label_id)),
        "score": None if score is None else float(score),
        "area": int(mask.sum()),
        "bbox": bbox,
        "segmentation": encode_mask(mask),
    }


def segments_to_records(result, id2label: dict) -> list[dict]:
    """One JSON record per segment of a post-processing result (a class map for semantic segmentation)."""
    import numpy as np

    if isinstance(result, dict):
        segmentation = result["segmentation"].numpy()
        return [
            _segment_record(segmentation == s["id"], s["id"], s["label_id"], s["score"], id2label)
            for s in result["segments_info"]
        ]
    class_map = result.numpy()
    return [_segment_record(class_map == c, c, c, None, id2label) for c in np.unique(class_map).tolist()]


def write_outputs(image, result, records: list[dict], loaded: LoadedModel, source: str, stem: str, args) -> Path:
    from .visualization import draw_segmentation

    output = Path(args.output)
    picture_path = output / f"{stem}.png"
    draw_segmentation(image, result, loaded.model.config.id2label, alpha=args.alpha, output_path=picture_path)
    document = {
        "image": source,
        "height": image.height,
        "width": image.width,
        "model": loaded.source,
        "task": args.task,
        "segments": records,
    }
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
    device = resolve_device(args.device)
    loaded = load_model(args.model, device)
    try:
        os.makedirs(args.output, exist_ok=True)
    except OSError as error:
        raise CLIError(f"cannot create the output folder --output {args.output!r}: {error}") from error

    id2label = {int(k): v for k, v in loaded.model.config.id2label.items()}
    failures = 0
    # A bar helps with many images; for one it would only add noise to the printed path.
    progress = tqdm(paths, desc="segmenting", unit="image", disable=len(paths) < 2, file=sys.stderr)
    for path, stem in zip(progress, _output_stems(paths)):
        try:
            image = load_image(path)
        except OSError as error:
            failures += 1
            progress.clear()
            _error(f"{path}: {error}; skipped.")
            continue
        result = segment_image(image, loaded, args.task, args)
        records = segments_to_records(result, id2label)
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
