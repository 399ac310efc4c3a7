"""`highlight_segment`: one segment standing out (the web demo's row highlight)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from m2f_hf.visualization import highlight_segment


def _image():
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(40, 220, size=(30, 40, 3), dtype=np.uint8))


def test_outside_is_dimmed_inside_is_tinted_and_the_outline_has_the_colour():
    image = _image()
    mask = np.zeros((30, 40), dtype=bool)
    mask[5:20, 10:30] = True
    picture = np.asarray(highlight_segment(image, mask, dim=0.5, color=(255, 0, 0), alpha=0.25, outline_width=2))
    original = np.asarray(image).astype(np.float32)
    np.testing.assert_allclose(picture[~mask], (original[~mask] * 0.5).round(), atol=0.5)
    core = np.zeros_like(mask)
    core[7:18, 12:28] = True  # two pixels inside the border
    expected = (0.75 * original[core] + 0.25 * np.array([255, 0, 0])).round()
    np.testing.assert_allclose(picture[core], expected, atol=0.5)
    ring = mask & ~core
    assert (picture[ring] == [255, 0, 0]).all()


def test_an_empty_mask_only_dims_and_bad_arguments_are_named():
    image = _image()
    empty = np.zeros((30, 40), dtype=bool)
    picture = np.asarray(highlight_segment(image, empty, dim=0.0))
    np.testing.assert_array_equal(picture, np.asarray(image))
    with pytest.raises(ValueError, match=r"mask has size \(3, 4\) but the image has size \(30, 40\)"):
        highlight_segment(image, np.zeros((3, 4), dtype=bool))
    with pytest.raises(ValueError, match="dim must lie in"):
        highlight_segment(image, empty, dim=1.5)
