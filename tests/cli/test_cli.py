"""`m2f-segment`: PNG and JSON per image matching the pipeline, the bundled examples, errors that spare the others."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils
from transformers import AutoImageProcessor, pipeline

import m2f_hf
from m2f_hf.cli import main
from m2f_hf.image_processing_m2f import M2FImageProcessor
from m2f_hf.processing.pipeline import register_image_segmentation_pipeline
from m2f_hf.resources import default_model_path, example_images

# until `import m2f_hf` does it (see tests/pipeline); both calls are idempotent
AutoImageProcessor.register(
    m2f_hf.M2FConfig,
    image_processor_classes={"torchvision": M2FImageProcessor, "pil": M2FImageProcessor},
    exist_ok=True,
)
register_image_segmentation_pipeline()

# pycocotools' decode warns about numpy 2's `copy` keyword; not ours to fix
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

# the CLI's default thresholds, passed to the pipeline so that both post-process alike
THRESHOLDS = {"threshold": 0.5, "mask_threshold": 0.5, "overlap_mask_area_threshold": 0.8}


@pytest.fixture(scope="module")
def segmenter():
    return pipeline("image-segmentation", model=str(default_model_path()), device="cpu")


def _read_json(path) -> dict:
    with open(path) as handle:
        return json.load(handle)


def test_bundled_files_exist_and_are_small():
    model_dir = default_model_path()
    assert (model_dir / "model.safetensors").stat().st_size <= 15 * 2**20
    assert len(example_images()) >= 3
    for path in example_images():
        with Image.open(path) as image:
            assert image.format == "PNG" and image.mode == "RGB"


def test_example_prints_where_the_picture_was_written(tmp_path, capsys):
    assert main(["--example", "--output", str(tmp_path)]) == 0
    stem = example_images()[0].stem
    picture, document = tmp_path / f"{stem}.png", tmp_path / f"{stem}.json"
    assert str(picture) in capsys.readouterr().out
    with Image.open(picture) as image:
        image.verify()
    with Image.open(picture) as image:  # overlay plus legend: at least as large as the input
        assert image.format == "PNG" and image.width >= 128 and image.height >= 128
    assert _read_json(document)["model"] == "m2f_hf default model"


@pytest.mark.parametrize("task", ["panoptic", "instance", "semantic"])
def test_json_matches_the_pipeline_on_the_bundled_examples(tmp_path, segmenter, task):
    paths = [str(p) for p in example_images()]
    assert main([*paths, "--task", task, "--output", str(tmp_path), "--device", "cpu"]) == 0
    for path in paths:
        document = _read_json(tmp_path / f"{os.path.splitext(os.path.basename(path))[0]}.json")
        assert document["task"] == task and (document["height"], document["width"]) == (128, 128)
        expected = segmenter(path, subtask=task, **THRESHOLDS)
        found = document["segments"]
        assert len(found) == len(expected) > 0
        for ours, theirs in zip(found, expected):
            assert ours["label"] == theirs["label"]
            if task == "semantic":
                assert ours["score"] is None and theirs["score"] is None
            else:
                assert ours["score"] == pytest.approx(theirs["score"], abs=1e-6)
            mask = np.asarray(theirs["mask"]) > 0
            assert ours["area"] == int(mask.sum())
            # the RLE decodes to the pipeline's mask, and the box encloses it tightly
            rle = {"size": ours["segmentation"]["size"], "counts": ours["segmentation"]["counts"].encode()}
            np.testing.assert_array_equal(mask_utils.decode(rle).astype(bool), mask)
            rows, cols = np.nonzero(mask)
            x, y, w, h = ours["bbox"]
            assert (x, y, x + w - 1, y + h - 1) == (cols.min(), rows.min(), cols.max(), rows.max())


def test_the_examples_are_understood(tmp_path):
    """Each sample shows two stuff regions and at least one shape, and the default model finds them confidently."""
    assert main([*map(str, example_images()), "--output", str(tmp_path)]) == 0
    for path in example_images():
        segments = _read_json(tmp_path / f"{path.stem}.json")["segments"]
        labels = {s["label"] for s in segments}
        assert len(labels & {"grass", "water", "sand"}) == 2
        assert labels & {"circle", "square", "triangle"}
        assert min(s["score"] for s in segments) > 0.8


def test_bad_and_unreadable_images_are_reported_and_the_others_processed(tmp_path, capsys):
    good = example_images()[0]
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(good.read_bytes()[:200])
    folder = tmp_path / "a_folder"
    folder.mkdir()
    missing = tmp_path / "missing.jpg"
    output = tmp_path / "out"
    status = main([str(missing), str(text), str(good), str(truncated), str(folder), "--output", str(output)])
    assert status == 1
    captured = capsys.readouterr()
    assert f"{missing}: no such file" in captured.err
    assert f"{text}: not an image file that Pillow can read" in captured.err
    assert f"{truncated}: cannot decode the image" in captured.err
    assert f"{folder}: folder holds no image or video files" in captured.err
    assert "4 of 5 inputs could not be read" in captured.err
    assert sorted(p.name for p in output.iterdir()) == [f"{good.stem}.json", f"{good.stem}.png"]
    assert str(output / f"{good.stem}.png") in captured.out


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--task", "depth"], "--task must be one of panoptic, instance, semantic; got 'depth'"),
        (["--device", "tpu"], "--device must be one of auto, cpu, cuda; got 'tpu'"),
        (["--threshold", "1.5"], "--threshold must lie in [0, 1]; got 1.5"),
        (["--model", "./no/such/model"], "--model './no/such/model': no such file or directory"),
    ],
)
def test_bad_options_stop_with_a_clear_error(tmp_path, capsys, arguments, message):
    output = tmp_path / "out"
    assert main([str(example_images()[0]), "--output", str(output), *arguments]) == 2
    assert message in capsys.readouterr().err
    assert not output.exists()


def test_no_images_is_an_error(capsys):
    assert main([]) == 2
    assert "no images given" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown when CUDA is missing")
def test_cuda_without_a_gpu_is_an_error(tmp_path, capsys):
    assert main(["--example", "--device", "cuda", "--output", str(tmp_path)]) == 2
    assert "torch sees no CUDA device" in capsys.readouterr().err


def test_model_folder_without_config_is_an_error(tmp_path, capsys):
    assert main(["--example", "--model", str(tmp_path), "--output", str(tmp_path / "out")]) == 2
    assert "is a folder without config.json" in capsys.readouterr().err


def test_same_stem_from_two_folders_gets_two_outputs(tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir(), second.mkdir()
    source = example_images()[0]
    shutil.copy(source, first / "scene.png")
    shutil.copy(source, second / "scene.png")
    assert main([str(first / "scene.png"), str(second / "scene.png"), "--output", str(tmp_path / "out")]) == 0
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == ["scene-2.json", "scene-2.png", "scene.json", "scene.png"]


def test_transformers_native_checkpoint_is_converted_on_the_fly(tmp_path, capsys):
    from transformers import Mask2FormerForUniversalSegmentation, Mask2FormerImageProcessor

    from m2f_hf.testing import tiny_transformers_config

    native = tmp_path / "native"
    torch.manual_seed(0)
    Mask2FormerForUniversalSegmentation(tiny_transformers_config(num_labels=3)).save_pretrained(native)
    Mask2FormerImageProcessor(size={"shortest_edge": 64, "longest_edge": 96}).save_pretrained(native)
    assert _read_json(native / "config.json")["model_type"] == "mask2former"
    output = tmp_path / "out"
    status = main(["--example", "--model", str(native), "--output", str(output), "--threshold", "0"])
    assert status == 0, capsys.readouterr().err
    document = _read_json(output / f"{example_images()[0].stem}.json")
    assert document["model"] == str(native)
    assert {s["label"] for s in document["segments"]} <= {"class_0", "class_1", "class_2"}


def test_python_dash_m_runs_the_same_command(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "m2f_hf", "--example", "--output", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    picture = tmp_path / f"{example_images()[0].stem}.png"
    assert f"wrote {picture}" in result.stdout
    assert picture.is_file()


def test_unreachable_hub_id_is_a_clear_error(tmp_path, capsys, monkeypatch):
    import huggingface_hub

    asked = []

    def offline(repo_id, filename, **kwargs):
        asked.append((repo_id, filename))
        raise huggingface_hub.errors.LocalEntryNotFoundError("the Hub cannot be reached (offline)")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", offline)
    status = main(["--example", "--model", "someone/some-m2f-model", "--output", str(tmp_path / "out")])
    assert status == 2
    assert asked == [("someone/some-m2f-model", "config.json")]
    err = capsys.readouterr().err
    assert "--model 'someone/some-m2f-model' is not a local folder" in err
    assert "the Hub cannot be reached (offline)" in err


def _segments(path) -> list[tuple]:
    return [(s["label"], s["area"], s["segmentation"]["counts"]) for s in _read_json(path)["segments"]]


def test_16bit_and_float_files_segment_like_their_8bit_twin(tmp_path, capsys):
    grey = np.asarray(Image.open(example_images()[0]).convert("L"))
    Image.fromarray(grey).save(tmp_path / "grey8.png")
    Image.fromarray(grey.astype(np.uint16) * 257).save(tmp_path / "grey16.png")
    # a dim 16-bit image (as from a 12-bit camera): 1000 + 8 v, which --scaling minmax stretches back to v
    stretched = grey.astype(np.uint16)
    stretched[0, 0], stretched[0, 1] = 0, 255
    Image.fromarray(stretched.astype(np.uint8)).save(tmp_path / "stretched8.png")
    Image.fromarray((1000 + 8 * stretched).astype(np.uint16)).save(tmp_path / "dim16.png")
    Image.fromarray(np.full((32, 32), 5.0, np.float32), mode="F").save(tmp_path / "depth.tif")  # beyond 0..1
    names = ["grey8.png", "grey16.png", "stretched8.png", "depth.tif"]
    output = tmp_path / "out"
    assert main([*(str(tmp_path / n) for n in names), "--output", str(output)]) == 1
    assert "depth.tif: the float image (mode 'F') has values in [5, 5]" in capsys.readouterr().err
    assert _segments(output / "grey16.json") == _segments(output / "grey8.json")
    assert main([str(tmp_path / "dim16.png"), "--scaling", "minmax", "--output", str(output)]) == 0
    assert _segments(output / "dim16.json") == _segments(output / "stretched8.json")


def test_instance_task_reports_thing_classes_unless_all_classes(tmp_path):
    path = str(example_images()[0])
    assert main([path, "--task", "instance", "--output", str(tmp_path / "things")]) == 0
    assert main([path, "--task", "instance", "--all-classes", "--output", str(tmp_path / "all")]) == 0
    stem = example_images()[0].stem
    things = {s["label"] for s in _read_json(tmp_path / "things" / f"{stem}.json")["segments"]}
    every = {s["label"] for s in _read_json(tmp_path / "all" / f"{stem}.json")["segments"]}
    assert things and things <= {"circle", "square", "triangle"}
    assert every - things <= {"grass", "water", "sand"} and every & {"grass", "water", "sand"}
