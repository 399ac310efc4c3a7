"""The `evaluate` metrics shipped in m2f_hf/metrics load offline from their path and agree with the evaluators."""

from __future__ import annotations

import os

import pytest
import torch
from evaluation_data import ID2LABEL, THING_IDS, random_panoptic_pair

from m2f_hf.evaluation import InstanceEvaluator, PanopticEvaluator, SemanticEvaluator, metric_path

evaluate = pytest.importorskip("evaluate")


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    # Loading from a local path must not need the Hub.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")


@pytest.fixture(scope="module")
def pairs():
    generator = torch.Generator().manual_seed(5)
    predictions, references = zip(*(random_panoptic_pair(generator, crowd=True) for _ in range(3)))
    return list(predictions), list(references)


def test_metric_path_points_at_the_shipped_scripts():
    for name in ("panoptic_quality", "mask_ap", "mean_iou"):
        assert os.path.isfile(os.path.join(metric_path(name), f"{name}.py"))
    with pytest.raises(ValueError, match="`name` is 'pq', expected one of"):
        metric_path("pq")


def test_panoptic_quality_metric(pairs):
    predictions, references = pairs
    results = evaluate.load(metric_path("panoptic_quality")).compute(
        predictions=predictions, references=references, id2label=ID2LABEL, thing_ids=THING_IDS
    )
    evaluator = PanopticEvaluator(ID2LABEL, THING_IDS)
    evaluator.process(predictions, references)
    assert results == evaluator.evaluate()


def test_mask_ap_metric(pairs):
    predictions, references = pairs
    results = evaluate.load(metric_path("mask_ap")).compute(
        predictions=predictions, references=references, id2label=ID2LABEL, thing_ids=THING_IDS
    )
    evaluator = InstanceEvaluator(ID2LABEL, THING_IDS)
    evaluator.process(predictions, references)
    assert results["AP"] == pytest.approx(evaluator.evaluate()["AP"])


def test_mean_iou_metric_with_batches():
    metric = evaluate.load(metric_path("mean_iou"))
    generator = torch.Generator().manual_seed(6)
    predictions = torch.randint(0, 3, (4, 6, 6), generator=generator)
    references = torch.randint(0, 3, (4, 6, 6), generator=generator)
    references[:, 0] = 255
    for start in (0, 2):
        metric.add_batch(
            predictions=list(predictions[start : start + 2]), references=list(references[start : start + 2])
        )
    results = metric.compute(num_labels=3, ignore_index=255)
    evaluator = SemanticEvaluator({0: "0", 1: "1", 2: "2"})
    evaluator.process(predictions, references)
    assert results == evaluator.evaluate()
