"""Targets through the real data path (SegmentationDataset + augmentation + Collator + model + criterion): index-map
targets for the three tasks, crowded images, masks emptied by the crop, layered (overlapping) samples."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from datasets import Dataset

from m2f_hf import M2FForUniversalSegmentation
from m2f_hf.data import (
    Collator,
    FormatAdapter,
    LabelSet,
    LargeScaleJitter,
    SegmentationDataset,
    build_train_transform,
    encode_target_map,
    encode_targets,
    reference_from_sample,
)
from m2f_hf.data.formats import Sample
from m2f_hf.data.synthetic import categories, make_synthetic_dataset
from m2f_hf.segment_targets import SegmentIndexMap
from m2f_hf.testing import tiny_config

COLLATE = Collator(image_mean=[0.5] * 3, image_std=[0.25] * 3, size_divisor=32)


def synthetic(task, num_train=4, size=64):
    data = make_synthetic_dataset(task, num_train=num_train, num_validation=1, size=size, seed=3)
    cats = categories(task)
    labels = LabelSet(
        [c["name"] for c in cats], [c["id"] for c in cats], [i for i, c in enumerate(cats) if c["isthing"]]
    )
    return data["train"], FormatAdapter.for_task(task, labels), labels


def grid_instances(num_images, size, cells, cell, *, origin=0):
    """An instance-format dataset (class in R, instance in G): per image a `cells x cells` grid of `cell`-pixel
    squares starting at `origin`, each its own instance, classes cycling through 3."""
    images, annotations = [], []
    for _ in range(num_images):
        annotation = np.zeros((size, size, 3), np.uint8)
        instance = 1
        for row in range(cells):
            for col in range(cells):
                top, left = origin + row * (cell + 1), origin + col * (cell + 1)
                annotation[top : top + cell, left : left + cell, 0] = instance % 3
                annotation[top : top + cell, left : left + cell, 1] = instance
                instance += 1
        image = np.full((size, size, 3), 90, np.uint8)
        image[annotation[..., 1] > 0] = 200
        images.append(image)
        annotations.append(annotation)
    dataset = Dataset.from_dict({"image": images, "annotation": annotations})
    return dataset, FormatAdapter.for_task("instance", LabelSet.from_names(["a", "b", "c"]))


def tiny_model(num_labels, **overrides):
    torch.manual_seed(0)
    return M2FForUniversalSegmentation(tiny_config(num_labels=num_labels, **overrides)).train()


@pytest.mark.parametrize("task", ["semantic", "instance", "panoptic"])
def test_index_map_targets_give_the_dense_loss_for_every_task(task):
    rows, adapter, labels = synthetic(task)
    transform = build_train_transform(task, crop_size=(64, 64), min_scale=0.5, max_scale=1.5)
    maps = SegmentationDataset(rows, adapter, transform, seed=1)
    dense = SegmentationDataset(rows, adapter, transform, seed=1, dense_targets=True)
    map_batch = COLLATE([maps[i] for i in range(3)])
    dense_batch = COLLATE([dense[i] for i in range(3)])
    assert all(isinstance(m, SegmentIndexMap) and m.index_map.dtype == torch.int32 for m in map_batch["mask_labels"])
    for m, d, c in zip(map_batch["mask_labels"], dense_batch["mask_labels"], map_batch["class_labels"]):
        assert torch.equal(m.to_dense(len(c)), d)  # same targets, in the same order
        assert len(c) > 0 and d.any(dim=(1, 2)).all()  # every target has pixels
    model = tiny_model(len(labels.names))
    results = []
    for batch in (dense_batch, map_batch):
        torch.manual_seed(4)
        model.zero_grad()
        out = model(batch["pixel_values"], mask_labels=batch["mask_labels"], class_labels=batch["class_labels"])
        out.loss.backward()
        results.append((out.loss_dict, model.class_predictor.weight.grad.clone()))
    (dense_losses, dense_grad), (map_losses, map_grad) = results
    for key in dense_losses:
        torch.testing.assert_close(map_losses[key], dense_losses[key], rtol=1e-5, atol=1e-6, msg=key)
    torch.testing.assert_close(map_grad, dense_grad, rtol=1e-4, atol=1e-6)


def test_crowded_images_train_and_their_loss_is_the_matched_pairs_loss():
    # 36 instances per image for 6 queries, through LSJ (which cuts some squares) and the collate.
    dataset, adapter = grid_instances(2, 64, cells=6, cell=9)
    transform = LargeScaleJitter(crop_size=(64, 64), min_scale=0.8, max_scale=1.25)
    data = SegmentationDataset(dataset, adapter, transform, seed=0)
    batch = COLLATE([data[0], data[1]])
    counts = [len(c) for c in batch["class_labels"]]
    assert min(counts) > 6
    model = tiny_model(3)
    with pytest.warns(UserWarning, match="target segments but the model has only 6 queries"):
        out = model(batch["pixel_values"], mask_labels=batch["mask_labels"], class_labels=batch["class_labels"])
    out.loss.backward()
    assert torch.isfinite(out.loss) and model.class_predictor.weight.grad.abs().sum() > 0
    assert model.criterion.last_unmatched_targets == sum(counts) - 12

    # The criterion on the final prediction equals the criterion on only the targets it matched.
    criterion = model.criterion
    masks, classes = out.masks_queries_logits.detach(), out.class_queries_logits.detach()
    torch.manual_seed(9)
    indices = criterion.matcher(masks, classes, batch["mask_labels"], batch["class_labels"])
    torch.manual_seed(9)
    losses = criterion(masks, classes, batch["mask_labels"], batch["class_labels"])
    kept_maps, kept_classes = [], []
    for targets, labels, (_, matched) in zip(batch["mask_labels"], batch["class_labels"], indices):
        kept = matched.sort().values
        lookup = torch.full((len(labels) + 1,), -1, dtype=torch.int32)
        lookup[kept] = torch.arange(len(kept), dtype=torch.int32)
        renumbered = lookup[targets.index_map.long()]  # -1 (ignore) reads lookup[-1] = -1
        kept_maps.append(SegmentIndexMap(renumbered))
        kept_classes.append(labels[kept])
    torch.manual_seed(9)
    reference = criterion(masks, classes, kept_maps, kept_classes)
    assert criterion.last_unmatched_targets == 0
    for key in reference:
        torch.testing.assert_close(losses[key], reference[key], rtol=1e-6, atol=1e-7, msg=key)


def test_masks_emptied_by_the_crop_are_dropped_and_empty_images_give_the_no_object_term():
    # Two 6x6 squares in opposite corners of a 48x48 image, LSJ at scale 1.5 (no resize) with a 32x32 crop: most
    # crops hold neither square, some one of them, often cut.
    dataset, adapter = grid_instances(1, 48, cells=1, cell=6)
    annotation = np.array(dataset[0]["annotation"], np.uint8)
    annotation[-6:, -6:] = (2, 2, 0)
    dataset = Dataset.from_dict(
        {"image": [np.array(dataset[0]["image"], np.uint8)] * 40, "annotation": [annotation] * 40}
    )
    transform = LargeScaleJitter(crop_size=(32, 32), min_scale=1.5, max_scale=1.5)
    items = [SegmentationDataset(dataset, adapter, transform, seed=0)[i] for i in range(40)]
    counts = [len(item["class_labels"]) for item in items]
    assert 0 in counts and any(0 < c < 2 for c in counts)
    for item in items:
        targets, labels = item["mask_labels"], item["class_labels"]
        dense = targets.to_dense(len(labels))
        assert dense.any(dim=(1, 2)).all()  # no target without pixels reaches the matcher
        assert ((targets.index_map >= 0).sum() > 0) == (len(labels) > 0)
    empty = [item for item, count in zip(items, counts) if count == 0][:2]
    batch = COLLATE(empty)
    model = tiny_model(3)
    out = model(
        batch["pixel_values"],
        mask_labels=batch["mask_labels"],
        class_labels=batch["class_labels"],
        output_auxiliary_logits=True,
    )
    out.loss.backward()
    class_logits = [a["class_queries_logits"] for a in out.auxiliary_logits] + [out.class_queries_logits]
    suffixes = [f"_{i}" for i in range(len(class_logits) - 1)] + [""]
    for logits, suffix in zip(class_logits, suffixes):
        # every query's target is "no object": its weighted mean NLL with equal weights is the plain mean
        expected = 2.0 * -F.log_softmax(logits.detach(), -1)[..., -1].mean()
        torch.testing.assert_close(out.loss_dict[f"loss_cross_entropy{suffix}"], expected)
        assert out.loss_dict[f"loss_mask{suffix}"].item() == 0 and out.loss_dict[f"loss_dice{suffix}"].item() == 0
    assert torch.isfinite(out.loss)


def layered_sample():
    """A 2-layer sample (40 x 48): segments 1, 2 in layer 0, segment 3 in layer 1 overlapping both, crowd 4."""
    segments = torch.zeros(2, 40, 48, dtype=torch.int64)
    segments[0, 5:25, 4:20] = 1
    segments[0, 10:30, 26:44] = 2
    segments[1, 15:35, 12:34] = 3
    segments[1, 0:4, 0:4] = 4
    image = torch.zeros(3, 40, 48, dtype=torch.uint8)
    image[0] = (segments[0] * 60).to(torch.uint8)
    image[1] = (segments[1] * 60).to(torch.uint8)
    return Sample(image=image, segments=segments, classes={1: 0, 2: 1, 3: 2, 4: 0}, crowd={4: True})


def test_layered_samples_through_transforms_targets_collate_and_reference():
    sample = layered_sample()
    map_targets, classes = encode_target_map(sample)
    dense, dense_classes = encode_targets(sample)
    assert classes.tolist() == dense_classes.tolist() == [0, 1, 2]  # crowd 4 left out
    assert map_targets.shape == (2, 40, 48) and torch.equal(map_targets.to_dense(3), dense)
    assert (dense.sum(0) == 2).sum() == 10 * 8 + 15 * 8  # overlaps of 3 with 1 and with 2 are kept
    for seed in range(8):
        generator = torch.Generator().manual_seed(seed)
        out = LargeScaleJitter(crop_size=(32, 32), min_scale=0.5, max_scale=2.0)(sample, generator)
        assert out.segments.shape[0] == 2 and out.segments.shape[-2:] == out.image.shape[-2:]
        if seed < 4:
            # At scale 1.5 the 40x48 image fits the 32x32-based box unresized, so crop and flip are exact: the
            # image's channels, which carry each layer's ids, show that both layers moved with the image.
            exact = LargeScaleJitter(crop_size=(32, 32), min_scale=1.5, max_scale=1.5)(sample, generator)
            assert torch.equal(exact.image[0].long() // 60, exact.segments[0])
            assert torch.equal(exact.image[1].long() // 60, exact.segments[1])
        map_targets, classes = encode_target_map(out)
        dense, _ = encode_targets(out)
        assert torch.equal(map_targets.to_dense(len(classes)), dense)
    batch = COLLATE(
        [{"index": 0, "image": sample.image, "mask_labels": encode_target_map(sample)[0], "class_labels": classes}]
    )
    assert batch["mask_labels"][0].shape == (2, 64, 64) and (batch["mask_labels"][0].index_map[:, 40:] == -1).all()

    reference = reference_from_sample(sample)
    flat = reference["segmentation"]
    assert flat.shape == (40, 48) and flat[20, 15].item() == 1 and flat[32, 20].item() == 3  # layer 0 wins overlaps
    assert reference["overlapping_pixels"] == 10 * 8 + 15 * 8 and reference["segmentation_layers"] is sample.segments
    assert {s["id"] for s in reference["segments_info"]} == {1, 2, 3, 4}


def test_layered_targets_give_the_dense_loss():
    sample = layered_sample()
    map_targets, classes = encode_target_map(sample)
    dense, _ = encode_targets(sample)
    model = tiny_model(3)
    pixel_values = COLLATE([{"index": 0, "image": sample.image, "mask_labels": dense, "class_labels": classes}])[
        "pixel_values"
    ]
    results = []
    for targets in (dense, map_targets):
        torch.manual_seed(2)
        out = model(pixel_values, mask_labels=[targets], class_labels=[classes])
        results.append(out.loss_dict)
    for key in results[0]:
        torch.testing.assert_close(results[1][key], results[0][key], rtol=1e-5, atol=1e-6, msg=key)


def test_instance_ap_reads_the_layers_of_overlapping_references():
    from m2f_hf.evaluation import InstanceEvaluator

    sample = layered_sample()
    reference = reference_from_sample(sample)
    masks, classes = encode_targets(sample)  # the three full (overlapping) instances
    prediction = {
        "segmentation": masks.long(),
        "segments_info": [{"id": i + 1, "label_id": int(c), "score": 0.9} for i, c in enumerate(classes)],
    }
    id2label = {0: "a", 1: "b", 2: "c"}
    layered = InstanceEvaluator(id2label, thing_ids=[0, 1, 2])
    layered.process([prediction], [reference])
    assert layered.evaluate()["AP"] == pytest.approx(100.0)
    # Read flat, the later instance has lost its overlaps (IoU 240 / 440): the perfect prediction no longer scores 100.
    flat = InstanceEvaluator(id2label, thing_ids=[0, 1, 2])
    flat.process([prediction], [{k: v for k, v in reference.items() if k != "segmentation_layers"}])
    assert flat.evaluate()["AP"] < 90
    with pytest.raises(ValueError, match=r"segmentation_layers.*expected \(layers, 40, 48\)"):
        bad = InstanceEvaluator(id2label, thing_ids=[0, 1, 2])
        bad.process([prediction], [{**reference, "segmentation_layers": sample.segments[:, :20]}])
