"""SemanticEvaluator: hand-computed cases, agreement with torchmetrics, input errors."""

from __future__ import annotations

import pytest
import torch

from m2f_hf.evaluation import SemanticEvaluator, panoptic_to_semantic

ID2LABEL = {0: "road", 1: "car", 2: "sky"}


def evaluate(predictions, references, id2label=ID2LABEL, ignore_index=255):
    evaluator = SemanticEvaluator(id2label, ignore_index=ignore_index)
    evaluator.process(predictions, references)
    return evaluator.evaluate()


def test_hand_computed_case_with_ignored_pixels():
    reference = torch.tensor([[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 255, 255], [2, 2, 255, 255]])
    prediction = torch.tensor([[0, 0, 0, 1], [0, 0, 1, 1], [2, 1, 0, 2], [2, 2, 1, 1]])
    results = evaluate([prediction], [reference])
    # road: TP 4, FN 0, FP 1 -> 4/5; car: TP 3, FN 1, FP 1 -> 3/5; sky: TP 3, FN 1, FP 0 -> 3/4. Ignored pixels
    # (bottom right) count for nothing, whatever is predicted there.
    assert results["per_class_IoU"] == pytest.approx({"road": 80.0, "car": 60.0, "sky": 75.0})
    assert results["mIoU"] == pytest.approx((80 + 60 + 75) / 3)
    assert results["pixel_accuracy"] == pytest.approx(100 * 10 / 12)
    assert results["mean_accuracy"] == pytest.approx(100 * (1 + 3 / 4 + 3 / 4) / 3)
    assert results["fwIoU"] == pytest.approx((4 * 80 + 4 * 60 + 4 * 75) / 12)


def test_empty_prediction_and_empty_reference():
    reference = torch.tensor([[0, 0], [1, 1]])
    # A prediction of "no class" everywhere (ignore_index, e.g. a void panoptic prediction) misses every pixel.
    results = evaluate([torch.full((2, 2), 255)], [reference])
    assert results["per_class_IoU"] == {"road": 0.0, "car": 0.0}
    assert results["mIoU"] == results["pixel_accuracy"] == 0.0
    # An all-ignored reference contributes nothing; classes that never appear are left out.
    results = evaluate([torch.tensor([[0, 0], [1, 1]])], [torch.full((2, 2), 255)])
    assert results["per_class_IoU"] == {}
    assert results["mIoU"] == 0.0


def test_absent_classes_are_left_out_of_the_mean():
    reference = torch.tensor([[0, 0], [0, 0]])
    results = evaluate([torch.tensor([[0, 0], [0, 1]])], [reference])
    # car appears only in the prediction: IoU 0 and counted; sky appears nowhere: left out.
    assert results["per_class_IoU"] == pytest.approx({"road": 75.0, "car": 0.0})
    assert results["mIoU"] == pytest.approx(37.5)


def test_non_contiguous_ids_and_wide_ignore_index_take_the_lookup_path():
    id2label = {3: "a", 10: "b", 4000: "c"}
    reference = torch.tensor([[3, 3, 10, 4000], [65535, 3, 10, 10]])
    prediction = torch.tensor([[3, 10, 10, 4000], [3, 3, 10, 3]])
    wide = evaluate([prediction], [reference], id2label, ignore_index=65535)
    # Same data with contiguous ids 0, 1, 2 and ignore 255 (the direct counting path).
    remap = {3: 0, 10: 1, 4000: 2, 65535: 255}
    narrow = evaluate(
        [prediction.apply_(remap.get)], [reference.apply_(remap.get)], {0: "a", 1: "b", 2: "c"}, ignore_index=255
    )
    assert wide == narrow
    # (1, 0) is ignored; a: TP 2, FP 1, FN 1; b: TP 2, FP 1, FN 1; c: TP 1.
    assert wide["per_class_IoU"] == pytest.approx({"a": 50.0, "b": 50.0, "c": 100.0})


def test_panoptic_predictions_merged_by_class_give_miou_pan():
    panoptic = {
        "segmentation": torch.tensor([[1, 1, 2, 2], [1, 1, 3, 3]], dtype=torch.int32),
        "segments_info": [
            {"id": 1, "label_id": 1, "score": 0.9, "was_fused": False},
            {"id": 2, "label_id": 1, "score": 0.8, "was_fused": False},
            {"id": 3, "label_id": 2, "score": 0.7, "was_fused": True},
        ],
    }
    semantic = panoptic_to_semantic(panoptic)
    assert semantic.tolist() == [[1, 1, 1, 1], [1, 1, 2, 2]]
    reference = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 2]])
    assert evaluate([panoptic], [reference]) == evaluate([semantic], [reference])


