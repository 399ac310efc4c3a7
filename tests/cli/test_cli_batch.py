"""`m2f-segment` on folders, globs and videos; resuming; COCO output; readable overlays; start-up before heavy
imports."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from m2f_hf.cli import main
from m2f_hf.resources import example_images
from m2f_hf.visualization import class_color

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
HEAVY = ("torch", "transformers", "numpy")


def _imports_of(*arguments, env=None):
    """Run a command with `-X importtime`; returns (result, the top-level modules it imported)."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", *arguments], capture_output=True, text=True, timeout=120, env=env
    )
    modules = {
        line.split("|")[-1].strip().split(".")[0] for line in result.stderr.splitlines() if "import time:" in line
    }
    return result, modules


@pytest.mark.parametrize(
    "arguments, status, expected",
    [
        (["--help"], 0, "OUTPUT/NAME.json"),
        (["--version"], 0, "m2f-segment (m2f_hf) 0.1.0"),
        (["photo.jpg", "--task", "depth"], 2, "--task must be one of panoptic, instance, semantic; got 'depth'"),
        (["photo.jpg", "--batch-size", "0"], 2, "--batch-size must be at least 1; got 0"),
        (["photo.jpg", "--format", "xml"], 2, "--format must be one of json, coco; got 'xml'"),
        (["--no-such-option"], 2, "unrecognized arguments: --no-such-option"),
    ],
)
def test_help_version_and_option_errors_come_before_the_heavy_imports(arguments, status, expected):
    result, modules = _imports_of("-m", "m2f_hf", *arguments)
    assert result.returncode == status
    assert expected in result.stdout + result.stderr
    assert not modules & set(HEAVY), sorted(modules & set(HEAVY))


@pytest.mark.skipif(shutil.which("m2f-segment") is None, reason="the console script is not installed")
def test_the_console_script_parses_before_the_heavy_imports_too():
    result, modules = _imports_of(shutil.which("m2f-segment"), "--version", env={**os.environ})
    assert result.returncode == 0 and "0.1.0" in result.stdout
    assert not modules & set(HEAVY)


