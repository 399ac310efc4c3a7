"""Shared pieces of the CLI tests: the bundled model loaded once, and the held-out synthetic set of the docs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from m2f_hf import M2FForUniversalSegmentation
from m2f_hf.data.synthetic import categories, render_scene
from m2f_hf.evaluation.convert import rgb_to_id
from m2f_hf.image_processing_m2f import M2FImageProcessor
from m2f_hf.resources import default_model_path

# docs/default_model.md: the held-out set is the validation split of seed 1 (training used seed 0), 128 x 128.
HELD_OUT_SEED = 1
HELD_OUT_SIZE = 128


@pytest.fixture(scope="session")
def default_model():
    path = default_model_path()
    return M2FForUniversalSegmentation.from_pretrained(path).eval(), M2FImageProcessor.from_pretrained(path)


def held_out_samples(count: int):
    """The first `count` images of the held-out set, each as (RGB uint8 array, reference panoptic dict).

    Same images as `make_synthetic_dataset("panoptic", num_validation=count, size=128, seed=1)["validation"]`,
    rendered directly (no `datasets` round trip). Reference class ids are the model's: panoptic category id - 1.
    """
    from m2f_hf.data.synthetic import _row

    rng = np.random.default_rng([HELD_OUT_SEED, 1])  # the validation split's stream, as make_synthetic_dataset's
    samples = []
    for _ in range(count):
        row = _row("panoptic", *render_scene(rng, (HELD_OUT_SIZE, HELD_OUT_SIZE)), rng)
        reference = {
            "segmentation": rgb_to_id(np.array(row["label"])),
            "segments_info": [
                {"id": s["id"], "category_id": s["category_id"] - 1, "iscrowd": s["iscrowd"]}
                for s in row["segments_info"]
            ],
        }
        samples.append((np.array(row["image"]), reference))
    return samples


def thing_ids() -> list[int]:
    return [c["id"] - 1 for c in categories("panoptic") if c["isthing"]]


@torch.no_grad()
def measure_quality(model, processor, samples, *, threshold: float = 0.8) -> dict[str, float]:
    """PQ (stuff fused, score threshold 0.8, as examples/evaluate.py), mIoU of the semantic post-processing, and
    mIoU of the panoptic output merged by class (the paper's mIoU_pan), all in percent."""
    from m2f_hf.evaluation import PanopticEvaluator, SemanticEvaluator

    id2label = {int(k): v for k, v in model.config.id2label.items()}
    things = thing_ids()
    stuff = {i for i in id2label if i not in things}
    panoptic = PanopticEvaluator(id2label, things)
    semantic = SemanticEvaluator(id2label)
    semantic_pan = SemanticEvaluator(id2label)
    for image, reference in samples:
        inputs = processor(images=[image], return_tensors="pt")
        outputs = model(**inputs)
        sizes = [image.shape[:2]]
        prediction = processor.post_process_panoptic_segmentation(
            outputs,
            threshold=threshold,
            overlap_mask_area_threshold=0.8,
            label_ids_to_fuse=stuff,
            target_sizes=sizes,
        )[0]
        panoptic.process([prediction], [reference])
        semantic_pan.process([prediction], [reference])
        semantic.process(processor.post_process_semantic_segmentation(outputs, target_sizes=sizes), [reference])
    return {
        "PQ": panoptic.evaluate()["PQ"],
        "mIoU": semantic.evaluate()["mIoU"],
        "mIoU_pan": semantic_pan.evaluate()["mIoU"],
    }


@pytest.fixture(scope="session")
def held_out_quality(default_model):
    """`held_out_quality(count)`: the bundled model's figures on the first `count` held-out images."""
    return lambda count: measure_quality(*default_model, held_out_samples(count))
