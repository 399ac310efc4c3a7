"""examples/evaluate.py on COCO JSON files: AP by pycocotools with the dataset's category ids, the results file."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "examples" / "evaluate.py"
sys.path.insert(0, str(ROOT / "tests" / "training"))
from coco_data import make_instances  # noqa: E402

sys.path.pop(0)


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("m2f_evaluate_script_coco", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def cocoeval_stats(annotation_file, results_file):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(annotation_file))
        evaluation = COCOeval(gt, gt.loadRes(str(results_file)), iouType="segm")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return [100 * v for v in evaluation.stats[:6]]


def test_ap_on_a_coco_file_equals_cocoeval_on_the_written_results(script, tmp_path):
    import m2f_hf
    from m2f_hf.data.synthetic import COCO_CATEGORY_IDS, save_synthetic_coco

    _, validation = save_synthetic_coco(str(tmp_path / "shapes"), num_train=1, num_validation=8, size=128, seed=3)
    predictions = tmp_path / "out" / "results.json"
    results = script.main(
        [
            "--model_name_or_path", str(m2f_hf.default_model_path()),
            "--dataset_name", validation,
            "--task", "instance",
            "--output_file", str(tmp_path / "out" / "metrics.json"),
            "--predictions_file", str(predictions),
        ]
    )  # fmt: skip
    written = json.loads(predictions.read_text())
    # Dataset category ids (1, 3, 8: the model has no dataset_category_ids, so its classes match them by name).
    assert {r["category_id"] for r in written} <= set(COCO_CATEGORY_IDS.values())
    assert all(set(r) == {"image_id", "category_id", "segmentation", "score", "bbox", "area"} for r in written)
    stats = cocoeval_stats(validation, predictions)
    for key, value in zip(("AP", "AP50", "AP75", "APs", "APm", "APl"), stats):
        if value < 0:
            assert results[key] is None, key  # COCO's -1 (no object of that size) is written as null
        else:
            assert results[key] == pytest.approx(value, abs=1e-9), key
    # The bundled model knows these shapes: a wrong category mapping would give an AP near 0.
    assert results["AP"] > 40
    assert set(results["per_class_AP"]) == {"circle", "square", "triangle"}


def test_perfect_predictions_of_overlapping_instances_score_100(tmp_path):
    """The evaluator reads the file's own overlapping polygons and RLEs and ignores its crowd region."""
    from pycocotools.coco import COCO

    from m2f_hf.evaluation.coco_file import CocoFileEvaluator

    path = make_instances(tmp_path)
    gt = COCO(str(path))
    id2label = {0: "disc", 1: "square", 2: "bar"}
    evaluator = CocoFileEvaluator(str(path), {0: 3, 1: 7, 2: 90}, id2label)
    index_of = {3: 0, 7: 1, 90: 2}
    for image_id in (11, 12):
        anns = [a for a in gt.imgToAnns[image_id] if not a["iscrowd"]]
        masks = torch.stack([torch.from_numpy(gt.annToMask(a)).bool() for a in anns])
        infos = [{"id": k + 1, "label_id": index_of[a["category_id"]], "score": 0.9} for k, a in enumerate(anns)]
        evaluator.process([{"segmentation": masks, "segments_info": infos}], [image_id])
    results = evaluator.evaluate()
    assert results["AP"] == pytest.approx(100.0)
    assert set(results["per_class_AP"]) == {"disc", "square", "bar"}
    out = tmp_path / "results.json"
    evaluator.write_results(out)
    # The file has no 'area' (the evaluator computes it); COCOeval run directly needs one.
    from pycocotools import mask as mask_utils

    data = json.loads(path.read_text())
    for annotation in data["annotations"]:
        annotation["area"] = float(mask_utils.area(gt.annToRLE(annotation)))
    with_area = tmp_path / "with_area.json"
    with_area.write_text(json.dumps(data))
    assert cocoeval_stats(with_area, out)[0] == pytest.approx(100.0)


def test_task_must_match_the_file(script, tmp_path):
    import m2f_hf

    path = make_instances(tmp_path)
    data = json.loads(path.read_text())
    data["categories"][0]["name"] = "box"  # no class of the bundled model is named like a category now
    path.write_text(json.dumps(data))
    argv = ["--model_name_or_path", str(m2f_hf.default_model_path()), "--dataset_name", str(path)]
    with pytest.raises(ValueError, match="COCO instance file; use --task instance"):
        script.main(argv + ["--task", "panoptic", "--output_file", str(tmp_path / "m.json")])
    with pytest.raises(ValueError, match="none of the model's classes"):
        script.main(argv + ["--task", "instance", "--output_file", str(tmp_path / "m.json")])
