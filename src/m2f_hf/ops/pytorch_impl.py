"""Fast pure-PyTorch multi-scale deformable attention (the CPU path and the GPU fallback).

Instead of one ``grid_sample`` per level (transformers' formulation), all levels and points are handled at once: the
four bilinear corners of every sampling point become rows of the flattened ``value`` tensor, and a single weighted
``embedding_bag`` sums them. The corner weights already contain the bilinear factor, the attention weight and a zero for
corners outside the map, so invalid corners can safely point at any in-range row.

Forward and backward are separate functions over the *inputs* only: the autograd wrapper (``custom_op.py``) saves
``value``, the locations and the weights, and the backward recomputes the small per-corner plan, so nothing of size
``(batch * heads, head_dim, queries, levels * points)`` is kept alive between forward and backward.

Everything is computed in float32 (float64 for float64 values); the output takes ``value``'s dtype and each gradient
its input's dtype, which is also what the CUDA kernel does.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

# Float arithmetic on row indices is exact below 2**24 in float32; above it the plan switches to float64.
_FLOAT32_EXACT_INTEGERS = 2**24


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """Accumulation dtype for values of `dtype`: float64 stays float64, everything else runs in float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


class _AxisPlan(NamedTuple):
    # every field has shape (rows, 2, levels * points); index 0/1 of dim 1 is the lower/upper neighbour
    coord: torch.Tensor  # clamped integer pixel coordinate, as float
    weight: torch.Tensor  # bilinear factor, zero where the neighbour lies outside the map
    valid: torch.Tensor  # 1.0 where the neighbour lies inside the map


def _axis_plan(coord: torch.Tensor, size: torch.Tensor) -> _AxisPlan:
    """Neighbours and weights along one axis.

    `coord` is `(rows, levels * points)` normalised coordinates, `size` is `(levels * points,)` map extents as floats.
    """
    pixel = coord * size - 0.5  # align_corners=False: pixel centres at integers
    low = pixel.floor()
    frac = pixel - low
    high = low + 1
    last = size - 1
    low_clamped = torch.minimum(low.clamp_min(0), last)
    high_clamped = torch.minimum(high.clamp_min(0), last)
    # a neighbour is inside the map exactly when clamping did not move it
    low_valid = (low_clamped == low).to(coord.dtype)
    high_valid = (high_clamped == high).to(coord.dtype)
    return _AxisPlan(
        coord=torch.stack([low_clamped, high_clamped], dim=1),
        weight=torch.stack([(1 - frac) * low_valid, frac * high_valid], dim=1),
        valid=torch.stack([low_valid, high_valid], dim=1),
    )


class _CornerPlan(NamedTuple):
    rows: torch.Tensor  # (batch * queries * heads, 2, 2, levels * points) int64 rows of value.view(-1, head_dim)
    x: _AxisPlan
    y: _AxisPlan


def _corner_plan(
    value_shape: torch.Size,
    spatial_shapes: torch.Tensor,
    level_start_index: torch.Tensor,
    sampling_locations: torch.Tensor,
) -> _CornerPlan:
    batch, num_keys, num_heads, _ = value_shape
    _, num_queries, _, num_levels, num_points, _ = sampling_locations.shape
    num_rows = batch * num_queries * num_heads
    dtype = sampling_locations.dtype
    index_dtype = dtype if batch * num_keys * num_heads < _FLOAT32_EXACT_INTEGERS else torch.float64

    # per (level, point) extents, flattened like the locations: (levels * points, 2) as (height, width)
    sizes = spatial_shapes.to(device=sampling_locations.device, dtype=dtype).repeat_interleave(num_points, dim=0)
    locations = sampling_locations.reshape(num_rows, num_levels * num_points, 2)
    x = _axis_plan(locations[..., 0], sizes[:, 1])
    y = _axis_plan(locations[..., 1], sizes[:, 0])

    # value.view(-1, head_dim) row of (b, key, h) is (b * num_keys + key) * num_heads + h, with
    # key = level_start + y * width + x; split into a per-(b, q, h) base, a y term and an x term.
    starts = level_start_index.to(device=sampling_locations.device, dtype=index_dtype).repeat_interleave(num_points)
    device = sampling_locations.device
    base = torch.arange(batch, device=device, dtype=index_dtype).view(batch, 1, 1) * (num_keys * num_heads)
    base = base + torch.arange(num_heads, device=device, dtype=index_dtype).view(1, 1, num_heads)
    base = base.expand(batch, num_queries, num_heads).reshape(num_rows, 1, 1, 1)
    y_term = (y.coord.to(index_dtype) * (sizes[:, 1].to(index_dtype) * num_heads) + starts * num_heads).unsqueeze(2)
    x_term = (x.coord.to(index_dtype) * num_heads).unsqueeze(1)
    rows = (base + y_term + x_term).to(torch.int64)  # (rows, 2 y-neighbours, 2 x-neighbours, levels * points)
    return _CornerPlan(rows=rows, x=x, y=y)