def test_batched_tensor_input_and_reset():
    generator = torch.Generator().manual_seed(0)
    predictions = torch.randint(0, 3, (4, 8, 8), generator=generator)
    references = torch.randint(0, 3, (4, 8, 8), generator=generator)
    evaluator = SemanticEvaluator(ID2LABEL)
    evaluator.process(predictions, references)
    assert evaluator.evaluate() == evaluate(list(predictions), list(references))
    evaluator.reset()
    assert evaluator.evaluate()["per_class_IoU"] == {}


# ---------------------------------------------------------------------------------------------------------------
# Agreement with torchmetrics. MulticlassJaccardIndex accumulates a dataset-level confusion matrix like we do, so
# per-class IoU agrees over several images. MeanIoU averages per-image IoUs instead, and has no ignore_index, so it
# agrees on a single image without ignored pixels.
# ---------------------------------------------------------------------------------------------------------------


def random_maps(generator, count, num_classes=6, size=16, ignore_fraction=0.1):
    predictions = torch.randint(0, num_classes, (count, size, size), generator=generator)
    references = torch.randint(0, num_classes, (count, size, size), generator=generator)
    keep = torch.rand(count, size, size, generator=generator) < 0.5
    predictions = torch.where(keep, references, predictions)
    references[torch.rand(count, size, size, generator=generator) < ignore_fraction] = 255
    return predictions, references


def test_random_cases_agree_with_torchmetrics_jaccard_index():
    pytest.importorskip("torchmetrics")
    from torchmetrics.classification import MulticlassJaccardIndex

    predictions, references = random_maps(torch.Generator().manual_seed(1), 10)
    id2label = {k: str(k) for k in range(6)}
    ours = evaluate(list(predictions), list(references), id2label)
    metric = MulticlassJaccardIndex(num_classes=6, ignore_index=255, average="none")
    metric.update(predictions, references)
    theirs = metric.compute().double()
    assert [ours["per_class_IoU"][str(k)] / 100 for k in range(6)] == pytest.approx(theirs.tolist(), abs=1e-6)
    assert ours["mIoU"] / 100 == pytest.approx(theirs.mean().item(), abs=1e-6)


def test_single_image_agrees_with_torchmetrics_mean_iou():
    pytest.importorskip("torchmetrics")
    from torchmetrics.segmentation import MeanIoU

    predictions, references = random_maps(torch.Generator().manual_seed(2), 1, ignore_fraction=0.0)
    id2label = {k: str(k) for k in range(6)}
    ours = evaluate(list(predictions), list(references), id2label)
    metric = MeanIoU(num_classes=6, input_format="index", per_class=True)
    metric.update(predictions, references)
    theirs = metric.compute().double()
    assert [ours["per_class_IoU"][str(k)] / 100 for k in range(6)] == pytest.approx(theirs.tolist(), abs=1e-6)


# ---------------------------------------------------------------------------------------------------------------
# Bad input.
# ---------------------------------------------------------------------------------------------------------------


def test_bad_input_errors():
    reference = torch.zeros(4, 4, dtype=torch.int64)
    with pytest.raises(ValueError, match=r"predictions\[0\] has segmentation size \(4, 5\) but references\[0\]"):
        evaluate([torch.zeros(4, 5, dtype=torch.int64)], [reference])
    with pytest.raises(
        ValueError, match=r"`predictions\[0\]` holds class ids in \[300, 300\], expected ids of `id2label` \(0..2\)"
    ):
        evaluate([torch.full((4, 4), 300)], [reference])
    with pytest.raises(ValueError, match=r"`references` holds class ids \[7\] that are not in `id2label`"):
        evaluate([reference], [torch.full((4, 4), 7)], {0: "a", 1: "b", 9: "c"})
    with pytest.raises(ValueError, match="`ignore_index` is 2, which is also a class id"):
        SemanticEvaluator(ID2LABEL, ignore_index=2)
    with pytest.raises(ValueError, match=r"must have 2 dimensions, got shape \(4,\)"):
        evaluate([torch.zeros(4, dtype=torch.int64)], [torch.zeros(4, dtype=torch.int64)])
