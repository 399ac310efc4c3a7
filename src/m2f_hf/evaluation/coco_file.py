"""Mask AP of instance predictions against a COCO ground truth, with the dataset's own category ids.

The predictions become COCO results entries (the same ones `m2f-segment --format coco` writes,
`inference.coco_results.results_records`), and pycocotools' `COCOeval(iouType="segm")` scores them against the
annotation file itself: its polygons and RLEs, overlapping instances and `iscrowd` regions exactly as COCO reads them.
`write_results` saves the entries as the results JSON `COCO.loadRes` reads, so the AP can be recomputed from it.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

from .base import Evaluator

KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def load_ground_truth(ground_truth: str | os.PathLike | Mapping):
    """A `pycocotools.coco.COCO` of an annotation file or of an in-memory COCO dict (quietly). Annotations without
    `area` or `bbox` (some converters leave them out; `COCOeval` needs both) get them from their masks."""
    from pycocotools import mask as mask_utils
    from pycocotools.coco import COCO

    if not isinstance(ground_truth, Mapping):
        with open(os.fspath(ground_truth)) as handle:
            ground_truth = json.load(handle)
    coco = COCO()
    coco.dataset = dict(ground_truth)
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    for annotation in coco.dataset.get("annotations", []):
        if "area" not in annotation or "bbox" not in annotation:
            rle = coco.annToRLE(annotation)
            annotation.setdefault("area", float(mask_utils.area(rle)))
            annotation.setdefault("bbox", [float(v) for v in mask_utils.toBbox(rle)])
    return coco


def category_mapping(id2label: Mapping[int, str], dataset_category_ids: Sequence[int] | None, categories: list):
    """Model class index -> the ground truth's category id, and the model classes that have none.

    With `dataset_category_ids` (saved by `examples/train.py`) classes keep their dataset ids; without them classes
    are matched to categories by name. Classes absent from the ground truth (stuff classes of a panoptic model, say)
    are returned separately so that the caller can say so.
    """
    known = {int(c["id"]) for c in categories}
    by_name = {str(c["name"]): int(c["id"]) for c in categories}
    mapping, missing = {}, []
    for index, name in sorted(id2label.items()):
        category = int(dataset_category_ids[index]) if dataset_category_ids is not None else by_name.get(name)
        if category is not None and category in known:
            mapping[int(index)] = category
        else:
            missing.append(int(index))
    if not mapping:
        how = "dataset_category_ids" if dataset_category_ids is not None else "class names"
        raise ValueError(
            f"none of the model's classes ({dict(id2label)}) matches a category of the ground truth "
            f"({sorted(by_name.items(), key=lambda item: item[1])[:20]}) by {how}."
        )
    return mapping, missing


class CocoFileEvaluator(Evaluator):
    """COCO mask AP against an annotation file (or COCO dict) by pycocotools, over the images processed.

    Args:
        ground_truth: a COCO instances JSON path or dict.
        category_ids (`Mapping[int, int]`): model class index -> category id of the ground truth; predictions of
            other classes are dropped.
        id2label (`Mapping[int, str]`): the model's class names.
        max_detections_per_image (`int`): COCO's `maxDets` (100).

    `process(predictions, image_ids)` takes `post_process_instance_segmentation(..., return_binary_maps=True)`
    results (at the images' original sizes) and the ground truth's image ids.
    """

    def __init__(
        self,
        ground_truth: str | os.PathLike | Mapping,
        category_ids: Mapping[int, int],
        id2label: Mapping[int, str],
        max_detections_per_image: int = 100,
    ) -> None:
        self.ground_truth = ground_truth
        self.category_ids = {int(k): int(v) for k, v in category_ids.items()}
        self.id2label = {int(k): str(v) for k, v in id2label.items()}
        self.max_detections_per_image = int(max_detections_per_image)
        super().__init__()

    def reset(self) -> None:
        self._state = {"results": [], "image_ids": []}

    def process(self, predictions: Any, image_ids: Any) -> None:
        from ..inference.coco_results import results_records
        from ..inference.records import segments_to_records

        category_list = [self.category_ids.get(index, -1) for index in range(max(self.id2label) + 1)]
        for prediction, image_id in zip(predictions, image_ids, strict=True):
            records = segments_to_records(prediction, self.id2label, category_list)
            records = [r for r in records if r["category_id"] != -1 and r["area"] > 0]
            records.sort(key=lambda r: -r["score"])
            self._state["results"].extend(
                results_records(image_id, records[: self.max_detections_per_image], "instance")
            )
            self._state["image_ids"].append(image_id)

    @property
    def results(self) -> list[dict]:
        """The COCO results entries so far (after `synchronize`, of every process)."""
        return self._state["results"]

    def write_results(self, path: str | os.PathLike) -> None:
        """The results JSON (`COCO.loadRes` reads it)."""
        directory = os.path.dirname(os.path.abspath(path))
        os.makedirs(directory, exist_ok=True)
        with open(path, "w") as handle:
            json.dump(self.results, handle)

    def evaluate(self) -> dict[str, Any]:
        """AP, AP50, AP75, APs, APm, APl in percent (NaN where COCO reports -1) and `per_class_AP` by name."""
        from pycocotools.cocoeval import COCOeval

        coco_gt = load_ground_truth(self.ground_truth)
        image_ids = sorted(set(self._state["image_ids"]))
        if not image_ids:
            return {**dict.fromkeys(KEYS, float("nan")), "per_class_AP": {}}
        with contextlib.redirect_stdout(io.StringIO()):
            # loadRes adds keys to the entries it is given (a copy: the written file stays as written) and cannot
            # read an empty list: no detections at all score AP 0 where there are objects
            coco_dt = (
                coco_gt.loadRes(copy.deepcopy(self.results))
                if self.results
                else load_ground_truth(
                    {
                        "images": coco_gt.dataset["images"],
                        "annotations": [],
                        "categories": coco_gt.dataset["categories"],
                    }
                )
            )
            coco_eval = COCOeval(coco_gt, coco_dt, iouType="segm")
            coco_eval.params.imgIds = image_ids
            coco_eval.params.maxDets = [1, 10, self.max_detections_per_image]
            coco_eval.evaluate()
            coco_eval.accumulate()
            coco_eval.summarize()
        results: dict[str, Any] = {
            key: 100.0 * float(value) if value >= 0 else float("nan") for key, value in zip(KEYS, coco_eval.stats[:6])
        }
        names = {int(c["id"]): str(c["name"]) for c in coco_gt.dataset["categories"]}
        precision = coco_eval.eval["precision"][:, :, :, 0, -1]  # (iou, recall, class, area all, maxDets 100)
        per_class = {}
        for k, category_id in enumerate(coco_eval.params.catIds):
            values = precision[:, :, k]
            values = values[values > -1]
            if values.size:
                per_class[names.get(category_id, str(category_id))] = 100.0 * float(values.mean())
        results["per_class_AP"] = per_class
        return results
