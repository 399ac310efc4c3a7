"""PanopticEvaluator: hand-computed cases, agreement with torchmetrics, input errors, merging."""

from __future__ import annotations

import pytest
import torch
from evaluation_data import ID2LABEL, STUFF_IDS, THING_IDS, random_panoptic_pair

from m2f_hf.evaluation import PanopticEvaluator

PERSON, CAR, SKY = 1, 2, 5


def ref(segmentation, *segments):
    """Reference dict; segments are (id, category_id, iscrowd)."""
    info = [{"id": i, "category_id": c, "iscrowd": crowd} for i, c, crowd in segments]
    return {"segmentation": torch.tensor(segmentation), "segments_info": info}


def pred(segmentation, *segments):
    """Prediction dict as post_process_panoptic_segmentation returns it; segments are (id, label_id)."""
    info = [{"id": i, "label_id": c, "was_fused": False, "score": 0.9} for i, c in segments]
    return {"segmentation": torch.tensor(segmentation, dtype=torch.int32), "segments_info": info}


def evaluate(predictions, references):
    evaluator = PanopticEvaluator(ID2LABEL, THING_IDS)
    evaluator.process(predictions, references)
    return evaluator.evaluate()


def test_perfect_prediction_scores_100():
    reference = ref([[1, 1, 2, 2]] * 4, (1, PERSON, 0), (2, SKY, 0))
    prediction = pred([[4, 4, 3, 3]] * 4, (4, PERSON), (3, SKY))
    results = evaluate([prediction], [reference])
    assert results["PQ"] == results["SQ"] == results["RQ"] == 100.0
    assert results["PQ_th"] == results["PQ_st"] == 100.0
    assert results["per_class"]["person"] == {"PQ": 100.0, "SQ": 100.0, "RQ": 100.0, "TP": 1, "FP": 0, "FN": 0}


def test_empty_prediction_counts_every_reference_segment_as_false_negative():
    reference = ref([[1, 1, 2, 2]] * 4, (1, PERSON, 0), (2, SKY, 0))
    # transformers returns a float map of -1 and no segments when nothing passes the threshold.
    prediction = {"segmentation": torch.full((4, 4), -1.0), "segments_info": []}
    results = evaluate([prediction], [reference])
    assert results["PQ"] == results["SQ"] == results["RQ"] == 0.0
    assert results["per_class"]["person"]["FN"] == results["per_class"]["sky"]["FN"] == 1
    assert set(results["per_class"]) == {"person", "sky"}


def test_empty_reference_ignores_predictions_on_void():
    reference = ref([[0] * 4] * 4)
    prediction = pred([[1, 1, 2, 2]] * 4, (1, PERSON), (2, SKY))
    results = evaluate([prediction], [reference])
    # Predictions lying on reference void are neither TP nor FP, so no class is counted.
    assert results["per_class"] == {}
    assert results["PQ"] == 0.0


def test_void_pixels_of_the_reference_leave_the_union():
    reference = ref([[0, 0, 1, 1], [0, 0, 1, 1], [1, 1, 1, 1], [2, 2, 2, 2]], (1, PERSON, 0), (2, SKY, 0))
    # The predicted person covers the 8 person pixels and the 4 void pixels: IoU = 8 / (8 + 12 - 8 - 4) = 1.
    prediction = pred([[1, 1, 1, 1]] * 3 + [[2, 2, 2, 2]], (1, PERSON), (2, SKY))
    results = evaluate([prediction], [reference])
    assert results["per_class"]["person"]["SQ"] == 100.0
    assert results["PQ"] == 100.0


def test_prediction_mostly_on_void_is_not_a_false_positive():
    reference = ref([[0, 0, 1, 1], [0, 0, 1, 1], [1, 1, 1, 1], [2, 2, 2, 2]], (1, PERSON, 0), (2, SKY, 0))
    prediction = pred([[3, 3, 1, 1], [3, 3, 1, 1], [1, 1, 1, 1], [2, 2, 2, 2]], (1, PERSON), (2, SKY), (3, CAR))
    results = evaluate([prediction], [reference])
    assert "car" not in results["per_class"]
    assert results["PQ"] == 100.0


def test_crowd_region():
    # 9: a crowd of persons (left half), 1: a person, 2: sky.
    reference = ref(
        [[9, 9, 1, 1], [9, 9, 1, 1], [9, 9, 2, 2], [9, 9, 2, 2]], (9, PERSON, 1), (1, PERSON, 0), (2, SKY, 0)
    )
    # 3: a person on the crowd (ignored), 4: a car on the crowd (a false positive: different class).
    prediction = pred(
        [[3, 3, 1, 1], [3, 3, 1, 1], [4, 4, 2, 2], [4, 4, 2, 2]], (1, PERSON), (2, SKY), (3, PERSON), (4, CAR)
    )
    results = evaluate([prediction], [reference])
    assert results["per_class"]["person"] == {"PQ": 100.0, "SQ": 100.0, "RQ": 100.0, "TP": 1, "FP": 0, "FN": 0}
    assert results["per_class"]["car"] == {"PQ": 0.0, "SQ": 0.0, "RQ": 0.0, "TP": 0, "FP": 1, "FN": 0}
    assert results["PQ"] == pytest.approx(200 / 3)
    assert results["PQ_th"] == pytest.approx(50.0)
    assert results["PQ_st"] == 100.0
    # An unmatched crowd segment is never a false negative.
    assert results["per_class"]["person"]["FN"] == 0


