"""Mask2Former criterion: closed-form cases, deep supervision, and parity with transformers' `Mask2FormerLoss`."""

import math

import pytest
import torch
import torch.nn.functional as F
from transformers import Mask2FormerConfig
from transformers.models.mask2former.modeling_mask2former import Mask2FormerLoss

import m2f_hf.point_sampling as point_sampling
from m2f_hf.loss import Mask2FormerCriterion

_TORCH_RAND = torch.rand
WEIGHTS = {"loss_cross_entropy": 2.0, "loss_mask": 5.0, "loss_dice": 5.0}
BIG = 30.0


def make_criterion(num_labels=4, num_points=64, **overrides):
    kwargs = dict(
        num_labels=num_labels,
        class_weight=2.0,
        mask_weight=5.0,
        dice_weight=5.0,
        no_object_weight=0.1,
        num_points=num_points,
        oversample_ratio=3.0,
        importance_sample_ratio=0.75,
    )
    kwargs.update(overrides)
    return Mask2FormerCriterion(**kwargs)


def random_batch(sizes=((16, 16), (16, 16)), num_targets=(3, 2), num_queries=6, num_labels=4, mask_size=(8, 8), aux=2):
    masks = torch.randn(len(sizes), num_queries, *mask_size)
    classes = torch.randn(len(sizes), num_queries, num_labels + 1)
    mask_labels = [(torch.rand(n, *size) > 0.5).float() for n, size in zip(num_targets, sizes)]
    class_labels = [torch.randint(0, num_labels, (n,)) for n in num_targets]
    auxiliary = [
        {"masks_queries_logits": torch.randn_like(masks), "class_queries_logits": torch.randn_like(classes)}
        for _ in range(aux)
    ]
    return masks, classes, mask_labels, class_labels, auxiliary


def transformers_loss(num_labels, num_points, masks, classes, mask_labels, class_labels, auxiliary):
    config = Mask2FormerConfig(num_labels=num_labels, train_num_points=num_points)
    losses = Mask2FormerLoss(config, WEIGHTS)(masks, classes, mask_labels, class_labels, auxiliary)
    # transformers weights the terms in the model (`get_loss_dict`); our criterion returns them weighted.
    return {key: value * next(w for name, w in WEIGHTS.items() if name in key) for key, value in losses.items()}


def test_parity_with_transformers_same_random_state():
    # Our criterion draws its random numbers in the same order as transformers' (per prediction: the matcher's
    # uniform points, then the importance-sampling candidates, then the random fill), so with the same seed the
    # points - and hence the losses - are the same. On the CPU one `torch.rand(batch, K, 2)` call yields the same
    # numbers as `batch` calls of `torch.rand(1, K, 2)`, which is what transformers' per-image loop does.
    assert_same_losses_as_transformers_same_seed()


def assert_same_losses_as_transformers_same_seed():
    torch.manual_seed(0)
    batch = random_batch()
    torch.manual_seed(123)
    expected = transformers_loss(4, 64, *batch)
    torch.manual_seed(123)
    ours = make_criterion()(*batch)
    assert ours.keys() == expected.keys()
    for key in expected:
        torch.testing.assert_close(ours[key], expected[key], rtol=1e-5, atol=1e-6, msg=key)


@pytest.mark.parametrize("masks_per_block", [1, 2, 3])
def test_importance_sampling_in_blocks_draws_the_same_points(monkeypatch, masks_per_block):
    # The candidates are drawn and scored a block of masks at a time (memory); on the CPU the draws follow each other
    # in the global generator as one draw for all masks would, so the losses still equal transformers'.
    num_candidates = 64 * 3  # make_criterion's K = 64, oversample ratio 3
    monkeypatch.setattr(point_sampling, "_POINTS_PER_BLOCK", num_candidates * masks_per_block)
    assert_same_losses_as_transformers_same_seed()


def fixed_rand(*size, device=None, dtype=None, **kwargs):
    """A stand-in for `torch.rand` whose values depend only on the last two sizes (points, 2): every call with the
    same number of points gives the same points, whatever the batch size and whichever call comes first."""
    if len(size) == 1 and isinstance(size[0], (tuple, list, torch.Size)):
        size = tuple(size[0])
    generator = torch.Generator().manual_seed(size[-2] * 7 + 1)
    pattern = _TORCH_RAND(size[-2], size[-1], generator=generator)
    return pattern.expand(*size).clone().to(device=device, dtype=dtype or torch.float32)


