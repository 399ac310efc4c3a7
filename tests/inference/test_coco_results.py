"""COCO results of a folder run: pycocotools' loadRes reads them, and so does our evaluator, with the same numbers
as evaluating the in-memory results."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from m2f_hf.evaluation import InstanceEvaluator, PanopticEvaluator
from m2f_hf.inference import SegmentOptions, segment_image
from m2f_hf.inference.batch import run_images
from m2f_hf.inference.coco_results import (
    CocoResultsWriter,
    categories_id2label,
    read_instance_results,
    read_panoptic_results,
)
from m2f_hf.inference.inputs import collect_inputs

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
# a dataset whose category ids are not the class indices (COCO's are 1..90 with gaps)
DATASET_IDS = [11, 13, 17, 92, 93, 95]


@pytest.fixture
def with_dataset_ids(loaded):
    """The bundled model with dataset category ids and thing classes in its config (restored afterwards)."""
    config = loaded.model.config
    saved = (config.dataset_category_ids, config.thing_ids)
    config.dataset_category_ids, config.thing_ids = DATASET_IDS, [0, 1, 2]
    yield loaded
    config.dataset_category_ids, config.thing_ids = saved


def _coco_run(loaded, folder, output, task, **kwargs):
    items = collect_inputs([str(folder)]).images
    options = SegmentOptions(task=task, threshold=0.0, overlap_mask_area_threshold=0.0, full_instance_masks=True)
    writer = CocoResultsWriter(output, loaded, options, items, **kwargs)
    summary = run_images(loaded, items, options, writer, batch_size=2)
    return items, writer, summary, writer.finish(items)


def _quiet(function, *args):
    with contextlib.redirect_stdout(io.StringIO()):
        return function(*args)


def test_instance_results_load_in_pycocotools_with_the_dataset_ids(with_dataset_ids, image_folder, tmp_path):
    loaded = with_dataset_ids
    items, writer, summary, written = _coco_run(loaded, image_folder, tmp_path / "out", "instance")
    assert [p.name for p in written] == ["coco_instances_results.json", "coco_images.json"]
    assert len(summary.failed) == 1  # broken.jpg: left out of the results, reported
    ground_truth = _quiet(COCO, str(tmp_path / "out" / "coco_images.json"))
    results = _quiet(ground_truth.loadRes, str(tmp_path / "out" / "coco_instances_results.json"))
    assert sorted(ground_truth.getImgIds()) == [2, 3, 4, 5]  # ids number the inputs; 1 (broken.jpg) has none
    assert {a["category_id"] for a in results.anns.values()} <= set(DATASET_IDS)
    assert sorted(ground_truth.getCatIds()) == DATASET_IDS
    # the records decode to the model's whole instance masks, one per kept detection
    image = Image.open(image_folder / "shapes_1.png").convert("RGB")
    expected = segment_image(
        loaded,
        image,
        SegmentOptions(task="instance", threshold=0.0, overlap_mask_area_threshold=0.0, full_instance_masks=True),
    )
    image_id = writer.images[str(image_folder / "shapes_1.png")]["id"]
    found = [a for a in results.anns.values() if a["image_id"] == image_id]
    assert len(found) == len(expected["segments_info"])
    for annotation, info, mask in zip(found, expected["segments_info"], expected["segmentation"]):
        assert annotation["category_id"] == DATASET_IDS[info["label_id"]]
        assert annotation["score"] == pytest.approx(info["score"], abs=1e-5)  # batch of 2 vs one image
        np.testing.assert_array_equal(results.annToMask(annotation).astype(bool), mask.numpy() > 0)


def test_instance_ap_of_the_file_equals_our_evaluator_and_cocoeval(loaded, image_folder, tmp_path):
    """Ground truth: each image's own panoptic result; AP from the written file by COCOeval and by our evaluator."""
    items, writer, _, _ = _coco_run(loaded, image_folder, tmp_path / "out", "instance")
    id2label = categories_id2label(tmp_path / "out" / "coco_images.json")
    things = [0, 1, 2]
    evaluator = InstanceEvaluator(id2label, things)
    predictions = read_instance_results(tmp_path / "out" / "coco_instances_results.json")
    gt = {
        "images": [],
        "annotations": [],
        "categories": [{"id": i, "name": n} for i, n in id2label.items() if i in things],
    }
    for item in items:
        if item.path not in writer.images or item.name == "broken":
            continue
        image_id = writer.images[item.path]["id"]
        reference = segment_image(loaded, Image.open(item.path).convert("RGB"), SegmentOptions(task="panoptic"))
        reference = {
            "segmentation": reference["segmentation"],
            "segments_info": [
                {"id": s["id"], "category_id": s["label_id"], "iscrowd": 0} for s in reference["segments_info"]
            ],
        }
        evaluator.process([predictions.get(image_id, {"segmentation": [], "segments_info": []})], [reference])
        height, width = reference["segmentation"].shape
        gt["images"].append({"id": image_id, "height": height, "width": width})
        for s in reference["segments_info"]:
            if s["category_id"] in things:
                rle = mask_utils.encode(
                    np.asfortranarray((reference["segmentation"] == s["id"]).numpy().astype(np.uint8))
                )
                rle["counts"] = rle["counts"].decode()
                gt["annotations"].append(
                    {
                        "id": len(gt["annotations"]) + 1,
                        "image_id": image_id,
                        "category_id": s["category_id"],
                        "segmentation": rle,
                        "area": float(mask_utils.area(rle)),
                        "bbox": list(mask_utils.toBbox(rle)),
                        "iscrowd": 0,
                    }
                )
    ours = evaluator.evaluate()
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    coco_gt = _quiet(COCO, str(tmp_path / "gt.json"))
    results = [
        r
        for r in json.loads((tmp_path / "out" / "coco_instances_results.json").read_text())
        if r["category_id"] in things
    ]
    coco_dt = _quiet(coco_gt.loadRes, results)
    coco_eval = COCOeval(coco_gt, coco_dt, iouType="segm")
    _quiet(coco_eval.evaluate), _quiet(coco_eval.accumulate), _quiet(coco_eval.summarize)
    assert ours["AP"] == pytest.approx(100 * coco_eval.stats[0], abs=1e-6)
    assert ours["AP"] > 50  # the bundled model finds the shapes it painted


