"""Hungarian matching of predicted segments to target segments (paper 3.3).

The cost of assigning query `q` to target `t` is `cost_class * (-p_q(c_t)) + cost_mask * BCE + cost_dice * dice`,
where BCE and dice are computed on K points sampled uniformly, the same points for every prediction and target of an
image. The costs of the whole batch are computed together on the model's device; only the assignment itself
(`scipy.optimize.linear_sum_assignment`) runs per image on the CPU.

Targets are either dense `(N, H, W)` binary masks or a [`SegmentIndexMap`] (one map of target indices, read at the
points exactly as the masks would be). An image with more targets than queries (cells, crowds, shelves) gets the
best `min(Q, N)` pairs of the rectangular cost, as in the original; the other targets stay unmatched.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import nn

from .point_sampling import point_sample, sample_targets, uniform_points
from .segment_targets import SegmentIndexMap, sample_all_targets

Targets = torch.Tensor | SegmentIndexMap


def pairwise_sigmoid_ce_cost(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean sigmoid binary cross-entropy between every prediction and every target.

    Args:
        logits (`torch.Tensor` of shape `(..., num_queries, num_points)`): mask logits at the points.
        targets (`torch.Tensor` of shape `(..., num_targets, num_points)`): target values at the points.

    Returns:
        `torch.Tensor` of shape `(..., num_queries, num_targets)`.
    """
    num_points = logits.shape[-1]
    # BCE(x, t) = t * softplus(-x) + (1 - t) * softplus(x) = softplus(x) - t * x, so summed over the points the
    # pairwise cost needs one matmul instead of two.
    negative = F.softplus(logits).sum(-1, keepdim=True)  # (..., num_queries, 1)
    return (negative - logits @ targets.transpose(-1, -2)) / num_points


def pairwise_dice_cost(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Dice loss `1 - (2 |p t| + 1) / (|p| + |t| + 1)` between every prediction and every target (shapes as in
    [`pairwise_sigmoid_ce_cost`])."""
    probs = logits.sigmoid()
    numerator = 2 * probs @ targets.transpose(-1, -2)  # (..., num_queries, num_targets)
    denominator = probs.sum(-1).unsqueeze(-1) + targets.sum(-1).unsqueeze(-2)
    return 1 - (numerator + 1) / (denominator + 1)


def assign(cost: torch.Tensor | np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Minimum-cost one-to-one assignment of a `(num_queries, num_targets)` cost matrix.

    NaN and infinite costs (a diverged prediction, an empty target) are replaced by a cost larger than every finite
    one, with a warning, so that such a pair is only chosen when nothing else is possible and training never crashes
    inside scipy.

    Returns:
        `(query_indices, target_indices)`, two `torch.LongTensor` of length `min(num_queries, num_targets)`, sorted by
        query index.
    """
    cost = torch.as_tensor(cost).detach().to("cpu", torch.float64).numpy()
    if cost.size == 0:
        empty = torch.empty(0, dtype=torch.int64)
        return empty, empty.clone()
    finite = np.isfinite(cost)
    if not finite.all():
        warnings.warn(
            f"The matching cost matrix of shape {cost.shape} has {(~finite).sum()} NaN or infinite entries (a "
            "diverged prediction or an invalid target); they are replaced by a cost above every finite one.",
            RuntimeWarning,
            stacklevel=2,
        )
        worst = np.abs(cost[finite]).max() if finite.any() else 0.0
        # Above any sum of finite costs along an assignment, yet small enough not to overflow scipy's sums.
        cost = np.where(finite, cost, (worst + 1.0) * (min(cost.shape) + 1))
    rows, cols = linear_sum_assignment(cost)
    return torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64)


