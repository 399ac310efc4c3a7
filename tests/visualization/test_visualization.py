"""Visualisation of the three kinds of results."""

from __future__ import annotations

import colorsys

import numpy as np
import pytest
import torch
from PIL import Image

from m2f_hf.visualization import class_color, distinct_colors, draw_segmentation, segment_colors, shade
from m2f_hf.visualization.layout import Scale, clamp_box, font

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


# ---------------------------------------------------------------------------------------- output a person can read
GREY = 128


def _grey(height=40, width=60):
    return np.full((height, width, 3), GREY, dtype=np.uint8)


def _blend(color, alpha=0.5):
    return np.floor((1 - alpha) * GREY + alpha * np.array(color, dtype=np.float64) + 0.5).astype(np.uint8)


def _panoptic(segments, height=40, width=60):
    """segments: [(label_id, (row slice, col slice)), ...] painted in order on an (H, W) map."""
    segmentation = torch.zeros(height, width, dtype=torch.int32)
    info = []
    for index, (label_id, (rows, cols)) in enumerate(segments, start=1):
        segmentation[rows, cols] = index
        info.append({"id": index, "label_id": label_id, "was_fused": False, "score": 0.9})
    return {"segmentation": segmentation, "segments_info": info}


def test_a_class_has_its_colour_whatever_the_image_and_the_segment_order():
    first = _panoptic([(1, (slice(0, 20), slice(0, 30))), (2, (slice(20, 40), slice(0, 60)))])
    second = _panoptic(
        [(0, (slice(0, 30), slice(0, 50))), (2, (slice(0, 10), slice(50, 80))), (1, (slice(30, 50), slice(0, 80)))],
        50,
        80,
    )
    a = np.asarray(draw_segmentation(_grey(), first, ID2LABEL, show_labels=False))
    b = np.asarray(draw_segmentation(_grey(50, 80), second, ID2LABEL, show_labels=False))
    # inside the regions (away from the contours): the class colour blended half and half with the image
    np.testing.assert_array_equal(a[10, 15], _blend(class_color(1)))
    np.testing.assert_array_equal(b[40, 40], _blend(class_color(1)))
    np.testing.assert_array_equal(a[30, 30], _blend(class_color(2)))
    np.testing.assert_array_equal(b[5, 65], _blend(class_color(2)))
    assert class_color(1) != class_color(2)


def test_instances_of_a_class_get_distinct_shades_and_the_legend_one_row_with_the_count():
    from m2f_hf.visualization.draw import _legend_rows, _segments

    result = _panoptic(
        [(1, (slice(0, 20), slice(0, 30))), (1, (slice(0, 20), slice(30, 60))), (0, (slice(20, 40), slice(0, 60)))]
    )
    picture = np.asarray(draw_segmentation(_grey(), result, ID2LABEL, show_labels=False))
    left, right = picture[10, 15], picture[10, 45]
    assert not np.array_equal(left, right)
    np.testing.assert_array_equal(left, _blend(class_color(1)))
    np.testing.assert_array_equal(right, _blend(shade(class_color(1), 1)))
    hue = [colorsys.rgb_to_hsv(*(c / 255 for c in color))[0] for color in (class_color(1), shade(class_color(1), 1))]
    assert hue[0] == pytest.approx(hue[1], abs=0.01)  # a shade keeps the hue
    _, segments, semantic = _segments(result, ID2LABEL)
    colors = np.array(segment_colors([s.label_id for s in segments]), dtype=np.float32)
    counts = np.array([0, 600, 600, 1200])
    rows = _legend_rows(segments, colors, np.full((4, 3), GREY, dtype=np.float64), counts, 0.5, semantic, 2400)
    assert [text for text, _, _ in rows] == ["sky (1)", "person (2)"]  # by class index, once per class
    # the swatches are blended like the regions: the legend column holds the regions' exact colours
    legend = picture[:, 60:].reshape(-1, 3)
    for color in (left, right, picture[30, 30]):
        assert (legend == color).all(axis=1).any()


