"""The fast PyTorch path against the naive reference and transformers, its gradients, and the custom op contract."""

from __future__ import annotations

import pytest
import torch
from transformers.models.mask2former.modeling_mask2former import (
    multi_scale_deformable_attention as transformers_msda,
)

from m2f_hf.ops import multi_scale_deformable_attention
from m2f_hf.ops.custom_op import ms_deform_attn, ms_deform_attn_backward
from m2f_hf.ops.reference import multi_scale_deformable_attention_reference

# (level shapes, heads, head_dim, points): levels 1-4, points 1-4, heads 1-8, square and non-square maps
CASES = [
    pytest.param([(4, 4)], 1, 4, 1, id="1level-1head-1point"),
    pytest.param([(3, 5), (2, 2)], 2, 3, 2, id="2levels-nonsquare"),
    pytest.param([(6, 4), (3, 2), (2, 1)], 4, 8, 3, id="3levels-4heads"),
    pytest.param([(5, 7), (3, 4), (2, 2), (1, 1)], 8, 2, 4, id="4levels-8heads-1x1"),
]


def _pytorch(value, spatial_shapes, level_start_index, locations, weights):
    return multi_scale_deformable_attention(
        value, spatial_shapes, level_start_index, locations, weights, implementation="pytorch"
    )


@pytest.mark.parametrize("shapes, heads, head_dim, points", CASES)
def test_forward_matches_naive_reference(make_inputs, shapes, heads, head_dim, points):
    inputs = make_inputs(shapes, heads=heads, head_dim=head_dim, points=points, queries=4)
    fast = _pytorch(*inputs)
    naive = multi_scale_deformable_attention_reference(*inputs)
    assert fast.shape == (2, 4, heads * head_dim)
    assert fast.dtype == torch.float32
    torch.testing.assert_close(fast, naive, atol=1e-5, rtol=0)


@pytest.mark.parametrize("shapes, heads, head_dim, points", CASES)
def test_forward_matches_transformers(make_inputs, shapes, heads, head_dim, points):
    value, spatial_shapes, level_start_index, locations, weights = make_inputs(
        shapes, heads=heads, head_dim=head_dim, points=points, queries=7, seed=1
    )
    ours = _pytorch(value, spatial_shapes, level_start_index, locations, weights)
    theirs = transformers_msda(value, [tuple(s) for s in spatial_shapes.tolist()], locations, weights)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)


def test_points_entirely_outside_read_zero(make_inputs):
    value, spatial_shapes, level_start_index, locations, weights = make_inputs([(4, 3), (2, 2)])
    far = torch.full_like(locations, 3.0)
    far[..., 1] = -2.0
    out = _pytorch(value, spatial_shapes, level_start_index, far, weights)
    assert torch.equal(out, torch.zeros_like(out))


def test_gradcheck_float64(make_inputs):
    value, spatial_shapes, level_start_index, locations, weights = make_inputs(
        [(3, 4), (2, 3)], queries=3, points=2, dtype=torch.float64, requires_grad=True
    )

    def fn(v, loc, w):
        return _pytorch(v, spatial_shapes, level_start_index, loc, w)

    assert torch.autograd.gradcheck(fn, (value, locations, weights))


@pytest.mark.parametrize("shapes, heads, head_dim, points", CASES[1:3])
def test_backward_matches_autograd_through_naive(make_inputs, shapes, heads, head_dim, points):
    value, spatial_shapes, level_start_index, locations, weights = make_inputs(
        shapes, heads=heads, head_dim=head_dim, points=points, queries=3, requires_grad=True
    )
    grad_out = torch.randn(2, 3, heads * head_dim, generator=torch.Generator().manual_seed(3))
    fast = torch.autograd.grad(
        _pytorch(value, spatial_shapes, level_start_index, locations, weights), (value, locations, weights), grad_out
    )
    naive = torch.autograd.grad(
        multi_scale_deformable_attention_reference(value, spatial_shapes, level_start_index, locations, weights),
        (value, locations, weights),
        grad_out,
    )
    for name, ours, expected in zip(("value", "sampling_locations", "attention_weights"), fast, naive):
        torch.testing.assert_close(ours, expected, atol=1e-5, rtol=1e-5, msg=lambda m, n=name: f"grad {n}: {m}")


def test_saves_only_inputs_for_backward(make_inputs):
    """The autograd graph keeps the op inputs alive, nothing of size queries * levels * points * head_dim."""
    value, spatial_shapes, level_start_index, locations, weights = make_inputs(
        [(8, 8), (4, 4)], queries=50, heads=2, head_dim=16, points=4, requires_grad=True
    )
    saved_bytes = []

    def pack(tensor):
        saved_bytes.append(tensor.numel() * tensor.element_size())
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        out = _pytorch(value, spatial_shapes, level_start_index, locations, weights)
    input_bytes = sum(t.numel() * t.element_size() for t in (value, spatial_shapes, level_start_index, locations))
    input_bytes += weights.numel() * weights.element_size()
    assert sum(saved_bytes) <= input_bytes
    out.sum().backward()
    assert all(t.grad is not None and t.grad.shape == t.shape for t in (value, locations, weights))


