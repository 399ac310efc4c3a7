"""examples/evaluate.py end to end on a tiny random model and a synthetic dataset (one process)."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "examples" / "evaluate.py"


@pytest.fixture(scope="module")
def script():
    # Loaded under another name: "evaluate" is also the Hugging Face package.
    spec = importlib.util.spec_from_file_location("m2f_evaluate_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("task", "expected_keys"),
    [
        ("panoptic", {"PQ", "PQ_th", "PQ_st", "per_class", "pan_AP", "pan_semantic_mIoU"}),
        ("instance", {"AP", "AP50", "AP75", "APs", "APm", "APl", "per_class_AP"}),
        ("semantic", {"mIoU", "fwIoU", "pixel_accuracy", "mean_accuracy", "per_class_IoU"}),
    ],
)
def test_script_writes_metrics(script, tmp_path, task, expected_keys):
    from m2f_hf import M2FForUniversalSegmentation
    from m2f_hf.data.synthetic import categories, save_synthetic_dataset
    from m2f_hf.testing import tiny_config

    dataset = save_synthetic_dataset(str(tmp_path / "data"), task, num_train=1, num_validation=3, size=48)
    model_dir = tmp_path / "model"
    M2FForUniversalSegmentation(tiny_config(num_labels=len(categories(task)))).save_pretrained(model_dir)
    output = tmp_path / "results" / "metrics.json"
    argv = ["--model_name_or_path", str(model_dir), "--dataset_name", dataset, "--task", task]
    argv += ["--eval_size", "48", "--output_file", str(output)]
    if task == "panoptic":
        argv.append("--with_panoptic_extras")
    results = script.main(argv)

    written = json.loads(output.read_text())  # strict JSON: NaN was written as null
    assert written == results
    assert expected_keys <= set(results)
    assert results["num_images"] == 3
    for key in expected_keys:
        value = results[key]
        if not isinstance(value, dict) and value is not None:
            assert 0.0 <= value <= 100.0 and not math.isnan(value)