def test_iou_of_exactly_one_half_does_not_match():
    reference = ref([[1, 1, 1, 1], [2, 2, 2, 2], [2, 2, 2, 2], [2, 2, 2, 2]], (1, PERSON, 0), (2, SKY, 0))
    prediction = pred([[1, 1, 2, 2], [2, 2, 2, 2], [2, 2, 2, 2], [2, 2, 2, 2]], (1, PERSON), (2, SKY))
    results = evaluate([prediction], [reference])
    assert results["per_class"]["person"] == {"PQ": 0.0, "SQ": 0.0, "RQ": 0.0, "TP": 0, "FP": 1, "FN": 1}
    # sky: IoU = 12 / 14, one TP.
    assert results["per_class"]["sky"]["SQ"] == pytest.approx(100 * 12 / 14)
    assert results["PQ_st"] == pytest.approx(100 * 12 / 14)


def test_fused_stuff_segment_listed_twice_is_one_segment():
    reference = ref([[1, 1, 2, 2]] * 4, (1, PERSON, 0), (2, SKY, 0))
    prediction = pred([[1, 1, 2, 2]] * 4, (1, PERSON), (2, SKY), (2, SKY))
    assert evaluate([prediction], [reference])["PQ"] == 100.0


def test_reference_ids_absent_from_segments_info_are_void():
    reference = ref([[1, 1, 2, 2]] * 3 + [[8, 8, 8, 8]], (1, PERSON, 0), (2, SKY, 0))
    prediction = pred([[1, 1, 2, 2]] * 3 + [[3, 3, 3, 3]], (1, PERSON), (2, SKY), (3, CAR))
    results = evaluate([prediction], [reference])
    assert results["PQ"] == 100.0 and "car" not in results["per_class"]


def test_batches_merge_and_state_dict_round_trip():
    generator = torch.Generator().manual_seed(0)
    pairs = [random_panoptic_pair(generator, crowd=True, prediction_void=True) for _ in range(6)]
    predictions, references = zip(*pairs)
    whole = PanopticEvaluator(ID2LABEL, THING_IDS)
    whole.process(list(predictions), list(references))
    first, second = PanopticEvaluator(ID2LABEL, THING_IDS), PanopticEvaluator(ID2LABEL, THING_IDS)
    first.process(list(predictions[:4]), list(references[:4]))
    for prediction, reference in zip(predictions[4:], references[4:]):
        second.process(prediction, reference)  # a single dict is one image
    first.merge(second.state_dict())
    merged, expected = first.evaluate(), whole.evaluate()
    assert merged.keys() == expected.keys() and merged["per_class"].keys() == expected["per_class"].keys()
    for key in expected:
        if key != "per_class":
            assert merged[key] == pytest.approx(expected[key], abs=1e-9)
    for name, values in expected["per_class"].items():
        assert merged["per_class"][name] == pytest.approx(values, abs=1e-9)
    restored = PanopticEvaluator(ID2LABEL, THING_IDS)
    restored.load_state_dict(whole.state_dict())
    assert restored.evaluate() == whole.evaluate()
    whole.reset()
    assert whole.evaluate()["per_class"] == {}


def test_merge_rejects_state_of_other_classes():
    evaluator = PanopticEvaluator(ID2LABEL, THING_IDS)
    other = PanopticEvaluator({0: "a"}, [0])
    with pytest.raises(ValueError, match=r"state\['tp'\]"):
        evaluator.merge(other.state_dict())


# ---------------------------------------------------------------------------------------------------------------
# Agreement with torchmetrics' PanopticQuality.
#
# The definitions coincide when the prediction has no void pixels, the reference has no crowd segments, and each
# image has at most one segment per stuff class. torchmetrics differs otherwise:
#   - it merges all segments of a stuff class into one (panopticapi keeps them apart);
#   - it has no crowd regions;
#   - it treats void symmetrically: pixels a prediction leaves void are also removed from the union, and a reference
#     segment mostly covered by prediction void is not a false negative. COCO panoptic (and this evaluator) only
#     discounts the reference's void. `test_prediction_void_differs_from_torchmetrics` checks that difference.
# ---------------------------------------------------------------------------------------------------------------


def to_torchmetrics(item: dict, label_key: str, void_category: int) -> torch.Tensor:
    """(1, H, W, 2) map of (category, instance id), torchmetrics' input."""
    segmentation = item["segmentation"].long()
    category = torch.full_like(segmentation, void_category)
    for segment in item["segments_info"]:
        category[segmentation == segment["id"]] = segment[label_key]
    return torch.stack([category, segmentation], dim=-1)[None]