def test_parity_with_transformers_fixed_points(monkeypatch):
    # On a GPU one batched `torch.rand(batch, K, 2)` call (ours) need not give the numbers of `batch` per-image calls
    # (transformers'), and any future change of how we group draws would break the same-seed comparison. To compare
    # the arithmetic independently of the order and grouping of random draws, both implementations read the same
    # fixed points: `torch.rand` is replaced by a function of the number of points only.
    torch.manual_seed(1)
    batch = random_batch(num_targets=(3, 4))
    monkeypatch.setattr(torch, "rand", fixed_rand)
    expected = transformers_loss(4, 48, *batch)
    ours = make_criterion(num_points=48)(*batch)
    for key in expected:
        torch.testing.assert_close(ours[key], expected[key], rtol=1e-5, atol=1e-6, msg=key)


def test_unpadded_targets_read_as_zero_padded_to_the_batch_frame():
    # Targets smaller than the batch's largest are read as if zero-padded to it (the original pads them to the padded
    # image), without building the padded tensor. transformers' matcher reads them in their own frame instead, so
    # this case is compared with our own padded run rather than with transformers.
    torch.manual_seed(1)
    masks, classes, mask_labels, class_labels, aux = random_batch(sizes=((16, 20), (12, 14)), num_targets=(3, 4))
    padded = [F.pad(m, (0, 20 - m.shape[-1], 0, 16 - m.shape[-2])) for m in mask_labels]
    torch.manual_seed(2)
    ours = make_criterion()(masks, classes, mask_labels, class_labels, aux)
    torch.manual_seed(2)
    reference = make_criterion()(masks, classes, padded, class_labels, aux)
    for key in reference:
        torch.testing.assert_close(ours[key], reference[key], msg=key)


def perfect_batch(num_queries=5, num_labels=3, size=8):
    """Targets of two images and logits predicting them exactly (queries 1, 3 and 4, 0), "no object" elsewhere."""
    mask_labels = [(torch.rand(2, size, size) > 0.5).float(), (torch.rand(2, size, size) > 0.5).float()]
    class_labels = [torch.tensor([0, 2]), torch.tensor([1, 1])]
    query_of_target = [[1, 3], [4, 0]]
    masks = torch.full((2, num_queries, size, size), -BIG)
    classes = torch.full((2, num_queries, num_labels + 1), -BIG)
    classes[..., -1] = BIG
    for b in range(2):
        for t, q in enumerate(query_of_target[b]):
            masks[b, q] = BIG * (2 * mask_labels[b][t] - 1)
            classes[b, q] = -BIG
            classes[b, q, class_labels[b][t]] = BIG
    return masks, classes, mask_labels, class_labels


def pixel_centre_points(batch, num_points, *, device=None):
    """Points at pixel centres of an 8x8 map, where bilinear reading returns the pixel values exactly."""
    side = 8
    centres = (torch.arange(side) + 0.5) / side
    grid = torch.stack(torch.meshgrid(centres, centres, indexing="xy"), -1).reshape(-1, 2)
    return grid[torch.arange(num_points) % grid.shape[0]].expand(batch, -1, -1).clone()


def test_perfect_predictions_give_zero_loss_at_pixel_centres(monkeypatch):
    # Closed form: with points at pixel centres the sampled targets are exactly 0/1 and the logits exactly +-BIG, so
    # cross-entropy, BCE and dice all vanish (dice's +1 smoothing cancels: (2|t| + 1) / (2|t| + 1)).
    torch.manual_seed(0)
    monkeypatch.setattr(point_sampling, "uniform_points", pixel_centre_points)
    monkeypatch.setattr(
        "m2f_hf.loss.importance_sample_points",
        lambda logits, num_points, **kwargs: pixel_centre_points(logits.shape[0], num_points),
    )
    monkeypatch.setattr("m2f_hf.matcher.uniform_points", pixel_centre_points)
    losses = make_criterion(num_labels=3, num_points=64)(*perfect_batch())
    for key, value in losses.items():
        assert value.item() == pytest.approx(0.0, abs=1e-5), key


def test_perfect_predictions_are_minimal():
    # At random points the bilinear reading of a mask edge is fractional, so the loss is not 0, but any perturbation
    # of the perfect logits (here: noise, or swapping two matched queries' classes) increases it.
    torch.manual_seed(0)
    masks, classes, mask_labels, class_labels = perfect_batch()
    criterion = make_criterion(num_labels=3, num_points=256)
    torch.manual_seed(5)
    perfect = sum(criterion(masks, classes, mask_labels, class_labels).values())
    for trial in range(3):
        torch.manual_seed(10 + trial)
        noisy_masks = masks + 10 * torch.randn_like(masks)
        noisy_classes = classes + 10 * torch.randn_like(classes)
        torch.manual_seed(5)
        assert sum(criterion(noisy_masks, noisy_classes, mask_labels, class_labels).values()) > perfect


