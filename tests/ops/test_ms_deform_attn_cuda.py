"""The CUDA kernel against the PyTorch path (the specification). Needs an NVIDIA GPU: run with `pytest -m cuda`."""

from __future__ import annotations

import pytest
import torch

from m2f_hf.ops import build, dispatch, load_kernel, multi_scale_deformable_attention
from m2f_hf.ops.custom_op import ms_deform_attn, ms_deform_attn_backward

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(
        not torch.cuda.is_available(), reason="needs an NVIDIA GPU (torch.cuda.is_available() is False)"
    ),
]

CASES = [
    pytest.param([(4, 4)], 1, 4, 1, id="1level-headdim4"),
    pytest.param([(7, 5), (3, 4)], 2, 32, 2, id="2levels-headdim32"),
    pytest.param([(9, 6), (5, 3), (2, 2)], 8, 40, 4, id="3levels-headdim40"),  # head_dim not a multiple of 32
    pytest.param([(6, 7), (3, 4), (2, 2), (1, 1)], 3, 64, 3, id="4levels-headdim64"),
]


@pytest.fixture(scope="module", autouse=True)
def kernel():
    # a GPU machine that cannot build the kernel is a failure here, not a skip
    return load_kernel()


def _run(inputs, implementation, grad_out=None):
    value, spatial_shapes, level_start_index, locations, weights = inputs
    out = multi_scale_deformable_attention(
        value, spatial_shapes, level_start_index, locations, weights, implementation=implementation
    )
    if grad_out is None:
        grad_out = torch.randn_like(out)
    grads = torch.autograd.grad(out, (value, locations, weights), grad_out)
    return out, grads, grad_out


def _assert_matches_pytorch(inputs, tolerance, implementation="cuda"):
    """The kernel against the PyTorch path run in float64 on the same (already rounded) inputs.

    A location gradient sums products over head_dim and the four corners and is scaled by the level's size, so its
    float32 rounding error is of the order of eps x its terms, not eps x its value: where terms cancel, the error
    is large relative to the value (seen on an H200: 3e-5 on an entry of 0.67, head_dim 64). The absolute tolerance
    is therefore relative to the tensor's largest entry; a wrong term would be off by the order of that scale.
    """
    out, grads, grad_out = _run(inputs, implementation)
    exact = [t.detach().double().requires_grad_(t.requires_grad) if t.is_floating_point() else t for t in inputs]
    expected, expected_grads, _ = _run(exact, "pytorch", grad_out.double())
    assert out.dtype == inputs[0].dtype
    names = ("output", "grad value", "grad sampling_locations", "grad attention_weights")
    for name, ours, theirs in zip(names, (out, *grads), (expected, *expected_grads)):
        assert ours.dtype in (inputs[0].dtype, torch.float32)
        scale = max(1.0, theirs.abs().max().item())
        torch.testing.assert_close(
            ours.double(), theirs, atol=tolerance * scale, rtol=tolerance, msg=lambda m, n=name: f"{n}: {m}"
        )


@pytest.mark.parametrize("shapes, heads, head_dim, points", CASES)
def test_float32_forward_backward_match_pytorch(make_inputs, shapes, heads, head_dim, points):
    inputs = make_inputs(shapes, heads=heads, head_dim=head_dim, points=points, device="cuda", requires_grad=True)
    _assert_matches_pytorch(inputs, 1e-5)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shapes, heads, head_dim, points", CASES[1:3])
def test_half_precision_matches_pytorch(make_inputs, dtype, shapes, heads, head_dim, points):
    value, spatial_shapes, level_start_index, locations, weights = make_inputs(
        shapes, heads=heads, head_dim=head_dim, points=points, device="cuda"
    )
    inputs = (
        value.to(dtype).requires_grad_(),
        spatial_shapes,
        level_start_index,
        locations.requires_grad_(),
        weights.requires_grad_(),
    )
    # inputs are rounded to `dtype` first, so the comparison measures the kernel's accumulation, not the rounding
    _assert_matches_pytorch(inputs, 1e-2)


def test_gradcheck_float64(make_inputs):
    value, spatial_shapes, level_start_index, locations, weights = make_inputs(
        [(4, 5), (2, 3)], queries=3, points=2, dtype=torch.float64, device="cuda", requires_grad=True
    )

    def fn(v, loc, w):
        return multi_scale_deformable_attention(v, spatial_shapes, level_start_index, loc, w, implementation="cuda")

    assert torch.autograd.gradcheck(fn, (value, locations, weights))


