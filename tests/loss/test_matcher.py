"""Hungarian matcher: hand-built costs with known optimal assignments, constructed predictions, robustness."""

import math

import pytest
import torch

from m2f_hf.matcher import HungarianMatcher, assign, pairwise_dice_cost, pairwise_sigmoid_ce_cost

BIG = 20.0  # a logit whose sigmoid is 1 to float32 precision


def make_matcher(num_points=256):
    return HungarianMatcher(cost_class=2.0, cost_mask=5.0, cost_dice=5.0, num_points=num_points)


def distinct_masks(num, size=16):
    """`num` disjoint horizontal bands covering the image: every mask differs from every other."""
    masks = torch.zeros(num, size, size)
    bounds = torch.linspace(0, size, num + 1).long()
    for i in range(num):
        masks[i, bounds[i] : bounds[i + 1]] = 1
    return masks


def perfect_predictions(masks, classes, query_of_target, num_queries, num_labels):
    """Logits that predict target t exactly at query `query_of_target[t]`, and "no object" elsewhere."""
    mask_logits = torch.full((num_queries, *masks.shape[-2:]), -BIG)
    class_logits = torch.full((num_queries, num_labels + 1), -BIG)
    class_logits[:, -1] = BIG
    for target, query in enumerate(query_of_target):
        mask_logits[query] = BIG * (2 * masks[target] - 1)
        class_logits[query, -1] = -BIG
        class_logits[query, classes[target]] = BIG
    return mask_logits, class_logits


def test_assign_finds_optimum_where_greedy_fails():
    # Greedy (row 0 takes its cheapest column 0) costs 1 + 10 = 11; the optimum 0->1, 1->0 costs 2 + 2 = 4.
    cost = torch.tensor([[1.0, 2.0], [2.0, 10.0]])
    rows, cols = assign(cost)
    assert rows.tolist() == [0, 1] and cols.tolist() == [1, 0]


def test_assign_rectangular_leaves_worst_queries_unmatched():
    cost = torch.tensor([[5.0, 5.0], [0.0, 9.0], [9.0, 0.0], [3.0, 3.0]])
    rows, cols = assign(cost)
    assert rows.tolist() == [1, 2] and cols.tolist() == [0, 1]
    assert rows.dtype == cols.dtype == torch.int64


def test_pairwise_costs_match_elementwise_definitions():
    torch.manual_seed(0)
    logits, targets = torch.randn(4, 50), (torch.rand(3, 50) > 0.5).float()
    bce = pairwise_sigmoid_ce_cost(logits, targets)
    dice = pairwise_dice_cost(logits, targets)
    for q in range(4):
        for t in range(3):
            expected = torch.nn.functional.binary_cross_entropy_with_logits(logits[q], targets[t])
            assert bce[q, t].item() == pytest.approx(expected.item(), rel=1e-5)
            p = logits[q].sigmoid()
            expected_dice = 1 - (2 * (p * targets[t]).sum() + 1) / (p.sum() + targets[t].sum() + 1)
            assert dice[q, t].item() == pytest.approx(expected_dice.item(), rel=1e-5)


def test_perfect_predictions_match_identity():
    torch.manual_seed(0)
    masks, classes = distinct_masks(4), torch.tensor([0, 1, 2, 1])
    mask_logits, class_logits = perfect_predictions(masks, classes, [0, 1, 2, 3], num_queries=4, num_labels=3)
    ((queries, targets),) = make_matcher()(mask_logits[None], class_logits[None], [masks], [classes])
    assert queries.tolist() == [0, 1, 2, 3] and targets.tolist() == [0, 1, 2, 3]


def test_permutation_recovered_per_image():
    torch.manual_seed(0)
    perms = [[5, 0, 3], [2, 4]]
    batch_masks, batch_classes, batch_mask_logits, batch_class_logits = [], [], [], []
    for perm in perms:
        masks, classes = distinct_masks(len(perm)), torch.arange(len(perm))
        mask_logits, class_logits = perfect_predictions(masks, classes, perm, num_queries=6, num_labels=3)
        batch_masks.append(masks)
        batch_classes.append(classes)
        batch_mask_logits.append(mask_logits)
        batch_class_logits.append(class_logits)
    indices = make_matcher()(
        torch.stack(batch_mask_logits), torch.stack(batch_class_logits), batch_masks, batch_classes
    )
    for (queries, targets), perm in zip(indices, perms):
        assert dict(zip(targets.tolist(), queries.tolist())) == dict(enumerate(perm))


