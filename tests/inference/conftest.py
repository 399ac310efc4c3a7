"""Shared pieces of the inference tests: the bundled model loaded once, and small folders of images."""

from __future__ import annotations

import shutil

import pytest
from PIL import Image

from m2f_hf.inference import load_segmentation_model
from m2f_hf.resources import example_images


@pytest.fixture(scope="session")
def loaded():
    return load_segmentation_model(None, "cpu")


@pytest.fixture
def image_folder(tmp_path):
    """A folder with the three bundled examples, a grey copy, a truncated JPEG and a text file."""
    folder = tmp_path / "photos"
    folder.mkdir()
    examples = example_images()
    for path in examples:
        shutil.copy(path, folder / path.name)
    Image.open(examples[0]).convert("L").save(folder / "grey.png")
    (folder / "broken.jpg").write_bytes(examples[0].read_bytes()[:300])
    (folder / "notes.txt").write_text("not an image")
    return folder
