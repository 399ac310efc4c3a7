"""COCO-format datasets: instances JSON (polygons or RLE) and the official panoptic layout, read as `Sample`s.

- instances: `instances_*.json` with `images` (`id`, `file_name`, `height`, `width`), `annotations` (`image_id`,
  `category_id`, `segmentation` as polygons or RLE, `iscrowd`) and `categories` (`id`, `name`). Overlapping
  instances stay whole: each goes into the first layer of the sample's segment map where it overlaps no earlier one
  (a `(L, H, W)` map when they overlap), so a later annotation never overwrites an earlier one. Crowd regions are
  segments flagged `crowd` (not trained on; `iscrowd` regions in evaluation).
- panoptic: `panoptic_*.json` (`images`, `annotations` with `file_name` of the PNG and `segments_info`, `categories`
  with `isthing`) and its PNG folder (default: the JSON's path without `.json`, as in `annotations/panoptic_train2017`).

Category ids need not be contiguous (COCO's are 1..90 with gaps): the model's classes are the sorted ids, numbered
from 0 (`LabelSet.dataset_ids` keeps the dataset's, which training saves as `config.dataset_category_ids`).
Images are found under `image_dir`, else relative to the JSON file's folder.

Everything is checked when the file is opened (before training starts), and every error names the image id and
file: a missing image file, a polygon of fewer than 3 points, an RLE whose size is not its image's, a category id
not among the categories, an empty or malformed file. Annotations without any segmentation (boxes only) are
skipped and counted (`CocoDataset.skipped`).
"""

from __future__ import annotations

import json
import os
from collections import Counter, defaultdict
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from .annotations import check_segmentation, decode_segmentation, stack_in_layers
from .formats import DataError, FormatAdapter, LabelSet, Sample


