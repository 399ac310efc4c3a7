"""The exact semantic path bounds the weak queries instead of upsampling them: it must give the full product's map."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from m2f_hf.processing import postprocess
from m2f_hf.processing.postprocess import (
    ImageGeometry,
    _local_max,
    _resized_logits_at,
    _semantic_labels_bounded,
    semantic_inference,
    upsample_crop_resize,
)

GEOMETRIES = [
    ImageGeometry((128, 160), (128, 160), (96, 120)),  # downsized output
    ImageGeometry((128, 160), (120, 150), (120, 150)),  # padding cropped, no final resize
    ImageGeometry((128, 160), (125, 101), (250, 202)),  # odd crop, upsized output
    ImageGeometry((96, 120), (96, 117), (96, 117)),  # masks of 32x40 on a 96x120 input: a stride of 3
]


def _outputs(seed: int, queries: int = 40, classes: int = 20, strong: int = 8, hw=(32, 40)):
    """Mask2Former-like outputs: `strong` confident queries, the rest mostly "no object"; blob-shaped masks."""
    generator = torch.Generator().manual_seed(seed)
    class_logits = torch.randn(queries, classes + 1, generator=generator)
    class_logits[strong:, -1] += 6
    class_logits[torch.arange(strong), torch.randint(0, classes, (strong,), generator=generator)] += 6
    coarse = torch.randn(1, queries, hw[0] // 8, hw[1] // 8, generator=generator) * 6
    mask_logits = F.interpolate(coarse, size=hw, mode="bilinear", align_corners=False)[0]
    return class_logits.softmax(-1)[:, :-1], mask_logits


def _full_scores(class_probs, mask_logits, geometry):
    """The original's order: every query's logits resized, then the sigmoid and the sum over queries."""
    return torch.einsum("qc,qhw->chw", class_probs, upsample_crop_resize(mask_logits, geometry).sigmoid())


def _assert_same_map_up_to_ties(labels, scores):
    """Equal to the argmax of the full scores, except where the two best classes tie within float rounding."""
    reference = scores.argmax(0)
    differ = labels != reference
    if differ.any():
        chosen = scores.gather(0, labels[None])[0][differ]
        best = scores.gather(0, reference[None])[0][differ]
        assert (best - chosen).max() < 1e-5, f"{int(differ.sum())} pixels differ by up to {(best - chosen).max()}"


@pytest.mark.parametrize("geometry", GEOMETRIES, ids=str)
@pytest.mark.parametrize("seed", range(4))
def test_bounded_class_map_equals_full_product(geometry, seed):
    class_probs, mask_logits = _outputs(seed)
    labels = _semantic_labels_bounded(class_probs, mask_logits, geometry)
    assert labels is not None, "these outputs have few strong queries: the bounds must be used"
    assert labels.shape == geometry.output_hw
    _assert_same_map_up_to_ties(labels, _full_scores(class_probs, mask_logits, geometry))


def test_refined_pixels_are_exercised_and_counted(monkeypatch):
    """Overlapping confident masks leave pixels undecided; they are refined with every query and still correct."""
    geometry = GEOMETRIES[0]
    class_probs, mask_logits = _outputs(1)
    refined = []

    def spy(logits, geo, pixels):
        refined.append(pixels.numel())
        return _resized_logits_at(logits, geo, pixels)

    monkeypatch.setattr(postprocess, "_resized_logits_at", spy)
    labels = _semantic_labels_bounded(class_probs, mask_logits, geometry)
    assert refined and 0 < sum(refined) < geometry.output_hw[0] * geometry.output_hw[1]
    _assert_same_map_up_to_ties(labels, _full_scores(class_probs, mask_logits, geometry))


def test_weak_queries_outvote_a_strong_one():
    """Many weak queries (each below the strong threshold) can outweigh a strong query: the map must say so."""
    geometry = ImageGeometry((64, 64), (64, 64), (64, 64))
    queries, classes = 21, 3
    class_probs = torch.zeros(queries, classes)
    class_probs[0, 0] = 0.99  # strong query: class 0
    class_probs[1:, 1] = 0.2  # 20 weak queries leaning to class 1 (0.2 < the strong threshold)
    mask_logits = torch.full((queries, 16, 16), -1.0)  # the strong mask is weak everywhere: sigmoid(-1) = 0.27
    mask_logits[1:, :, :8] = 10.0  # the weak masks are on in the left half
    mask_logits[1:, :, 8:] = -10.0
    labels = _semantic_labels_bounded(class_probs, mask_logits, geometry)
    assert labels is not None
    scores = _full_scores(class_probs, mask_logits, geometry)
    assert torch.equal(labels, scores.argmax(0))
    assert (labels[:, :28] == 1).all() and (labels[:, 36:] == 0).all()


def test_most_queries_strong_uses_the_full_product():
    class_probs, mask_logits = _outputs(0, strong=30)
    geometry = GEOMETRIES[0]
    assert _semantic_labels_bounded(class_probs, mask_logits, geometry) is None
    class_logits = torch.cat([class_probs.clamp_min(1e-9).log(), torch.full((40, 1), -30.0)], 1)
    labels, _ = semantic_inference(class_logits, mask_logits, geometry, exact=True, with_scores=False)
    _assert_same_map_up_to_ties(labels, _full_scores(class_logits.softmax(-1)[:, :-1], mask_logits, geometry))


@pytest.mark.parametrize("geometry", GEOMETRIES, ids=str)
def test_logits_at_a_few_pixels_equal_the_full_resize(geometry):
    _, mask_logits = _outputs(2)
    full = upsample_crop_resize(mask_logits, geometry).flatten(1)
    pixels = torch.randperm(full.shape[1], generator=torch.Generator().manual_seed(0))[:300]
    pixels = torch.cat([pixels, torch.tensor([0, full.shape[1] - 1])])  # both corners
    assert torch.allclose(_resized_logits_at(mask_logits, geometry, pixels), full[:, pixels].t(), atol=1e-4)


def test_local_max_equals_max_pool():
    maps = torch.randn(3, 11, 17, generator=torch.Generator().manual_seed(0))
    for radius in ((1, 1), (2, 3), (0, 2)):
        kernel = (2 * radius[0] + 1, 2 * radius[1] + 1)
        assert torch.equal(_local_max(maps, radius), F.max_pool2d(maps, kernel, stride=1, padding=radius))
