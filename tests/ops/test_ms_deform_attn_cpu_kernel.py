"""The compiled CPU kernel against the PyTorch path (the specification), its gradients and its dispatch.

The kernel is built once (about 40 s on 2 cores; cached in ~/.cache/m2f_hf). Where no C++ toolchain is present the
tests are skipped with the build's reason: the PyTorch path is then what runs, and it is tested on its own.
"""

from __future__ import annotations

import pytest
import torch

from m2f_hf.ops import build, dispatch, multi_scale_deformable_attention
from m2f_hf.ops.custom_op import ms_deform_attn, ms_deform_attn_backward

# (level shapes, heads, head_dim, points): head_dim 32 takes the kernel's fixed-size loops, the others the generic ones
CASES = [
    pytest.param([(4, 4)], 1, 4, 1, id="1level-1head-1point"),
    pytest.param([(3, 5), (2, 2)], 2, 3, 2, id="2levels-nonsquare"),
    pytest.param([(6, 4), (3, 2), (2, 1)], 4, 32, 3, id="3levels-head_dim32"),
    pytest.param([(5, 7), (3, 4), (2, 2), (1, 1)], 8, 80, 4, id="4levels-head_dim80"),
]


pytestmark = pytest.mark.usefixtures("cpu_kernel")  # built once (tests/ops/conftest.py), else skipped


def _run(inputs, implementation):
    value, spatial_shapes, level_start_index, locations, weights = inputs
    out = multi_scale_deformable_attention(
        value, spatial_shapes, level_start_index, locations, weights, implementation=implementation
    )
    grad_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=out.dtype)
    grads = torch.autograd.grad(out, (value, locations, weights), grad_out)
    return out, grads


@pytest.mark.parametrize("shapes, heads, head_dim, points", CASES)
def test_forward_and_backward_match_pytorch_path(make_inputs, shapes, heads, head_dim, points):
    inputs = make_inputs(shapes, heads=heads, head_dim=head_dim, points=points, queries=7, requires_grad=True)
    out, grads = _run(inputs, "cpu")
    ref_out, ref_grads = _run(inputs, "pytorch")
    torch.testing.assert_close(out, ref_out, atol=1e-5, rtol=1e-5)
    for name, grad, ref in zip(("value", "locations", "weights"), grads, ref_grads):
        torch.testing.assert_close(grad, ref, atol=1e-4, rtol=1e-4, msg=lambda m, n=name: f"grad of {n}: {m}")


@pytest.mark.parametrize("head_dim", [32, 5])
def test_gradcheck_float64(make_inputs, head_dim):
    inputs = make_inputs(
        [(3, 4), (2, 3)], queries=3, points=2, head_dim=head_dim, dtype=torch.float64, requires_grad=True
    )
    value, spatial_shapes, level_start_index, locations, weights = inputs

    def attend(v, loc, w):
        return multi_scale_deformable_attention(v, spatial_shapes, level_start_index, loc, w, implementation="cpu")

    assert torch.autograd.gradcheck(attend, (value, locations, weights), atol=1e-6)


def test_many_queries_on_few_keys(make_inputs):
    """Every query reads the same few rows: the value gradient sums thousands of contributions per row."""
    inputs = make_inputs([(2, 2), (1, 1)], batch=3, queries=2000, heads=8, head_dim=32, points=4, requires_grad=True)
    out, grads = _run(inputs, "cpu")
    ref_out, ref_grads = _run(inputs, "pytorch")
    torch.testing.assert_close(out, ref_out, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(grads[0], ref_grads[0], atol=1e-3, rtol=1e-4)


def test_half_precision_runs_the_float32_kernel(make_inputs):
    """bf16 values are converted to float32 for the kernel (the PyTorch path computes in float32 too): the two agree
    to the float32 rounding of the sum, which may flip the last bf16 bit."""
    value, spatial_shapes, level_start_index, locations, weights = make_inputs([(4, 4), (2, 2)], head_dim=8)
    half = value.to(torch.bfloat16)
    out = multi_scale_deformable_attention(
        half, spatial_shapes, level_start_index, locations, weights, implementation="cpu"
    )
    ref = multi_scale_deformable_attention(
        half, spatial_shapes, level_start_index, locations, weights, implementation="pytorch"
    )
    assert out.dtype == torch.bfloat16
    expected = multi_scale_deformable_attention(
        half.float(), spatial_shapes, level_start_index, locations, weights, implementation="cpu"
    ).to(torch.bfloat16)
    assert torch.equal(out, expected)
    torch.testing.assert_close(out, ref, rtol=1e-2, atol=1e-2)


def test_opcheck_forward_and_backward_ops(make_inputs):
    value, spatial_shapes, level_start_index, locations, weights = make_inputs(
        [(3, 4), (2, 2)], queries=3, head_dim=32, requires_grad=True
    )
    torch.library.opcheck(ms_deform_attn, (value, spatial_shapes, level_start_index, locations, weights, "cpu"))
    grad_out = torch.randn(2, 3, 64)
    torch.library.opcheck(
        ms_deform_attn_backward,
        (grad_out, value.detach(), spatial_shapes, level_start_index, locations.detach(), weights.detach(), "cpu"),
    )


def test_auto_uses_the_built_kernel_for_cpu_tensors():
    assert build.cpu_kernel_built()
    assert dispatch.select_backend("auto", "cpu") == "cpu"
    assert dispatch.select_backend("pytorch", "cpu") == "pytorch"


def test_model_with_cpu_kernel_matches_pytorch_path():
    from m2f_hf import M2FForUniversalSegmentation
    from m2f_hf.testing import tiny_config

    torch.manual_seed(0)
    model = M2FForUniversalSegmentation(tiny_config()).eval()
    pixel_values = torch.randn(2, 3, 64, 96)
    outputs = {}
    for implementation in ("pytorch", "cpu"):
        dispatch.set_default_implementation(implementation)
        with torch.no_grad():
            outputs[implementation] = model(pixel_values)
    dispatch.set_default_implementation("auto")
    for key in ("class_queries_logits", "masks_queries_logits"):
        torch.testing.assert_close(outputs["cpu"][key], outputs["pytorch"][key], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("outside", [0.0, 0.3])
def test_head_dim_32_interior_and_border_points_match_pytorch_path(make_inputs, outside):
    # head_dim 32 reads the four neighbours of a point in one pass when all four are on the map, and one by one
    # otherwise: locations inside [0, 1] take the first path (bar the border cells), a wider range both
    inputs = make_inputs(
        [(9, 11), (5, 6), (3, 3)], heads=8, head_dim=32, points=4, queries=64, outside=outside, requires_grad=True
    )
    out, grads = _run(inputs, "cpu")
    ref_out, ref_grads = _run(inputs, "pytorch")
    torch.testing.assert_close(out, ref_out, atol=1e-5, rtol=1e-5)
    for grad, ref in zip(grads, ref_grads):
        torch.testing.assert_close(grad, ref, atol=1e-4, rtol=1e-4)
