"""Inference shortcuts inside the pixel decoder give the numbers of the plain formulation."""

from __future__ import annotations

import torch

from m2f_hf import M2FForUniversalSegmentation, pixel_decoder
from m2f_hf.testing import tiny_config


def test_small_softmax_matches_torch_and_its_gradient():
    logits = torch.randn(3, 5, 2, 12, dtype=torch.float64, requires_grad=True)
    torch.testing.assert_close(pixel_decoder._SmallSoftmax.apply(logits), logits.softmax(-1))
    assert torch.autograd.gradcheck(pixel_decoder._SmallSoftmax.apply, (logits,))
    large = torch.tensor([[1000.0, 0.0, -1000.0]])  # no overflow: the maximum is subtracted first
    torch.testing.assert_close(pixel_decoder._SmallSoftmax.apply(large), large.softmax(-1))


def test_inference_feed_forward_in_blocks_equals_the_autograd_path(monkeypatch):
    """Without autograd the encoder FFN runs a block of tokens at a time; with it, in one product."""
    monkeypatch.setattr(pixel_decoder, "_FFN_CHUNK", 7)  # several blocks, the last one partial
    torch.manual_seed(0)
    model = M2FForUniversalSegmentation(tiny_config()).eval()
    features = model.model.backbone(torch.randn(2, 3, 64, 96))
    features = [feature.detach() for feature in features]
    with torch.no_grad():
        blocks = model.model.pixel_decoder(features)
    plain = model.model.pixel_decoder(features)  # autograd on: the one-product path
    assert plain.mask_features.requires_grad
    torch.testing.assert_close(blocks.mask_features, plain.mask_features.detach(), atol=1e-6, rtol=1e-6)
    for block, full in zip(blocks.multi_scale_features, plain.multi_scale_features):
        torch.testing.assert_close(block, full.detach(), atol=1e-6, rtol=1e-6)


def test_offsets_normalised_inside_the_product_equal_dividing_afterwards():
    """Sampling locations: dividing the offset rows of the weights by (width, height) = dividing the offsets."""
    torch.manual_seed(0)
    attention = pixel_decoder.MultiScaleDeformableAttention(embed_dim=32, num_heads=2, num_levels=2, num_points=3)
    torch.nn.init.normal_(attention.sampling_offsets.weight)
    torch.nn.init.normal_(attention.sampling_offsets.bias)
    spatial_shapes = torch.tensor([[6, 5], [3, 2]])
    level_start_index = torch.tensor([0, 30])
    query, value = torch.randn(2, 36, 32), torch.randn(2, 36, 32)
    reference = torch.rand(36, 2)
    captured = {}

    def capture(value, shapes, starts, locations, weights):
        captured["locations"] = locations
        return torch.zeros(value.shape[0], locations.shape[1], 32)

    with torch.no_grad():
        original = pixel_decoder.multi_scale_deformable_attention
        pixel_decoder.multi_scale_deformable_attention = capture
        try:
            attention(query, value, reference_points=reference, spatial_shapes=spatial_shapes,
                      level_start_index=level_start_index)  # fmt: skip
        finally:
            pixel_decoder.multi_scale_deformable_attention = original
        offsets = attention.sampling_offsets(query).view(2, 36, 2, 2, 3, 2)
        expected = (
            reference[None, :, None, None, None, :] + offsets / spatial_shapes.flip(-1)[None, None, None, :, None]
        )
    torch.testing.assert_close(captured["locations"], expected, atol=1e-6, rtol=1e-6)


def test_blockwise_training_feed_forward_matches_autograd(monkeypatch):
    """The training FFN keeps only its input and recomputes the hidden blocks: same values and gradients."""
    monkeypatch.setattr(pixel_decoder, "_FFN_CHUNK", 7)
    torch.manual_seed(0)
    x = torch.randn(2, 11, 8, dtype=torch.float64, requires_grad=True)
    fc1, fc2 = torch.nn.Linear(8, 16).double(), torch.nn.Linear(16, 8).double()
    params = (fc1.weight, fc1.bias, fc2.weight, fc2.bias)
    assert torch.autograd.gradcheck(pixel_decoder._BlockwiseReluFeedForward.apply, (x, *params))
    blockwise = pixel_decoder._BlockwiseReluFeedForward.apply(x, *params)
    plain = fc2(torch.relu(fc1(x)))
    torch.testing.assert_close(blockwise, plain)
    grad = torch.randn_like(plain)
    got = torch.autograd.grad(blockwise, (x, *params), grad)
    expected = torch.autograd.grad(plain, (x, *params), grad)
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e)


def test_encoder_layer_keeps_no_hidden_activation_for_backward():
    """With autograd the encoder FFN saves its input, not the 4x-wide hidden activation."""
    layer = pixel_decoder.DeformableEncoderLayer(
        embed_dim=16, num_heads=2, num_levels=1, num_points=2, ffn_dim=64, dropout=0.0, activation="relu"
    ).train()
    hidden = torch.randn(1, 20, 16, requires_grad=True)
    saved_shapes = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved_shapes.append(tuple(t.shape)) or t, lambda t: t):
        layer(hidden, torch.zeros(1, 20, 16), torch.rand(20, 2), torch.tensor([[4, 5]]), torch.tensor([0]))
    assert (1, 20, 64) not in saved_shapes and (20, 64) not in saved_shapes