class HungarianMatcher(nn.Module):
    """Bipartite matching between the queries' predictions and the targets of each image (paper 3.3).

    Args:
        cost_class (`float`): weight of the class cost `-p(target class)`.
        cost_mask (`float`): weight of the sigmoid cross-entropy cost on the sampled points.
        cost_dice (`float`): weight of the dice cost on the sampled points.
        num_points (`int`): K, the points sampled uniformly per image.
    """

    def __init__(self, *, cost_class: float, cost_mask: float, cost_dice: float, num_points: int) -> None:
        super().__init__()
        if cost_class == 0 and cost_mask == 0 and cost_dice == 0:
            raise ValueError("cost_class, cost_mask and cost_dice are all 0: the matching would be arbitrary.")
        if num_points <= 0:
            raise ValueError(f"num_points must be positive, got {num_points}.")
        self.cost_class = cost_class
        self.cost_mask = cost_mask
        self.cost_dice = cost_dice
        self.num_points = num_points

    @torch.no_grad()
    def cost_matrices(
        self,
        masks_queries_logits: torch.Tensor,
        class_queries_logits: torch.Tensor,
        mask_labels: list[Targets],
        class_labels: list[torch.Tensor],
        target_masks: list[Targets] | None = None,
        *,
        checked: bool = False,
    ) -> list[torch.Tensor]:
        """Per image, the `(num_queries, num_targets)` matching cost (arguments as in `forward`; `target_masks`
        optionally gives `mask_labels` already converted to float and moved to the device, to convert them once for
        all decoder layers; `checked` skips the check of the targets when the caller has made it)."""
        batch_size = masks_queries_logits.shape[0]
        if not checked:
            check_targets(masks_queries_logits, mask_labels, class_labels)
        if target_masks is None:
            target_masks = mask_labels
        device = masks_queries_logits.device
        num_targets = [len(labels) for labels in class_labels]
        frame = _frame_size(mask_labels)

        # The same K uniform points for all predictions and targets of an image.
        points = uniform_points(batch_size, self.num_points, device=device)  # (batch, K, 2)
        pred_points = point_sample(at_least_float32(masks_queries_logits), points)  # (batch, queries, K)

        # Targets of all images, padded to the largest count so that the pairwise costs are one batched matmul.
        max_targets = max(num_targets)
        target_points = pred_points.new_zeros(batch_size, max_targets, self.num_points)
        for index, (masks, count) in enumerate(zip(target_masks, num_targets)):
            if not count:
                continue
            if isinstance(masks, SegmentIndexMap):
                target_points[index, :count] = sample_all_targets(
                    masks.to(device), points[index], count, frame_size=frame
                )
            else:
                coords = points[index : index + 1].expand(count, -1, -1)  # (targets, K, 2)
                target_points[index, :count] = sample_targets(masks.to(device), coords, frame_size=frame)

        cost = self.cost_mask * pairwise_sigmoid_ce_cost(pred_points, target_points) + self.cost_dice * (
            pairwise_dice_cost(pred_points, target_points)
        )  # (batch, queries, max_targets)
        probs = at_least_float32(class_queries_logits).softmax(-1)  # (batch, queries, classes + 1)
        costs = []
        for index, (labels, count) in enumerate(zip(class_labels, num_targets)):
            # The class cost approximates the NLL by -p(class); the constant 1 of 1 - p does not change the matching.
            class_cost = -probs[index][:, labels.to(device).long()]  # (queries, targets)
            costs.append(cost[index, :, :count] + self.cost_class * class_cost)
        return costs

    @torch.no_grad()
    def forward(
        self,
        masks_queries_logits: torch.Tensor,
        class_queries_logits: torch.Tensor,
        mask_labels: list[Targets],
        class_labels: list[torch.Tensor],
        target_masks: list[Targets] | None = None,
        *,
        checked: bool = False,
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Match predictions to targets.

        Args:
            masks_queries_logits (`torch.Tensor` of shape `(batch, num_queries, height, width)`): mask logits.
            class_queries_logits (`torch.Tensor` of shape `(batch, num_queries, num_labels + 1)`): class logits, the
                last one "no object".
            mask_labels (`list[torch.Tensor | SegmentIndexMap]`): per image, either `(num_targets, H, W)` binary
                masks (any resolution; masks of different sizes are treated as zero-padded to the largest) or a
                [`SegmentIndexMap`] whose values index `class_labels`.
            class_labels (`list[torch.LongTensor]`): per image, the `(num_targets,)` classes.
            checked (`bool`): skip the check of the targets (the criterion checks them once for all layers).

        Returns:
            Per image, `(query_indices, target_indices)` LongTensors (on the CPU) of length
            `min(num_queries, num_targets)`, sorted by query index; empty for an image without targets. With more
            targets than queries, the targets missing from `target_indices` are unmatched (they get no loss).
        """
        return [
            assign(cost)
            for cost in self.cost_matrices(
                masks_queries_logits, class_queries_logits, mask_labels, class_labels, target_masks, checked=checked
            )
        ]


def at_least_float32(tensor: torch.Tensor) -> torch.Tensor:
    """Half-precision logits in float32 for the costs and losses; float32 and float64 as they are."""
    return tensor if tensor.dtype in (torch.float32, torch.float64) else tensor.float()


def unmatched_targets(class_labels: list[torch.Tensor], num_queries: int) -> list[int]:
    """Per image, how many targets cannot get a query (`max(0, num_targets - num_queries)`)."""
    return [max(0, len(labels) - num_queries) for labels in class_labels]


def _frame_size(mask_labels: list[Targets]) -> tuple[int, int]:
    """`(height, width)` of the padded frame: the largest target size in the batch."""
    return max(m.shape[-2] for m in mask_labels), max(m.shape[-1] for m in mask_labels)


def check_targets(
    masks_queries_logits: torch.Tensor, mask_labels: list[Targets], class_labels: list[torch.Tensor]
) -> None:
    """Raise a `ValueError` naming the image when the targets do not fit together (counts, shapes, map values)."""
    batch_size = masks_queries_logits.shape[0]
    if len(mask_labels) != batch_size or len(class_labels) != batch_size:
        raise ValueError(
            f"mask_labels and class_labels must hold one entry per image: batch size {batch_size}, got "
            f"{len(mask_labels)} mask_labels and {len(class_labels)} class_labels."
        )
    for index, (masks, labels) in enumerate(zip(mask_labels, class_labels)):
        if isinstance(masks, SegmentIndexMap):
            masks.check(labels.shape[0], where=f"Image {index}")
        elif not isinstance(masks, torch.Tensor):
            raise TypeError(
                f"Image {index}: mask_labels entries must be (num_targets, height, width) tensors or "
                f"SegmentIndexMap objects, got {type(masks).__name__}."
            )
        elif masks.dim() != 3 or masks.shape[0] != labels.shape[0]:
            raise ValueError(
                f"Image {index}: mask_labels must be (num_targets, height, width) with num_targets = "
                f"len(class_labels), got mask_labels of shape {tuple(masks.shape)} and {labels.shape[0]} class labels."
            )
