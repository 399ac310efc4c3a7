"""Sine positional embeddings of feature maps (DETR's 2-D generalisation; paper 3.2.2, e_pos)."""

from __future__ import annotations

import math

import torch


def sine_position_embedding(
    height: int,
    width: int,
    *,
    num_features: int,
    device: torch.device,
    dtype: torch.dtype,
    temperature: float = 10000.0,
    scale: float = 2 * math.pi,
    eps: float = 1e-6,
) -> torch.Tensor:
    """Normalised sine/cosine embedding of an unpadded (height, width) grid.

    Returns a `(2 * num_features, height, width)` tensor: the y embedding in the first half of the channels, the x
    embedding in the second, each interleaving sin (even channels) and cos (odd channels). Batch-independent, so it is
    computed once per feature map and broadcast.
    """
    # Cumulative positions 1..n normalised so that the last row/column maps to `scale`.
    y = torch.arange(1, height + 1, device=device, dtype=dtype) / (height + eps) * scale
    x = torch.arange(1, width + 1, device=device, dtype=dtype) / (width + eps) * scale
    exponent = 2 * torch.div(torch.arange(num_features, device=device), 2, rounding_mode="floor") / num_features
    dim_t = (temperature ** exponent.to(dtype)).to(dtype)
    pos_y = y[:, None] / dim_t  # (height, num_features)
    pos_x = x[:, None] / dim_t  # (width, num_features)
    pos_y = torch.stack((pos_y[:, 0::2].sin(), pos_y[:, 1::2].cos()), dim=2).flatten(1)
    pos_x = torch.stack((pos_x[:, 0::2].sin(), pos_x[:, 1::2].cos()), dim=2).flatten(1)
    embedding = torch.cat(
        (pos_y[:, None, :].expand(height, width, num_features), pos_x[None, :, :].expand(height, width, num_features)),
        dim=2,
    )  # (height, width, 2 * num_features)
    return embedding.permute(2, 0, 1)
