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
