"""Dataset formats: label sets, and decoding of the three annotation formats to one panoptic-style form.

Every sample, whatever its task, becomes a `Sample`: the image as a `(C, H, W)` tensor (`decode_image`: any PIL
mode, 16-bit and float data, as many channels as the model takes), an `(H, W)` int64 map of segment ids (0 = void) and the segments' model class index and crowd flag. Augmentations then only move one map,
and target masks and evaluation references are read from it.

Formats (column names are arguments of `examples/train.py`):
- semantic: `image` + `annotation`, an `(H, W)` class-id map (as `scene_parse_150`); `ignore_index` is void.
- instance: `image` + `annotation`, a 3-channel PNG with the class id in R and the instance id in G (as transformers'
  instance example); every distinct (class, instance) pair with instance id > 0 is a segment, instance id 0 is void.
- panoptic (COCO): `image` + `label`, RGB-encoded segment ids (`id = R + 256 G + 256^2 B`), + `segments_info`, a list
  of `{"id", "category_id", "iscrowd"}`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..processing.image_ops import to_chw_tensor

try:
    from PIL import Image as PILImage
except ImportError:  # pragma: no cover - PIL is a dependency
    PILImage = None

TASKS = ("semantic", "instance", "panoptic")
DEFAULT_COLUMNS = {
    "semantic": {"image": "image", "label": "annotation", "segments_info": None},
    "instance": {"image": "image", "label": "annotation", "segments_info": None},
    "panoptic": {"image": "image", "label": "label", "segments_info": "segments_info"},
}


class DataError(ValueError):
    """A problem with the data itself (a column, a sample, the label set); the message names what is wrong where."""


@dataclass
class LabelSet:
    """The classes of a dataset and how its class ids map to the model's contiguous class indices.

    Args:
        names (`list[str]`): model class index -> name.
        dataset_ids (`list[int]`): model class index -> the id used in the dataset's annotations.
        thing_ids (`list[int]`): model class indices of thing classes (panoptic/instance evaluation).
    """

    names: list[str]
    dataset_ids: list[int]
    thing_ids: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.names:
            raise DataError("the label set is empty; expected at least one class.")
        if len(set(self.dataset_ids)) != len(self.dataset_ids):
            raise DataError(f"the label set has duplicate class ids: {self.dataset_ids}.")

    @property
    def id2label(self) -> dict[int, str]:
        return dict(enumerate(self.names))

    def lookup(self) -> dict[int, int]:
        """Dataset id -> model index."""
        return {dataset_id: index for index, dataset_id in enumerate(self.dataset_ids)}

    @classmethod
    def from_names(cls, names: Sequence[str], thing_ids: Sequence[int] | None = None) -> LabelSet:
        return cls(list(names), list(range(len(names))), list(range(len(names)) if thing_ids is None else thing_ids))


def load_categories_file(path: str | os.PathLike) -> LabelSet:
    """Read `{"0": "name", ...}` or a COCO-style `[{"id", "name", "isthing"}, ...]` list.

    Without `isthing`, every class counts as a thing.
    """
    with open(path) as handle:
        data = json.load(handle)
    if isinstance(data, Mapping):
        try:
            pairs = sorted((int(key), str(value)) for key, value in data.items())
        except ValueError as error:
            raise DataError(f"{path}: keys of a categories mapping must be class ids, got {list(data)[:5]}") from error
        return LabelSet([n for _, n in pairs], [i for i, _ in pairs], list(range(len(pairs))))
    if isinstance(data, list) and all(isinstance(item, Mapping) and {"id", "name"} <= set(item) for item in data):
        items = sorted(data, key=lambda item: int(item["id"]))
        things = [index for index, item in enumerate(items) if item.get("isthing", 1)]
        return LabelSet([str(i["name"]) for i in items], [int(i["id"]) for i in items], things)
    raise DataError(
        f"{path}: expected a JSON object {{'0': 'name', ...}} or a list of {{'id', 'name', 'isthing'}} objects."
    )


def find_class_label(features: Any) -> Any | None:
    """The first `datasets.ClassLabel` in (possibly nested) dataset features, or None."""
    from datasets import ClassLabel

    if isinstance(features, ClassLabel):
        return features
    if isinstance(features, Mapping):
        values = features.values()
    elif isinstance(features, (list, tuple)):
        values = features
    elif hasattr(features, "feature"):  # Sequence / List
        values = [features.feature]
    else:
        return None
    for value in values:
        found = find_class_label(value)
        if found is not None:
            return found
    return None


def resolve_label_set(features: Any, categories_file: str | None, dataset_dir: str | None = None) -> LabelSet:
    """Class names from `categories_file`, else `categories.json` in a local dataset directory, else the dataset's
    `ClassLabel` feature; raise a `DataError` saying how to provide them when there are none."""
    if categories_file:
        return load_categories_file(categories_file)
    if dataset_dir and os.path.isfile(os.path.join(dataset_dir, "categories.json")):
        return load_categories_file(os.path.join(dataset_dir, "categories.json"))
    class_label = find_class_label(features)
    if class_label is not None:
        return LabelSet.from_names(class_label.names)
    raise DataError(
        "cannot find the class names: the dataset has no ClassLabel feature. Pass --categories_file with a JSON "
        '{"0": "name", ...} or a COCO-style [{"id", "name", "isthing"}, ...] list.'
    )


@dataclass
class Sample:
    """One decoded sample: `image` `(C, H, W)` (uint8, or float32 on the 0-255 scale for 16-bit / float data),
    `segments` int64 ids (0 = void), and per segment id its model class index and crowd flag.

    `segments` is `(H, W)`, or `(L, H, W)` for overlapping instances: L layers, each pixel of a layer holding one
    segment id or 0, every segment in exactly one layer. Transforms, targets and references accept both."""

    image: torch.Tensor
    segments: torch.Tensor
    classes: dict[int, int]
    crowd: dict[int, bool]


def _as_array(value: Any, name: str) -> np.ndarray:
    if value is None:
        raise DataError(f"{name} is missing (None).")
    return np.array(value)  # a writable copy (PIL arrays are read-only)


def decode_image(
    value: Any, where: str, *, num_channels: int = 3, scaling: str = "range", stored_dtype: str | None = None
) -> torch.Tensor:
    """A dataset's image (a PIL image of any mode, or an array / nested lists) as a `(num_channels, H, W)` tensor on
    the 0-255 scale, read as the processor reads images at inference (`to_chw_tensor`): uint8 for 8-bit images;
    float32 for 16-bit and float ones, scaled by `scaling` and not rounded, so training sees the precision that
    inference sees. Grey is replicated for an RGB model and alpha dropped; other channel mismatches raise.
    """
    if value is None:
        raise DataError(f"{where} is missing (None).")
    if not (PILImage is not None and isinstance(value, PILImage.Image)):
        value = np.array(value)  # a writable copy (nested lists, read-only arrays)
        if stored_dtype in ("uint8", "uint16") and value.dtype.kind in "iu" and value.dtype != stored_dtype:
            limit = np.iinfo(stored_dtype).max
            if value.size and (value.min() < 0 or value.max() > limit):
                raise DataError(
                    f"{where}: values {value.min()}..{value.max()} do not fit the column's dtype {stored_dtype}."
                )
            value = value.astype(stored_dtype)
        if value.dtype.kind in "iu" and value.dtype not in (np.uint8, np.uint16):
            # integers stored as int32/int64 (e.g. nested lists): 8-bit values, else a mistake
            if value.size and (value.min() < 0 or value.max() > 255):
                raise DataError(
                    f"{where}: integer image values must lie in [0, 255], got {value.min()}..{value.max()} as "
                    f"{value.dtype}; store 16-bit data as uint16 (e.g. datasets' Array3D(dtype='uint16') or a 16-bit "
                    "PNG/TIFF), which is scaled by its range."
                )
            value = value.astype(np.uint8)
    try:
        return to_chw_tensor(value, where, num_channels=num_channels, scaling=scaling)
    except ValueError as error:
        raise DataError(str(error)) from error


def training_channels(processor, config) -> int:
    """The channel count training reads images with: the model's (`config.num_channels`), checked against what the
    image processor makes (its `num_channels`, or per-channel `image_mean` / `image_std`), so that training and
    inference see the same channels."""
    from ..processing.settings import channel_count

    wanted = int(getattr(config, "num_channels", None) or 3)
    made = channel_count(
        {name: getattr(processor, name, None) for name in ("num_channels", "image_mean", "image_std")}
    )
    if made is not None and made != wanted:
        raise DataError(
            f"the model takes {wanted}-channel images (config.num_channels) but the image processor makes {made} "
            f"(num_channels={processor.num_channels!r}, image_mean={processor.image_mean!r}); give the processor "
            f"{wanted} image_mean / image_std values (or one scalar each)."
        )
    return wanted


class FormatAdapter:
    """Decode dataset rows of one task to `Sample`s, checking them and naming the sample in every error.

    Args:
        task (`str`): "semantic", "instance" or "panoptic".
        label_set (`LabelSet`): the classes.
        image_column, label_column (`str`), segments_info_column (`str`, panoptic only): column names.
        ignore_index (`int`): void value of semantic maps (and R values of instance maps that are void).
        do_reduce_labels (`bool`): semantic maps whose 0 means "other": 0 becomes void and the others decrease by 1.
        num_channels (`int`): channels of the model's input (the processor's `num_channels`): grey, RGB, RGB +
            near-infrared, 13 multispectral bands, ... (see `decode_image`).
        scaling (`str`): how 16-bit and float images come to the 0-255 scale: "range" or "minmax" (the processor's
            `scaling`).
    """

    def __init__(
        self,
        *,
        task: str,
        label_set: LabelSet,
        image_column: str,
        label_column: str,
        segments_info_column: str | None = None,
        ignore_index: int = 255,
        do_reduce_labels: bool = False,
        num_channels: int = 3,
        scaling: str = "range",
    ) -> None:
        if task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {task!r}.")
        self.num_channels = num_channels
        self.scaling = scaling
        self.image_storage_dtype: str | None = None  # set from the dataset's features (`check_columns`)
        self.task = task
        self.label_set = label_set
        self.image_column = image_column
        self.label_column = label_column
        self.segments_info_column = segments_info_column
        self.ignore_index = ignore_index
        self.do_reduce_labels = do_reduce_labels
        self._lookup = label_set.lookup()

    @classmethod
    def for_task(
        cls,
        task: str,
        label_set: LabelSet,
        *,
        image_column: str | None = None,
        label_column: str | None = None,
        segments_info_column: str | None = None,
        ignore_index: int = 255,
        do_reduce_labels: bool = False,
        num_channels: int = 3,
        scaling: str = "range",
    ) -> FormatAdapter:
        """An adapter with the task's default column names (`DEFAULT_COLUMNS`) where a name is not given."""
        if task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {task!r}.")
        columns = dict(DEFAULT_COLUMNS[task])
        for key, value in (("image", image_column), ("label", label_column), ("segments_info", segments_info_column)):
            if value:
                columns[key] = value
        return cls(
            task=task,
            label_set=label_set,
            image_column=columns["image"],
            label_column=columns["label"],
            segments_info_column=columns["segments_info"],
            ignore_index=ignore_index,
            do_reduce_labels=do_reduce_labels,
            num_channels=num_channels,
            scaling=scaling,
        )

    @property
    def columns(self) -> list[str]:
        columns = [self.image_column, self.label_column]
        if self.task == "panoptic":
            columns.append(self.segments_info_column)
        return columns

    def check_columns(self, column_names: Sequence[str], split: str, features: Mapping | None = None) -> None:
        """Check that the split has the columns; with the split's `features`, note the image column's declared
        dtype (an `Array2D`/`Array3D` of uint16 arrives as int64 and is read back as 16-bit)."""
        missing = [c for c in self.columns if c not in column_names]
        if missing:
            raise DataError(
                f"the {split} split has no column {missing} (columns: {list(column_names)}); name the right ones "
                "with --image_column_name / --label_column_name / --segments_info_column_name."
            )
        feature = (features or {}).get(self.image_column)
        declared = getattr(feature, "dtype", None)  # Array2D/3D: "uint16", ...; Image: "PIL.Image.Image"
        self.image_storage_dtype = declared if declared in ("uint8", "uint16") else None

    def __call__(self, row: Mapping[str, Any], where: str) -> Sample:
        """Decode `row`; `where` names it in errors (e.g. "train sample 12")."""
        image = decode_image(
            row[self.image_column],
            f"{where}: column {self.image_column!r}",
            num_channels=self.num_channels,
            scaling=self.scaling,
            stored_dtype=self.image_storage_dtype,
        )
        label = _as_array(row[self.label_column], f"{where}: column {self.label_column!r}")
        if label.shape[:2] != tuple(image.shape[-2:]):
            raise DataError(
                f"{where}: the {self.label_column!r} map has size {label.shape[:2]} but the image has size "
                f"{tuple(image.shape[-2:])}; a label map must have the size of its image."
            )
        decode = {"semantic": self._semantic, "instance": self._instance, "panoptic": self._panoptic}[self.task]
        segments, classes, crowd = decode(label, row, where)
        return Sample(image=image, segments=segments, classes=classes, crowd=crowd)

    def _model_class(self, dataset_id: int, where: str) -> int:
        if dataset_id not in self._lookup:
            raise DataError(
                f"{where}: class id {dataset_id} is not in the label set (ids {self.label_set.dataset_ids[:20]}"
                f"{'...' if len(self.label_set.dataset_ids) > 20 else ''})."
            )
        return self._lookup[dataset_id]

    def _semantic(self, label: np.ndarray, row, where: str):
        if label.ndim == 3:
            label = label[..., 0]  # a grayscale map saved as RGB
        values = torch.from_numpy(label.astype(np.int64))
        if self.do_reduce_labels:
            values = torch.where(values == 0, self.ignore_index, values - 1)
            values = torch.where(values == self.ignore_index - 1, self.ignore_index, values)
        segments = torch.zeros_like(values)
        classes = {}
        for value in torch.unique(values).tolist():
            if value == self.ignore_index:
                continue
            index = self._model_class(value, where)
            classes[index + 1] = index
            segments[values == value] = index + 1
        return segments, classes, dict.fromkeys(classes, False)

    def _instance(self, label: np.ndarray, row, where: str):
        if label.ndim != 3 or label.shape[-1] < 2:
            raise DataError(
                f"{where}: an instance annotation must be an (H, W, 3) image with the class in R and the instance id "
                f"in G, got shape {label.shape}."
            )
        semantic = torch.from_numpy(label[..., 0].astype(np.int64))
        instance = torch.from_numpy(label[..., 1].astype(np.int64))
        keep = (instance > 0) & (semantic != self.ignore_index)
        # One id per (class, instance) pair; + 1 keeps 0 for void.
        pair = torch.where(keep, semantic * 256 + instance + 1, 0)
        ids, compact = torch.unique(pair, return_inverse=True)
        segments = compact if ids[0] == 0 else compact + 1
        classes = {}
        for position, raw in enumerate(ids.tolist()):
            if raw == 0:
                continue
            segment_id = position if ids[0] == 0 else position + 1
            classes[segment_id] = self._model_class((raw - 1) // 256, where)
        return segments, classes, dict.fromkeys(classes, False)

    def _panoptic(self, label: np.ndarray, row, where: str):
        if label.ndim != 3 or label.shape[-1] < 3:
            raise DataError(f"{where}: a panoptic label must be an RGB (H, W, 3) image, got shape {label.shape}.")
        rgb = torch.from_numpy(label[..., :3].astype(np.int64))
        segments = rgb[..., 0] + 256 * rgb[..., 1] + 256 * 256 * rgb[..., 2]
        info = row[self.segments_info_column]
        if info is None:
            raise DataError(f"{where}: column {self.segments_info_column!r} is None; expected a list of segments.")
        if isinstance(info, Mapping):  # a datasets Sequence of dicts read as a dict of lists
            info = [dict(zip(info, values)) for values in zip(*info.values())]
        classes, crowd = {}, {}
        for segment in info:
            try:
                segment_id, category = int(segment["id"]), int(segment["category_id"])
            except (KeyError, TypeError) as error:
                raise DataError(
                    f"{where}: every segments_info entry needs 'id' and 'category_id', got {segment!r}."
                ) from error
            classes[segment_id] = self._model_class(category, where)
            crowd[segment_id] = bool(segment.get("iscrowd", 0))
        known = torch.tensor([0, *classes], dtype=torch.int64)
        # Pixels of ids missing from segments_info are void, as in the COCO panoptic API.
        segments = torch.where(torch.isin(segments, known), segments, 0)
        return segments, classes, crowd


def flatten_layers(segments: torch.Tensor) -> torch.Tensor:
    """An `(H, W)` segment map from an `(L, H, W)` layered one: where layers overlap, the earliest layer's segment
    (the earlier annotation) keeps the pixel. A flat map is returned as it is."""
    if segments.dim() == 2:
        return segments
    flat = segments[-1].clone()
    for layer in reversed(segments[:-1]):
        flat = torch.where(layer != 0, layer, flat)
    return flat


def reference_from_sample(sample: Sample) -> dict[str, Any]:
    """The panoptic-style evaluation reference of a sample (model class indices): `segmentation` is an `(H, W)`
    segment map. A layered sample's overlaps go to the earliest layer in it; its full layers are kept under
    `segmentation_layers`, and `overlapping_pixels` counts the pixels of later layers that the flat map lost."""
    present = set(torch.unique(sample.segments).tolist())
    segments_info = [
        {"id": segment_id, "category_id": label, "iscrowd": int(sample.crowd.get(segment_id, False))}
        for segment_id, label in sample.classes.items()
        if segment_id in present
    ]
    reference = {"segmentation": flatten_layers(sample.segments), "segments_info": segments_info}
    if sample.segments.dim() == 3:
        reference["segmentation_layers"] = sample.segments
        reference["overlapping_pixels"] = int((sample.segments != 0).sum() - (reference["segmentation"] != 0).sum())
    return reference