def test_half_precision_values_accumulate_in_float32(make_inputs):
    value, spatial_shapes, level_start_index, locations, weights = make_inputs([(5, 6), (3, 3)], queries=6)
    expected = _pytorch(value, spatial_shapes, level_start_index, locations, weights)
    out = _pytorch(value.bfloat16(), spatial_shapes, level_start_index, locations, weights)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), expected, atol=2e-2, rtol=1e-2)


def test_non_contiguous_inputs(make_inputs):
    value, spatial_shapes, level_start_index, locations, weights = make_inputs([(4, 5), (2, 3)], heads=3, queries=4)
    value_nc = value.transpose(0, 1).contiguous().transpose(0, 1)  # same values, permuted strides
    locations_nc = torch.stack([locations[..., 0], locations[..., 1]]).movedim(0, -1)
    weights_nc = weights.transpose(1, 2).contiguous().transpose(1, 2)
    assert not (value_nc.is_contiguous() or locations_nc.is_contiguous() or weights_nc.is_contiguous())
    out = _pytorch(value_nc, spatial_shapes, level_start_index, locations_nc, weights_nc)
    torch.testing.assert_close(out, _pytorch(value, spatial_shapes, level_start_index, locations, weights))


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda a: {**a, "value": a["value"][0]}, "value must be"),
        (lambda a: {**a, "sampling_locations": a["sampling_locations"][..., :1]}, "sampling_locations must be"),
        (lambda a: {**a, "attention_weights": a["attention_weights"][..., :1]}, "attention_weights must have"),
        (lambda a: {**a, "spatial_shapes": a["spatial_shapes"][:1]}, "spatial_shapes must be"),
        (lambda a: {**a, "level_start_index": a["level_start_index"][:1]}, "level_start_index must be"),
        (lambda a: {**a, "implementation": "triton"}, "implementation must be one of"),
    ],
)
def test_bad_inputs_raise_clear_errors(make_inputs, mutate, match):
    value, spatial_shapes, level_start_index, locations, weights = make_inputs([(3, 3), (2, 2)])
    kwargs = {
        "value": value,
        "spatial_shapes": spatial_shapes,
        "level_start_index": level_start_index,
        "sampling_locations": locations,
        "attention_weights": weights,
    }
    with pytest.raises(ValueError, match=match):
        multi_scale_deformable_attention(**mutate(kwargs))


def test_opcheck_forward_and_backward_ops(make_inputs):
    value, spatial_shapes, level_start_index, locations, weights = make_inputs(
        [(3, 4), (2, 2)], queries=3, requires_grad=True
    )
    torch.library.opcheck(ms_deform_attn, (value, spatial_shapes, level_start_index, locations, weights, "pytorch"))
    grad_out = torch.randn(2, 3, value.shape[2] * value.shape[3])
    torch.library.opcheck(
        ms_deform_attn_backward,
        (grad_out, value.detach(), spatial_shapes, level_start_index, locations.detach(), weights.detach(), "pytorch"),
    )


def test_export_sees_a_single_op(make_inputs):
    value, spatial_shapes, level_start_index, locations, weights = make_inputs([(3, 4), (2, 2)])

    class Attention(torch.nn.Module):
        def forward(self, value, spatial_shapes, level_start_index, locations, weights):
            return multi_scale_deformable_attention(value, spatial_shapes, level_start_index, locations, weights)

    program = torch.export.export(Attention(), (value, spatial_shapes, level_start_index, locations, weights))
    targets = [node.target for node in program.graph.nodes if node.op == "call_function"]
    assert targets == [torch.ops.m2f_hf.ms_deform_attn.default]


def test_compile_fullgraph_matches_eager(make_inputs):
    value, spatial_shapes, level_start_index, locations, weights = make_inputs(
        [(4, 4), (2, 3)], queries=6, requires_grad=True
    )

    def attend(value, locations, weights):
        out = multi_scale_deformable_attention(value, spatial_shapes, level_start_index, locations, weights)
        return out * 2.0

    torch._dynamo.reset()
    compiled = torch.compile(attend, fullgraph=True, backend="aot_eager")  # raises on any graph break
    out = compiled(value, locations, weights)
    grads = torch.autograd.grad(out.sum(), (value, locations, weights))
    expected = attend(value, locations, weights)
    expected_grads = torch.autograd.grad(expected.sum(), (value, locations, weights))
    torch.testing.assert_close(out, expected)
    for ours, theirs in zip(grads, expected_grads):
        torch.testing.assert_close(ours, theirs)