def test_image_without_targets_gives_only_the_no_object_term():
    torch.manual_seed(0)
    classes = torch.randn(1, 6, 5)
    losses = make_criterion()(torch.randn(1, 6, 8, 8), classes, [torch.zeros(0, 16, 16)], [torch.zeros(0).long()])
    # Every query's target is "no object": the weighted mean of its NLL with all weights equal to 0.1 is the mean.
    expected = -F.log_softmax(classes, -1)[0, :, -1].mean() * WEIGHTS["loss_cross_entropy"]
    torch.testing.assert_close(losses["loss_cross_entropy"], expected)
    assert losses["loss_mask"].item() == 0 and losses["loss_dice"].item() == 0


def test_no_targets_still_gives_gradient_to_every_prediction():
    masks = torch.randn(1, 6, 8, 8, requires_grad=True)
    classes = torch.randn(1, 6, 5, requires_grad=True)
    losses = make_criterion()(masks, classes, [torch.zeros(0, 16, 16)], [torch.zeros(0).long()])
    sum(losses.values()).backward()
    assert masks.grad is not None and torch.all(masks.grad == 0)
    assert classes.grad.abs().sum() > 0


def test_no_object_weight_closed_form():
    # One query matched to class 0, one unmatched: CE = (w_c * nll_0 + w_no * nll_no) / (w_c + w_no).
    classes = torch.randn(1, 2, 3)
    mask_labels = [torch.ones(1, 8, 8)]
    masks = torch.stack([torch.full((8, 8), BIG), torch.full((8, 8), -BIG)])[None]
    classes[0, 0] = torch.tensor([1.0, 0.0, 0.0])
    losses = make_criterion(num_labels=2)(masks, classes, mask_labels, [torch.tensor([0])])
    log_probs = F.log_softmax(classes[0], -1)
    expected = (-log_probs[0, 0] - 0.1 * log_probs[1, -1]) / 1.1
    torch.testing.assert_close(losses["loss_cross_entropy"], 2.0 * expected)


def test_deep_supervision_keys_and_weights():
    torch.manual_seed(0)
    batch = random_batch(aux=3)
    torch.manual_seed(1)
    losses = make_criterion()(*batch)
    assert set(losses) == {f"{k}{s}" for k in WEIGHTS for s in ["", "_0", "_1", "_2"]}
    torch.manual_seed(1)
    doubled = make_criterion(class_weight=4.0, mask_weight=10.0, dice_weight=10.0)(*batch[:4])
    # Scaling every weight (and so every matching cost) by 2 keeps the matching and doubles each term.
    for key in WEIGHTS:
        torch.testing.assert_close(doubled[key], 2 * losses[key])


def test_num_masks_is_averaged_and_clamped():
    labels = [torch.arange(3), torch.arange(2)]
    assert Mask2FormerCriterion.num_masks(labels, torch.device("cpu")).item() == 5
    assert Mask2FormerCriterion.num_masks([torch.zeros(0)], torch.device("cpu")).item() == 1


def test_class_id_outside_label_set_is_a_clear_error():
    with pytest.raises(ValueError, match=r"classes must be in \[0, 4\)"):
        make_criterion()(torch.randn(1, 6, 8, 8), torch.randn(1, 6, 5), [torch.ones(1, 8, 8)], [torch.tensor([4])])


def test_bool_and_uint8_targets_give_the_float_result():
    torch.manual_seed(0)
    masks, classes, mask_labels, class_labels, aux = random_batch()
    results = []
    for dtype in (torch.float32, torch.bool, torch.uint8):
        torch.manual_seed(3)
        results.append(make_criterion()(masks, classes, [m.to(dtype) for m in mask_labels], class_labels, aux))
    for other in results[1:]:
        for key in results[0]:
            torch.testing.assert_close(other[key], results[0][key])


def test_model_loss_has_one_term_set_per_decoder_layer():
    from m2f_hf import M2FForUniversalSegmentation
    from m2f_hf.testing import tiny_config

    torch.manual_seed(0)
    config = tiny_config(num_labels=3)
    model = M2FForUniversalSegmentation(config)
    pixel_values = torch.randn(1, 3, 64, 64)
    out = model(pixel_values, mask_labels=[torch.ones(1, 64, 64)], class_labels=[torch.tensor([2])])
    assert len(out.loss_dict) == 3 * (config.decoder_layers + 1)
    assert math.isfinite(out.loss.item())
    assert not any(k.startswith("criterion") for k in model.state_dict())
