"""Inference shortcuts inside the pixel decoder give the numbers of the plain formulation."""

from __future__ import annotations

import torch

from m2f_hf import M2FForUniversalSegmentation, fused_linear, pixel_decoder
from m2f_hf.ops import winograd
from m2f_hf.testing import tiny_config


def test_small_softmax_matches_torch_and_its_gradient():
    logits = torch.randn(3, 5, 2, 12, dtype=torch.float64, requires_grad=True)
    torch.testing.assert_close(pixel_decoder._SmallSoftmax.apply(logits), logits.softmax(-1))
    assert torch.autograd.gradcheck(pixel_decoder._SmallSoftmax.apply, (logits,))
    large = torch.tensor([[1000.0, 0.0, -1000.0]])  # no overflow: the maximum is subtracted first
    torch.testing.assert_close(pixel_decoder._SmallSoftmax.apply(large), large.softmax(-1))


def test_inference_feed_forward_in_blocks_equals_the_autograd_path(monkeypatch):
    """Without autograd (and without oneDNN's fused linear) the encoder FFN runs a block of tokens at a time; with
    autograd, in one product."""
    monkeypatch.setattr(pixel_decoder, "_FFN_CHUNK", 7)  # several blocks, the last one partial
    monkeypatch.setattr(fused_linear, "enabled", False)  # the blocks are the path without it
    monkeypatch.setattr(winograd, "enabled", False)  # the FPN's direct convolution on both sides
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


def test_blockwise_training_norm_and_feed_forward_match_autograd(monkeypatch):
    """In training, norm + FFN + residual keep only their input and recompute blocks: same values and gradients."""
    monkeypatch.setattr(pixel_decoder, "_FFN_CHUNK", 7)
    torch.manual_seed(0)
    x = torch.randn(2, 11, 8, dtype=torch.float64, requires_grad=True)
    norm = torch.nn.LayerNorm(8).double()
    torch.nn.init.normal_(norm.weight)
    torch.nn.init.normal_(norm.bias)
    fc1, fc2 = torch.nn.Linear(8, 16).double(), torch.nn.Linear(16, 8).double()
    params = (norm.weight, norm.bias, fc1.weight, fc1.bias, fc2.weight, fc2.bias)

    def blockwise(x, norm_weight, norm_bias, weight1, bias1, weight2, bias2):
        return pixel_decoder._BlockwiseNormFeedForward.apply(
            x, norm_weight, norm_bias, norm.eps, weight1, bias1, weight2, bias2
        )

    assert torch.autograd.gradcheck(blockwise, (x, *params))
    got_out = blockwise(x, *params)
    normed = norm(x)
    plain = normed + fc2(torch.relu(fc1(normed)))
    torch.testing.assert_close(got_out, plain)
    grad = torch.randn_like(plain)
    got = torch.autograd.grad(got_out, (x, *params), grad)
    expected = torch.autograd.grad(plain, (x, *params), grad)
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e)


def _training_encoder_layer():
    """A small post-norm encoder layer in training mode (one 4x5 level, ReLU FFN of width 64, no dropout)."""
    return pixel_decoder.DeformableEncoderLayer(
        embed_dim=16, num_heads=2, num_levels=1, num_points=2, ffn_dim=64, dropout=0.0, activation="relu"
    ).train()


def test_encoder_layer_keeps_neither_norm_output_nor_hidden_activation_for_backward():
    """With autograd the encoder layer's second half saves its input, not the normalised tokens or the FFN hidden."""
    torch.manual_seed(0)
    layer = _training_encoder_layer()
    hidden = torch.randn(1, 20, 16, requires_grad=True)
    args = (torch.zeros(1, 20, 16), torch.rand(20, 2), torch.tensor([[4, 5]]), torch.tensor([0]))
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        out, _ = layer(hidden, *args)
    assert not any(t.shape[-1] == 64 and t.dim() >= 2 and t.numel() >= 20 * 64 for t in saved)
    normed = layer.self_attn_layer_norm(
        hidden
        + layer.self_attn(hidden, hidden, reference_points=args[1], spatial_shapes=args[2], level_start_index=args[3])[
            0
        ]
    )
    assert not any(t.shape == normed.shape and torch.equal(t, normed.detach()) for t in saved)


def test_encoder_layer_gradients_equal_the_plain_formulation(monkeypatch):
    monkeypatch.setattr(pixel_decoder, "_FFN_CHUNK", 6)
    torch.manual_seed(0)
    layer = _training_encoder_layer()
    hidden = torch.randn(2, 20, 16, requires_grad=True)
    args = (torch.randn(1, 20, 16), torch.rand(20, 2), torch.tensor([[4, 5]]), torch.tensor([0]))

    def run():
        layer.zero_grad()
        hidden.grad = None
        out, _ = layer(hidden, *args)
        out.square().sum().backward()
        return out.detach(), hidden.grad.clone(), {n: p.grad.clone() for n, p in layer.named_parameters()}

    blockwise = run()
    monkeypatch.setattr(layer, "_blockwise_training", lambda residual: False)
    plain = run()
    torch.testing.assert_close(blockwise[0], plain[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(blockwise[1], plain[1], atol=1e-5, rtol=1e-5)
    for name in plain[2]:
        torch.testing.assert_close(blockwise[2][name], plain[2][name], atol=1e-4, rtol=1e-4, msg=name)
