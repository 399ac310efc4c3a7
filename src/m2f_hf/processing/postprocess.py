"""Post-processing of Mask2Former outputs into semantic, instance and panoptic results.

Geometry follows Detectron2's `sem_seg_postprocess`: mask logits predicted for the padded input are upsampled to
the padded input size, the padding is cropped off (per image), and only then the result is resized to the requested
output size. Each image of a batch is handled on its own, so a padded batch gives the same results as its images
one by one.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from transformers.utils import logging

logger = logging.get_logger(__name__)


@dataclass(frozen=True)
class ImageGeometry:
    """Sizes of one image through pre-processing: padded model input, valid (unpadded) region, requested output."""

    padded_hw: tuple[int, int]
    valid_hw: tuple[int, int]
    output_hw: tuple[int, int]


def _as_size_list(sizes, argument: str) -> list[tuple[int, int]]:
    if isinstance(sizes, torch.Tensor):
        sizes = sizes.tolist()
    result = []
    for size in sizes:
        if len(size) != 2 or int(size[0]) < 1 or int(size[1]) < 1:
            raise ValueError(f"each entry of `{argument}` must be (height, width) with positive sides; got {size}.")
        result.append((int(size[0]), int(size[1])))
    return result


def resolve_geometry(
    mask_hw: tuple[int, int],
    batch_size: int,
    *,
    target_sizes,
    pixel_mask: torch.Tensor | None,
    mask_stride: int,
    resized_size_fn: Callable[[int, int], tuple[int, int]],
) -> list[ImageGeometry]:
    """Work out, per image, the padded input size, the valid region inside it and the output size.

    The model outputs do not carry the padded and unpadded sizes, so they come from (first found):
    `pixel_mask` as returned by pre-processing; else the original sizes in `target_sizes` replayed through the
    processor's resize rule, with the padded size given by the mask size times `mask_stride`; else no cropping.
    """
    if target_sizes is not None:
        target_sizes = _as_size_list(target_sizes, "target_sizes")
        if len(target_sizes) != batch_size:
            raise ValueError(
                f"`target_sizes` has {len(target_sizes)} entries but the outputs hold {batch_size} images; pass one "
                "(height, width) per image."
            )
    geometries = []
    if pixel_mask is not None:
        if pixel_mask.ndim != 3 or pixel_mask.shape[0] != batch_size:
            raise ValueError(
                f"`pixel_mask` must have shape (batch_size={batch_size}, height, width); got {tuple(pixel_mask.shape)}."
            )
        padded = (int(pixel_mask.shape[-2]), int(pixel_mask.shape[-1]))
        valid_rows = pixel_mask.bool().any(dim=2).sum(dim=1).tolist()  # (batch,) rows holding any valid pixel
        valid_cols = pixel_mask.bool().any(dim=1).sum(dim=1).tolist()
        for i in range(batch_size):
            valid = (int(valid_rows[i]), int(valid_cols[i]))
            output = target_sizes[i] if target_sizes is not None else valid
            geometries.append(ImageGeometry(padded, valid, output))
        return geometries

    padded = (mask_hw[0] * mask_stride, mask_hw[1] * mask_stride)
    for i in range(batch_size):
        if target_sizes is None:
            geometries.append(ImageGeometry(padded, padded, padded))
            continue
        valid = resized_size_fn(*target_sizes[i])
        if valid[0] > padded[0] or valid[1] > padded[1]:
            logger.warning(
                f"image {i}: the processor would resize {target_sizes[i]} to {valid}, which does not fit the padded "
                f"input {padded} implied by masks of size {tuple(mask_hw)} (mask_stride={mask_stride}); using the "
                "whole mask. Pass `pixel_mask` from pre-processing to crop the padding exactly."
            )
            valid = padded
        geometries.append(ImageGeometry(padded, valid, target_sizes[i]))
    return geometries


def upsample_crop_resize(maps: torch.Tensor, geometry: ImageGeometry) -> torch.Tensor:
    """(K, h, w) maps predicted on the padded input -> (K, *output_hw): upsample, crop the padding, resize."""
    if maps.shape[0] == 0:
        return maps.new_zeros((0, *geometry.output_hw))
    (ph, pw), (vh, vw) = geometry.padded_hw, geometry.valid_hw
    h, w = maps.shape[-2:]
    x = maps.unsqueeze(0)
    if ph % h == 0 and pw % w == 0:
        # Only upsample the rows/columns that survive the crop. With the same integer scale the interpolation
        # weights are identical, and one extra source row/column keeps the border taps of the kept pixels.
        sh, sw = ph // h, pw // w
        rows, cols = min(h, math.ceil(vh / sh) + 1), min(w, math.ceil(vw / sw) + 1)
        x = F.interpolate(x[..., :rows, :cols], size=(rows * sh, cols * sw), mode="bilinear", align_corners=False)
    elif (h, w) != (ph, pw):
        x = F.interpolate(x, size=(ph, pw), mode="bilinear", align_corners=False)
    x = x[..., :vh, :vw]
    if (vh, vw) != tuple(geometry.output_hw):
        x = F.interpolate(x, size=tuple(geometry.output_hw), mode="bilinear", align_corners=False)
    return x[0]


# pixels per block of the exact semantic path (about 2 MB of class scores for 133 classes)
_SEMANTIC_BLOCK = 4096
# A query is "strong" when it gives at least this much probability to the real classes; the bounds below pay off
# only when at most this fraction of the queries is strong.
_STRONG_QUERY_MASS, _MAX_STRONG_FRACTION = 0.25, 0.5
# Slack for rounding in the bounds (scores are sums of at most Q products of numbers in [0, 1]).
_BOUND_MARGIN = 1e-4
# undecided pixels refined per block (bounds the (pixels, queries) logits to about 10 MB)
_REFINE_BLOCK = 32768


@functools.lru_cache(maxsize=32)
def _axis_taps(source: int, padded: int, valid: int, output: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per output index, the 4 source indices and weights of `upsample_crop_resize` along one axis (cached: the
    bounds and every block of refined pixels of an image read the same taps; callers only index them).

    Bilinear resizing (align_corners=False) reads source position max(0, (i + 1/2) * in / out - 1/2) and its two
    neighbouring integers; upsampling to `padded`, keeping the first `valid` and resizing to `output` composes two
    such reads. Returns (output, 4) indices and weights (a repeated index where a step is the identity or at the
    border).
    """

    def taps(size_in: int, size_out: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if size_in == size_out:
            index = torch.arange(size_out)
            return index, index, torch.zeros(size_out, dtype=torch.float64)
        position = ((torch.arange(size_out, dtype=torch.float64) + 0.5) * (size_in / size_out) - 0.5).clamp_min(0)
        low = position.floor().long().clamp_max(size_in - 1)
        high = (low + 1).clamp_max(size_in - 1)
        return low, high, position - low

    low2, high2, frac2 = taps(valid, output)  # rows of the cropped upsampled map
    low1, high1, frac1 = taps(source, padded)  # rows of the mask logits
    index = torch.stack([low1[low2], high1[low2], low1[high2], high1[high2]], dim=1)
    weight = torch.stack(
        [(1 - frac2) * (1 - frac1[low2]), (1 - frac2) * frac1[low2], frac2 * (1 - frac1[high2]), frac2 * frac1[high2]],
        dim=1,
    )
    return index, weight


def _resized_logits_at(mask_logits: torch.Tensor, geometry: ImageGeometry, pixels: torch.Tensor) -> torch.Tensor:
    """`upsample_crop_resize(mask_logits, geometry).flatten(1)[:, pixels].t()`, computed at just those pixels.

    Returns (pixels, queries). Bilinear resizing is separable, so each output pixel is a weighted sum of at most
    4 x 4 mask logits; equal to the full resize up to float rounding.
    """
    queries, height, width = mask_logits.shape
    out_w = geometry.output_hw[1]
    rows, row_w = _axis_taps(height, geometry.padded_hw[0], geometry.valid_hw[0], geometry.output_hw[0])
    cols, col_w = _axis_taps(width, geometry.padded_hw[1], geometry.valid_hw[1], out_w)
    pixels = pixels.cpu()
    r, c = pixels // out_w, pixels % out_w
    index = (rows[r][:, :, None] * width + cols[c][:, None, :]).flatten(1)  # (pixels, 16)
    weight = (row_w[r][:, :, None] * col_w[c][:, None, :]).flatten(1)
    table = mask_logits.reshape(queries, -1).t().contiguous()  # (h * w, queries)
    device = mask_logits.device
    return F.embedding_bag(index.to(device), table, per_sample_weights=weight.to(device, table.dtype), mode="sum")


def _local_max(maps: torch.Tensor, radius: tuple[int, int]) -> torch.Tensor:
    """Maximum over the (2 r + 1) x (2 r' + 1) window around each pixel of (N, h, w) maps (separable)."""
    for dim, r in ((1, radius[0]), (2, radius[1])):
        if r == 0:
            continue
        size = maps.shape[dim]
        padded = torch.cat([maps.narrow(dim, 0, 1).expand_as(maps.narrow(dim, 0, r)), maps], dim)
        padded = torch.cat([padded, maps.narrow(dim, size - 1, 1).expand_as(maps.narrow(dim, 0, r))], dim)
        result = padded.narrow(dim, 0, size).clone()
        for shift in range(1, 2 * r + 1):
            torch.maximum(result, padded.narrow(dim, shift, size), out=result)
        maps = result
    return maps


def _semantic_labels_bounded(
    class_probs: torch.Tensor, mask_logits: torch.Tensor, geometry: ImageGeometry
) -> torch.Tensor | None:
    """The per-pixel argmax of sum_q p(c | q) * sigmoid(m_q(x)) (the full-resolution product), with less work.

    Only the queries that give real classes a fair probability ("strong") are upsampled to full resolution. For
    the others ("weak") an upper bound of their part of each class score is computed at mask resolution: a
    bilinearly resized logit is a convex combination of the logits it reads, so it is at most their maximum; a
    class sum, through the sigmoid, of each logit's local maximum over the widest span of rows and columns one
    output pixel reads therefore bounds the weak part at every pixel that reads that logit. Where the best class
    of the strong part beats
    every other class's strong part plus bound, it is the answer. The remaining pixels get the weak queries'
    logits at just those pixels and the exact sum over all queries for the contending classes (and over all
    classes wherever a class outside them could still win). Same class map as the full product up to float
    rounding in exact ties. None when most queries are strong: the caller then computes everything.
    """
    num_queries, num_classes = class_probs.shape
    strong = class_probs.sum(1) >= _STRONG_QUERY_MASS
    num_strong = int(strong.sum())
    if num_strong == 0 or num_strong > _MAX_STRONG_FRACTION * num_queries:
        return None
    strong_probs, weak_probs = class_probs[strong], class_probs[~strong]
    contending = torch.zeros(num_classes, dtype=torch.bool, device=class_probs.device)
    contending[strong_probs.argmax(1)] = True
    contending |= strong_probs.sum(0) >= _STRONG_QUERY_MASS / 2
    classes, others = contending.nonzero().flatten(), ~contending
    has_others = bool(others.any())

    strong_sigmoid = upsample_crop_resize(mask_logits[strong], geometry).sigmoid().flatten(1)  # (S, H * W)
    partial = strong_sigmoid.t() @ strong_probs[:, classes]  # (H * W, K): the strong part of the sum
    best, best_index = partial.max(1)

    # Bounds of the weak part at mask resolution, per contending class, and one for all other classes together.
    weak_logits = mask_logits[~strong]
    taps = [
        _axis_taps(size, padded, valid, output)[0]
        for size, padded, valid, output in zip(
            mask_logits.shape[-2:], geometry.padded_hw, geometry.valid_hw, geometry.output_hw
        )
    ]
    spans = tuple(int((index.amax(1) - index.amin(1)).max()) for index in taps)
    weak_peak = _local_max(weak_logits, spans).sigmoid().flatten(1)  # (W, h * w)
    bounds = weak_peak.t() @ weak_probs[:, classes]  # (h * w, K)
    if has_others:
        bounds = torch.cat([bounds, (weak_peak.t() @ weak_probs[:, others]).amax(1, keepdim=True)], 1)
    # With the local maximum taken over the whole span, the bound at any logit an output pixel reads holds for
    # that pixel: take the first one it reads.
    first = (taps[0][:, :1] * mask_logits.shape[-1] + taps[1][:, 0]).flatten()  # (H * W,)
    bounds = bounds.index_select(0, first.to(bounds.device))  # (H * W, K [+ 1])
    rival = (partial + bounds[:, : classes.numel()]).scatter_(1, best_index[:, None], -math.inf).amax(1)
    rest_strong = strong_probs[:, others].sum(0).max() if has_others else 0.0
    if has_others:
        rival = rival.maximum(bounds[:, -1] + rest_strong)
    labels = classes[best_index]
    undecided = (best <= rival + _BOUND_MARGIN).nonzero().flatten()

    for start in range(0, undecided.numel(), _REFINE_BLOCK):
        pixels = undecided[start : start + _REFINE_BLOCK]
        weak_sigmoid = _resized_logits_at(weak_logits, geometry, pixels).sigmoid_()  # (n, W)
        scores = partial[pixels].addmm_(weak_sigmoid, weak_probs[:, classes])  # exact, contending classes
        value, index = scores.max(1)
        labels[pixels] = classes[index]
        if has_others:  # where another class could still win, all classes
            unsure = (value <= bounds[pixels, -1] + rest_strong + _BOUND_MARGIN).nonzero().flatten()
            if unsure.numel():
                every = strong_sigmoid[:, pixels[unsure]].t() @ strong_probs
                every.addmm_(weak_sigmoid[unsure], weak_probs)
                labels[pixels[unsure]] = every.argmax(1)
    return labels.view(geometry.output_hw)


def semantic_inference(
    class_logits: torch.Tensor, mask_logits: torch.Tensor, geometry: ImageGeometry, *, exact: bool, with_scores: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-pixel class map (and optionally (C, H, W) scores) for one image.

    score(c, x) = sum_q p(c | q) * sigmoid(m_q(x)) (paper 3.3, semantic inference). With `exact` every query's mask
    logits are upsampled before the sum, as Detectron2 does: the class map is that argmax, found by bounding the
    confident-query part and refining only undecided pixels (`_semantic_labels_bounded`), or by the full
    C x Q x H x W product when scores are wanted or the bounds do not pay off. Without `exact` the sum is taken at
    mask resolution and the class scores are upsampled instead (when only the class map is wanted, only the
    classes that rank first or second somewhere at mask resolution).
    """
    class_probs = class_logits.softmax(-1)[:, :-1]  # (queries, classes); the last class is "no object"
    if exact:
        if not with_scores:
            labels = _semantic_labels_bounded(class_probs, mask_logits, geometry)
            if labels is not None:
                return labels, None
        mask_logits = upsample_crop_resize(mask_logits, geometry)  # (queries, H, W)
        if with_scores:
            scores = torch.einsum("qc,qhw->chw", class_probs, mask_logits.sigmoid())
            return scores.argmax(0), scores
        # Only the class map is wanted: sigmoid, class scores and argmax one block of pixels at a time, so the
        # (classes, H * W) score tensor never leaves the cache (same arithmetic, same result as the full product).
        flat = mask_logits.reshape(mask_logits.shape[0], -1)  # (queries, H * W)
        by_class = class_probs.t().contiguous()  # (classes, queries)
        labels = torch.empty(flat.shape[1], dtype=torch.int64, device=flat.device)
        for start in range(0, flat.shape[1], _SEMANTIC_BLOCK):
            block = flat[:, start : start + _SEMANTIC_BLOCK].sigmoid()
            labels[start : start + _SEMANTIC_BLOCK] = (by_class @ block).argmax(0)
        return labels.view(mask_logits.shape[-2:]), None
    low_res = torch.einsum("qc,qhw->chw", class_probs, mask_logits.sigmoid())  # (classes, h, w)
    if with_scores:
        scores = upsample_crop_resize(low_res, geometry)
        return scores.argmax(0), scores
    top = low_res.topk(min(2, low_res.shape[0]), dim=0).indices  # (2, h, w)
    candidates = torch.unique(top)
    resized = upsample_crop_resize(low_res[candidates], geometry)
    return candidates[resized.argmax(0)], None


def _logit(probability: float) -> float:
    if probability <= 0.0:
        return -math.inf
    if probability >= 1.0:
        return math.inf
    return math.log(probability) - math.log1p(-probability)


def instance_inference(
    class_logits: torch.Tensor,
    mask_logits: torch.Tensor,
    geometry: ImageGeometry,
    *,
    threshold: float,
    mask_threshold: float,
    overlap_mask_area_threshold: float,
    thing_ids: frozenset[int] | None = None,
) -> tuple[torch.Tensor, list[dict], torch.Tensor]:
    """Instances of one image: (segmentation map, segments_info, full binary masks of the kept instances).

    As in Mask2Former (paper 4.1) the top-`num_queries` (query, class) pairs are candidates, a mask is the query's
    mask logits above `mask_threshold` (as a probability), and the score is class probability times the mean mask
    probability inside the mask. Instances are painted by decreasing score; one whose visible part is less than
    `overlap_mask_area_threshold` of its mask is dropped. With `thing_ids`, candidates of other classes are dropped
    after the top-k choice (the original's `instance_inference` for panoptic-trained models).
    """
    num_queries, num_classes = class_logits.shape[0], class_logits.shape[1] - 1
    class_probs = class_logits.softmax(-1)[:, :-1]
    top_scores, top_index = class_probs.flatten().topk(min(num_queries, class_probs.numel()), sorted=True)
    query_index, labels = top_index // num_classes, top_index % num_classes
    if thing_ids is not None:
        is_thing = torch.zeros(num_classes, dtype=torch.bool, device=labels.device)
        is_thing[torch.tensor(sorted(thing_ids), dtype=torch.long, device=labels.device)] = True
        keep = is_thing[labels]
        top_scores, query_index, labels = top_scores[keep], query_index[keep], labels[keep]
    # the mean mask probability is at most 1, so a pair whose class probability misses the threshold cannot pass
    if threshold > 0:
        keep = top_scores >= threshold
        top_scores, query_index, labels = top_scores[keep], query_index[keep], labels[keep]
    height, width = geometry.output_hw
    unique_queries, inverse = torch.unique(query_index, return_inverse=True)
    logits = upsample_crop_resize(mask_logits[unique_queries], geometry)  # (unique, H, W)
    binary = logits > _logit(mask_threshold)
    probs = logits.sigmoid()
    area = binary.flatten(1).sum(1)
    mask_scores = (probs * binary).flatten(1).sum(1) / (area + 1e-6)
    scores = top_scores * mask_scores[inverse]
    keep = (scores >= threshold) & (area[inverse] > 0)
    order = torch.argsort(scores[keep], descending=True)
    kept_scores, kept_labels, kept_masks = scores[keep][order], labels[keep][order], inverse[keep][order]

    segmentation = torch.full((height, width), -1, dtype=torch.int32, device=mask_logits.device)
    painted = torch.zeros((height, width), dtype=torch.bool, device=mask_logits.device)
    segments, binary_maps = [], []
    for score, label, mask_index in zip(kept_scores.tolist(), kept_labels.tolist(), kept_masks.tolist()):
        mask = binary[mask_index]
        visible = mask & ~painted
        if visible.sum().item() < overlap_mask_area_threshold * area[mask_index].item():
            continue
        segment_id = len(segments)
        segmentation[visible] = segment_id
        painted |= visible
        segments.append({"id": segment_id, "label_id": label, "was_fused": False, "score": round(score, 6)})
        binary_maps.append(mask)
    if binary_maps:
        stacked = torch.stack(binary_maps).to(torch.float32)
    else:
        stacked = torch.zeros((0, height, width), dtype=torch.float32, device=mask_logits.device)
    return segmentation, segments, stacked


def panoptic_inference(
    class_logits: torch.Tensor,
    mask_logits: torch.Tensor,
    geometry: ImageGeometry,
    *,
    threshold: float,
    mask_threshold: float,
    overlap_mask_area_threshold: float,
    label_ids_to_fuse: set[int],
) -> tuple[torch.Tensor, list[dict]]:
    """Panoptic segmentation of one image, following Mask2Former's `panoptic_inference`.

    Queries predicting "no object" or with a class probability <= `threshold` are dropped; every pixel goes to the
    query with the highest class-probability-weighted mask probability, if that mask probability reaches
    `mask_threshold`; a segment keeping less than `overlap_mask_area_threshold` of its own mask is dropped; segments
    of a class in `label_ids_to_fuse` share one id. Unassigned pixels are 0, segment ids start at 1.
    """
    num_classes = class_logits.shape[1] - 1
    scores, labels = class_logits.softmax(-1).max(-1)
    keep = (labels != num_classes) & (scores > threshold)
    scores, labels = scores[keep], labels[keep]
    height, width = geometry.output_hw
    segmentation = torch.zeros((height, width), dtype=torch.int32, device=mask_logits.device)
    if scores.numel() == 0:
        return segmentation, []
    logits = upsample_crop_resize(mask_logits[keep], geometry)  # (kept, H, W)
    count = scores.numel()
    # sigmoid(m) >= t  <=>  m >= logit(t): count each query's own mask on the logits, before the sigmoid
    own_area = logits.ge(_logit(mask_threshold)).view(count, -1).sum(1, dtype=torch.int64)
    weighted = logits.sigmoid_().mul_(scores.view(-1, 1, 1))  # (kept, H, W) class-weighted mask probabilities
    best, winner = weighted.max(0)  # (H, W) the winning kept query of every pixel
    # the winner's own mask probability reaches the threshold: best = score * prob >= score * threshold
    confident = best >= scores[winner] * mask_threshold
    won_area = torch.bincount(winner.flatten(), minlength=count)
    final_area = torch.bincount(winner[confident], minlength=count)

    segment_of_query = torch.zeros(count + 1, dtype=torch.int32)  # lookup table: kept query -> segment id
    segments, fused_ids = [], {}
    for k, (label, score) in enumerate(zip(labels.tolist(), scores.tolist())):
        won, own, final = int(won_area[k]), int(own_area[k]), int(final_area[k])
        if won == 0 or own == 0 or final == 0 or won / own < overlap_mask_area_threshold:
            continue
        if label in label_ids_to_fuse and label in fused_ids:
            segment_of_query[k] = fused_ids[label]
            continue
        segment_id = len(segments) + 1
        segment_of_query[k] = segment_id
        if label in label_ids_to_fuse:
            fused_ids[label] = segment_id
        segments.append(
            {"id": segment_id, "label_id": label, "was_fused": label in label_ids_to_fuse, "score": round(score, 6)}
        )
    segment_of_query = segment_of_query.to(mask_logits.device)
    segmentation = torch.where(confident, segment_of_query[winner], segmentation)
    return segmentation, segments


def binary_mask_to_rle(mask) -> list[int]:
    """Run-length encoding of a binary (H, W) mask (torch tensor or numpy array, bool, integer or float; non-zero
    is inside) in transformers' format: 1-based [start, length, ...] pairs over the row-major flattened mask."""
    if not isinstance(mask, torch.Tensor):
        mask = torch.from_numpy(np.asarray(mask))
    if mask.ndim != 2:
        raise ValueError(f"`mask` must be a binary (height, width) mask; got shape {tuple(mask.shape)}.")
    pixels = (mask.flatten() != 0).to(torch.int8)
    edges = torch.cat([pixels.new_zeros(1), pixels, pixels.new_zeros(1)])
    runs = torch.nonzero(edges[1:] != edges[:-1]).flatten() + 1
    runs[1::2] -= runs[::2].clone()
    return runs.tolist()