def test_import_m2f_hf_still_registers_the_auto_classes():
    code = (
        "import m2f_hf\n"
        "from transformers.models.auto.configuration_auto import CONFIG_MAPPING\n"
        "print(m2f_hf.M2FConfig.model_type in CONFIG_MAPPING, 'torch' in __import__('sys').modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.stdout.split() == ["True", "True"], result.stderr


def test_the_bundled_model_says_what_it_knows(tmp_path, capsys):
    assert main(["--example", "--output", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert err.count("knows only synthetic shapes") == 1
    assert "--model" in err and "docs/default_model.md" in err


@pytest.fixture
def mixed_folder(tmp_path):
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    examples = example_images()
    shutil.copy(examples[0], folder / "a.png")
    shutil.copy(examples[1], folder / "sub" / "b.png")
    Image.open(examples[2]).convert("L").save(folder / "grey.jpg")
    (folder / "broken.png").write_bytes(examples[0].read_bytes()[:200])
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_a_folder_runs_then_resumes(mixed_folder, tmp_path, capsys):
    output = tmp_path / "out"
    arguments = [str(mixed_folder), "--recursive", "--output", str(output), "--batch-size", "2", "--num-workers", "0"]
    assert main(arguments) == 1  # broken.png
    captured = capsys.readouterr()
    assert f"{mixed_folder / 'broken.png'}: cannot decode the image" in captured.err
    assert "left out 1 files that are not images or videos (by extension)" in captured.err
    assert "1 of 4 inputs could not be read" in captured.err
    names = sorted(str(p.relative_to(output)) for p in output.rglob("*") if p.is_file())
    assert names == ["a.json", "a.png", "grey.json", "grey.png", "sub/b.json", "sub/b.png"]
    assert main(arguments) == 1
    err = capsys.readouterr().err
    assert f"skipped 3 of 4 images whose outputs exist in {output} (pass --overwrite to redo them)" in err
    assert main([*arguments, "--overwrite"]) == 1
    assert "whose outputs exist" not in capsys.readouterr().err


def test_globs_and_videos_with_errors_for_those_that_cannot_be_used(tmp_path, capsys):
    av = pytest.importorskip("av", reason="PyAV reads and writes videos (the `video` extra, also in `dev`)")
    frames = [np.asarray(Image.open(example_images()[0]).convert("RGB"))] * 3
    clip = tmp_path / "clip.mp4"
    with av.open(str(clip), "w") as container:
        stream = container.add_stream("libx264" if "libx264" in av.codecs_available else "mpeg4", rate=4)
        stream.height, stream.width, stream.pix_fmt = 128, 128, "yuv420p"
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    bad = tmp_path / "bad.mov"
    bad.write_bytes(b"\x00garbage" * 64)
    output = tmp_path / "out"
    pattern = str(tmp_path / "nothing" / "*.jpg")
    assert main([str(clip), str(bad), pattern, "--output", str(output)]) == 1
    captured = capsys.readouterr()
    assert f"{pattern}: the pattern matches no files; skipped." in captured.err
    assert f"{bad}: cannot decode the video" in captured.err
    assert "2 of 3 inputs could not be read" in captured.err
    assert f"{clip}: 3 frames -> wrote {output / 'clip.mp4'} and {output / 'clip.jsonl'}" in captured.out
    assert len((output / "clip.jsonl").read_text().splitlines()) == 3
    assert main([str(clip), "--output", str(output)]) == 0  # done already
    assert "outputs exist, skipped" in capsys.readouterr().err
    assert main([pattern, "--output", str(output)]) == 1
    assert "nothing to segment" in capsys.readouterr().err


def test_two_images_with_a_class_show_it_in_that_class_colour(tmp_path):
    paths = [str(p) for p in example_images()[:2]]
    assert main([*paths, "--output", str(tmp_path), "--no-labels"]) == 0
    from pycocotools import mask as mask_utils

    shared = None
    for path in paths:
        stem = os.path.splitext(os.path.basename(path))[0]
        segments = json.loads((tmp_path / f"{stem}.json").read_text())["segments"]
        labels = {s["label_id"] for s in segments}
        shared = labels if shared is None else shared & labels
    assert shared, "the two examples share no class"
    for path in paths:
        stem = os.path.splitext(os.path.basename(path))[0]
        segments = json.loads((tmp_path / f"{stem}.json").read_text())["segments"]
        original = np.asarray(Image.open(path).convert("RGB")).astype(np.float32)
        picture = np.asarray(Image.open(tmp_path / f"{stem}.png").convert("RGB"))[:128, :128].astype(np.float32)
        for label_id in shared:
            first = next(s for s in segments if s["label_id"] == label_id)  # the first of a class: its own colour
            rle = {"size": first["segmentation"]["size"], "counts": first["segmentation"]["counts"].encode()}
            inside = ndimage.binary_erosion(mask_utils.decode(rle).astype(bool), iterations=3)
            expected = np.floor(0.5 * original[inside] + 0.5 * np.array(class_color(label_id)) + 0.5)
            np.testing.assert_allclose(picture[inside], expected, atol=1)


def test_coco_format_for_a_folder(mixed_folder, tmp_path, capsys):
    from pycocotools.coco import COCO

    output = tmp_path / "out"
    status = main([str(mixed_folder), "--output", str(output), "--format", "coco", "--task", "instance"])
    assert status == 1  # broken.png
    captured = capsys.readouterr()
    assert "COCO AP ranks every detection" in captured.err
    assert f"wrote {output / 'coco_instances_results.json'} and {output / 'coco_images.json'}" in captured.out
    ground_truth = COCO(str(output / "coco_images.json"))
    results = ground_truth.loadRes(str(output / "coco_instances_results.json"))
    assert len(results.anns) > 0 and len(ground_truth.imgs) == 2  # a.png and grey.jpg; sub/ without --recursive
    assert not list(output.glob("*.png"))  # no overlays in this format


def test_coco_options_are_checked(tmp_path, capsys):
    assert main([str(example_images()[0]), "--coco-images", "x.json", "--output", str(tmp_path)]) == 2
    assert "--coco-images is for --format coco; got --format json" in capsys.readouterr().err


@pytest.mark.slow  # two torchrun processes each loading the model: about 40 s on 2 busy cores
def test_two_processes_share_the_inputs(mixed_folder, tmp_path):
    output = tmp_path / "out"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "m2f_hf"]
    result = subprocess.run(
        [*command, str(mixed_folder), "--recursive", "--output", str(output), "--format", "coco"],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "ACCELERATE_USE_CPU": "1"},
    )
    assert result.returncode != 0  # broken.png: exit status 1 in the process that had it
    written = [line for line in result.stdout.splitlines() if "segments -> wrote" in line]
    # every readable image once, by one of the two processes, and both processes had work
    assert sorted(line.split("] ")[1].split(":")[0] for line in written) == sorted(
        str(mixed_folder / name) for name in ("a.png", "grey.jpg", "sub/b.png")
    )
    assert {line.split("]")[0] for line in written} == {"[process 1/2", "[process 2/2"}
    assert result.stderr.count("cannot decode the image") == 1
    document = json.loads((output / "coco_panoptic.json").read_text())
    assert len(document["annotations"]) == 3  # assembled by the main process once both were done
