"""Post-processing on constructed model outputs whose answer is known, padded batches, and the fixed bugs."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from m2f_hf.image_processing_m2f import M2FImageProcessor

SIZE = {"shortest_edge": 60, "longest_edge": 100}
NUM_CLASSES = 4
STRONG = 12.0  # logit magnitude of a confident prediction


def _processor():
    return M2FImageProcessor(size=SIZE)


def _class_logits(labels, confident=STRONG):
    """(queries, classes + 1) logits: query i predicts labels[i] (None = "no object")."""
    logits = torch.zeros(len(labels), NUM_CLASSES + 1)
    for i, label in enumerate(labels):
        logits[i, NUM_CLASSES if label is None else label] = confident
    return logits


def _mask_logits(regions, padded_hw, stride=4):
    """(queries, h, w) logits from boolean regions drawn at padded input resolution."""
    stacked = torch.stack([torch.as_tensor(r, dtype=torch.float32) for r in regions])
    assert tuple(stacked.shape[-2:]) == tuple(padded_hw)
    fraction = F.avg_pool2d(stacked[None], stride)[0]
    return 2 * STRONG * (fraction - 0.5)


def _two_halves_example():
    """A 48x80 image: left half class 1, right half class 3; plus two "no object" queries."""
    processor = _processor()
    pixel_mask = processor(np.zeros((48, 80, 3), dtype=np.uint8))["pixel_mask"]
    padded = tuple(pixel_mask.shape[-2:])
    valid_h, valid_w = processor.resized_size(48, 80)  # (60, 100) inside padded (64, 128)
    assert (valid_h, valid_w) == (60, 100) and padded == (64, 128)
    # the halves of the valid region; like a real model, the prediction runs on into the padding
    left = torch.zeros(padded, dtype=torch.bool)
    left[:, : valid_w // 2] = True
    right = ~left
    empty = torch.zeros(padded, dtype=torch.bool)
    outputs = SimpleNamespace(
        class_queries_logits=_class_logits([1, 3, None, None])[None],
        masks_queries_logits=_mask_logits([left, right, empty, empty], padded)[None],
    )
    return processor, outputs, pixel_mask


def _expected_halves(height=48, width=80):
    expected = torch.zeros(height, width, dtype=torch.long)
    expected[:, width // 2 :] = 1
    return expected


@pytest.mark.parametrize("use_pixel_mask", [True, False])
def test_panoptic_two_halves(use_pixel_mask):
    processor, outputs, pixel_mask = _two_halves_example()
    result = processor.post_process_panoptic_segmentation(
        outputs, target_sizes=[(48, 80)], pixel_mask=pixel_mask if use_pixel_mask else None
    )[0]
    assert [(s["id"], s["label_id"]) for s in result["segments_info"]] == [(1, 1), (2, 3)]
    assert result["segmentation"].shape == (48, 80)
    assert torch.equal(result["segmentation"].long(), _expected_halves() + 1)
    assert all(s["score"] > 0.99 for s in result["segments_info"])


def test_instance_two_halves_score_is_class_prob_times_mean_mask_prob():
    processor, outputs, pixel_mask = _two_halves_example()
    result = processor.post_process_instance_segmentation(outputs, target_sizes=[(48, 80)], pixel_mask=pixel_mask)[0]
    assert sorted(s["label_id"] for s in result["segments_info"]) == [1, 3]
    by_label = {s["label_id"]: s["id"] for s in result["segments_info"]}
    expected = torch.where(_expected_halves() == 0, by_label[1], by_label[3])
    assert torch.equal(result["segmentation"].long(), expected)
    # paper 4.1: class probability x mean mask probability inside the binarised (full resolution) mask
    class_prob = outputs.class_queries_logits[0, 0].softmax(-1)[1]
    geometry_logits = F.interpolate(outputs.masks_queries_logits[:, :1], size=(64, 128), mode="bilinear")[0, 0]
    logits = F.interpolate(geometry_logits[None, None, :60, :100], size=(48, 80), mode="bilinear")[0, 0]
    inside = logits > 0
    expected_score = class_prob * logits.sigmoid()[inside].mean()
    score = next(s["score"] for s in result["segments_info"] if s["label_id"] == 1)
    assert score == pytest.approx(expected_score.item(), abs=1e-5)


def test_instance_keeps_only_thing_classes_when_given():
    processor, outputs, pixel_mask = _two_halves_example()  # class 1 on the left, class 3 on the right

    def labels(**kwargs):
        result = processor.post_process_instance_segmentation(
            outputs, target_sizes=[(48, 80)], pixel_mask=pixel_mask, **kwargs
        )[0]
        return sorted(s["label_id"] for s in result["segments_info"]), result

    assert labels()[0] == [1, 3]  # no thing_ids: every class, as transformers
    kept, result = labels(thing_ids=[1, 2])
    assert kept == [1]
    assert torch.equal(result["segmentation"] >= 0, _expected_halves() == 0)  # the stuff half is background now
    assert labels(thing_ids=[])[0] == []
    with pytest.raises(ValueError, match=r"`thing_ids` must hold class indices in \[0, 4\)"):
        processor.post_process_instance_segmentation(outputs, thing_ids=[7])


def test_thing_filter_comes_after_the_top_k_choice_as_in_the_original():
    # two queries, so two (query, class) candidates: both queries' best class is stuff class 3, their second best
    # thing class 1. The original picks the top-2 pairs first (both class 3) and only then drops stuff: nothing is
    # left, although class-1 pairs would pass a threshold of 0.
    processor, outputs, pixel_mask = _two_halves_example()
    class_logits = torch.full((1, 2, NUM_CLASSES + 1), -STRONG)
    class_logits[0, :, 3] = STRONG
    class_logits[0, :, 1] = STRONG / 2
    outputs = SimpleNamespace(
        class_queries_logits=class_logits, masks_queries_logits=outputs.masks_queries_logits[:, :2]
    )
    every = processor.post_process_instance_segmentation(outputs, threshold=0.0, pixel_mask=pixel_mask)[0]
    assert {s["label_id"] for s in every["segments_info"]} == {3}
    things = processor.post_process_instance_segmentation(outputs, threshold=0.0, pixel_mask=pixel_mask, thing_ids={1})
    assert things[0]["segments_info"] == []


def test_semantic_two_halves_fast_and_exact():
    processor, outputs, pixel_mask = _two_halves_example()
    for exact in (False, True):
        result = processor.post_process_semantic_segmentation(
            outputs, target_sizes=[(48, 80)], pixel_mask=pixel_mask, exact=exact
        )[0]
        assert torch.equal(result, torch.where(_expected_halves() == 0, 1, 3))
    scores = processor.post_process_semantic_segmentation(
        outputs, target_sizes=[(48, 80)], return_segmentation_scores=True
    )[0]
    assert scores["segmentation_scores"].shape == (NUM_CLASSES, 48, 80)
    assert torch.equal(scores["segmentation"], torch.where(_expected_halves() == 0, 1, 3))


def test_padding_is_cropped_before_resizing():
    """transformers resized the whole (padded) mask to the target, shifting boundaries; ours crops first."""
    processor, outputs, pixel_mask = _two_halves_example()
    # the same prediction, as transformers would place it: boundary at half the *padded* width
    result = processor.post_process_semantic_segmentation(outputs, target_sizes=[(480, 800)])[0]
    assert result.shape == (480, 800)
    column_of_change = (result[240] == 3).nonzero()[0].item()
    assert abs(column_of_change - 400) <= 2  # the true boundary, not 400 * 128 / 100 or a 384-based one


def test_without_target_sizes_returns_input_resolution():
    processor, outputs, pixel_mask = _two_halves_example()
    assert processor.post_process_semantic_segmentation(outputs)[0].shape == (64, 128)
    cropped = processor.post_process_semantic_segmentation(outputs, pixel_mask=pixel_mask)[0]
    assert cropped.shape == (60, 100)


def _random_outputs(seed, queries=8, hw=(16, 24)):
    generator = torch.Generator().manual_seed(seed)
    class_logits = torch.randn(queries, NUM_CLASSES + 1, generator=generator) * 4
    mask_logits = F.interpolate(torch.randn(1, queries, 4, 6, generator=generator) * 6, size=hw, mode="bilinear")[0]
    return class_logits, mask_logits


def _results_equal(a, b):
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_results_equal(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_results_equal(x, y) for x, y in zip(a, b))
    return a == b


@pytest.mark.parametrize("task", ["semantic", "instance", "panoptic"])
@pytest.mark.parametrize("use_pixel_mask", [True, False])
def test_padded_batch_equals_single_images(task, use_pixel_mask):
    processor = _processor()
    sizes = [(48, 80), (90, 40), (60, 60)]
    singles, batch_inputs = [], []
    for i, (height, width) in enumerate(sizes):
        pixel_mask = processor(np.zeros((height, width, 3), dtype=np.uint8))["pixel_mask"]
        hw = (pixel_mask.shape[-2] // 4, pixel_mask.shape[-1] // 4)
        class_logits, mask_logits = _random_outputs(i, hw=hw)
        singles.append((class_logits, mask_logits, pixel_mask))
    batch_pixel_mask = processor([np.zeros((h, w, 3), dtype=np.uint8) for h, w in sizes])["pixel_mask"]
    batch_hw = (batch_pixel_mask.shape[-2] // 4, batch_pixel_mask.shape[-1] // 4)
    for class_logits, mask_logits, _ in singles:
        # the masks of an image inside a larger padded batch: its own, continued into the extra padding
        pad = (0, batch_hw[1] - mask_logits.shape[-1], 0, batch_hw[0] - mask_logits.shape[-2])
        batch_inputs.append((class_logits, F.pad(mask_logits[None], pad, mode="replicate")[0]))
    batch = SimpleNamespace(
        class_queries_logits=torch.stack([c for c, _ in batch_inputs]),
        masks_queries_logits=torch.stack([m for _, m in batch_inputs]),
    )
    method = getattr(processor, f"post_process_{task}_segmentation")
    kwargs = {"threshold": 0.3} if task != "semantic" else {}
    batch_results = method(
        batch, target_sizes=sizes, pixel_mask=batch_pixel_mask if use_pixel_mask else None, **kwargs
    )
    for i, (class_logits, mask_logits, pixel_mask) in enumerate(singles):
        single = SimpleNamespace(class_queries_logits=class_logits[None], masks_queries_logits=mask_logits[None])
        expected = method(single, target_sizes=[sizes[i]], pixel_mask=pixel_mask if use_pixel_mask else None, **kwargs)
        assert _results_equal(batch_results[i], expected[0])


def test_instance_honours_mask_threshold():
    processor, outputs, pixel_mask = _two_halves_example()
    soft = outputs.masks_queries_logits.clone()
    soft[0, 0] = torch.linspace(-3, 3, soft.shape[-1]).expand_as(soft[0, 0])  # probability grows to the right
    outputs = SimpleNamespace(class_queries_logits=outputs.class_queries_logits, masks_queries_logits=soft)

    def area(mask_threshold):
        result = processor.post_process_instance_segmentation(
            outputs,
            threshold=0.1,
            mask_threshold=mask_threshold,
            overlap_mask_area_threshold=0.0,
            return_binary_maps=True,
            pixel_mask=pixel_mask,
        )[0]
        index = next(i for i, s in enumerate(result["segments_info"]) if s["label_id"] == 1)
        return result["segmentation"][index].sum().item()

    assert area(0.3) > area(0.5) > area(0.7) > 0


def test_instance_honours_overlap_threshold_and_keeps_overlaps_in_binary_maps():
    processor, outputs, pixel_mask = _two_halves_example()
    padded = tuple(pixel_mask.shape[-2:])
    big = torch.zeros(padded, dtype=torch.bool)
    big[:60, :60] = True
    covered = torch.zeros(padded, dtype=torch.bool)
    covered[:60, 20:68] = True  # mostly under `big`
    outputs = SimpleNamespace(
        class_queries_logits=_class_logits([1, 2])[None],
        masks_queries_logits=_mask_logits([big, covered], padded)[None],
    )
    outputs.class_queries_logits[0, 0, 1] += 1.0  # `big` scores higher, so it is painted first

    def run(overlap, **kwargs):
        return processor.post_process_instance_segmentation(
            outputs, overlap_mask_area_threshold=overlap, pixel_mask=pixel_mask, **kwargs
        )[0]

    assert [s["label_id"] for s in run(0.8)["segments_info"]] == [1]  # only 1/6 of `covered` stays visible
    kept = run(0.1, return_binary_maps=True)
    assert [s["label_id"] for s in kept["segments_info"]] == [1, 2]
    assert (kept["segmentation"][0] * kept["segmentation"][1]).sum() > 0  # binary maps keep the overlap
    rle = run(0.1, return_coco_annotation=True)["segmentation"]
    assert len(rle) == 2
    decoded = torch.zeros(60 * 100, dtype=torch.bool)
    for start, length in zip(rle[0][::2], rle[0][1::2]):
        decoded[start - 1 : start - 1 + length] = True
    assert torch.equal(decoded.view(60, 100), kept["segmentation"][0].bool())


def test_panoptic_fuses_stuff_and_drops_no_object():
    processor, outputs, pixel_mask = _two_halves_example()
    labels = [1, 1, None, None]
    outputs = SimpleNamespace(
        class_queries_logits=_class_logits(labels)[None], masks_queries_logits=outputs.masks_queries_logits
    )
    fused = processor.post_process_panoptic_segmentation(outputs, label_ids_to_fuse={1}, pixel_mask=pixel_mask)[0]
    assert fused["segments_info"] == [{"id": 1, "label_id": 1, "was_fused": True, "score": pytest.approx(1, abs=1e-3)}]
    assert (fused["segmentation"] == 1).all()
    separate = processor.post_process_panoptic_segmentation(outputs, pixel_mask=pixel_mask)[0]
    assert [s["id"] for s in separate["segments_info"]] == [1, 2]


def test_semantic_fast_path_agrees_with_exact():
    """The default is the original's order (exact); exact=False is the opt-in approximation."""
    processor = _processor()
    generator = torch.Generator().manual_seed(0)
    class_logits = torch.randn(1, 10, NUM_CLASSES + 1, generator=generator) * 3
    mask_logits = F.interpolate(torch.randn(1, 10, 4, 8, generator=generator) * 8, size=(16, 32), mode="bilinear")
    outputs = SimpleNamespace(class_queries_logits=class_logits, masks_queries_logits=mask_logits)
    fast = processor.post_process_semantic_segmentation(outputs, target_sizes=[(48, 80)], exact=False)[0]
    exact = processor.post_process_semantic_segmentation(outputs, target_sizes=[(48, 80)])[0]
    assert (fast == exact).float().mean() > 0.97


