"""InstanceEvaluator: hand-computed cases, agreement with pycocotools' COCOeval and torchmetrics, input formats."""

from __future__ import annotations

import contextlib
import io
import math

import numpy as np
import pytest
import torch
from evaluation_data import ID2LABEL, THING_IDS, random_panoptic_pair
from pycocotools import mask as mask_utils

from m2f_hf.evaluation import InstanceEvaluator, panoptic_to_instance
from m2f_hf.evaluation.instance import _encode_compact, decode_transformers_rle, encode_masks

PERSON, CAR, SKY = 1, 2, 5
KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def evaluate(predictions, references, **kwargs):
    evaluator = InstanceEvaluator(ID2LABEL, THING_IDS, **kwargs)
    evaluator.process(predictions, references)
    return evaluator.evaluate()


def reference_with(segmentation, *segments):
    info = [{"id": i, "category_id": c, "iscrowd": crowd} for i, c, crowd in segments]
    return {"segmentation": torch.tensor(segmentation), "segments_info": info}


def detections(segmentation, *segments):
    """Instance prediction in the default id-map format (-1 background); segments are (id, label_id, score)."""
    info = [{"id": i, "label_id": c, "was_fused": False, "score": s} for i, c, s in segments]
    return {"segmentation": torch.tensor(segmentation, dtype=torch.float32), "segments_info": info}


REFERENCE = reference_with(
    [[1, 1, 0, 0], [1, 1, 0, 0], [2, 2, 2, 2], [3, 3, 3, 3]], (1, PERSON, 0), (2, CAR, 0), (3, SKY, 0)
)


def test_perfect_detections_score_100_and_stuff_is_ignored():
    prediction = detections(
        [[0, 0, -1, -1], [0, 0, -1, -1], [1, 1, 1, 1], [2, 2, 2, 2]], (0, PERSON, 0.9), (1, CAR, 0.8), (2, SKY, 0.7)
    )
    results = evaluate([prediction], [REFERENCE])
    assert all(results[key] == pytest.approx(100.0) for key in ("AP", "AP50", "AP75", "APs"))
    assert math.isnan(results["APm"]) and math.isnan(results["APl"])  # COCO's -1: no medium or large objects
    assert results["per_class_AP"] == pytest.approx({"person": 100.0, "car": 100.0})


def test_empty_prediction_and_empty_reference():
    nothing = {"segmentation": torch.full((4, 4), -1.0), "segments_info": []}
    results = evaluate([nothing], [REFERENCE])
    assert results["AP"] == 0.0 and results["per_class_AP"] == {"person": 0.0, "car": 0.0}
    empty_reference = reference_with([[0] * 4] * 4)
    prediction = detections([[0, 0, -1, -1]] * 4, (0, PERSON, 0.9))
    results = evaluate([prediction], [empty_reference])
    assert math.isnan(results["AP"]) and results["per_class_AP"] == {}  # no reference objects: undefined
    assert math.isnan(InstanceEvaluator(ID2LABEL, THING_IDS).evaluate()["AP"])


def test_detection_on_a_crowd_region_is_not_a_false_positive():
    reference = reference_with([[1, 1, 9, 9]] * 4, (1, PERSON, 0), (9, PERSON, 1))
    prediction = detections([[0, 0, 1, 1]] * 4, (0, PERSON, 0.5), (1, PERSON, 0.9))
    assert evaluate([prediction], [reference])["AP"] == pytest.approx(100.0)
    # Without the crowd flag the higher-scored detection is a true positive and the other a miss... of the same
    # quality, so compare against a reference where the right half is void instead: then it is a false positive.
    no_crowd = reference_with([[1, 1, 0, 0]] * 4, (1, PERSON, 0))
    assert evaluate([prediction], [no_crowd])["AP"] < 100.0


def test_max_detections_keeps_the_highest_scores():
    prediction = detections([[0, 0, 1, 1]] * 2 + [[-1] * 4] * 2, (0, PERSON, 0.9), (1, CAR, 0.2))
    evaluator = InstanceEvaluator(ID2LABEL, THING_IDS, max_detections_per_image=1)
    evaluator.process([prediction], [REFERENCE])
    kept = evaluator.state_dict()["images"][0]["detections"]
    assert [d["category_id"] for d in kept] == [PERSON]


# ---------------------------------------------------------------------------------------------------------------
# The prediction formats of post_process_instance_segmentation all give the same result.
# ---------------------------------------------------------------------------------------------------------------


def random_instance_pairs(count, crowd=True):
    generator = torch.Generator().manual_seed(3)
    return [random_panoptic_pair(generator, crowd=crowd, prediction_void=True) for _ in range(count)]


