"""examples/train.py on COCO JSON files: console output, the dataset's ids in the saved config, evaluate.py after."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from coco_data import make_instances

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = str(ROOT / "examples" / "train.py")
EVALUATE = str(ROOT / "examples" / "evaluate.py")


def run(command, timeout=240):
    env = dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1")
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-4000:]
    return result


def layered_targets_supported() -> bool:
    from m2f_hf.data import Sample, encode_targets

    segments = torch.zeros(2, 4, 4, dtype=torch.int64)
    segments[0, :2] = 1
    segments[1, 1:3] = 2
    try:
        masks, _ = encode_targets(Sample(torch.zeros(3, 4, 4, dtype=torch.uint8), segments, {1: 0, 2: 0}, {}))
    except Exception:
        return False
    return masks.shape == (2, 4, 4)


def test_coco_instances_train_print_save_ids_and_evaluate(tmp_path, tiny_config_file):
    from m2f_hf.data.synthetic import save_synthetic_coco

    train_json, validation_json = save_synthetic_coco(
        str(tmp_path / "shapes"), num_train=8, num_validation=4, size=64, seed=0
    )
    config = tmp_path / "tiny3.json"
    from m2f_hf.testing import tiny_config

    tiny_config(num_labels=3).to_json_file(str(config))
    output = tmp_path / "out"
    result = run(
        [
            sys.executable, SCRIPT, "--task", "instance", "--dataset_name", train_json,
            "--validation_annotation_file", validation_json, "--model_name_or_path", str(config),
            "--output_dir", str(output), "--max_train_steps", "4", "--per_device_train_batch_size", "2",
            "--crop_size", "64", "--eval_size", "64", "--logging_steps", "2",
        ]
    )  # fmt: skip
    lines = result.stdout.strip().splitlines()
    # The metrics on the console, and a last line naming the saved model's folder.
    assert any(line.startswith("step 4 evaluation: AP ") for line in lines), result.stdout
    assert lines[-1].startswith(f"Saved the trained model to {output}"), lines[-1]
    assert "8 images, " in result.stderr and "annotations" in result.stderr  # the files' summaries in the log
    saved = json.loads((output / "config.json").read_text())
    assert saved["dataset_category_ids"] == [1, 3, 8] and saved["thing_ids"] == [0, 1, 2]
    assert list(saved["id2label"].values()) == ["circle", "square", "triangle"]
    log = [json.loads(line) for line in (output / "train_log.jsonl").read_text().splitlines()]
    assert "eval_AP" in log[-1]

    predictions = tmp_path / "predictions.json"
    run(
        [
            sys.executable, EVALUATE, "--model_name_or_path", str(output), "--dataset_name", validation_json,
            "--task", "instance", "--output_file", str(tmp_path / "metrics.json"),
            "--predictions_file", str(predictions),
        ]
    )  # fmt: skip
    written = json.loads(predictions.read_text())
    assert written and {r["category_id"] for r in written} <= {1, 3, 8}


def test_wrong_task_for_the_file(tmp_path, tiny_config_file):
    sys.path.insert(0, str(ROOT / "examples"))
    try:
        import train
    finally:
        sys.path.pop(0)
    from m2f_hf.data import DataError

    path = make_instances(tmp_path / "coco")
    argv = ["--dataset_name", str(path), "--model_name_or_path", tiny_config_file, "--output_dir", str(tmp_path)]
    with pytest.raises(DataError, match="COCO instance file; use --task instance"):
        train.main(argv + ["--task", "panoptic"])
    torch.set_num_threads(torch.get_num_threads())


@pytest.mark.skipif(
    not layered_targets_supported(), reason="needs layered (L, H, W) Samples in the data path (issue13-targets)"
)
def test_overlapping_instances_train(tmp_path):
    from m2f_hf.testing import tiny_config

    path = make_instances(tmp_path / "coco")
    config = tmp_path / "tiny3.json"
    tiny_config(num_labels=3).to_json_file(str(config))
    output = tmp_path / "out"
    run(
        [
            sys.executable, SCRIPT, "--task", "instance", "--dataset_name", str(path),
            "--validation_annotation_file", str(path), "--model_name_or_path", str(config),
            "--output_dir", str(output), "--max_train_steps", "3", "--per_device_train_batch_size", "2",
            "--crop_size", "64", "--eval_size", "48", "--logging_steps", "1",
        ]
    )  # fmt: skip
    log = [json.loads(line) for line in (output / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3] and all(torch.isfinite(torch.tensor(r["loss"])) for r in log)


def test_coco_panoptic_layout_trains_and_evaluates(tmp_path):
    from coco_data import make_panoptic

    from m2f_hf.testing import tiny_config

    path = make_panoptic(tmp_path / "coco")
    config = tmp_path / "tiny2.json"
    tiny_config(num_labels=2).to_json_file(str(config))
    output = tmp_path / "out"
    images = str(tmp_path / "coco" / "train")
    result = run(
        [
            sys.executable, SCRIPT, "--task", "panoptic", "--dataset_name", str(path), "--image_dir", images,
            "--validation_annotation_file", str(path), "--validation_image_dir", images,
            "--model_name_or_path", str(config), "--output_dir", str(output), "--max_train_steps", "2",
            "--per_device_train_batch_size", "1", "--crop_size", "64", "--eval_size", "64",
        ]
    )  # fmt: skip
    assert "step 2 evaluation: PQ " in result.stdout
    saved = json.loads((output / "config.json").read_text())
    assert saved["dataset_category_ids"] == [1, 5] and saved["thing_ids"] == [0]
    run(
        [
            sys.executable, EVALUATE, "--model_name_or_path", str(output), "--dataset_name", str(path),
            "--image_dir", images, "--task", "panoptic", "--output_file", str(tmp_path / "metrics.json"),
        ]
    )  # fmt: skip
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert {"PQ", "PQ_th", "PQ_st"} <= set(metrics) and metrics["num_images"] == 1