def test_semantic_legend_gives_each_class_its_share():
    from m2f_hf.visualization.draw import _legend_rows, _segments

    class_map = torch.zeros(40, 60, dtype=torch.long)
    class_map[:, 45:] = 2
    _, segments, semantic = _segments(class_map, ID2LABEL)
    counts = np.array([0, 1800, 600])
    rows = _legend_rows(segments, np.zeros((2, 3)), np.zeros((3, 3)), counts, 0.5, semantic, 2400)
    assert [text for text, _, _ in rows] == ["sky 75.0%", "road 25.0%"]


def test_contours_are_drawn_in_the_segment_colour_and_alpha_zero_keeps_the_image():
    result = _panoptic([(0, (slice(0, 40), slice(0, 30))), (2, (slice(0, 40), slice(30, 60)))])
    picture = np.asarray(draw_segmentation(_grey(), result, ID2LABEL, alpha=0.0, show_labels=False))[:40, :60]
    # the two columns either side of the border are outlined, opaque, each in its own segment's colour
    np.testing.assert_array_equal(picture[20, 29], class_color(0))
    np.testing.assert_array_equal(picture[20, 30], class_color(2))
    keep = np.ones((40, 60), dtype=bool)
    keep[:, 29:31] = False
    assert (picture[keep] == GREY).all()  # alpha 0: no fill
    plain = np.asarray(draw_segmentation(_grey(), result, ID2LABEL, alpha=0.0, show_labels=False, contours=False))
    assert (plain[:40, :60] == GREY).all()


def test_labels_are_written_inside_the_image_unless_turned_off():
    # a thin segment along the right border: its label is wider than the segment and must move inside
    result = _panoptic([(1, (slice(0, 40), slice(55, 60)))])
    labelled = np.asarray(draw_segmentation(_grey(), result, ID2LABEL, alpha=0.0, contours=False))[:40, :60]
    text = (labelled == 255).all(axis=-1)  # label text is white (outlined in black)
    assert text.any() and text[:, :55].any()  # the label reaches into the image, left of the segment
    plain = np.asarray(draw_segmentation(_grey(), result, ID2LABEL, alpha=0.0, contours=False, show_labels=False))
    assert not (plain[:40, :60] == 255).all(axis=-1).any()
    assert clamp_box((58, 1), (30, 10), (60, 40)) == (30, 0)
    assert clamp_box((20, 20), (10, 6), (60, 40)) == (15, 17)


def test_text_and_lines_follow_the_image_size():
    small, large = Scale.for_image(128, 128), Scale.for_image(1500, 2000)
    assert small.font_px == 12 and small.contour_px == 1  # the floor keeps small images readable
    assert large.font_px == 42 and large.contour_px == 4
    assert font(large.font_px).getbbox("Hg")[3] > 3 * font(small.font_px).getbbox("Hg")[3] - 6
    big = np.full((1500, 2000, 3), GREY, dtype=np.uint8)
    result = _panoptic([(0, (slice(0, 750), slice(0, 2000))), (2, (slice(750, 1500), slice(0, 2000)))], 1500, 2000)
    picture = draw_segmentation(big, result, ID2LABEL)
    assert picture.height == 1500 and picture.width > 2000 + 42 * 4  # legend rows at the large font


def test_large_pictures_are_drawn_in_row_blocks_with_the_same_pixels(monkeypatch):
    """The overlay is blended and outlined block by block (large images); tiny blocks give the whole picture's
    pixels, contours across block borders included."""
    from m2f_hf.visualization import draw as draw_module

    rng = np.random.default_rng(0)
    ids = np.repeat(np.repeat(rng.integers(1, 6, (12, 16)), 9, 0), 7, 1).astype(np.int32)  # 108 x 112 blocks of ids
    image = rng.integers(0, 256, (*ids.shape, 3), dtype=np.uint8)
    result = {
        "segmentation": torch.from_numpy(ids),
        "segments_info": [{"id": i, "label_id": i % 3, "score": 0.9} for i in range(1, 6)],
    }
    whole = np.asarray(draw_module.draw_segmentation(image, result, {0: "a", 1: "b", 2: "c"}))
    monkeypatch.setattr(draw_module, "_BLOCK_PIXELS", 5 * ids.shape[1])  # 5 rows per block
    blocks = np.asarray(draw_module.draw_segmentation(image, result, {0: "a", 1: "b", 2: "c"}))
    assert np.array_equal(whole, blocks)
