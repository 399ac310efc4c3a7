"""Index-map targets (`SegmentIndexMap`) against dense masks, and crowded images (more targets than queries)."""

import warnings

import pytest
import torch

from m2f_hf.loss import Mask2FormerCriterion
from m2f_hf.matcher import HungarianMatcher
from m2f_hf.point_sampling import sample_targets
from m2f_hf.segment_targets import SegmentIndexMap, sample_all_targets, sample_target_pairs


@pytest.fixture
def float64():
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def make_criterion(num_labels=4, num_points=96):
    return Mask2FormerCriterion(
        num_labels=num_labels,
        class_weight=2.0,
        mask_weight=5.0,
        dice_weight=5.0,
        no_object_weight=0.1,
        num_points=num_points,
        oversample_ratio=3.0,
        importance_sample_ratio=0.75,
    )


def random_map(num_targets, height, width, *, layers=1, generator=None):
    """Blocky random targets with ignore (-1) regions; every target touches some image border with high probability
    (blocks of 3x3 pixels over the whole map). With `layers` > 1 the targets are split between layers, the extra
    layers mostly ignore, so that targets of different layers overlap."""
    blocks = torch.randint(-1, num_targets, (layers, (height + 2) // 3, (width + 2) // 3), generator=generator)
    index_map = blocks.repeat_interleave(3, 1).repeat_interleave(3, 2)[:, :height, :width].clone()
    if layers > 1:
        owner = torch.arange(num_targets) % layers  # target k lives in layer k % layers
        for layer in range(layers):
            wrong = (index_map[layer] >= 0) & (owner[index_map[layer].clamp(min=0)] != layer)
            index_map[layer][wrong] = -1
    index_map = index_map.to(torch.int32)
    return SegmentIndexMap(index_map if layers > 1 else index_map[0])


def test_reading_the_map_equals_reading_the_masks(float64):
    generator = torch.Generator().manual_seed(0)
    for layers, (height, width), frame in [(1, (13, 17), None), (1, (10, 12), (16, 20)), (3, (9, 11), (12, 11))]:
        targets = random_map(6, height, width, layers=layers, generator=generator)
        assert targets.index_map[..., 0, :].ge(0).any() and targets.index_map[..., :, -1].ge(0).any()  # the border
        dense = targets.to_dense(6).double()
        # Points over the whole frame and beyond it (zero padding), and exactly on pixel centres and edges.
        coords = torch.rand(400, 2, generator=generator) * 1.4 - 0.2
        coords[:5] = torch.tensor([[0.0, 0.0], [1.0, 1.0], [0.5 / width, 0.5 / height], [1.0, 0.0], [0.25, 1.0]])
        expected = sample_targets(dense, coords[None].expand(6, -1, -1), frame_size=frame)
        assert expected.abs().sum() > 0 and (expected - expected.round()).abs().max() > 0.1  # fractional readings
        torch.testing.assert_close(
            sample_all_targets(targets, coords, 6, frame_size=frame), expected, rtol=0, atol=1e-12
        )
        which = torch.randint(0, 6, (9,), generator=generator)
        pair_coords = torch.rand(9, 50, 2, generator=generator)
        torch.testing.assert_close(
            sample_target_pairs(targets, which, pair_coords, frame_size=frame),
            sample_targets(dense[which], pair_coords, frame_size=frame),
            rtol=0,
            atol=1e-12,
        )


def random_predictions(batch, num_queries, num_labels, size, aux, requires_grad=True):
    def leaf(*shape):
        return torch.randn(*shape).requires_grad_(requires_grad)

    masks = leaf(batch, num_queries, *size)
    classes = leaf(batch, num_queries, num_labels + 1)
    auxiliary = [
        {"masks_queries_logits": leaf(batch, num_queries, *size), "class_queries_logits": leaf(*classes.shape)}
        for _ in range(aux)
    ]
    return masks, classes, auxiliary


def losses_and_grads(criterion, predictions, mask_labels, class_labels, seed):
    masks, classes, auxiliary = predictions
    leaves = [masks, classes] + [t for a in auxiliary for t in a.values()]
    for leaf in leaves:
        leaf.grad = None
    torch.manual_seed(seed)
    losses = criterion(masks, classes, mask_labels, class_labels, auxiliary)
    sum(losses.values()).backward()
    return {k: v.detach() for k, v in losses.items()}, [leaf.grad.clone() for leaf in leaves]


@pytest.mark.parametrize("layers", [1, 2])
def test_criterion_losses_and_gradients_agree_with_dense_targets(float64, layers):
    generator = torch.Generator().manual_seed(layers)
    # Targets larger than the predictions and of two sizes (read as padded to the batch frame), ignore regions,
    # targets touching the border; with layers, overlapping targets.
    maps = [
        random_map(5, 32, 40, layers=layers, generator=generator),
        random_map(3, 24, 28, layers=layers, generator=generator),
    ]
    class_labels = [torch.randint(0, 4, (5,), generator=generator), torch.randint(0, 4, (3,), generator=generator)]
    dense = [m.to_dense(len(c)) for m, c in zip(maps, class_labels)]
    if layers > 1:
        assert (dense[0].sum(0) > 1).any()  # some pixels belong to two targets
    torch.manual_seed(0)
    predictions = random_predictions(2, 6, 4, (8, 10), aux=2)
    criterion = make_criterion()
    dense_losses, dense_grads = losses_and_grads(criterion, predictions, dense, class_labels, seed=7)
    map_losses, map_grads = losses_and_grads(criterion, predictions, maps, class_labels, seed=7)
    assert dense_losses.keys() == map_losses.keys() and len(dense_losses) == 9
    for key in dense_losses:
        torch.testing.assert_close(map_losses[key], dense_losses[key], rtol=0, atol=1e-6, msg=key)
    for dense_grad, map_grad in zip(dense_grads, map_grads):
        assert dense_grad.abs().sum() > 0
        torch.testing.assert_close(map_grad, dense_grad, rtol=0, atol=1e-6)


def test_matcher_gives_the_same_assignment(float64):
    generator = torch.Generator().manual_seed(3)
    maps = [random_map(7, 20, 20, generator=generator), random_map(4, 20, 20, layers=2, generator=generator)]
    class_labels = [torch.randint(0, 4, (7,), generator=generator), torch.randint(0, 4, (4,), generator=generator)]
    dense = [m.to_dense(len(c)) for m, c in zip(maps, class_labels)]
    matcher = HungarianMatcher(cost_class=2.0, cost_mask=5.0, cost_dice=5.0, num_points=200)
    for trial in range(5):
        masks, classes = torch.randn(2, 9, 10, 10), torch.randn(2, 9, 5)
        torch.manual_seed(trial)
        dense_costs = matcher.cost_matrices(masks, classes, dense, class_labels)
        torch.manual_seed(trial)
        map_costs = matcher.cost_matrices(masks, classes, maps, class_labels)
        for dense_cost, map_cost in zip(dense_costs, map_costs):
            torch.testing.assert_close(map_cost, dense_cost, rtol=0, atol=1e-10)
        torch.manual_seed(trial)
        dense_indices = matcher(masks, classes, dense, class_labels)
        torch.manual_seed(trial)
        map_indices = matcher(masks, classes, maps, class_labels)
        for (dq, dt), (mq, mt) in zip(dense_indices, map_indices):
            assert dq.tolist() == mq.tolist() and dt.tolist() == mt.tolist()


def test_float32_forms_agree_too():
    generator = torch.Generator().manual_seed(5)
    maps = [random_map(5, 32, 32, generator=generator)]
    class_labels = [torch.randint(0, 4, (5,), generator=generator)]
    torch.manual_seed(0)
    predictions = random_predictions(1, 6, 4, (8, 8), aux=1)
    criterion = make_criterion()
    dense_losses, dense_grads = losses_and_grads(criterion, predictions, [maps[0].to_dense(5)], class_labels, 1)
    map_losses, map_grads = losses_and_grads(criterion, predictions, maps, class_labels, 1)
    for key in dense_losses:
        torch.testing.assert_close(map_losses[key], dense_losses[key], rtol=1e-5, atol=1e-5, msg=key)
    for dense_grad, map_grad in zip(dense_grads, map_grads):
        torch.testing.assert_close(map_grad, dense_grad, rtol=1e-4, atol=1e-6)


def test_bad_index_maps_are_clear_errors():
    criterion = make_criterion()
    masks, classes = torch.randn(1, 6, 8, 8), torch.randn(1, 6, 5)
    with pytest.raises(ValueError, match=r"Image 0: the target map holds the value 3, .* \[0, 2\)"):
        criterion(
            masks,
            classes,
            [SegmentIndexMap(torch.tensor([[0, 1], [3, -1]], dtype=torch.int32))],
            [torch.tensor([0, 1])],
        )
    with pytest.raises(ValueError, match="ignore_index 1 is a target index"):
        criterion(
            masks,
            classes,
            [SegmentIndexMap(torch.zeros(4, 4, dtype=torch.int32), ignore_index=1)],
            [torch.tensor([0, 1])],
        )
    with pytest.raises(ValueError, match="must hold integers"):
        SegmentIndexMap(torch.zeros(4, 4))
    with pytest.raises(ValueError, match=r"\(height, width\) or \(layers, height, width\)"):
        SegmentIndexMap(torch.zeros(4, dtype=torch.int32))


def test_segment_index_map_pads_moves_and_converts():
    targets = SegmentIndexMap(torch.tensor([[[0, -1], [1, 1]], [[2, 2], [-1, -1]]], dtype=torch.int32))
    padded = targets.pad(3, 4)
    assert (
        padded.shape == (2, 3, 4)
        and (padded.index_map[:, 2:] == -1).all()
        and (padded.index_map[:, :, 2:] == -1).all()
    )
    assert torch.equal(padded.index_map[:, :2, :2], targets.index_map)
    assert targets.to("cpu").ignore_index == -1 and targets.to("cpu").index_map.dtype == torch.int32
    dense = targets.to_dense(3)
    assert dense.tolist() == [[[1, 0], [0, 0]], [[0, 0], [1, 1]], [[1, 1], [0, 0]]]
    with pytest.raises(ValueError, match="smaller size"):
        targets.pad(1, 4)


# ------------------------------------------------------------------------------------------------ crowded images
@pytest.mark.parametrize("form", ["dense", "map"])
def test_crowded_batch_loss_equals_the_loss_of_the_matched_pairs_alone(float64, form):
    # 9 and 2 targets for 4 queries: image 0 keeps its 4 best targets. Its loss must be exactly the loss of a batch
    # holding only the matched targets (same points, same normaliser: the matched pairs), with gradients to match.
    generator = torch.Generator().manual_seed(11)
    maps = [random_map(9, 24, 24, generator=generator), random_map(2, 24, 24, generator=generator)]
    class_labels = [torch.randint(0, 4, (9,), generator=generator), torch.randint(0, 4, (2,), generator=generator)]
    targets = maps if form == "map" else [m.to_dense(len(c)) for m, c in zip(maps, class_labels)]
    torch.manual_seed(0)
    predictions = random_predictions(2, 4, 4, (8, 8), aux=0)
    criterion = make_criterion()
    torch.manual_seed(5)
    indices = criterion.matcher(predictions[0], predictions[1], targets, class_labels)
    assert len(indices[0][1]) == 4 and len(indices[1][1]) == 2
    with pytest.warns(UserWarning, match="Image 0 of the batch has 9 target segments but the model has only 4"):
        losses, grads = losses_and_grads(criterion, predictions, targets, class_labels, seed=5)
    assert criterion.last_unmatched_targets == 5
    assert all(torch.isfinite(v) for v in losses.values())

    # The reference: the same batch with image 0 reduced to its matched targets (dense masks, renumbered).
    kept = indices[0][1].sort().values
    dense0 = maps[0].to_dense(9)[kept]
    reference_targets = [dense0, maps[1].to_dense(2)]
    reference_classes = [class_labels[0][kept], class_labels[1]]
    reference, reference_grads = losses_and_grads(criterion, predictions, reference_targets, reference_classes, seed=5)
    assert criterion.last_unmatched_targets == 0
    for key in reference:
        torch.testing.assert_close(losses[key], reference[key], rtol=0, atol=1e-10, msg=key)
    for grad, reference_grad in zip(grads, reference_grads):
        torch.testing.assert_close(grad, reference_grad, rtol=0, atol=1e-10)


def test_crowded_warning_is_shown_once_per_criterion():
    criterion = make_criterion()
    masks, classes = torch.randn(1, 3, 8, 8), torch.randn(1, 3, 5)
    labels = [(torch.rand(5, 8, 8) > 0.5).float()]
    with pytest.warns(UserWarning, match="2 targets get no loss"):
        criterion(masks, classes, labels, [torch.arange(5) % 4])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        losses = criterion(masks, classes, labels, [torch.arange(5) % 4])
    assert criterion.last_unmatched_targets == 2 and torch.isfinite(sum(losses.values()))


def test_normaliser_counts_matched_pairs():
    labels = [torch.arange(7), torch.arange(2), torch.zeros(0)]
    assert Mask2FormerCriterion.num_masks(labels, torch.device("cpu"), num_queries=4).item() == 6
    assert Mask2FormerCriterion.num_masks(labels, torch.device("cpu")).item() == 9


def test_crowded_model_batch_trains():
    from m2f_hf import M2FForUniversalSegmentation
    from m2f_hf.testing import tiny_config

    torch.manual_seed(0)
    model = M2FForUniversalSegmentation(tiny_config(num_labels=3))  # 6 queries
    index_map = torch.arange(64).reshape(8, 8).repeat_interleave(8, 0).repeat_interleave(8, 1) % 20  # 20 targets
    mask_labels = [
        SegmentIndexMap(index_map.to(torch.int32)),
        SegmentIndexMap(torch.full((64, 64), -1, dtype=torch.int32)),
    ]
    class_labels = [torch.arange(20) % 3, torch.zeros(0, dtype=torch.long)]
    with pytest.warns(UserWarning, match="20 target segments but the model has only 6 queries"):
        out = model(torch.randn(2, 3, 64, 64), mask_labels=mask_labels, class_labels=class_labels)
    out.loss.backward()
    assert torch.isfinite(out.loss)
    assert model.class_predictor.weight.grad.abs().sum() > 0
    assert model.criterion.last_unmatched_targets == 14
