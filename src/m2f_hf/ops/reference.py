"""Naive multi-scale deformable attention, written for clarity, not speed.

This is the executable specification the tests compare every other implementation against. It walks over every
(batch, query, head, level, point) and every bilinear corner with plain Python loops, so it is only usable on tiny
inputs. It is differentiable through ordinary autograd, which lets the tests check hand-written backward passes.

Sampling convention (Deformable DETR, and ``grid_sample(..., align_corners=False, padding_mode="zeros")`` on the grid
``2 * location - 1``): a normalised location ``(x, y)`` in ``[0, 1]`` maps to the pixel coordinate
``(x * width - 0.5, y * height - 0.5)``, pixel centres sit on integers, and corners outside the map contribute zero.
"""

from __future__ import annotations

import torch


def multi_scale_deformable_attention_reference(
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    level_start_index: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """Loop-based multi-scale deformable attention.

    Args:
        value (`torch.Tensor` of shape `(batch, num_keys, num_heads, head_dim)`):
            Flattened feature maps of all levels.
        spatial_shapes (`torch.Tensor` of shape `(num_levels, 2)`):
            `(height, width)` of each level.
        level_start_index (`torch.Tensor` of shape `(num_levels,)`):
            Offset of each level inside `num_keys`.
        sampling_locations (`torch.Tensor` of shape `(batch, num_queries, num_heads, num_levels, num_points, 2)`):
            Normalised `(x, y)` sampling locations.
        attention_weights (`torch.Tensor` of shape `(batch, num_queries, num_heads, num_levels, num_points)`):
            Weight of each sampled point.

    Returns:
        `torch.Tensor` of shape `(batch, num_queries, num_heads * head_dim)`.
    """
    batch, _, num_heads, head_dim = value.shape
    _, num_queries, _, num_levels, num_points, _ = sampling_locations.shape
    shapes = [(int(h), int(w)) for h, w in spatial_shapes.tolist()]
    starts = [int(s) for s in level_start_index.tolist()]

    rows = []
    for b in range(batch):
        for q in range(num_queries):
            for h in range(num_heads):
                acc = value.new_zeros(head_dim)
                for level in range(num_levels):
                    height, width = shapes[level]
                    for p in range(num_points):
                        loc_x = sampling_locations[b, q, h, level, p, 0]
                        loc_y = sampling_locations[b, q, h, level, p, 1]
                        px = loc_x * width - 0.5
                        py = loc_y * height - 0.5
                        x0 = int(torch.floor(px))
                        y0 = int(torch.floor(py))
                        fx = px - x0
                        fy = py - y0
                        corners = (
                            (x0, y0, (1 - fx) * (1 - fy)),
                            (x0 + 1, y0, fx * (1 - fy)),
                            (x0, y0 + 1, (1 - fx) * fy),
                            (x0 + 1, y0 + 1, fx * fy),
                        )
                        sample = value.new_zeros(head_dim)
                        for cx, cy, bilinear in corners:
                            if 0 <= cx < width and 0 <= cy < height:
                                key = starts[level] + cy * width + cx
                                sample = sample + bilinear * value[b, key, h]
                        acc = acc + attention_weights[b, q, h, level, p] * sample
                rows.append(acc)
    # (batch * queries * heads, head_dim) -> (batch, queries, heads * head_dim)
    return torch.stack(rows).view(batch, num_queries, num_heads * head_dim)