def as_binary_maps(prediction):
    info = prediction["segments_info"]
    masks = torch.stack([prediction["segmentation"] == s["id"] for s in info]).float()  # (N, H, W)
    return {"segmentation": masks, "segments_info": info}


def as_coco_rles(prediction):
    masks = as_binary_maps(prediction)["segmentation"]
    return {"segmentation": encode_masks(masks > 0), "segments_info": prediction["segments_info"]}


def as_transformers_rles(prediction):
    """What transformers returns with return_coco_annotation=True: ids 0..N-1, background -1, row-major runs."""
    from transformers.models.mask2former.image_processing_mask2former import convert_segmentation_to_rle

    info = prediction["segments_info"]
    segmentation = torch.full(prediction["segmentation"].shape, -1.0)
    renumbered = []
    for new_id, segment in enumerate(info):
        segmentation[prediction["segmentation"] == segment["id"]] = new_id
        renumbered.append({**segment, "id": new_id})
    return {"segmentation": convert_segmentation_to_rle(segmentation), "segments_info": renumbered}


def test_all_prediction_formats_agree():
    predictions, references = zip(*random_instance_pairs(6))
    expected = evaluate(list(predictions), list(references))
    for convert in (as_binary_maps, as_coco_rles, as_transformers_rles):
        results = evaluate([convert(p) for p in predictions], list(references))
        for key in KEYS:
            assert results[key] == pytest.approx(expected[key], nan_ok=True), (convert.__name__, key)


def test_transformers_rle_decoding():
    mask = torch.zeros(5, 7, dtype=torch.bool)
    mask[1:3, 2:6] = True
    mask[4, 0] = True
    from transformers.models.mask2former.image_processing_mask2former import binary_mask_to_rle

    assert torch.equal(decode_transformers_rle(binary_mask_to_rle(mask.long()), 5, 7), mask)


@pytest.mark.parametrize("shape", [(1, 1), (5, 7), (33, 20)])
def test_run_length_encoding_from_an_index_map_matches_pycocotools(shape):
    index_map = torch.randint(0, 5, shape, generator=torch.Generator().manual_seed(sum(shape)), dtype=torch.int32)
    indices = torch.arange(0, 7)  # 5 and 6 are absent: empty masks
    expected = mask_utils.encode(np.asfortranarray((index_map[..., None] == indices).numpy().astype(np.uint8)))
    assert [rle["counts"] for rle in _encode_compact(index_map, indices)] == [
        rle["counts"].decode("ascii") for rle in expected
    ]


def test_panoptic_predictions_give_ap_th_pan():
    predictions, references = zip(*random_instance_pairs(4))
    direct = evaluate(list(predictions), list(references))
    converted = evaluate([panoptic_to_instance(p, THING_IDS) for p in predictions], list(references))
    assert [direct[k] for k in KEYS] == pytest.approx([converted[k] for k in KEYS], nan_ok=True)


# ---------------------------------------------------------------------------------------------------------------
# Agreement with pycocotools' COCOeval called directly and with torchmetrics' MeanAveragePrecision("segm").
# Both score the same thing as we do on these cases; the one definitional difference is that we drop segments
# with no pixels (torchmetrics would keep an empty mask: an unmatchable reference or a false positive), and the
# random cases have none.
# ---------------------------------------------------------------------------------------------------------------


def coco_eval_directly(predictions, references):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    images, annotations, results = [], [], []
    for image_id, (prediction, reference) in enumerate(zip(predictions, references), start=1):
        height, width = reference["segmentation"].shape
        images.append({"id": image_id, "height": height, "width": width})
        for segment in reference["segments_info"]:
            mask = (reference["segmentation"] == segment["id"]).numpy()
            if segment["category_id"] not in THING_IDS or not mask.any():
                continue
            rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": segment["category_id"],
                    "segmentation": rle,
                    "area": float(mask_utils.area(rle)),
                    "bbox": mask_utils.toBbox(rle).tolist(),
                    "iscrowd": segment["iscrowd"],
                }
            )
        for segment in prediction["segments_info"]:
            mask = (prediction["segmentation"] == segment["id"]).numpy()
            if segment["label_id"] in THING_IDS and mask.any():
                rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
                results.append(
                    {
                        "image_id": image_id,
                        "category_id": segment["label_id"],
                        "segmentation": rle,
                        "score": segment["score"],
                    }
                )
    with contextlib.redirect_stdout(io.StringIO()):
        ground_truth = COCO()
        ground_truth.dataset = {
            "images": images,
            "annotations": annotations,
            "categories": [{"id": c, "name": ID2LABEL[c]} for c in THING_IDS],
        }
        ground_truth.createIndex()
        coco_eval = COCOeval(ground_truth, ground_truth.loadRes(results), iouType="segm")
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    return coco_eval.stats[:6]


