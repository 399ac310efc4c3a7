"""Point sampling for the matching cost and the mask losses (paper 3.3, after PointRend).

Coordinates are in `[0, 1] x [0, 1]`, `(x, y)` order, relative to the mask they are read from, and values are read
with bilinear interpolation (`grid_sample`, `align_corners=False`, zero padding). Reading a mask of size `(h, w)` at
coordinates scaled by `(W / w, H / h)` gives exactly what reading it zero-padded to `(H, W)` would give, which lets
the criterion handle targets of different sizes without building a padded batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def point_sample(features: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """Read `features` at normalised point coordinates with bilinear interpolation.

    Args:
        features (`torch.Tensor` of shape `(batch, channels, height, width)`):
            The maps to read.
        coords (`torch.Tensor` of shape `(batch, num_points, 2)`):
            `(x, y)` coordinates in `[0, 1]`.

    Returns:
        `torch.Tensor` of shape `(batch, channels, num_points)`.
    """
    # grid_sample wants a (batch, out_h, out_w, 2) grid in [-1, 1]: the points become a num_points x 1 image.
    grid = (2.0 * coords - 1.0).unsqueeze(2)  # (batch, num_points, 1, 2)
    return F.grid_sample(features, grid.to(features.dtype), mode="bilinear", align_corners=False).squeeze(3)


# Candidate points scored per block in importance sampling (about 8 MB of float32 scores per block).
_POINTS_PER_BLOCK = 1 << 21


def uniform_points(batch: int, num_points: int, *, device: torch.device | str | None = None) -> torch.Tensor:
    """`(batch, num_points, 2)` points drawn uniformly in `[0, 1)^2` from torch's global generator.

    One `torch.rand` call for the whole batch: on a given device this draws the same numbers as one call per item.
    """
    return torch.rand(batch, num_points, 2, device=device)


def uncertainty(logits: torch.Tensor) -> torch.Tensor:
    """Uncertainty of a mask logit: `-|logit|`, highest where the prediction is closest to 0.5 (paper 3.3)."""
    return -logits.abs()


def importance_sample_points(
    logits: torch.Tensor, *, num_points: int, oversample_ratio: float, importance_sample_ratio: float
) -> torch.Tensor:
    """Choose `num_points` points per mask by importance sampling (PointRend): draw `oversample_ratio * num_points`
    uniform candidates, keep the `importance_sample_ratio` fraction with the highest uncertainty, and fill the rest
    with fresh uniform points.

    Args:
        logits (`torch.Tensor` of shape `(num_masks, 1, height, width)`):
            Predicted mask logits (only read, no gradient flows through the choice).
        num_points (`int`): points per mask (K).
        oversample_ratio (`float`): candidates per kept point (>= 1).
        importance_sample_ratio (`float`): fraction of the K points chosen by uncertainty, in `[0, 1]`.

    Returns:
        `torch.Tensor` of shape `(num_masks, num_points, 2)`.
    """
    num_masks = logits.shape[0]
    num_candidates = int(num_points * oversample_ratio)
    num_uncertain = int(importance_sample_ratio * num_points)
    num_random = num_points - num_uncertain
    with torch.no_grad():
        # A block of masks at a time: candidates, their readings and scores for all masks at once would take
        # hundreds of MB for 600 matched pairs. On the CPU, drawing the blocks' candidates one after the other gives
        # the same numbers as one draw for all masks.
        step = max(1, _POINTS_PER_BLOCK // max(num_candidates, 1))
        points = torch.empty(num_masks, num_points, 2, device=logits.device)  # filled in place: no copies to join
        for start in range(0, num_masks, step):
            block_logits = logits[start : start + step]
            candidates = torch.rand(block_logits.shape[0], num_candidates, 2, device=logits.device)
            scores = uncertainty(point_sample(block_logits, candidates))[:, 0]  # (block, num_candidates)
            # which points, not their order, matters (the losses average over points): unsorted is twice as fast
            top = scores.topk(num_uncertain, dim=1, sorted=False).indices  # (block, num_uncertain)
            points[start : start + step, :num_uncertain] = torch.gather(
                candidates, 1, top.unsqueeze(-1).expand(-1, -1, 2)
            )
        if num_random > 0:
            points[:, num_uncertain:] = torch.rand(num_masks, num_random, 2, device=logits.device)
    return points


def sample_targets(
    targets: torch.Tensor, coords: torch.Tensor, *, frame_size: tuple[int, int] | None = None
) -> torch.Tensor:
    """Read binary target masks at points given in the frame of size `frame_size` (the padded batch size).

    Args:
        targets (`torch.Tensor` of shape `(num_masks, height, width)`): any dtype; read as `coords.dtype`.
        coords (`torch.Tensor` of shape `(num_masks, num_points, 2)`): `(x, y)` in `[0, 1]` of `frame_size`.
        frame_size (`tuple[int, int]`, *optional*): `(height, width)` of the frame the coordinates refer to; the
            targets are treated as if zero-padded to it. Defaults to the targets' own size.

    Returns:
        `torch.Tensor` of shape `(num_masks, num_points)`.
    """
    height, width = targets.shape[-2:]
    if frame_size is not None and tuple(frame_size) != (height, width):
        scale = coords.new_tensor([frame_size[1] / width, frame_size[0] / height])
        coords = coords * scale
    return point_sample(targets[:, None].to(coords.dtype), coords)[:, 0]