def read_coco_json(path: str | os.PathLike) -> dict:
    """The JSON object of a COCO file, with `images`, `annotations` and `categories` lists checked to exist."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DataError(f"the COCO annotation file {path!r} does not exist.")
    if os.path.getsize(path) == 0:
        raise DataError(f"the COCO annotation file {path!r} is empty; expected a JSON object.")
    try:
        with open(path) as handle:
            data = json.load(handle)
    except (ValueError, UnicodeDecodeError) as error:
        raise DataError(f"the COCO annotation file {path!r} is not valid JSON ({error}).") from error
    if not isinstance(data, Mapping):
        raise DataError(f"{path}: expected a JSON object with 'images', 'annotations' and 'categories'.")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise DataError(f"{path}: expected a list {key!r} (a COCO file), got {type(data.get(key)).__name__}.")
    if not data["categories"]:
        raise DataError(f"{path}: 'categories' is empty; expected at least one category.")
    if not data["images"]:
        raise DataError(f"{path}: 'images' is empty; expected at least one image.")
    return data


def is_panoptic(data: Mapping) -> bool:
    """Whether a COCO file is in the panoptic layout (annotations carry `segments_info`)."""
    return any("segments_info" in annotation for annotation in data["annotations"][:1])


def label_set_from_categories(categories: list, path: str) -> LabelSet:
    """Classes sorted by category id; thing classes from `isthing` (every class when absent, as in instances files)."""
    for category in categories:
        if not isinstance(category, Mapping) or "id" not in category or "name" not in category:
            raise DataError(f"{path}: every category needs 'id' and 'name', got {str(category)[:80]}.")
    items = sorted(categories, key=lambda c: int(c["id"]))
    things = [index for index, item in enumerate(items) if item.get("isthing", 1)]
    return LabelSet([str(c["name"]) for c in items], [int(c["id"]) for c in items], things)


class CocoDataset:
    """The images of a COCO file as rows for `SegmentationDataset` (`len`, indexing, `column_names`); it is also
    the adapter that decodes a row to a `Sample` (`dataset.adapter`).

    Args:
        annotation_file: an instances or panoptic JSON.
        image_dir: folder of the images (default: the JSON's folder).
        label_set: the classes (default: the file's `categories`); a validation file must use the training ids.
        panoptic_dir: panoptic only: the PNG folder (default: the JSON's path without `.json`).
        split: name used in messages.
        decode_masks: instances only: False gives images with empty targets, for evaluation against the file
            itself (`evaluation.coco_file`), which needs no decoded masks.
    """

    column_names = ("image_id",)
    # how image files are read (set by train.py / evaluate.py from the processor and the model, as FormatAdapter's)
    num_channels: int = 3
    scaling: str = "range"

    def __init__(
        self,
        annotation_file: str | os.PathLike,
        *,
        image_dir: str | os.PathLike | None = None,
        label_set: LabelSet | None = None,
        panoptic_dir: str | os.PathLike | None = None,
        split: str = "train",
        decode_masks: bool = True,
    ) -> None:
        self.decode_masks = decode_masks
        self.num_channels, self.scaling = 3, "range"  # how images are read (train.py sets the processor's)
        self.path = os.fspath(annotation_file)
        data = read_coco_json(self.path)
        self.panoptic = is_panoptic(data)
        own = label_set_from_categories(data["categories"], self.path)
        if label_set is not None:
            unknown = sorted(set(own.dataset_ids) - set(label_set.dataset_ids))
            if unknown:
                raise DataError(
                    f"{self.path}: category ids {unknown[:20]} are not among the training categories "
                    f"{label_set.dataset_ids[:20]}; the {split} file must use the training file's ids."
                )
        self.label_set = label_set or own
        self.lookup = self.label_set.lookup()
        self.image_dir = os.fspath(image_dir) if image_dir else os.path.dirname(os.path.abspath(self.path))
        if self.panoptic:
            default = self.path[: -len(".json")] if self.path.endswith(".json") else self.path + "_png"
            self.panoptic_dir = os.fspath(panoptic_dir) if panoptic_dir else default
        self.skipped: Counter = Counter()
        self.images = self._check_images(data["images"])
        self.annotations = self._check_annotations(data["annotations"])
        self.image_ids = [image["id"] for image in self.images]

    @property
    def ground_truth(self) -> str:
        """What `evaluation.coco_file.CocoFileEvaluator` scores against: the file itself."""
        return self.path

    # ------------------------------------------------------------------------------------------------ checks
    def _describe(self, image: Mapping) -> str:
        return f"{self.path}: image id {image['id']} ({image.get('file_name')!r})"

    def _check_images(self, images: list) -> list[dict]:
        checked, seen, missing = [], set(), []
        for entry in images:
            if not isinstance(entry, Mapping) or not {"id", "file_name"} <= set(entry):
                raise DataError(f"{self.path}: every image needs 'id' and 'file_name', got {str(entry)[:80]}.")
            if entry["id"] in seen:
                raise DataError(f"{self.path}: image id {entry['id']} is listed twice in 'images'.")
            seen.add(entry["id"])
            path = os.path.join(self.image_dir, entry["file_name"])
            if not os.path.isfile(path):
                missing.append((entry, path))
            checked.append({**entry, "path": path})
        if missing:
            entry, path = missing[0]
            raise DataError(
                f"{self._describe(entry)}: no image file at {path!r} ({len(missing)} of {len(images)} images are "
                "missing); images are looked for under --image_dir, else relative to the annotation file's folder."
            )
        return checked

    def _category(self, category_id: Any, where: str) -> int:
        try:
            return self.lookup[int(category_id)]
        except (KeyError, TypeError, ValueError):
            raise DataError(
                f"{where}: category id {category_id!r} is not among the categories {self.label_set.dataset_ids[:30]}"
                f"{'...' if len(self.label_set.dataset_ids) > 30 else ''}."
            ) from None

    def _check_annotations(self, annotations: list) -> dict[Any, list]:
        by_id = {image["id"]: image for image in self.images}
        grouped: dict[Any, list] = defaultdict(list)
        self.class_counts: Counter = Counter()  # training class -> annotations (instances) or segments (panoptic)
        for position, annotation in enumerate(annotations):
            if not isinstance(annotation, Mapping) or annotation.get("image_id") not in by_id:
                image_id = annotation.get("image_id") if isinstance(annotation, Mapping) else None
                raise DataError(
                    f"{self.path}: annotation {position} refers to image id {image_id!r}, which is not in 'images'."
                )
            image = by_id[annotation["image_id"]]
            where = f"{self._describe(image)}, annotation id {annotation.get('id', position)}"
            if self.panoptic:
                for segment in annotation.get("segments_info") or []:
                    self.class_counts[self._category(segment.get("category_id"), where)] += 1
                if "file_name" not in annotation:
                    raise DataError(f"{where}: a panoptic annotation needs the 'file_name' of its PNG.")
                png = os.path.join(self.panoptic_dir, annotation["file_name"])
                if not os.path.isfile(png):
                    raise DataError(f"{where}: no panoptic PNG at {png!r} (the PNG folder is --panoptic_dir).")
                grouped[image["id"]] = [annotation]
                continue
            self._category(annotation.get("category_id"), where)
            segmentation = annotation.get("segmentation")
            if segmentation is None or (isinstance(segmentation, list) and len(segmentation) == 0):
                self.skipped["annotations without a segmentation"] += 1
                continue
            if "height" not in image or "width" not in image:
                raise DataError(f"{self._describe(image)}: the image entry needs 'height' and 'width'.")
            check_segmentation(segmentation, int(image["height"]), int(image["width"]), where)
            grouped[image["id"]].append(annotation)
            self.class_counts[self.lookup[int(annotation["category_id"])]] += 1
        if self.skipped and not grouped:
            raise DataError(
                f"{self.path}: no annotation has a 'segmentation' (boxes only?); training needs masks (polygons "
                "or RLE)."
            )
        empty = sum(1 for image in self.images if not grouped.get(image["id"]))
        if empty:
            self.skipped["images without annotations (trained as background only)"] = empty
        return grouped

    def unannotated_categories(self) -> list[str]:
        """The categories with no (segmented) annotation in this file, as "id 'name'": they stay classes, so that
        the ids stay the dataset's, but a model cannot learn them. Roboflow's COCO exports, for one, list the
        dataset's own name as category 0 with no annotations."""
        names, ids = self.label_set.names, self.label_set.dataset_ids
        return [f"{ids[k]} {names[k]!r}" for k in range(len(names)) if not self.class_counts[k]]

    def unannotated_warning(self) -> str | None:
        """The training log's warning about `unannotated_categories`, or None when every category is annotated."""
        unannotated = self.unannotated_categories()
        if not unannotated:
            return None
        return (
            f"{self.path}: {len(unannotated)} of {len(self.label_set.names)} categories have no annotation and "
            f"cannot be learnt (they are kept as classes, with the dataset's ids): {', '.join(unannotated[:10])}"
            f"{' ...' if len(unannotated) > 10 else ''}."
        )

    def summary(self) -> str:
        """One line for the log: images, annotations, and what was skipped."""
        kind = "panoptic annotations" if self.panoptic else "annotations"
        text = f"{self.path}: {len(self.images)} images, {sum(map(len, self.annotations.values()))} {kind}"
        if self.skipped:
            text += "; " + ", ".join(f"{count} {what}" for what, count in self.skipped.items())
        return text

    # -------------------------------------------------------------------------------------------- dataset rows
    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict:
        image = self.images[int(index)]
        return {"image_id": image["id"], "image": image, "annotations": self.annotations.get(image["id"], [])}

    # ------------------------------------------------------------------------------------------------ adapter
    def check_columns(self, column_names, split: str, features=None) -> None:  # SegmentationDataset's protocol
        return None

    def __call__(self, row: Mapping, where: str) -> Sample:
        image = row["image"]
        where = f"{where}, {self._describe(image)}"
        pixels = load_image_tensor(image["path"], where, num_channels=self.num_channels, scaling=self.scaling)
        height, width = pixels.shape[-2:]
        if "height" in image and (int(image["height"]), int(image["width"])) != (height, width):
            raise DataError(
                f"{where}: the file is {height}x{width} (height x width) but the JSON says "
                f"{image['height']}x{image['width']}."
            )
        if self.panoptic:
            return self._panoptic(pixels, row["annotations"][0] if row["annotations"] else None, where)
        masks, classes, crowd = [], {}, {}
        for annotation in row["annotations"] if self.decode_masks else []:
            masks.append(decode_segmentation(annotation["segmentation"], height, width, where))
            segment_id = len(masks)
            classes[segment_id] = self.lookup[int(annotation["category_id"])]
            crowd[segment_id] = bool(annotation.get("iscrowd", 0))
        segments, _ = stack_in_layers(masks, height, width)
        return Sample(image=pixels, segments=segments, classes=classes, crowd=crowd)

    def _panoptic(self, pixels: torch.Tensor, annotation: Mapping | None, where: str) -> Sample:
        from PIL import Image

        if annotation is None:  # an image without a panoptic annotation: all void
            height, width = pixels.shape[-2:]
            return Sample(pixels, torch.zeros(height, width, dtype=torch.int64), {}, {})
        with Image.open(os.path.join(self.panoptic_dir, annotation["file_name"])) as png:
            label = np.array(png.convert("RGB"))
        if label.shape[:2] != tuple(pixels.shape[-2:]):
            raise DataError(
                f"{where}: the panoptic PNG {annotation['file_name']!r} has size {label.shape[:2]} but the image has "
                f"size {tuple(pixels.shape[-2:])}."
            )
        adapter = FormatAdapter(
            task="panoptic", label_set=self.label_set, image_column="image", label_column="label",
            segments_info_column="segments_info",
        )  # fmt: skip
        # the tables' panoptic decoding (ids absent from segments_info are void); the image is already read
        segments, classes, crowd = adapter._panoptic(label, {"segments_info": annotation["segments_info"]}, where)
        return Sample(image=pixels, segments=segments, classes=classes, crowd=crowd)


def load_image_tensor(path: str, where: str, *, num_channels: int = 3, scaling: str = "range") -> torch.Tensor:
    """An image file as a `(C, H, W)` tensor, read as training reads a dataset's images (`formats.decode_image`:
    every mode, 16-bit scaled by `scaling`), turned upright by its EXIF orientation as inference does."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    from .formats import decode_image

    try:
        with Image.open(path) as handle:
            image = ImageOps.exif_transpose(handle)
            image.load()
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as error:
        raise DataError(f"{where}: cannot read the image {path!r} ({error}).") from error
    return decode_image(image, where, num_channels=num_channels, scaling=scaling)