def test_panoptic_pngs_and_json_give_the_in_memory_pq(with_dataset_ids, image_folder, tmp_path):
    loaded = with_dataset_ids
    items, writer, _, written = _coco_run(loaded, image_folder, tmp_path / "out", "panoptic")
    assert [p.name for p in written] == ["coco_panoptic.json"]
    document = json.loads(written[0].read_text())
    assert [c["isthing"] for c in document["categories"]] == [1, 1, 1, 0, 0, 0]
    predictions = read_panoptic_results(written[0])
    id2label = categories_id2label(written[0])
    from_files = PanopticEvaluator(id2label, DATASET_IDS[:3])
    in_memory = PanopticEvaluator(loaded.id2label, [0, 1, 2])
    for item in items:
        if item.name == "broken":
            continue
        result = segment_image(
            loaded,
            Image.open(item.path).convert("RGB"),
            SegmentOptions(task="panoptic", threshold=0.0, overlap_mask_area_threshold=0.0),
        )
        # reference: the result with its first segment given another class, so that PQ depends on every image
        changed = {s["id"]: s["label_id"] for s in result["segments_info"]}
        first = result["segments_info"][0]["id"]
        changed[first] = (changed[first] + 1) % len(DATASET_IDS)
        in_memory.process(
            [result],
            [
                {
                    "segmentation": result["segmentation"],
                    "segments_info": [{"id": i, "category_id": c, "iscrowd": 0} for i, c in changed.items()],
                }
            ],
        )
        image_id = writer.images[item.path]["id"]
        from_files.process(
            [predictions[image_id]],
            [
                {
                    "segmentation": result["segmentation"],
                    "segments_info": [
                        {"id": i, "category_id": DATASET_IDS[c], "iscrowd": 0} for i, c in changed.items()
                    ],
                }
            ],
        )
    expected, found = in_memory.evaluate(), from_files.evaluate()
    assert 0 < expected["PQ"] < 100
    for key in ("PQ", "SQ", "RQ", "PQ_th", "PQ_st"):
        assert found[key] == pytest.approx(expected[key], abs=1e-9), key


def test_image_ids_from_a_coco_annotation_file(loaded, image_folder, tmp_path):
    reference = tmp_path / "instances_val.json"
    reference.write_text(
        json.dumps({"images": [{"id": 42, "file_name": "shapes_2.png"}, {"id": 7, "file_name": "val/grey.png"}]})
    )
    items = collect_inputs([str(image_folder)]).images
    writer = CocoResultsWriter(tmp_path / "out", loaded, SegmentOptions(task="instance"), items, reference=reference)
    assert {p.split("/")[-1]: e["id"] for p, e in writer.images.items()} == {"shapes_2.png": 42, "grey.png": 7}
    assert sorted(i.name for i in writer.unknown) == ["broken", "shapes_1", "shapes_3"]
    with pytest.raises(ValueError, match="cannot read the `images` of the COCO file"):
        CocoResultsWriter(tmp_path / "out", loaded, SegmentOptions(), items, reference=tmp_path / "missing.json")