def ms_deform_attn_forward(
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    level_start_index: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """Forward pass; shapes as in `m2f_hf.ops.multi_scale_deformable_attention`. Not differentiable by itself."""
    batch, _, num_heads, head_dim = value.shape
    _, num_queries, _, num_levels, num_points, _ = sampling_locations.shape
    num_rows = batch * num_queries * num_heads
    dtype = compute_dtype(value.dtype)

    plan = _corner_plan(value.shape, spatial_shapes, level_start_index, sampling_locations.to(dtype))
    weights = attention_weights.to(dtype).reshape(num_rows, 1, 1, num_levels * num_points)
    # (rows, 2, 2, levels * points): bilinear x attention weight per corner, zero outside the map
    corner_weights = plan.y.weight.unsqueeze(2) * plan.x.weight.unsqueeze(1) * weights
    output = F.embedding_bag(
        plan.rows.view(num_rows, -1),
        value.to(dtype).reshape(-1, head_dim),  # (batch * keys * heads, head_dim)
        per_sample_weights=corner_weights.view(num_rows, -1),
        mode="sum",
    )  # (batch * queries * heads, head_dim)
    return output.view(batch, num_queries, num_heads * head_dim).to(value.dtype)


def ms_deform_attn_backward(
    grad_output: torch.Tensor,
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    level_start_index: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients for `value`, `sampling_locations` and `attention_weights`, recomputed from the inputs."""
    batch, num_keys, num_heads, head_dim = value.shape
    _, num_queries, _, num_levels, num_points, _ = sampling_locations.shape
    num_rows = batch * num_queries * num_heads
    num_samples = num_levels * num_points
    dtype = compute_dtype(value.dtype)

    plan = _corner_plan(value.shape, spatial_shapes, level_start_index, sampling_locations.to(dtype))
    weights = attention_weights.to(dtype).reshape(num_rows, 1, 1, num_samples)
    bilinear = plan.y.weight.unsqueeze(2) * plan.x.weight.unsqueeze(1)  # (rows, 2, 2, levels * points)
    corner_weights = bilinear * weights
    grad = grad_output.to(dtype).reshape(num_rows, head_dim)  # (batch * queries * heads, head_dim)
    value_rows = value.to(dtype).reshape(-1, head_dim)  # (batch * keys * heads, head_dim)
    flat_rows = plan.rows.reshape(-1)

    # grad_value: scatter grad * corner weight into the sampled rows, one column of corners at a time so the
    # temporary stays (rows, head_dim) instead of (rows * levels * points * 4, head_dim)
    grad_value = torch.zeros_like(value_rows)
    # transposed once so each corner's indices and weights are contiguous: (4 * levels * points, rows)
    rows_by_corner = plan.rows.view(num_rows, -1).t().contiguous()
    weights_by_corner = corner_weights.view(num_rows, -1).t().contiguous()
    for corner in range(rows_by_corner.shape[0]):
        grad_value.index_add_(0, rows_by_corner[corner], grad * weights_by_corner[corner].unsqueeze(1))

    # <grad, value[corner]> for every corner, without materialising the gathered values
    bag_of_sample = torch.arange(num_rows, device=value.device).repeat_interleave(4 * num_samples)
    bag_offsets = torch.arange(0, num_rows * 4 * num_samples, 4 * num_samples, device=value.device)
    dots = torch.ops.aten._embedding_bag_per_sample_weights_backward(
        grad, value_rows, flat_rows, bag_offsets, bag_of_sample, 0
    ).view(num_rows, 2, 2, num_samples)  # (rows, y-neighbour, x-neighbour, levels * points)

    grad_weights = (dots * bilinear).sum(dim=(1, 2))  # (rows, levels * points)
    # d(bilinear)/d(frac_x) is -valid for the low neighbour and +valid for the high one (same along y)
    x_sign = plan.x.valid * plan.x.valid.new_tensor([-1.0, 1.0]).view(1, 2, 1)  # (rows, 2, levels * points)
    y_sign = plan.y.valid * plan.y.valid.new_tensor([-1.0, 1.0]).view(1, 2, 1)
    weights = weights.view(num_rows, num_samples)
    grad_frac_x = (dots * plan.y.weight.unsqueeze(2) * x_sign.unsqueeze(1)).sum(dim=(1, 2)) * weights
    grad_frac_y = (dots * y_sign.unsqueeze(2) * plan.x.weight.unsqueeze(1)).sum(dim=(1, 2)) * weights
    sizes = spatial_shapes.to(device=value.device, dtype=dtype).repeat_interleave(num_points, dim=0)
    # pixel = location * size - 0.5, so d(frac)/d(location) = size
    grad_locations = torch.stack([grad_frac_x * sizes[:, 1], grad_frac_y * sizes[:, 0]], dim=-1)

    return (
        grad_value.view(batch, num_keys, num_heads, head_dim).to(value.dtype),
        grad_locations.view(sampling_locations.shape).to(sampling_locations.dtype),
        grad_weights.view(attention_weights.shape).to(attention_weights.dtype),
    )
