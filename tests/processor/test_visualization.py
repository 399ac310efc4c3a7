"""Visualisation of the three kinds of results."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from m2f_hf.visualization import distinct_colors, draw_segmentation

ID2LABEL = {0: "sky", 1: "person", 2: "road"}


def _image():
    return Image.fromarray(np.full((40, 60, 3), 128, dtype=np.uint8))


def _assert_drawn(picture, image, colors_expected):
    assert picture.height >= image.height and picture.width > image.width  # legend to the right
    pixels = np.asarray(picture)[: image.height, : image.width].reshape(-1, 3)
    assert len(np.unique(pixels, axis=0)) >= colors_expected  # every segment got its own tint


def test_semantic_map(tmp_path):
    class_map = torch.zeros(40, 60, dtype=torch.long)
    class_map[:, 30:] = 2
    path = tmp_path / "semantic.png"
    picture = draw_segmentation(_image(), class_map, ID2LABEL, output_path=path)
    _assert_drawn(picture, _image(), 2)
    assert Image.open(path).format == "PNG"


@pytest.mark.parametrize("binary_maps", [False, True])
def test_instance_and_panoptic_results(binary_maps):
    segmentation = torch.zeros(40, 60, dtype=torch.int32)
    segmentation[:20] = 1
    segmentation[20:, :30] = 2
    info = [
        {"id": 1, "label_id": 0, "was_fused": False, "score": 0.9},
        {"id": 2, "label_id": 1, "was_fused": False, "score": 0.8},
    ]
    if binary_maps:
        segmentation = torch.stack([(segmentation == 1).float(), (segmentation == 2).float()])
    picture = draw_segmentation(_image(), {"segmentation": segmentation, "segments_info": info}, ID2LABEL)
    _assert_drawn(picture, _image(), 3)


def test_distinct_colors_and_errors():
    colors = distinct_colors(20)
    assert len(set(colors)) == 20
    with pytest.raises(ValueError, match="target_sizes"):
        draw_segmentation(_image(), torch.zeros(10, 10, dtype=torch.long))
