"""Training criterion of Mask2Former (paper 3.3 and 4.1).

For each set of predictions (the final layer, and with deep supervision the learnable queries' prediction and every
decoder layer), the [`HungarianMatcher`] assigns queries to targets; matched queries are trained with cross-entropy
towards their target's class and with sigmoid BCE + dice on K points per pair chosen by importance sampling; unmatched
queries are trained towards "no object", whose cross-entropy weight is `no_object_weight`.

Memory: targets are never padded into a batch tensor nor upsampled; only the matched predictions and targets are
read, at K points each. With [`SegmentIndexMap`] targets (what the training data path gives), an image's targets take
one int32 map instead of `N` float masks.

Crowded images: with more targets than queries only `min(Q, N)` pairs are matched (see [`HungarianMatcher`]); the
others get no loss, and the mask losses are averaged over the matched pairs (see [`Mask2FormerCriterion.num_masks`]).
"""

from __future__ import annotations

import warnings

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from .matcher import HungarianMatcher, Targets, _frame_size, at_least_float32, check_targets, unmatched_targets
from .point_sampling import importance_sample_points, point_sample, sample_targets
from .segment_targets import SegmentIndexMap, sample_target_pairs


def sigmoid_ce_loss(logits: torch.Tensor, targets: torch.Tensor, num_masks: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy averaged over the points, summed over the `(num_masks_here, num_points)` pairs and divided
    by `num_masks` (the batch's, averaged over processes)."""
    targets = targets.to(logits.dtype)
    return F.binary_cross_entropy_with_logits(logits, targets, reduction="none").mean(1).sum() / num_masks


def dice_loss(logits: torch.Tensor, targets: torch.Tensor, num_masks: torch.Tensor) -> torch.Tensor:
    """Dice loss `1 - (2 |p t| + 1) / (|p| + |t| + 1)` per mask over its points, summed and divided by `num_masks`."""
    probs = logits.sigmoid()
    numerator = 2 * (probs * targets).sum(-1)
    denominator = probs.sum(-1) + targets.sum(-1)
    return (1 - (numerator + 1) / (denominator + 1)).sum() / num_masks


class Mask2FormerCriterion(nn.Module):
    """Weighted Mask2Former losses. Holds no parameters and no buffers, so it never changes a checkpoint.

    Args:
        num_labels (`int`): number of classes (without "no object").
        class_weight (`float`): weight of the classification loss (and of the class matching cost).
        mask_weight (`float`): weight of the sigmoid cross-entropy mask loss (and matching cost).
        dice_weight (`float`): weight of the dice loss (and matching cost).
        no_object_weight (`float`): cross-entropy weight of the "no object" class.
        num_points (`int`): K, points per mask in matching and loss.
        oversample_ratio (`float`): importance sampling candidates per point.
        importance_sample_ratio (`float`): fraction of the K points chosen by uncertainty.
    """

    def __init__(
        self,
        *,
        num_labels: int,
        class_weight: float,
        mask_weight: float,
        dice_weight: float,
        no_object_weight: float,
        num_points: int,
        oversample_ratio: float,
        importance_sample_ratio: float,
    ) -> None:
        super().__init__()
        if oversample_ratio < 1:
            raise ValueError(f"oversample_ratio must be >= 1, got {oversample_ratio}.")
        if not 0 <= importance_sample_ratio <= 1:
            raise ValueError(f"importance_sample_ratio must be in [0, 1], got {importance_sample_ratio}.")
        self.num_labels = num_labels
        self.weights = {"loss_cross_entropy": class_weight, "loss_mask": mask_weight, "loss_dice": dice_weight}
        self.no_object_weight = no_object_weight
        self.num_points = num_points
        self.oversample_ratio = oversample_ratio
        self.importance_sample_ratio = importance_sample_ratio
        self.matcher = HungarianMatcher(
            cost_class=class_weight, cost_mask=mask_weight, cost_dice=dice_weight, num_points=num_points
        )
        # Targets the last call could not match (more targets than queries), for the training log.
        self.last_unmatched_targets = 0
        self._warned_unmatched = False

    @classmethod
    def from_config(cls, config) -> Mask2FormerCriterion:
        """Build the criterion from an [`M2FConfig`]."""
        return cls(
            num_labels=config.num_labels,
            class_weight=config.class_weight,
            mask_weight=config.mask_weight,
            dice_weight=config.dice_weight,
            no_object_weight=config.no_object_weight,
            num_points=config.train_num_points,
            oversample_ratio=config.oversample_ratio,
            importance_sample_ratio=config.importance_sample_ratio,
        )

    def forward(
        self,
        masks_queries_logits: torch.Tensor,
        class_queries_logits: torch.Tensor,
        mask_labels: list[Targets],
        class_labels: list[torch.Tensor],
        auxiliary_predictions: list[dict[str, torch.Tensor]] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Compute the weighted losses.

        Args:
            masks_queries_logits (`torch.Tensor` of shape `(batch, num_queries, height, width)`): final mask logits.
            class_queries_logits (`torch.Tensor` of shape `(batch, num_queries, num_labels + 1)`): final class logits.
            mask_labels (`list[torch.Tensor | SegmentIndexMap]`): per image, `(num_targets, H, W)` binary target masks
                (bool, uint8 or float; the targets may be larger than the predictions, the points are in normalised
                coordinates), or a [`SegmentIndexMap`] whose values index `class_labels` (same losses, far less
                memory). Targets that no query can take (more than `num_queries`) get no loss; see
                `last_unmatched_targets`.
            class_labels (`list[torch.LongTensor]`): per image, `(num_targets,)` classes in `[0, num_labels)`.
            auxiliary_predictions (`list[dict]`, *optional*): deep supervision, one dict per earlier prediction with
                `masks_queries_logits` and `class_queries_logits`.

        Returns:
            `dict[str, torch.Tensor]`: the weighted terms `loss_cross_entropy`, `loss_mask`, `loss_dice`, and the same
            suffixed `_{i}` for the `i`-th auxiliary prediction; the total loss is their sum.
        """
        check_targets(masks_queries_logits, mask_labels, class_labels)
        device = masks_queries_logits.device
        for index, labels in enumerate(class_labels):
            if labels.numel() and (labels.min() < 0 or labels.max() >= self.num_labels):
                raise ValueError(
                    f"class_labels of image {index} hold {labels.tolist()}, but classes must be in "
                    f"[0, {self.num_labels}) (num_labels of the config)."
                )
        num_queries = masks_queries_logits.shape[1]
        unmatched = unmatched_targets(class_labels, num_queries)
        self.last_unmatched_targets = sum(unmatched)
        if self.last_unmatched_targets and not self._warned_unmatched:
            self._warned_unmatched = True
            image = max(range(len(unmatched)), key=unmatched.__getitem__)
            warnings.warn(
                f"Image {image} of the batch has {len(class_labels[image])} target segments but the model has only "
                f"{num_queries} queries: the best {num_queries} pairs are matched and {unmatched[image]} "
                f"{'target gets' if unmatched[image] == 1 else 'targets get'} no loss "
                f"({self.last_unmatched_targets} unmatched in this batch). Crowded images train on, as in "
                "the original; raise `num_queries` to train on every target. Shown once; examples/train.py counts "
                "the unmatched targets in train_log.jsonl.",
                UserWarning,
                stacklevel=2,
            )
        # Converted once for all layers; a no-op when the targets are float already.
        target_masks = [
            masks.to(device) if isinstance(masks, SegmentIndexMap) else masks.to(device=device, dtype=torch.float32)
            for masks in mask_labels
        ]
        class_labels = [labels.to(device=device, dtype=torch.long) for labels in class_labels]
        num_masks = self.num_masks(class_labels, device, num_queries=num_queries)

        predictions = [(masks_queries_logits, class_queries_logits, "")]
        for index, aux in enumerate(auxiliary_predictions or []):
            predictions.append((aux["masks_queries_logits"], aux["class_queries_logits"], f"_{index}"))
        losses = {}
        for masks, classes, suffix in predictions:
            indices = self.matcher(masks, classes, mask_labels, class_labels, target_masks=target_masks, checked=True)
            terms = {
                **self.mask_losses(masks, target_masks, indices, num_masks, frame=_frame_size(mask_labels)),
                **self.class_loss(classes, class_labels, indices),
            }
            losses.update({f"{name}{suffix}": self.weights[name] * value for name, value in terms.items()})
        return losses

    def class_loss(
        self,
        class_queries_logits: torch.Tensor,
        class_labels: list[torch.Tensor],
        indices: list[tuple[torch.Tensor, torch.Tensor]],
    ) -> dict[str, torch.Tensor]:
        """Cross-entropy of every query: matched ones towards their target's class, the rest towards "no object"."""
        batch_size, num_queries, num_classes = class_queries_logits.shape
        device = class_queries_logits.device
        target_classes = torch.full((batch_size, num_queries), self.num_labels, dtype=torch.long, device=device)
        for index, ((queries, targets), labels) in enumerate(zip(indices, class_labels)):
            target_classes[index, queries.to(device)] = labels[targets.to(device)]
        logits = at_least_float32(class_queries_logits)
        # paper 4.1: "no object" weighs 0.1, the classes 1 (a weighted mean over the queries).
        weight = torch.ones(num_classes, device=device, dtype=logits.dtype)
        weight[-1] = self.no_object_weight
        loss = F.cross_entropy(logits.transpose(1, 2), target_classes, weight=weight)
        return {"loss_cross_entropy": loss}

    def mask_losses(
        self,
        masks_queries_logits: torch.Tensor,
        target_masks: list[Targets],
        indices: list[tuple[torch.Tensor, torch.Tensor]],
        num_masks: torch.Tensor,
        *,
        frame: tuple[int, int],
    ) -> dict[str, torch.Tensor]:
        """Sigmoid BCE and dice of the matched pairs on K points chosen per pair by importance sampling."""
        device = masks_queries_logits.device
        batch_index = torch.cat([torch.full_like(queries, i) for i, (queries, _) in enumerate(indices)]).to(device)
        query_index = torch.cat([queries for queries, _ in indices]).to(device)
        if query_index.numel() == 0:
            # Nothing matched in the batch: zero losses that still reach the mask head (DDP expects its gradients).
            zero = masks_queries_logits.sum() * 0.0
            return {"loss_mask": zero, "loss_dice": zero.clone()}
        # Only the matched predictions: (matched, 1, height, width), in float for the losses.
        matched = at_least_float32(masks_queries_logits[batch_index, query_index].unsqueeze(1))
        points = importance_sample_points(
            matched,
            num_points=self.num_points,
            oversample_ratio=self.oversample_ratio,
            importance_sample_ratio=self.importance_sample_ratio,
        )  # (matched, K, 2)
        with torch.no_grad():
            labels = []
            start = 0
            for masks, (_, targets) in zip(target_masks, indices):
                count = len(targets)
                if count and isinstance(masks, SegmentIndexMap):
                    labels.append(sample_target_pairs(masks, targets, points[start : start + count], frame_size=frame))
                elif count:
                    chosen = masks[targets.to(masks.device)]  # (count, H, W), the matched targets only
                    labels.append(sample_targets(chosen, points[start : start + count], frame_size=frame))
                start += count
            point_labels = torch.cat(labels)  # (matched, K)
        point_logits = point_sample(matched, points)[:, 0]  # (matched, K)
        return {
            "loss_mask": sigmoid_ce_loss(point_logits, point_labels, num_masks),
            "loss_dice": dice_loss(point_logits, point_labels, num_masks),
        }

    @staticmethod
    def num_masks(
        class_labels: list[torch.Tensor], device: torch.device, num_queries: int | None = None
    ) -> torch.Tensor:
        """The mask losses' normaliser: the matched pairs per process (`min(num_queries, num_targets)` per image;
        every target when `num_queries` is None), averaged over processes when `torch.distributed` is initialised,
        at least 1.

        The original divides by all targets, matched or not. Both are the same unless an image has more targets than
        queries; then dividing by unmatched targets too would shrink the mask terms against the class term (a
        per-query mean) as images get more crowded, and the unmatched targets would still change the loss. Dividing
        by the matched pairs keeps the mask losses a mean over the pairs trained, so a crowded batch's loss is
        exactly the loss of its matched pairs alone.
        """
        counts = [len(labels) if num_queries is None else min(num_queries, len(labels)) for labels in class_labels]
        num_masks = torch.tensor(float(sum(counts)), device=device)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(num_masks)
            num_masks = num_masks / dist.get_world_size()
        return num_masks.clamp(min=1)