def test_random_cases_agree_with_cocoeval():
    predictions, references = zip(*random_instance_pairs(12))
    ours = evaluate(list(predictions), list(references))
    theirs = coco_eval_directly(predictions, references)
    for key, value in zip(KEYS, theirs):
        if value < 0:
            assert math.isnan(ours[key])
        else:
            assert ours[key] / 100 == pytest.approx(value, abs=1e-6)
    assert 0 < ours["AP"] < 100


def test_random_cases_agree_with_torchmetrics_mean_average_precision():
    pytest.importorskip("torchmetrics")
    from torchmetrics.detection import MeanAveragePrecision

    predictions, references = zip(*random_instance_pairs(12))
    ours = evaluate(list(predictions), list(references))

    def target(item, label_key, with_scores):
        kept = [
            s for s in item["segments_info"] if s[label_key] in THING_IDS and (item["segmentation"] == s["id"]).any()
        ]
        out = {
            "masks": torch.stack([item["segmentation"] == s["id"] for s in kept]),
            "labels": torch.tensor([s[label_key] for s in kept]),
        }
        if with_scores:
            out["scores"] = torch.tensor([s["score"] for s in kept], dtype=torch.float64)
        else:
            out["iscrowd"] = torch.tensor([s["iscrowd"] for s in kept])
        return out

    # torchmetrics' default thresholds are float32 (0.3 becomes 0.30000001), which moves COCOeval's recall sampling
    # when a recall lands exactly on a threshold; COCOeval's own float64 thresholds make the definitions coincide.
    metric = MeanAveragePrecision(
        iou_type="segm",
        backend="pycocotools",
        iou_thresholds=np.linspace(0.5, 0.95, 10).tolist(),
        rec_thresholds=np.linspace(0.0, 1.0, 101).tolist(),
    )
    metric.update(
        [target(p, "label_id", True) for p in predictions], [target(r, "category_id", False) for r in references]
    )
    theirs = metric.compute()
    for key, name in zip(KEYS, ("map", "map_50", "map_75", "map_small", "map_medium", "map_large")):
        value = theirs[name].item()
        if value < 0:
            assert math.isnan(ours[key])
        else:
            assert ours[key] / 100 == pytest.approx(value, abs=1e-6)


def test_state_merges_across_evaluators():
    predictions, references = zip(*random_instance_pairs(6))
    whole = evaluate(list(predictions), list(references))
    first, second = InstanceEvaluator(ID2LABEL, THING_IDS), InstanceEvaluator(ID2LABEL, THING_IDS)
    first.process(list(predictions[:3]), list(references[:3]))
    second.process(list(predictions[3:]), list(references[3:]))
    first.merge(second.state_dict())
    merged = first.evaluate()
    assert [merged[k] for k in KEYS] == pytest.approx([whole[k] for k in KEYS], nan_ok=True)


# ---------------------------------------------------------------------------------------------------------------
# Bad input.
# ---------------------------------------------------------------------------------------------------------------


def test_bad_input_errors():
    good = detections([[0, 0, -1, -1]] * 4, (0, PERSON, 0.9))
    with pytest.raises(ValueError, match=r"predictions\[0\] has segmentation size \(4, 3\) but references\[0\]"):
        evaluate([detections([[0, 0, -1]] * 4, (0, PERSON, 0.9))], [REFERENCE])
    with pytest.raises(ValueError, match=r"has no 'score'; AP needs one"):
        evaluate(
            [{"segmentation": good["segmentation"], "segments_info": [{"id": 0, "label_id": PERSON}]}], [REFERENCE]
        )
    with pytest.raises(ValueError, match=r"segment 0 with class id 42"):
        evaluate([detections([[0, 0, -1, -1]] * 4, (0, 42, 0.9))], [REFERENCE])
    with pytest.raises(ValueError, match=r"holds segment ids \[3\] that are not in its segments_info"):
        evaluate([detections([[0, 0, 3, -1]] * 4, (0, PERSON, 0.9))], [REFERENCE])
    with pytest.raises(ValueError, match=r"has 2 binary maps but segments_info has 1 entries"):
        evaluate([{"segmentation": torch.zeros(2, 4, 4), "segments_info": good["segments_info"]}], [REFERENCE])
    with pytest.raises(ValueError, match=r"`thing_ids` is empty"):
        InstanceEvaluator(ID2LABEL, [])
