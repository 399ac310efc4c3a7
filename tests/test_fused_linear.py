"""`fused_linear.linear`: the oneDNN path (CPU inference) equals the plain torch formulation, and is used only where
it may be (no autograd, float32, no autocast, eager)."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from m2f_hf import M2FForUniversalSegmentation, fused_linear
from m2f_hf.testing import tiny_config

needs_onednn = pytest.mark.skipif(
    fused_linear._LINEAR_POINTWISE is None, reason="this torch build has no oneDNN linear (mkldnn)"
)


def _plain(x, weight, bias, relu=False, residual=None):
    out = F.linear(x, weight, bias)
    if relu:
        out = out.relu()
    return out if residual is None else out + residual


@needs_onednn
@pytest.mark.parametrize("with_bias", [True, False])
@pytest.mark.parametrize("post", ["none", "relu", "residual"])
def test_fused_equals_plain(with_bias, post):
    torch.manual_seed(0)
    x = torch.randn(2, 300, 64)
    weight, bias = torch.randn(96, 64), torch.randn(96) if with_bias else None
    residual = torch.randn(2, 300, 96) if post == "residual" else None
    with torch.no_grad():
        assert fused_linear.fusion_applies(x)
        out = fused_linear.linear(x, weight, bias, relu=post == "relu", residual=residual)
    assert out.shape == (2, 300, 96)
    torch.testing.assert_close(out, _plain(x, weight, bias, post == "relu", residual), atol=1e-5, rtol=1e-5)


def test_not_applied_with_autograd_autocast_or_other_dtypes():
    x = torch.randn(4, 8)
    assert not fused_linear.fusion_applies(x)  # autograd on
    with torch.no_grad():
        assert not fused_linear.fusion_applies(x.double())
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert not fused_linear.fusion_applies(x)
            # under autocast the plain path runs, so the product is autocast's bfloat16 one
            assert fused_linear.linear(x, torch.randn(3, 8)).dtype == torch.bfloat16


def test_plain_path_keeps_gradients():
    x = torch.randn(5, 8, requires_grad=True)
    weight = torch.randn(6, 8, requires_grad=True)
    residual = torch.randn(5, 6, requires_grad=True)
    out = fused_linear.linear(x, weight, None, residual=residual)
    out.sum().backward()
    torch.testing.assert_close(x.grad, weight.detach().sum(0).expand(5, 8))
    torch.testing.assert_close(residual.grad, torch.ones(5, 6))


def test_relu_and_residual_together_is_an_error():
    with pytest.raises(ValueError, match="relu=True or a residual"):
        fused_linear.linear(torch.randn(2, 3), torch.randn(4, 3), relu=True, residual=torch.randn(2, 4))


@needs_onednn
def test_model_inference_with_and_without_fusion(monkeypatch):
    torch.manual_seed(0)
    model = M2FForUniversalSegmentation(tiny_config()).eval()
    pixel_values = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        fused = model(pixel_values)
        monkeypatch.setattr(fused_linear, "enabled", False)
        plain = model(pixel_values)
    for name in ("class_queries_logits", "masks_queries_logits"):
        torch.testing.assert_close(getattr(fused, name), getattr(plain, name), atol=1e-5, rtol=1e-5)


@needs_onednn
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("bias", [True, False])
def test_conv1x1_equals_the_convolution(batch, bias):
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(24, 40, kernel_size=1, bias=bias)
    x = torch.randn(batch, 24, 9, 13)
    with torch.no_grad():
        out = fused_linear.conv1x1(conv, x)
        expected = conv(x)
        strided = fused_linear.conv1x1(conv, x.transpose(2, 3))  # a non-contiguous map
        expected_strided = conv(x.transpose(2, 3))
    assert out.shape == expected.shape and out.is_contiguous()
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(strided, expected_strided, atol=1e-5, rtol=1e-5)


def test_conv1x1_falls_back_to_the_module(monkeypatch):
    x = torch.randn(1, 4, 6, 6)
    calls = []
    module_forward = torch.nn.Conv2d.forward
    for conv in (
        torch.nn.Conv2d(4, 4, 3, padding=1),
        torch.nn.Conv2d(4, 4, 1, stride=2),
        torch.nn.Conv2d(4, 4, 1, groups=2),
        torch.nn.Conv2d(4, 4, 1),  # with autograd on
    ):
        monkeypatch.setattr(conv, "forward", lambda t, conv=conv: calls.append(conv) or module_forward(conv, t))
        with torch.set_grad_enabled(conv.kernel_size == (1, 1) and conv.stride == (1, 1) and conv.groups == 1):
            fused_linear.conv1x1(conv, x)
    assert len(calls) == 4


def test_residual_keeps_the_wider_dtype_under_autocast():
    # the encoder's residual stream is float32 after its layer norms; a bfloat16 product must not narrow it
    x, weight, residual = torch.randn(4, 8), torch.randn(6, 8), torch.randn(4, 6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = fused_linear.linear(x, weight, None, residual=residual)
    assert out.dtype == torch.float32


@needs_onednn
def test_fused_accepts_non_contiguous_inputs():
    torch.manual_seed(0)
    x = torch.randn(3, 50, 40).transpose(0, 1)  # (50, 3, 40), not contiguous
    weight, bias = torch.randn(20, 40), torch.randn(20)
    residual = torch.randn(20, 3, 50).permute(2, 1, 0)
    with torch.no_grad():
        out = fused_linear.linear(x, weight, bias, residual=residual)
    torch.testing.assert_close(out, _plain(x, weight, bias, residual=residual), atol=1e-5, rtol=1e-5)
