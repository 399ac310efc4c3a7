"""The Winograd F(2x2, 3x3) convolution of the CPU kernel against `F.conv2d`, and where it is (not) used."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from m2f_hf import M2FForUniversalSegmentation
from m2f_hf.ops import dispatch, winograd
from m2f_hf.testing import tiny_config

pytestmark = pytest.mark.usefixtures("cpu_kernel")  # built once (tests/ops/conftest.py), else skipped


def _conv(in_channels, out_channels, bias=False, seed=0):
    torch.manual_seed(seed)
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=bias)


# (batch, in, out, height, width): even and odd sizes, a single pixel, a map narrower than a tile block and one
# taller than several blocks (512 tiles each)
SHAPES = [(1, 8, 8, 6, 8), (2, 5, 7, 7, 9), (1, 3, 4, 1, 1), (1, 16, 8, 2, 3), (2, 4, 6, 70, 40), (1, 32, 32, 9, 130)]


@pytest.mark.parametrize("batch, in_channels, out_channels, height, width", SHAPES)
@pytest.mark.parametrize("bias", [False, True])
def test_equals_direct_convolution(batch, in_channels, out_channels, height, width, bias):
    conv = _conv(in_channels, out_channels, bias)
    x = torch.randn(batch, in_channels, height, width)
    with torch.no_grad():
        assert winograd.applies(conv, x)
        out = winograd.conv3x3(conv, x)
        expected = conv(x)
    assert out.shape == expected.shape
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


def test_non_contiguous_input():
    conv = _conv(6, 6)
    x = torch.randn(1, 10, 12, 6).permute(0, 3, 1, 2)  # (1, 6, 10, 12), channels last in memory
    with torch.no_grad():
        torch.testing.assert_close(winograd.conv3x3(conv, x), conv(x), atol=1e-5, rtol=1e-5)


def test_not_used_where_it_may_not_be(monkeypatch):
    conv = _conv(4, 4)
    x = torch.randn(1, 4, 6, 6)
    assert not winograd.applies(conv, x)  # autograd on: the kernel has no backward
    out = winograd.conv3x3(conv, x)
    assert out.requires_grad
    with torch.no_grad():
        assert not winograd.applies(conv, x.double())
        assert not winograd.applies(nn.Conv2d(4, 4, 3, padding=1, stride=2), x)
        assert not winograd.applies(nn.Conv2d(4, 4, 3, padding=1, dilation=2), x)
        assert not winograd.applies(nn.Conv2d(4, 4, 3, padding=1, groups=2), x)
        assert not winograd.applies(nn.Conv2d(4, 4, 3, padding=1, padding_mode="reflect"), x)
        assert not winograd.applies(nn.Conv2d(4, 4, 1), x)
        monkeypatch.setattr(dispatch, "cpu_kernel_ready", lambda: False)  # kernel not built: the direct convolution
        assert not winograd.applies(conv, x)
        torch.testing.assert_close(winograd.conv3x3(conv, x), F.conv2d(x, conv.weight, padding=1))


def test_model_inference_with_and_without_winograd(monkeypatch):
    torch.manual_seed(0)
    model = M2FForUniversalSegmentation(tiny_config()).eval()
    pixel_values = torch.randn(2, 3, 64, 96)
    calls = []
    original = winograd.conv3x3
    monkeypatch.setattr(
        winograd, "conv3x3", lambda conv, x: calls.append(winograd.applies(conv, x)) or original(conv, x)
    )
    with torch.no_grad():
        fast = model(pixel_values)
        monkeypatch.setattr(winograd, "enabled", False)
        direct = model(pixel_values)
    assert calls == [True, False]  # the FPN's 3x3 went through the kernel once, then through the direct path
    for name in ("class_queries_logits", "masks_queries_logits"):
        torch.testing.assert_close(getattr(fast, name), getattr(direct, name), atol=1e-5, rtol=1e-5)
