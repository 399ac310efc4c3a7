"""Small COCO datasets written to a folder for tests: images, an instances JSON and a panoptic JSON + PNGs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

# Non-contiguous ids, as COCO's: model classes 0, 1, 2 are ids 3, 7, 90.
CATEGORIES = [{"id": 7, "name": "square"}, {"id": 3, "name": "disc"}, {"id": 90, "name": "bar"}]


def rectangle(x0, y0, x1, y1):
    return [float(x0), float(y0), float(x1), float(y0), float(x1), float(y1), float(x0), float(y1)]


def rle_of(mask: np.ndarray) -> dict:
    """Compressed COCO RLE (counts as str) of a bool mask."""
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}


def uncompressed_rle_of(mask: np.ndarray) -> dict:
    """COCO's uncompressed RLE, built by hand: column-major run lengths, starting with a background run."""
    flat = mask.flatten(order="F").astype(np.int8)
    changes = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], changes, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat[0]:
        counts = [0, *counts]
    return {"size": list(mask.shape), "counts": counts}


def disc(height, width, cy, cx, radius):
    yy, xx = np.mgrid[0:height, 0:width]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2


def write_image(path: Path, height: int, width: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8)).save(path)


def make_instances(folder: Path, *, with_crowd: bool = True) -> Path:
    """Two images (48 x 64 and 40 x 40): polygons, compressed and uncompressed RLE, a crowd region and two
    overlapping instances; the JSON is `folder/instances.json`, the images beside it (Roboflow's layout)."""
    folder.mkdir(parents=True, exist_ok=True)
    write_image(folder / "a.png", 48, 64, 0)
    write_image(folder / "b.png", 40, 40, 1)
    annotations = [
        # image 1: a square polygon (id 7) and a disc (id 3) overlapping it, as compressed RLE
        {"id": 1, "image_id": 11, "category_id": 7, "segmentation": [rectangle(4, 4, 30, 30)], "iscrowd": 0},
        {"id": 2, "image_id": 11, "category_id": 3, "segmentation": rle_of(disc(48, 64, 28, 28, 10)), "iscrowd": 0},
        # a bar (id 90) elsewhere, as two polygons (one object in two parts)
        {
            "id": 3,
            "image_id": 11,
            "category_id": 90,
            "segmentation": [rectangle(44, 2, 60, 8), rectangle(44, 30, 60, 40)],
            "iscrowd": 0,
        },
        # image 2: a disc as uncompressed RLE
        {
            "id": 4,
            "image_id": 12,
            "category_id": 3,
            "segmentation": uncompressed_rle_of(disc(40, 40, 12, 12, 8)),
            "iscrowd": 0,
        },
    ]
    if with_crowd:
        crowd = np.zeros((40, 40), bool)
        crowd[25:38, 20:38] = True
        annotations.append(
            {"id": 5, "image_id": 12, "category_id": 7, "segmentation": uncompressed_rle_of(crowd), "iscrowd": 1}
        )
    data = {
        "images": [
            {"id": 11, "file_name": "a.png", "height": 48, "width": 64},
            {"id": 12, "file_name": "b.png", "height": 40, "width": 40},
        ],
        "annotations": annotations,
        "categories": CATEGORIES,
    }
    path = folder / "instances.json"
    path.write_text(json.dumps(data))
    return path


def make_panoptic(folder: Path) -> Path:
    """The official layout: `folder/annotations/panoptic_train.json`, its PNGs in `folder/annotations/panoptic_train/`
    and the images in `folder/train/`; categories 1 (thing) and 5 (stuff)."""
    (folder / "train").mkdir(parents=True, exist_ok=True)
    png_dir = folder / "annotations" / "panoptic_train"
    png_dir.mkdir(parents=True, exist_ok=True)
    write_image(folder / "train" / "p.jpg", 32, 32, 2)
    ids = np.zeros((32, 32), np.int64)
    ids[:16] = 5000  # stuff
    ids[20:30, 4:14] = 1234567  # a thing
    ids[20:30, 18:28] = 777  # a crowd thing
    rgb = np.stack([ids % 256, ids // 256 % 256, ids // 65536], -1).astype(np.uint8)
    Image.fromarray(rgb).save(png_dir / "p.png")
    data = {
        "images": [{"id": 3, "file_name": "p.jpg", "height": 32, "width": 32}],
        "annotations": [
            {
                "image_id": 3,
                "file_name": "p.png",
                "segments_info": [
                    {"id": 5000, "category_id": 5, "iscrowd": 0},
                    {"id": 1234567, "category_id": 1, "iscrowd": 0},
                    {"id": 777, "category_id": 1, "iscrowd": 1},
                ],
            }
        ],
        "categories": [{"id": 1, "name": "person", "isthing": 1}, {"id": 5, "name": "sky", "isthing": 0}],
    }
    path = folder / "annotations" / "panoptic_train.json"
    path.write_text(json.dumps(data))
    return path
