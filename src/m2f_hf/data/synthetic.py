"""A small synthetic segmentation dataset, deterministic by seed, in the three training formats.

Each image has two textured "stuff" regions (grass, water or sand, split by a slanted boundary) and one to four
"things" (circles, squares, triangles), each class with its own colour, that may occlude each other. Classes are
told apart by colour, texture and shape, so a small model learns them in a few hundred steps.

Usage:
    python -m m2f_hf.data.synthetic --task panoptic --output_dir shapes-panoptic --num_train 64 --num_validation 16
    python -m m2f_hf.data.synthetic --task instance --format coco --output_dir shapes-coco   # COCO instances JSON

Formats (see docs/training.md): semantic (`image`, `annotation` = class-id map, 255 unused), instance (`image`,
`annotation` = RGB with class in R and instance in G, things only), panoptic (`image`, `label` = RGB-encoded ids,
`segments_info`). Class ids: semantic 0-5 (things then stuff), instance 0-2 (things), panoptic 1-6 (COCO-style ids,
not contiguous from 0, with `isthing`). `save_synthetic_dataset` writes `categories.json` next to the splits.
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np

THINGS = ("circle", "square", "triangle")
STUFF = ("grass", "water", "sand")
_THING_COLOURS = {"circle": (220, 40, 40), "square": (40, 60, 230), "triangle": (245, 245, 245)}
PANOPTIC_ID_OFFSET = 1  # panoptic category ids start at 1, as COCO's do


def categories(task: str) -> list[dict]:
    """The categories of `task` as a COCO-style list of `{"id", "name", "isthing"}`."""
    names = THINGS + STUFF if task != "instance" else THINGS
    offset = PANOPTIC_ID_OFFSET if task == "panoptic" else 0
    return [{"id": i + offset, "name": n, "isthing": int(n in THINGS)} for i, n in enumerate(names)]


def _texture(name: str, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    noise = rng.normal(0, 1, (height, width)).astype(np.float32)
    if name == "grass":  # green with vertical blades
        base = np.array([60, 150, 50], np.float32)
        pattern = 25 * np.sin(xx * 1.3 + rng.uniform(0, 6)) + 12 * noise
    elif name == "water":  # blue with horizontal waves
        base = np.array([40, 110, 190], np.float32)
        pattern = 25 * np.sin(yy * 0.8 + 0.3 * np.sin(xx * 0.4) + rng.uniform(0, 6)) + 6 * noise
    else:  # sand: yellow, grainy
        base = np.array([210, 180, 110], np.float32)
        pattern = 22 * noise
    return base[None, None] + pattern[..., None]


def _shape_mask(kind: str, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    radius = rng.uniform(0.1, 0.2) * min(height, width)
    cy, cx = rng.uniform(radius, height - radius), rng.uniform(radius, width - radius)
    if kind == "circle":
        return (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2
    if kind == "square":
        return (np.abs(yy - cy) <= radius * 0.85) & (np.abs(xx - cx) <= radius * 0.85)
    # an upright triangle: below the apex, inside two slanted sides
    top, bottom = cy - radius, cy + radius * 0.8
    half_width = (yy - top) / (bottom - top) * radius * 1.1
    return (yy >= top) & (yy <= bottom) & (np.abs(xx - cx) <= half_width)


def render_scene(rng: np.random.Generator, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """One scene: an `(H, W, 3)` uint8 image, an `(H, W)` segment-id map (1, 2, ...) and its segments
    `[{"id", "name"}]`, occlusion applied (every listed segment is visible)."""
    height, width = size
    segment_map = np.zeros((height, width), np.int32)
    top_stuff, bottom_stuff = rng.choice(len(STUFF), 2, replace=False)
    yy, xx = np.mgrid[0:height, 0:width]
    boundary = rng.uniform(0.3, 0.7) * height + rng.uniform(-0.25, 0.25) * (xx - width / 2)
    lower = yy >= boundary
    image = np.where(
        lower[..., None],
        _texture(STUFF[bottom_stuff], height, width, rng),
        _texture(STUFF[top_stuff], height, width, rng),
    )
    segments = [{"id": 1, "name": STUFF[top_stuff]}, {"id": 2, "name": STUFF[bottom_stuff]}]
    segment_map[~lower] = 1
    segment_map[lower] = 2
    for index in range(int(rng.integers(1, 5))):
        kind = THINGS[int(rng.integers(len(THINGS)))]
        mask = _shape_mask(kind, height, width, rng)
        colour = np.array(_THING_COLOURS[kind], np.float32) + rng.normal(0, 8, 3)
        shade = rng.normal(0, 6, (height, width, 1))
        image = np.where(mask[..., None], colour[None, None] + shade, image)
        segment_map[mask] = 3 + index
        segments.append({"id": 3 + index, "name": kind})
    min_area = max(4, height * width // 400)
    visible = [s for s in segments if (segment_map == s["id"]).sum() >= min_area]
    # Segments occluded to a sliver become void rather than a tiny target.
    for segment in segments:
        if segment not in visible:
            segment_map[segment_map == segment["id"]] = 0
    return np.clip(image, 0, 255).round().astype(np.uint8), segment_map, visible


def _row(task: str, image: np.ndarray, segment_map: np.ndarray, segments: list[dict], rng) -> dict:
    from PIL import Image

    ids = {c["name"]: c["id"] for c in categories(task)}
    if task == "semantic":
        label = np.full(segment_map.shape, 255, np.uint8)
        for segment in segments:
            label[segment_map == segment["id"]] = ids[segment["name"]]
        return {"image": Image.fromarray(image), "annotation": Image.fromarray(label)}
    if task == "instance":
        label = np.zeros((*segment_map.shape, 3), np.uint8)
        instance = 0
        for segment in segments:
            if segment["name"] in THINGS:
                instance += 1
                label[segment_map == segment["id"], 0] = ids[segment["name"]]
                label[segment_map == segment["id"], 1] = instance
        return {"image": Image.fromarray(image), "annotation": Image.fromarray(label)}
    # panoptic: COCO-style random-looking segment ids, RGB-encoded
    label = np.zeros((*segment_map.shape, 3), np.uint8)
    infos = []
    for segment in segments:
        segment_id = int(rng.integers(1, 256**3))
        where = segment_map == segment["id"]
        label[where] = [segment_id % 256, (segment_id // 256) % 256, segment_id // 65536]
        infos.append({"id": segment_id, "category_id": ids[segment["name"]], "iscrowd": 0, "area": int(where.sum())})
    return {"image": Image.fromarray(image), "label": Image.fromarray(label), "segments_info": infos}


def make_synthetic_dataset(
    task: str, *, num_train: int = 32, num_validation: int = 8, size: int | tuple[int, int] = 64, seed: int = 0
):
    """A `datasets.DatasetDict` with `train` and `validation` splits of `task` ("semantic", "instance",
    "panoptic"); the same arguments give the same data."""
    from datasets import Dataset, DatasetDict, Features, Image, List, Value

    if task not in ("semantic", "instance", "panoptic"):
        raise ValueError(f"task must be 'semantic', 'instance' or 'panoptic', got {task!r}.")
    size = (size, size) if isinstance(size, int) else tuple(size)
    features = {"image": Image()}
    if task == "panoptic":
        features["label"] = Image()
        features["segments_info"] = List(
            {"id": Value("int64"), "category_id": Value("int64"), "iscrowd": Value("int64"), "area": Value("int64")}
        )
    else:
        features["annotation"] = Image()
    splits = {}
    for offset, (split, count) in enumerate((("train", num_train), ("validation", num_validation))):
        rng = np.random.default_rng([seed, offset])
        rows = [_row(task, *render_scene(rng, size), rng) for _ in range(count)]
        columns = {name: [row[name] for row in rows] for name in features}
        splits[split] = Dataset.from_dict(columns, features=Features(features))
    return DatasetDict(splits)


def save_synthetic_dataset(output_dir: str, task: str, **kwargs) -> str:
    """Write `make_synthetic_dataset(task, **kwargs)` with `save_to_disk`, plus `categories.json`."""
    make_synthetic_dataset(task, **kwargs).save_to_disk(output_dir)
    with open(os.path.join(output_dir, "categories.json"), "w") as handle:
        json.dump(categories(task), handle, indent=1)
    return output_dir


COCO_CATEGORY_IDS = {"circle": 1, "square": 3, "triangle": 8}  # gaps on purpose, as COCO's ids have


def save_synthetic_coco(output_dir: str, *, num_train: int = 32, num_validation: int = 8, size=64, seed: int = 0):
    """The instance scenes as a COCO instances dataset: `instances_train.json` and `instances_validation.json` in
    `output_dir` (RLE masks of the visible part of each shape, non-contiguous category ids 1, 3, 8) and the images
    in `train/` and `validation/` beside them (`file_name` relative to the JSON's folder)."""
    from PIL import Image
    from pycocotools import mask as mask_utils

    size = (size, size) if isinstance(size, int) else tuple(size)
    categories = [{"id": COCO_CATEGORY_IDS[name], "name": name, "supercategory": "shape"} for name in THINGS]
    paths = []
    for offset, (split, count) in enumerate((("train", num_train), ("validation", num_validation))):
        rng = np.random.default_rng([seed, offset])  # the scenes of make_synthetic_dataset("instance")
        os.makedirs(os.path.join(output_dir, split), exist_ok=True)
        images, annotations = [], []
        for index in range(count):
            image, segment_map, segments = render_scene(rng, size)
            file_name = f"{split}/{index:05d}.png"
            Image.fromarray(image).save(os.path.join(output_dir, file_name))
            images.append({"id": index + 1, "file_name": file_name, "height": size[0], "width": size[1]})
            for segment in segments:
                if segment["name"] not in COCO_CATEGORY_IDS:
                    continue
                mask = np.asfortranarray((segment_map == segment["id"]).astype(np.uint8))
                rle = mask_utils.encode(mask)
                annotations.append(
                    {
                        "id": len(annotations) + 1,
                        "image_id": index + 1,
                        "category_id": COCO_CATEGORY_IDS[segment["name"]],
                        "segmentation": {"size": list(size), "counts": rle["counts"].decode("ascii")},
                        "area": int(mask_utils.area(rle)),
                        "bbox": [float(v) for v in mask_utils.toBbox(rle)],
                        "iscrowd": 0,
                    }
                )
        path = os.path.join(output_dir, f"instances_{split}.json")
        with open(path, "w") as handle:
            json.dump({"images": images, "annotations": annotations, "categories": categories}, handle)
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", choices=["semantic", "instance", "panoptic"], required=True)
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--num_train", type=int, default=64)
    parser.add_argument("--num_validation", type=int, default=16)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--format", choices=["datasets", "coco"], default="datasets", help="coco: an instances JSON per split"
    )
    args = parser.parse_args(argv)
    if args.format == "coco":
        if args.task != "instance":
            parser.error("--format coco writes instance annotations; use --task instance.")
        kwargs = dict(num_train=args.num_train, num_validation=args.num_validation, size=args.size, seed=args.seed)
        for path in save_synthetic_coco(args.output_dir, **kwargs):
            print(f"wrote {path}")
        return
    save_synthetic_dataset(
        args.output_dir,
        args.task,
        num_train=args.num_train,
        num_validation=args.num_validation,
        size=args.size,
        seed=args.seed,
    )
    print(f"wrote {args.task} dataset to {args.output_dir}")


if __name__ == "__main__":
    main()
