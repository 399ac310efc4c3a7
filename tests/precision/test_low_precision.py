"""bf16 and int8 CPU inference: loading, the paths they take, and agreement with float32 on tiny models."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from m2f_hf import M2FForUniversalSegmentation
from m2f_hf.cli.options import CLIError, build_parser, check_args
from m2f_hf.export.precision import check_precision, load_for_precision, quantize_int8
from m2f_hf.inference.loading import ModelLoadError, load_segmentation_model
from m2f_hf.ops import custom_op, dispatch
from m2f_hf.resources import default_model_path
from m2f_hf.testing import tiny_config


@pytest.fixture(scope="module")
def saved_tiny(tmp_path_factory):
    torch.manual_seed(0)
    model = M2FForUniversalSegmentation(tiny_config()).eval()
    path = tmp_path_factory.mktemp("tiny")
    model.save_pretrained(path)
    return model, path


def _relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


@pytest.mark.parametrize("keyword", ["dtype", "torch_dtype"])
def test_from_pretrained_in_bf16_takes_float32_pixels(saved_tiny, keyword):
    model, path = saved_tiny
    low = M2FForUniversalSegmentation.from_pretrained(path, **{keyword: torch.bfloat16}).eval()
    assert {p.dtype for p in low.parameters()} == {torch.bfloat16}
    pixel_values = torch.randn(2, 3, 64, 96)  # float32, as the processor gives
    with torch.no_grad():
        reference, out = model(pixel_values), low(pixel_values)
    assert out.masks_queries_logits.dtype == torch.bfloat16
    assert _relative_error(out.masks_queries_logits, reference.masks_queries_logits) < 0.05
    assert _relative_error(out.class_queries_logits, reference.class_queries_logits) < 0.05


def test_bf16_sampling_runs_the_float32_cpu_kernel_like_the_pytorch_path():
    """bf16 values through the CPU kernel (converted to float32) equal the PyTorch path's float32 arithmetic."""
    if not dispatch.cpu_kernel_ready():
        pytest.skip("the CPU kernel is not built (python -m m2f_hf.ops --cpu)")
    torch.manual_seed(0)
    shapes = torch.tensor([[4, 6], [2, 3]])
    start = torch.tensor([0, 24])
    value = torch.randn(2, 30, 2, 8).to(torch.bfloat16)
    locations = torch.rand(2, 5, 2, 2, 3, 2)
    weights = torch.rand(2, 5, 2, 2, 3).softmax(-1)
    kernel = custom_op.ms_deform_attn(value, shapes, start, locations, weights, "cpu")
    plain = custom_op.ms_deform_attn(value, shapes, start, locations, weights, "pytorch")
    assert kernel.dtype == torch.bfloat16
    torch.testing.assert_close(kernel, plain, rtol=1e-2, atol=1e-2)  # float32 sums in another order: one bf16 ulp


def test_int8_quantises_every_linear_and_stays_close(saved_tiny):
    model, _ = saved_tiny
    quantized = quantize_int8(model)
    assert not any(type(m) is nn.Linear for m in quantized.modules())
    assert any(type(m) is nn.Linear for m in model.modules())  # the original is left as it was
    pixel_values = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        reference, out = model(pixel_values), quantized(pixel_values)
    assert out.masks_queries_logits.dtype == torch.float32
    assert _relative_error(out.masks_queries_logits, reference.masks_queries_logits) < 0.05
    with pytest.raises(ValueError, match="starts from a float32 model"):
        quantize_int8(model.to(torch.bfloat16))
    model.float()


def test_load_for_precision_and_loading_with_dtype(saved_tiny):
    _, path = saved_tiny
    assert next(load_for_precision(path, "bfloat16").parameters()).dtype == torch.bfloat16
    loaded = load_segmentation_model(str(default_model_path()), "cpu", dtype="int8")
    assert not any(type(m) is nn.Linear for m in loaded.model.modules())
    assert next(load_segmentation_model(None, "cpu", dtype="bfloat16").model.parameters()).dtype == torch.bfloat16
    with pytest.raises(ModelLoadError, match="dtype must be one of float32, bfloat16, int8; got 'half'"):
        load_segmentation_model(None, "cpu", dtype="half")
    with pytest.raises(ValueError, match="got 'fp8'"):
        check_precision("fp8")


def test_cli_dtype_option():
    parser = build_parser()
    assert parser.parse_args(["x.png"]).dtype == "float32"
    check_args(parser.parse_args(["x.png", "--dtype", "bfloat16"]))
    with pytest.raises(CLIError, match="--dtype must be one of float32, bfloat16, int8; got 'float16'"):
        check_args(parser.parse_args(["x.png", "--dtype", "float16"]))
    with pytest.raises(CLIError, match="int8 .* runs on the CPU"):
        check_args(parser.parse_args(["x.png", "--dtype", "int8", "--device", "cuda"]))


def test_bf16_fused_linear_matches_the_plain_ops():
    from torch.nn import functional as F

    from m2f_hf import fused_linear

    if torch.bfloat16 not in fused_linear._FUSED_DTYPES:
        pytest.skip("oneDNN has no native bf16 on this CPU: bf16 takes the plain ops")
    torch.manual_seed(0)
    x, residual = torch.randn(70, 32).bfloat16(), torch.randn(70, 48).bfloat16()
    weight, bias = torch.randn(48, 32).bfloat16(), torch.randn(48).bfloat16()
    with torch.no_grad():
        assert fused_linear.fusion_applies(x)
        relu = fused_linear.linear(x, weight, bias, relu=True)
        added = fused_linear.linear(x, weight, bias, residual=residual)
    assert relu.dtype == added.dtype == torch.bfloat16
    # oneDNN rounds once from its float32 accumulators, the plain ops after each step: a bf16 ulp apart at most
    torch.testing.assert_close(relu, F.linear(x, weight, bias).relu(), rtol=1e-2, atol=2e-2)
    torch.testing.assert_close(added, residual + F.linear(x, weight, bias), rtol=1e-2, atol=2e-2)


def test_json_model_names_the_precision_so_resuming_keeps_precisions_apart():
    loaded = load_segmentation_model(None, "cpu", dtype="int8")
    assert loaded.source.endswith("[int8]") and loaded.is_default_model
    assert load_segmentation_model(None, "cpu", dtype="float32").source == "m2f_hf default model"


def test_channels_last_2x_upsampling_matches_bilinear_interpolation():
    from torch.nn import functional as F

    from m2f_hf.pixel_decoder import _halfs_on_cpu_channels_last, _upsample2x_channels_last

    torch.manual_seed(0)
    tokens = torch.randn(2, 5 * 7, 16)
    coarse = tokens.transpose(1, 2).reshape(2, 16, 5, 7)  # the token-major view the pixel decoder has
    expected = F.interpolate(coarse.contiguous(), scale_factor=2, mode="bilinear", align_corners=False)
    out = _upsample2x_channels_last(coarse)
    assert out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, expected, rtol=1e-6, atol=1e-6)
    low = coarse.bfloat16()
    lateral = torch.zeros(2, 16, 10, 14, dtype=torch.bfloat16).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        assert _halfs_on_cpu_channels_last(low, lateral)
        assert not _halfs_on_cpu_channels_last(coarse, lateral.float())  # float32 keeps torch's kernel
    torch.testing.assert_close(_upsample2x_channels_last(low).float(), expected, rtol=2e-2, atol=3e-2)
