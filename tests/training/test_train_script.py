"""End-to-end runs of examples/train.py on the synthetic dataset with a tiny model."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = str(ROOT / "examples" / "train.py")


def common_args(dataset, config, output_dir, steps=30):
    return [
        "--model_name_or_path", config,
        "--dataset_name", dataset,
        "--task", "panoptic",
        "--output_dir", str(output_dir),
        "--max_train_steps", str(steps),
        "--per_device_train_batch_size", "2",
        "--crop_size", "64",
        "--learning_rate", "2e-3",
        "--min_scale", "0.8",
        "--max_scale", "1.25",
        "--logging_steps", "5",
        "--checkpointing_steps", "15",
        "--seed", "0",
    ]  # fmt: skip


def run(command, timeout=240, **extra_env):
    env = dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1", **extra_env)
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-4000:]
    return result


def read_log(output_dir):
    with open(Path(output_dir) / "train_log.jsonl") as handle:
        return [json.loads(line) for line in handle]


def test_launched_training_learns_saves_and_resumes(panoptic_dir, tiny_config_file, tmp_path):
    full = tmp_path / "full"
    run(
        [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "1", SCRIPT]
        + common_args(panoptic_dir, tiny_config_file, full)
        + ["--eval_steps", "30"]
    )
    log = read_log(full)
    assert [r["step"] for r in log] == [5, 10, 15, 20, 25, 30]
    # The loss falls clearly within 30 steps.
    assert log[-1]["loss"] < 0.85 * log[0]["loss"], log
    assert {"eval_PQ", "eval_SQ", "eval_RQ"} <= set(log[-1])
    assert log[0]["lr"] == pytest.approx(2e-3) and log[-1]["lr"] == pytest.approx(2e-5)  # step decay at 0.9, 0.95

    # A safetensors checkpoint, the processor and a card; the model loads with from_pretrained.
    for name in ("model.safetensors", "config.json", "preprocessor_config.json", "README.md"):
        assert (full / name).is_file(), name
    from m2f_hf import M2FForUniversalSegmentation
    from m2f_hf.image_processing_m2f import M2FImageProcessor

    model = M2FForUniversalSegmentation.from_pretrained(str(full))
    assert list(model.config.id2label.values()) == ["circle", "square", "triangle", "grass", "water", "sand"]
    assert model.class_predictor.out_features == 7
    processor = M2FImageProcessor.from_pretrained(str(full))
    # Trained from a config JSON: the processor is a fresh one at the evaluation size (the crop size here), not the
    # model config read as processor settings (which would give the 800-pixel default and carry model keys).
    assert processor.size == {"shortest_edge": 64}
    saved = json.loads((full / "preprocessor_config.json").read_text())
    assert "hidden_dim" not in saved and "backbone_config" not in saved

    # Resuming from the mid-run checkpoint reproduces the uninterrupted run from the next logged step on: the
    # checkpoint restores weights, optimizer, scheduler and RNG, and augmentations are seeded per sample.
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    shutil.copytree(full / "step_15", resumed / "step_15")
    run(
        [sys.executable, SCRIPT]
        + common_args(panoptic_dir, tiny_config_file, resumed)
        + ["--resume_from_checkpoint", str(resumed / "step_15")]
    )
    resumed_log = read_log(resumed)
    assert [r["step"] for r in resumed_log] == [20, 25, 30]
    for before, after in zip(log[3:], resumed_log):
        assert after["loss"] == pytest.approx(before["loss"], rel=1e-5), (before, after)


def test_bad_column_is_reported_by_the_script(panoptic_dir, tiny_config_file, tmp_path):
    sys.path.insert(0, str(ROOT / "examples"))
    try:
        import train
    finally:
        sys.path.pop(0)
    from m2f_hf.data import DataError

    with pytest.raises(DataError, match=r"no column \['pan_png'\]"):
        train.main(common_args(panoptic_dir, tiny_config_file, tmp_path) + ["--label_column_name", "pan_png"])
    torch.set_num_threads(torch.get_num_threads())


@pytest.mark.slow  # two torchrun processes: ~35 s on 2 cores, which would push the default suite past its 90 s budget.
def test_two_processes_agree(panoptic_dir, tiny_config_file, tmp_path):
    # `torchrun --nproc_per_node 2` with ACCELERATE_USE_CPU=1 gives Accelerate a 2-process gloo group on the CPU
    # (`accelerate launch --cpu --num_processes 2` runs one process only with accelerate 1.15).
    output = tmp_path / "ddp"
    run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", SCRIPT]
        + common_args(panoptic_dir, tiny_config_file, output, steps=10)
        + ["--eval_steps", "10"],
        timeout=400,
        # Without a GPU, Accelerate only uses the torchrun group when told to run on the CPU.
        ACCELERATE_USE_CPU="1",
    )
    log = read_log(output)
    # One log and one checkpoint, written by the main process only.
    assert [r["step"] for r in log] == [5, 10]
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in log)
    assert sorted(p.name for p in output.glob("*.safetensors")) == ["model.safetensors"]

    # The gathered metrics of the two processes (each evaluated half the validation split) equal one process
    # evaluating the whole split with the final weights.
    sys.path.insert(0, str(ROOT / "examples"))
    try:
        import train
    finally:
        sys.path.pop(0)
    from accelerate import Accelerator
    from torch.utils.data import DataLoader

    from m2f_hf import M2FForUniversalSegmentation
    from m2f_hf.data import Collator, FormatAdapter, ResizeShortestEdge, SegmentationDataset, resolve_label_set
    from m2f_hf.image_processing_m2f import M2FImageProcessor

    args = train.parse_args(common_args(panoptic_dir, tiny_config_file, output) + ["--eval_steps", "10"])
    splits, local_dir = train.load_splits(args)
    labels = resolve_label_set(splits["train"].features, None, local_dir)
    adapter = FormatAdapter(
        task="panoptic",
        label_set=labels,
        image_column="image",
        label_column="label",
        segments_info_column="segments_info",
    )
    processor = M2FImageProcessor.from_pretrained(str(output))
    dataset = SegmentationDataset(
        splits["validation"], adapter, ResizeShortestEdge(size=64), split="validation", with_reference=True
    )
    loader = DataLoader(dataset, batch_size=2, collate_fn=Collator.from_image_processor(processor))
    model = M2FForUniversalSegmentation.from_pretrained(str(output))
    metrics = train.evaluate(model, processor, loader, Accelerator(cpu=True), args, labels)
    for key, value in metrics.items():
        assert log[-1][key] == pytest.approx(value, abs=1e-6), key


def test_crowded_images_train_and_the_log_counts_unmatched_targets(panoptic_dir, tmp_path):
    # Synthetic panoptic images hold 3 to 6 segments: with 2 queries every image is crowded. Training runs on, warns
    # once, and every logged step records how many targets went unmatched.
    from m2f_hf.testing import tiny_config

    config = tmp_path / "two_queries.json"
    tiny_config(num_labels=2, num_queries=2).to_json_file(str(config))
    output = tmp_path / "crowded"
    args = common_args(panoptic_dir, str(config), output, steps=4) + ["--logging_steps", "2"]
    result = run([sys.executable, SCRIPT] + args)
    log = read_log(output)
    assert [r["step"] for r in log] == [2, 4]
    for record in log:
        # 2 steps x 2 images: at least 3 targets per image, at most 2 of them matched
        assert record["targets"] >= 12 and record["unmatched_targets"] >= record["targets"] - 8
        assert record["unmatched_targets"] <= record["targets"] - 4 and record["loss"] > 0
    assert result.stderr.count("but the model has only 2 queries") == 1