def torchmetrics_pq(predictions, references):
    from torchmetrics.detection import PanopticQuality

    metric = PanopticQuality(
        things=set(THING_IDS),
        stuffs=set(STUFF_IDS),
        return_sq_and_rq=True,
        return_per_class=True,
        allow_unknown_preds_category=True,  # prediction void (unlisted ids) becomes torchmetrics void
    )
    void = max(ID2LABEL) + 1
    for prediction, reference in zip(predictions, references):
        metric.update(to_torchmetrics(prediction, "label_id", void), to_torchmetrics(reference, "category_id", void))
    return metric.compute()  # (1, classes, 3): things then stuffs, each sorted


def test_random_cases_agree_with_torchmetrics():
    generator = torch.Generator().manual_seed(0)
    pytest.importorskip("torchmetrics")
    pairs = [random_panoptic_pair(generator) for _ in range(24)]
    predictions, references = zip(*pairs)
    ours = evaluate(list(predictions), list(references))
    theirs = torchmetrics_pq(predictions, references).reshape(-1, 3).double()
    ordered = sorted(THING_IDS) + sorted(STUFF_IDS)
    counted = [k for k, class_id in enumerate(ordered) if ID2LABEL[class_id] in ours["per_class"]]
    for k in counted:
        per_class = ours["per_class"][ID2LABEL[ordered[k]]]
        for column, key in enumerate(("PQ", "SQ", "RQ")):
            assert per_class[key] / 100 == pytest.approx(theirs[k, column].item(), abs=1e-6)
    for column, key in enumerate(("PQ", "SQ", "RQ")):
        assert ours[key] / 100 == pytest.approx(theirs[counted, column].mean().item(), abs=1e-6)
    assert 0 < ours["PQ"] < 100  # the random cases are not trivial


def test_prediction_void_differs_from_torchmetrics():
    pytest.importorskip("torchmetrics")
    reference = ref([[1, 1, 1, 1], [1, 1, 1, 1], [2, 2, 2, 2], [2, 2, 2, 2]], (1, PERSON, 0), (2, SKY, 0))
    # The second row is left void by the prediction (id 0, unlisted).
    prediction = pred([[1, 1, 1, 1], [0, 0, 0, 0], [2, 2, 2, 2], [2, 2, 2, 2]], (1, PERSON), (2, SKY))
    ours = evaluate([prediction], [reference])
    theirs = torchmetrics_pq([prediction], [reference]).reshape(-1, 3)
    # COCO: IoU = 4 / (8 + 4 - 4) = 0.5, not a match. torchmetrics removes the void row from the union: IoU = 1.
    assert ours["per_class"]["person"]["TP"] == 0 and ours["per_class"]["person"]["PQ"] == 0.0
    assert theirs[sorted(THING_IDS).index(PERSON), 0].item() == pytest.approx(1.0)


# ---------------------------------------------------------------------------------------------------------------
# Bad input.
# ---------------------------------------------------------------------------------------------------------------


def test_mismatched_sizes_are_reported():
    reference = ref([[1, 1, 2, 2]] * 4, (1, PERSON, 0), (2, SKY, 0))
    prediction = pred([[1, 1, 2, 2, 2]] * 4, (1, PERSON), (2, SKY))
    with pytest.raises(
        ValueError, match=r"predictions\[0\] has segmentation size \(4, 5\) but references\[0\] has size \(4, 4\)"
    ):
        evaluate([prediction], [reference])


def test_unknown_class_ids_are_reported():
    reference = ref([[1, 1, 2, 2]] * 4, (1, PERSON, 0), (2, SKY, 0))
    with pytest.raises(ValueError, match=r"predictions\[0\]\['segments_info'\].*class id 42"):
        evaluate([pred([[1, 1, 2, 2]] * 4, (1, PERSON), (2, 42))], [reference])
    with pytest.raises(ValueError, match=r"references\[0\]\['segments_info'\].*class id 42"):
        evaluate([pred([[1, 1, 2, 2]] * 4, (1, PERSON), (2, SKY))], [ref([[1, 1, 2, 2]] * 4, (1, 42, 0))])


def test_prediction_ids_missing_from_segments_info_are_reported():
    reference = ref([[1, 1, 2, 2]] * 4, (1, PERSON, 0), (2, SKY, 0))
    with pytest.raises(ValueError, match=r"predictions\[0\]\['segmentation'\]` holds segment ids \[2\]"):
        evaluate([pred([[1, 1, 2, 2]] * 4, (1, PERSON))], [reference])


def test_other_bad_arguments():
    reference = ref([[1, 1, 2, 2]] * 4, (1, PERSON, 0), (2, SKY, 0))
    with pytest.raises(ValueError, match="has 2 images but `references` has 1"):
        evaluate([pred([[1]], (1, PERSON))] * 2, [reference])
    with pytest.raises(ValueError, match=r"`thing_ids` contains ids \[4\]"):
        PanopticEvaluator(ID2LABEL, [4])
    with pytest.raises(ValueError, match="twice with different class ids"):
        evaluate([pred([[1, 1, 2, 2]] * 4, (1, PERSON), (1, CAR), (2, SKY))], [reference])