def test_class_cost_decides_between_identical_masks():
    # Two targets with the same mask: only the classes tell which query goes where.
    masks = torch.ones(2, 8, 8)
    classes = torch.tensor([0, 1])
    mask_logits = torch.full((1, 2, 8, 8), BIG)
    class_logits = torch.tensor([[[-BIG, BIG, -BIG], [BIG, -BIG, -BIG]]])  # query 0 says class 1, query 1 class 0
    ((queries, targets),) = make_matcher()(mask_logits, class_logits, [masks], [classes])
    assert dict(zip(targets.tolist(), queries.tolist())) == {0: 1, 1: 0}


def test_no_targets_gives_empty_match():
    matcher = make_matcher()
    indices = matcher(
        torch.randn(2, 4, 8, 8),
        torch.randn(2, 4, 3),
        [torch.zeros(0, 8, 8), distinct_masks(2, 8)],
        [torch.zeros(0, dtype=torch.long), torch.tensor([0, 1])],
    )
    assert indices[0][0].numel() == 0 and indices[0][1].numel() == 0
    assert sorted(indices[1][1].tolist()) == [0, 1]


def test_nan_costs_are_sanitised_with_a_warning():
    masks, classes = distinct_masks(2, 8), torch.tensor([0, 1])
    mask_logits, class_logits = perfect_predictions(masks, classes, [1, 2], num_queries=4, num_labels=3)
    mask_logits[0] = float("nan")  # a diverged query
    class_logits[3] = float("inf")
    with pytest.warns(RuntimeWarning, match="NaN or infinite"):
        ((queries, targets),) = make_matcher()(mask_logits[None], class_logits[None], [masks], [classes])
    # The valid queries still win.
    assert dict(zip(targets.tolist(), queries.tolist())) == {0: 1, 1: 2}


def test_all_nan_costs_still_assign():
    with pytest.warns(RuntimeWarning):
        rows, cols = assign(torch.full((3, 2), math.nan))
    assert len(rows) == 2 and len(set(cols.tolist())) == 2


def test_more_targets_than_queries_matches_the_best_pairs():
    # 5 targets, 3 queries predicting targets 4, 0 and 2 exactly: those three pairs are matched, 1 and 3 left out.
    masks, classes = distinct_masks(5, 10), torch.tensor([0, 1, 2, 0, 1])
    mask_logits, class_logits = torch.full((3, 10, 10), -BIG), torch.full((3, 4), -BIG)
    for query, target in enumerate([4, 0, 2]):
        mask_logits[query] = BIG * (2 * masks[target] - 1)
        class_logits[query, classes[target]] = BIG
    ((queries, targets),) = make_matcher()(mask_logits[None], class_logits[None], [masks], [classes])
    assert queries.tolist() == [0, 1, 2] and targets.tolist() == [4, 0, 2]


def test_more_targets_than_queries_is_the_rectangular_optimum():
    # The assignment is the cheapest min(Q, N) pairs of the rectangular cost: check against all injections.
    import itertools

    torch.manual_seed(0)
    matcher = make_matcher(num_points=64)
    masks = (torch.rand(5, 8, 8) > 0.5).float()
    classes = torch.randint(0, 3, (5,))
    mask_logits, class_logits = torch.randn(1, 3, 8, 8), torch.randn(1, 3, 4)
    torch.manual_seed(1)
    (cost,) = matcher.cost_matrices(mask_logits, class_logits, [masks], [classes])
    torch.manual_seed(1)
    ((queries, targets),) = matcher(mask_logits, class_logits, [masks], [classes])
    best = min(sum(cost[q, t].item() for q, t in enumerate(p)) for p in itertools.permutations(range(5), 3))
    assert queries.tolist() == [0, 1, 2] and len(set(targets.tolist())) == 3
    assert sum(cost[q, t].item() for q, t in zip(queries, targets)) == pytest.approx(best, rel=1e-6)


def test_mismatched_labels_are_a_clear_error():
    with pytest.raises(ValueError, match="one entry per image"):
        make_matcher()(torch.randn(2, 3, 8, 8), torch.randn(2, 3, 4), [distinct_masks(2, 8)], [torch.arange(2)])
    with pytest.raises(ValueError, match="num_targets = len"):
        make_matcher()(torch.randn(1, 3, 8, 8), torch.randn(1, 3, 4), [distinct_masks(2, 8)], [torch.arange(3)])


def test_targets_of_different_sizes_read_as_zero_padded():
    # A target smaller than the batch frame must read as if zero-padded, exactly as a padded tensor would.
    from m2f_hf.point_sampling import sample_targets

    torch.manual_seed(0)
    small = (torch.rand(2, 10, 12) > 0.5).float()
    padded = torch.zeros(2, 16, 20)
    padded[:, :10, :12] = small
    coords = torch.rand(2, 300, 2)
    torch.testing.assert_close(sample_targets(small, coords, frame_size=(16, 20)), sample_targets(padded, coords))
