"""COCO results files for a run over many images, and reading them back for `m2f_hf.evaluation`.

Written by `CocoResultsWriter` (`m2f-segment DIR --format coco`) into the output folder:

- instance: `coco_instances_results.json`, a list of `{"image_id", "category_id", "segmentation" (RLE), "score",
  "bbox", "area"}` with each instance's whole mask (instances may overlap), as `COCO.loadRes` reads it;
- semantic: `coco_stuff_results.json`, one `{"image_id", "category_id", "segmentation"}` per class and image (the
  COCO-Stuff results layout);
- panoptic: `coco_panoptic.json` (`images`, `annotations` with `segments_info`, `categories` with `isthing`) and one
  PNG per image in `coco_panoptic/` (segment id = R + 256 G + 256^2 B), the layout of COCO's panoptic annotations;
- instance and semantic also get `coco_images.json` (`images` and `categories`, no annotations), which
  `pycocotools.coco.COCO` loads as the ground-truth side of `loadRes` when there is no annotation file.

Category ids are the dataset's (`config.dataset_category_ids`, else the class index). Image ids come from a COCO
annotation file (`reference`, matched by file name), else they number the inputs 1, 2, ... in input order.
The per-image JSON documents (`NAME.json`) stay in the folder: they make the run resumable, and the results files
are assembled from them at the end, including images done by earlier runs.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from .writers import ImageWriter, atomic_write_text, read_document

RESULTS_FILES = {
    "instance": "coco_instances_results.json",
    "semantic": "coco_stuff_results.json",
    "panoptic": "coco_panoptic.json",
}
IMAGES_FILE = "coco_images.json"
PANOPTIC_DIR = "coco_panoptic"


def id_map_to_rgb(ids: np.ndarray) -> np.ndarray:
    """(H, W) non-negative segment ids -> (H, W, 3) uint8 in COCO's panoptic encoding."""
    ids = np.asarray(ids, dtype=np.int64)
    return np.stack([ids % 256, ids // 256 % 256, ids // 256**2 % 256], axis=-1).astype(np.uint8)


def _reference_ids(reference: str | os.PathLike) -> dict[str, dict]:
    """File name (and base name) -> the COCO `images` entry of an annotation file."""
    try:
        with open(reference) as handle:
            images = json.load(handle)["images"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ValueError(f"cannot read the `images` of the COCO file {str(reference)!r}: {error}") from error
    by_name = {}
    for entry in images:
        by_name.setdefault(entry["file_name"], entry)
        by_name.setdefault(os.path.basename(entry["file_name"]), entry)
    return by_name


def results_records(image_id, segments: list[dict], task: str) -> list[dict]:
    """The COCO results entries of one image's segment records (`inference.records.segments_to_records`): instance
    `{"image_id", "category_id", "segmentation", "score", "bbox", "area"}` (what `COCO.loadRes` reads), semantic
    the same without score, bbox and area. `m2f-segment --format coco` and `examples/evaluate.py
    --predictions_file` both write these."""
    results = []
    for s in segments:
        record = {"image_id": image_id, "category_id": s["category_id"], "segmentation": s["segmentation"]}
        if task == "instance":
            record.update(score=s["score"], bbox=s["bbox"], area=s["area"])
        results.append(record)
    return results


class CocoResultsWriter(ImageWriter):
    """Per image the JSON document (and for panoptic the COCO PNG); at the end, the COCO results file.

    Args:
        output_dir: the output folder.
        loaded: the `LoadedModel` (class names, dataset category ids, thing classes).
        options: the run's `SegmentOptions` (its task: `instance`, `semantic` or `panoptic`).
        items: every input of the run, in order (image ids follow it).
        reference: a COCO annotation file whose `images` give the image ids, matched by file name.
    """

    def __init__(self, output_dir, loaded, options, items: list, *, reference=None) -> None:
        super().__init__(output_dir, loaded, options, draw=None)
        self.images = {}  # item path -> COCO image entry (id, file_name)
        self.unknown = []  # items absent from the reference
        lookup = _reference_ids(reference) if reference is not None else None
        for position, item in enumerate(items):
            if lookup is None:
                self.images[item.path] = {"id": position + 1, "file_name": item.path}
                continue
            entry = lookup.get(item.path) or lookup.get(os.path.basename(item.path))
            if entry is None:
                self.unknown.append(item)
            else:
                self.images[item.path] = {"id": entry["id"], "file_name": entry["file_name"]}

    def panoptic_png(self, item) -> Path:
        return self.output_dir / PANOPTIC_DIR / f"{item.name}.png"

    def is_done(self, item) -> bool:
        if self.task == "panoptic" and not self.panoptic_png(item).is_file():
            return False
        return super().is_done(item)

    def extra_outputs(self, item, image, result, document: dict) -> None:
        if self.task != "panoptic":
            return
        from PIL import Image

        from .writers import save_png_atomically

        path = self.panoptic_png(item)
        path.parent.mkdir(parents=True, exist_ok=True)
        save_png_atomically(Image.fromarray(id_map_to_rgb(np.asarray(result["segmentation"]).clip(min=0))), path)

    def categories(self) -> list[dict]:
        things = self.loaded.thing_ids
        category_ids = self.loaded.category_ids
        return [
            {
                "id": index if category_ids is None else int(category_ids[index]),
                "name": name,
                # unknown thing classes: every class may be an instance (as our COCO readers assume)
                "isthing": int(things is None or index in things),
            }
            for index, name in sorted(self.loaded.id2label.items())
        ]

    def finish(self, items) -> list[Path]:
        images, annotations, results = [], [], []
        for item in items:
            entry = self.images.get(item.path)
            document = read_document(self.json_path(item)) if entry is not None else None
            if document is None or document.get("image") != item.path or document.get("options") != self.options:
                continue  # unreadable, unknown to the reference, or not done: reported when it failed
            image_id = entry["id"]
            images.append({**entry, "height": document["height"], "width": document["width"]})
            segments = document["segments"]
            if self.task == "panoptic":
                annotations.append(
                    {
                        "image_id": image_id,
                        "file_name": f"{item.name}.png",
                        "segments_info": [
                            {
                                "id": s["id"],
                                "category_id": s["category_id"],
                                "iscrowd": 0,
                                "area": s["area"],
                                "bbox": s["bbox"],
                                "score": s["score"],
                            }
                            for s in segments
                        ],
                    }
                )
                continue
            results.extend(results_records(image_id, segments, self.task))
        written = []
        results_path = self.output_dir / RESULTS_FILES[self.task]
        if self.task == "panoptic":
            document = {"images": images, "annotations": annotations, "categories": self.categories()}
            atomic_write_text(results_path, json.dumps(document))
        else:
            atomic_write_text(results_path, json.dumps(results))
            images_path = self.output_dir / IMAGES_FILE
            atomic_write_text(images_path, json.dumps({"images": images, "categories": self.categories()}))
            written.append(images_path)
        written.insert(0, results_path)
        return written


def read_instance_results(path) -> dict[int, dict]:
    """A COCO instance results file as `InstanceEvaluator` predictions: image id -> `{"segmentation": [RLE, ...],
    "segments_info": [{"id", "category_id", "score"}, ...]}` (class ids are the file's category ids)."""
    with open(path) as handle:
        results = json.load(handle)
    predictions: dict[int, dict] = {}
    for record in results:
        prediction = predictions.setdefault(record["image_id"], {"segmentation": [], "segments_info": []})
        prediction["segmentation"].append(record["segmentation"])
        prediction["segments_info"].append(
            {
                "id": len(prediction["segments_info"]) + 1,
                "category_id": record["category_id"],
                "score": record["score"],
            }
        )
    return predictions


def read_panoptic_results(path, png_dir=None) -> dict[int, dict]:
    """A COCO panoptic JSON and its PNGs as `PanopticEvaluator` predictions: image id -> `{"segmentation": (H, W)
    int64 ids, "segments_info"}`; the PNGs are in `png_dir` (default: the JSON's folder / `coco_panoptic`)."""
    import torch
    from PIL import Image

    from ..evaluation.convert import rgb_to_id

    path = Path(path)
    png_dir = Path(png_dir) if png_dir is not None else path.parent / PANOPTIC_DIR
    with open(path) as handle:
        document = json.load(handle)
    predictions = {}
    for annotation in document["annotations"]:
        with Image.open(png_dir / annotation["file_name"]) as png:
            ids = rgb_to_id(np.array(png.convert("RGB")))
        predictions[annotation["image_id"]] = {
            "segmentation": torch.as_tensor(ids),
            "segments_info": annotation["segments_info"],
        }
    return predictions


def categories_id2label(path) -> dict[int, str]:
    """`{category id: name}` of a COCO file's `categories` (for the evaluators' `id2label`)."""
    with open(path) as handle:
        return {int(c["id"]): c["name"] for c in json.load(handle)["categories"]}


__all__ = [
    "CocoResultsWriter",
    "categories_id2label",
    "id_map_to_rgb",
    "read_instance_results",
    "read_panoptic_results",
    "results_records",
]
