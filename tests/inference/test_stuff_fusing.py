"""Panoptic inference merges the segments of one stuff class into one, as the original does, in the shared path
(CLI, batch runs, demo) and in the pipeline alike; thing classes keep one segment per query."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import pipeline

from m2f_hf.inference import SegmentOptions
from m2f_hf.inference.segment import segment_image
from m2f_hf.modeling_m2f import M2FForUniversalSegmentationOutput
from m2f_hf.processing.pipeline import register_image_segmentation_pipeline

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def _two_halves_of(label: int, config, height: int, width: int):
    """A forward that returns four confident queries: `label` on the left and on the right half, and a circle (a
    thing) in each of the two bottom quarters; all other queries predict no object."""
    num_queries, num_labels = config.num_queries, config.num_labels

    def forward(pixel_values, pixel_mask=None, **_):
        batch, _, h, w = pixel_values.shape
        mh, mw = h // 4, w // 4
        class_logits = torch.full((batch, num_queries, num_labels + 1), -10.0)
        class_logits[..., num_labels] = 10.0
        masks = torch.full((batch, num_queries, mh, mw), -10.0)
        top = mh // 2
        for query, (label_id, rows, cols) in enumerate(
            [
                (label, slice(0, top), slice(0, mw // 2)),
                (label, slice(0, top), slice(mw // 2, mw)),
                (0, slice(top, mh), slice(0, mw // 2)),
                (0, slice(top, mh), slice(mw // 2, mw)),
            ]
        ):
            class_logits[:, query, :] = -10.0
            class_logits[:, query, label_id] = 10.0
            masks[:, query, rows, cols] = 10.0
        return M2FForUniversalSegmentationOutput(class_queries_logits=class_logits, masks_queries_logits=masks)

    return forward


@pytest.fixture
def patched(loaded, monkeypatch):
    stuff = loaded.model.config.stuff_ids[0]  # grass
    monkeypatch.setattr(loaded.model, "forward", _two_halves_of(stuff, loaded.model.config, 64, 64))
    return loaded, stuff


def _labels(segments_info):
    return sorted((s["label_id"], s["was_fused"]) for s in segments_info)


def test_shared_path_merges_stuff_segments_and_keeps_things_apart(patched):
    loaded, stuff = patched
    image = Image.fromarray(np.full((64, 64, 3), 128, dtype=np.uint8))
    result = segment_image(loaded, image, SegmentOptions(task="panoptic"))
    assert _labels(result["segments_info"]) == [(0, False), (0, False), (stuff, True)]
    grass = next(s["id"] for s in result["segments_info"] if s["label_id"] == stuff)
    assert (result["segmentation"][:32] == grass).all()  # both halves of the top carry the one id


def test_without_thing_classes_nothing_is_merged(patched, monkeypatch):
    loaded, stuff = patched
    monkeypatch.setattr(loaded.model.config, "thing_ids", None)
    image = Image.fromarray(np.full((64, 64, 3), 128, dtype=np.uint8))
    result = segment_image(loaded, image, SegmentOptions(task="panoptic"))
    assert _labels(result["segments_info"]) == [(0, False), (0, False), (stuff, False), (stuff, False)]


def test_pipeline_gives_the_shared_paths_segments(patched):
    loaded, stuff = patched
    register_image_segmentation_pipeline()
    segmenter = pipeline("image-segmentation", model=loaded.model, image_processor=loaded.processor, device="cpu")
    image = Image.fromarray(np.full((64, 64, 3), 128, dtype=np.uint8))
    for subtask in ("panoptic", None):
        annotations = segmenter(image, subtask=subtask, threshold=0.5, overlap_mask_area_threshold=0.8)
        labels = sorted(a["label"] for a in annotations)
        assert labels == ["circle", "circle", loaded.id2label[stuff]]
        grass = next(a for a in annotations if a["label"] == loaded.id2label[stuff])
        assert (np.asarray(grass["mask"])[:32] == 255).all()


def test_sliding_windows_fuse_stuff_over_the_whole_image(patched):
    """Each window fuses its stuff segments, and the merge keeps one segment per stuff class for the image."""
    loaded, stuff = patched
    image = Image.fromarray(np.full((64, 192, 3), 128, dtype=np.uint8))
    options = SegmentOptions(task="panoptic", sliding_window=True, window_size=64, window_overlap=0.25)
    result = segment_image(loaded, image, options)
    grass = [s for s in result["segments_info"] if s["label_id"] == stuff]
    assert len(grass) == 1 and grass[0]["was_fused"]
    top = result["segmentation"][:32] == grass[0]["id"]
    assert top.float().mean() > 0.95, top.float().mean()  # the windows' border rows may go to their neighbours