def test_opcheck_on_cuda(make_inputs):
    value, spatial_shapes, level_start_index, locations, weights = make_inputs(
        [(4, 4), (2, 2)], head_dim=8, device="cuda", requires_grad=True
    )
    torch.library.opcheck(ms_deform_attn, (value, spatial_shapes, level_start_index, locations, weights, "cuda"))
    grad_out = torch.randn(2, 5, 16, device="cuda")
    torch.library.opcheck(
        ms_deform_attn_backward,
        (grad_out, value.detach(), spatial_shapes, level_start_index, locations.detach(), weights.detach(), "cuda"),
    )


def test_non_contiguous_inputs(make_inputs):
    value, spatial_shapes, level_start_index, locations, weights = make_inputs(
        [(5, 6), (3, 2)], heads=4, head_dim=16, device="cuda"
    )
    value_nc = value.transpose(0, 1).contiguous().transpose(0, 1)
    locations_nc = torch.stack([locations[..., 0], locations[..., 1]]).movedim(0, -1)
    weights_nc = weights.transpose(1, 2).contiguous().transpose(1, 2)
    assert not (value_nc.is_contiguous() or locations_nc.is_contiguous() or weights_nc.is_contiguous())
    inputs = [t.requires_grad_() for t in (value_nc, locations_nc, weights_nc)]
    out, grads, grad_out = _run((inputs[0], spatial_shapes, level_start_index, inputs[1], inputs[2]), "cuda")
    expected, expected_grads, _ = _run(
        (
            value.requires_grad_(),
            spatial_shapes,
            level_start_index,
            locations.requires_grad_(),
            weights.requires_grad_(),
        ),
        "pytorch",
        grad_out,
    )
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    for ours, theirs in zip(grads, expected_grads):
        torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


def test_locations_far_outside_read_zero_and_get_zero_grads(make_inputs):
    value, spatial_shapes, level_start_index, locations, weights = make_inputs(
        [(4, 3), (2, 2)], device="cuda", requires_grad=True
    )
    far = torch.full_like(locations, -3.0).requires_grad_()
    out, (grad_value, grad_locations, grad_weights), _ = _run(
        (value, spatial_shapes, level_start_index, far, weights), "cuda"
    )
    assert torch.equal(out, torch.zeros_like(out))
    for grad in (grad_value, grad_locations, grad_weights):
        assert torch.equal(grad, torch.zeros_like(grad))


def test_partly_outside_locations_match_pytorch(make_inputs):
    inputs = make_inputs([(6, 5), (3, 3)], head_dim=32, outside=1.0, device="cuda", requires_grad=True)
    _assert_matches_pytorch(inputs, 1e-5)


def test_large_case_matches_float64(make_inputs):
    # levels of a 1024x1024 image at strides 8, 16, 32; hidden 256 = 8 heads x 32
    inputs = make_inputs(
        [(128, 128), (64, 64), (32, 32)], batch=4, queries=3000, heads=8, head_dim=32, points=4, device="cuda",
        outside=0.05, requires_grad=True,
    )  # fmt: skip
    out, grads, grad_out = _run(inputs, "cuda")
    exact = [t.detach().double().requires_grad_() if t.is_floating_point() else t for t in inputs]
    expected, expected_grads, _ = _run(exact, "pytorch", grad_out.double())
    # A location gradient is a difference of corner values scaled by the level's width (up to 128 here), so where
    # those cancel, float32 leaves an absolute error of the order of eps x the gradient's scale (measured on an H200:
    # 2e-4 on entries of about 0.04, among gradients of several hundred). The tolerance is therefore relative to
    # each tensor's largest entry; a wrong term would be off by the order of that scale.
    for name, ours, exact_value in zip(
        ("output", "value", "locations", "weights"), (out, *grads), (expected, *expected_grads)
    ):
        scale = exact_value.abs().max().item()
        torch.testing.assert_close(
            ours.double(), exact_value, atol=1e-6 * scale, rtol=1e-4, msg=lambda m, n=name: f"{n}: {m}"
        )


def test_auto_selects_kernel_for_cuda_tensors():
    assert dispatch.select_backend("auto", "cuda") == "cuda"
    # CPU tensors: the CPU kernel when it was built before, never the CUDA kernel
    assert dispatch.select_backend("auto", "cpu") == ("cpu" if build.cpu_kernel_built() else "pytorch")