def test_post_processing_errors():
    processor, outputs, _ = _two_halves_example()
    with pytest.raises(ValueError, match="target_sizes` has 2 entries"):
        processor.post_process_semantic_segmentation(outputs, target_sizes=[(48, 80), (48, 80)])
    with pytest.raises(ValueError, match="cannot both be True"):
        processor.post_process_instance_segmentation(outputs, return_coco_annotation=True, return_binary_maps=True)
    with pytest.raises(ValueError, match="masks_queries_logits"):
        processor.post_process_panoptic_segmentation(SimpleNamespace(class_queries_logits=torch.zeros(1, 2, 3)))


def test_semantic_blockwise_class_map_equals_argmax_of_full_scores():
    """The exact path computes the class map block by block; it must equal the argmax of the full score tensor."""
    processor = _processor()
    generator = torch.Generator().manual_seed(3)
    class_logits = torch.randn(1, 12, NUM_CLASSES + 1, generator=generator) * 3
    mask_logits = torch.randn(1, 12, 40, 48, generator=generator) * 6  # 160x192 input -> 100x120 output
    outputs = SimpleNamespace(class_queries_logits=class_logits, masks_queries_logits=mask_logits)
    labels = processor.post_process_semantic_segmentation(outputs, target_sizes=[(100, 120)])[0]
    scored = processor.post_process_semantic_segmentation(
        outputs, target_sizes=[(100, 120)], return_segmentation_scores=True
    )[0]
    assert labels.shape == (100, 120)
    assert torch.equal(labels, scored["segmentation_scores"].argmax(0))
