"""Hub datasets whose rows carry an `objects` column (a common Hub layout for detection and instance data).

Per row: `image`, and `objects`, either a dict of lists (a `datasets` Sequence of dicts) or a list of dicts, with per
object a `category` (a ClassLabel index or a category id; also read as `category_id` or `label`), a `segmentation`
(COCO polygons `[[x1, y1, ...], ...]` or an RLE `{"size", "counts"}`; also read as `segmentations`), and optionally
`iscrowd` (or `is_crowd`) and `bbox` (not used: masks are what is trained). Objects become overlapping instances of a
layered `Sample`, as in COCO files (`data.coco`). Class names come from `--categories_file`, a local
`categories.json`, or the ClassLabel of the objects' category.

For evaluation the split is also turned into an in-memory COCO ground truth (`objects_ground_truth`), which
`evaluation.coco_file.CocoFileEvaluator` scores with pycocotools, as for a COCO file.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np

from .annotations import check_segmentation, decode_segmentation, stack_in_layers
from .formats import DataError, LabelSet, Sample, decode_image, find_class_label, load_categories_file

OBJECTS_COLUMN = "objects"
CATEGORY_KEYS = ("category", "category_id", "label")
SEGMENTATION_KEYS = ("segmentation", "segmentations")
CROWD_KEYS = ("iscrowd", "is_crowd")


def _first(keys: Sequence[str], available) -> str | None:
    return next((key for key in keys if key in available), None)


def objects_label_set(features, column: str, categories_file: str | None, dataset_dir: str | None) -> LabelSet:
    """The classes of an objects dataset: a categories file, a local `categories.json`, or the objects' ClassLabel."""
    if categories_file:
        return load_categories_file(categories_file)
    if dataset_dir and os.path.isfile(os.path.join(dataset_dir, "categories.json")):
        return load_categories_file(os.path.join(dataset_dir, "categories.json"))
    class_label = find_class_label(features.get(column) if isinstance(features, Mapping) else None)
    if class_label is not None:
        return LabelSet.from_names(class_label.names)
    raise DataError(
        f"cannot find the class names of the {column!r} column: its category has no ClassLabel feature. Pass "
        '--categories_file with {"0": "name", ...} or a COCO-style [{"id", "name"}, ...] list.'
    )


class ObjectsAdapter:
    """Decode rows with an `objects` column to layered `Sample`s (the adapter protocol of `SegmentationDataset`).

    Args:
        label_set: the classes (dataset id -> model index through `label_set.dataset_ids`).
        image_column, objects_column: column names.
        decode_masks: False gives images with empty targets, for evaluation against `objects_ground_truth`.
    """

    def __init__(
        self,
        label_set: LabelSet,
        *,
        image_column: str = "image",
        objects_column: str = OBJECTS_COLUMN,
        decode_masks: bool = True,
    ):
        self.decode_masks = decode_masks
        self.num_channels, self.scaling = 3, "range"  # how images are read (train.py sets the processor's)
        self.label_set = label_set
        self.lookup = label_set.lookup()
        self.image_column = image_column
        self.objects_column = objects_column

    def check_columns(self, column_names, split: str, features=None) -> None:
        feature = (features or {}).get(self.image_column)
        declared = getattr(feature, "dtype", None)  # an Array2D/3D of uint16 arrives as int64 (formats.decode_image)
        self.image_storage_dtype = declared if declared in ("uint8", "uint16") else None
        missing = [c for c in (self.image_column, self.objects_column) if c not in column_names]
        if missing:
            raise DataError(
                f"the {split} split has no column {missing} (columns: {list(column_names)}); name the image "
                "column with --image_column_name."
            )

    def objects(self, row: Mapping, height: int, width: int, where: str) -> list[dict]:
        """The row's objects as `{"category_id", "segmentation", "iscrowd"}` (dataset ids), checked."""
        objects = row[self.objects_column]
        if objects is None:
            return []
        if isinstance(objects, Mapping):  # a Sequence of dicts read as a dict of lists
            objects = [dict(zip(objects, values)) for values in zip(*objects.values())]
        checked = []
        for k, item in enumerate(objects):
            place = f"{where}, object {k}"
            category_key = _first(CATEGORY_KEYS, item)
            segmentation_key = _first(SEGMENTATION_KEYS, item)
            if category_key is None or segmentation_key is None:
                raise DataError(
                    f"{place}: expected a category ({'/'.join(CATEGORY_KEYS)}) and a segmentation "
                    f"({'/'.join(SEGMENTATION_KEYS)}: polygons or RLE), got keys {sorted(item)}; boxes alone cannot "
                    "train masks."
                )
            category = item[category_key]
            if category not in self.lookup:
                raise DataError(
                    f"{place}: category {category!r} is not among the classes {self.label_set.dataset_ids[:30]}."
                )
            segmentation = item[segmentation_key]
            check_segmentation(segmentation, height, width, place)
            crowd_key = _first(CROWD_KEYS, item)
            checked.append(
                {
                    "category_id": int(category),
                    "segmentation": segmentation,
                    "iscrowd": int(bool(item[crowd_key])) if crowd_key else 0,
                }
            )
        return checked

    def __call__(self, row: Mapping, where: str) -> Sample:
        where_image = f"{where}: column {self.image_column!r}"
        pixels = decode_image(
            row[self.image_column], where_image, num_channels=self.num_channels, scaling=self.scaling
        )
        height, width = pixels.shape[-2:]
        objects = self.objects(row, height, width, where) if self.decode_masks else []
        masks = [
            decode_segmentation(o["segmentation"], height, width, f"{where}, object {k}")
            for k, o in enumerate(objects)
        ]
        segments, _ = stack_in_layers(masks, height, width)
        classes = {k + 1: self.lookup[o["category_id"]] for k, o in enumerate(objects)}
        crowd = {k + 1: bool(o["iscrowd"]) for k, o in enumerate(objects)}
        return Sample(image=pixels, segments=segments, classes=classes, crowd=crowd)


class ObjectsSplit:
    """An objects split for evaluation: its rows (`SegmentationDataset` reads them), image ids 1..N in row order,
    and the COCO ground truth built from its objects (`ground_truth`)."""

    panoptic = False

    def __init__(self, rows, adapter: ObjectsAdapter, split: str = "validation") -> None:
        self.rows = rows
        self.adapter = adapter
        self.split = split
        self.image_ids = list(range(1, len(rows) + 1))
        self._ground_truth = None

    @property
    def ground_truth(self) -> dict:
        if self._ground_truth is None:
            self._ground_truth = objects_ground_truth(self.rows, self.adapter, self.split)
        return self._ground_truth


def objects_ground_truth(rows, adapter: ObjectsAdapter, split: str = "validation") -> dict:
    """A COCO instances dict (`images`, `annotations`, `categories`) of an objects split, image ids 1..N."""
    images, annotations = [], []
    for index in range(len(rows)):
        row = rows[index]
        image = row[adapter.image_column]
        width, height = (
            image.size
            if hasattr(image, "size") and not isinstance(image, np.ndarray)
            else (np.asarray(image).shape[1], np.asarray(image).shape[0])
        )
        images.append({"id": index + 1, "height": int(height), "width": int(width)})
        for item in adapter.objects(row, int(height), int(width), f"{split} sample {index}"):
            annotations.append({**item, "id": len(annotations) + 1, "image_id": index + 1})
    categories = [
        {"id": int(i), "name": name} for i, name in zip(adapter.label_set.dataset_ids, adapter.label_set.names)
    ]
    return {"images": images, "annotations": annotations, "categories": categories}