def test_compile_fullgraph_with_kernel(make_inputs):
    value, spatial_shapes, level_start_index, locations, weights = make_inputs(
        [(8, 8), (4, 4)], head_dim=32, device="cuda", requires_grad=True
    )

    def attend(value, locations, weights):
        return multi_scale_deformable_attention(
            value, spatial_shapes, level_start_index, locations, weights, implementation="cuda"
        )

    torch._dynamo.reset()
    compiled = torch.compile(attend, fullgraph=True)
    out = compiled(value, locations, weights)
    torch.testing.assert_close(out, attend(value, locations, weights))
    grads = torch.autograd.grad(out.sum(), (value, locations, weights))
    assert all(torch.isfinite(g).all() for g in grads)


def _model_outputs(monkeypatch, dtype):
    testing = pytest.importorskip("m2f_hf.testing")
    from m2f_hf import M2FForUniversalSegmentation

    torch.manual_seed(0)
    model = M2FForUniversalSegmentation(testing.tiny_config()).cuda().eval().to(dtype)
    pixel_values = torch.randn(2, 3, 96, 128, device="cuda", dtype=dtype)
    outputs = {}
    for implementation in ("pytorch", "cuda"):
        monkeypatch.setenv(dispatch.ENV_VAR, implementation)  # the variable overrides the config default
        with torch.no_grad():
            outputs[implementation] = model(pixel_values=pixel_values, output_hidden_states=True)
    return outputs


def test_whole_model_kernel_matches_pytorch_path(monkeypatch):
    # float64, so that no decoder attention-mask entry (sigmoid(logit) < 0.5) can flip between the two runs. In
    # float32 on an H200, 6 of 9216 mask logits differed by up to 5e-4: a mask logit within rounding of 0 that flips
    # makes the next layer attend to a different set of pixels. The float32 pixel decoder is checked below.
    outputs = _model_outputs(monkeypatch, torch.float64)
    for name in ("class_queries_logits", "masks_queries_logits"):
        torch.testing.assert_close(
            getattr(outputs["cuda"], name), getattr(outputs["pytorch"], name), atol=1e-4, rtol=1e-4
        )


def test_whole_model_pixel_decoder_float32_matches_pytorch_path(monkeypatch):
    outputs = _model_outputs(monkeypatch, torch.float32)
    ours, reference = outputs["cuda"], outputs["pytorch"]
    assert ours.pixel_decoder_hidden_states, "the model returned no pixel decoder states"
    for mine, theirs in zip(ours.pixel_decoder_hidden_states, reference.pixel_decoder_hidden_states):
        torch.testing.assert_close(mine, theirs, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("head_dim", [8, 32, 64])
def test_vector_and_scalar_kernels_agree(make_inputs, monkeypatch, dtype, head_dim):
    # the vector kernel runs by default where head_dim allows it (16-byte channel packs); the variable forces the
    # scalar kernel, which the 40-channel cases above exercise too
    value, spatial_shapes, level_start_index, locations, weights = make_inputs(
        [(9, 7), (5, 4), (3, 2), (1, 1)], batch=2, queries=50, heads=4, head_dim=head_dim, points=3, outside=0.5,
        device="cuda", dtype=torch.float64 if dtype == torch.float64 else torch.float32,
    )  # fmt: skip
    inputs = (value.to(dtype).requires_grad_(), spatial_shapes, level_start_index)
    inputs += (locations.requires_grad_(), weights.requires_grad_())
    monkeypatch.delenv("M2F_DEFORM_ATTN_CUDA_SCALAR", raising=False)
    vector, vector_grads, grad_out = _run(inputs, "cuda")
    monkeypatch.setenv("M2F_DEFORM_ATTN_CUDA_SCALAR", "1")
    scalar, scalar_grads, _ = _run(inputs, "cuda", grad_out)
    # the two sum channels and corners in different orders: tolerances relative to each tensor's largest entry
    tolerance = {torch.float64: 1e-12, torch.float32: 1e-5, torch.bfloat16: 1e-2}[dtype]
    for ours, theirs in zip((vector, *vector_grads), (scalar, *scalar_grads)):
        scale = max(1.0, theirs.abs().max().item())
        torch.testing.assert_close(ours, theirs, atol=tolerance * scale, rtol=tolerance)
