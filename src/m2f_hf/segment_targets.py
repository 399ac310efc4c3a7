"""Memory-light training targets: one map of target indices per image instead of `N x H x W` binary masks.

The matcher and the criterion only read targets at K points (paper 3.3), with bilinear interpolation (`grid_sample`,
`align_corners=False`, zero padding). At a point, the bilinear reading of target `k`'s binary mask is the sum of the
bilinear weights of the (up to) four neighbouring pixels that belong to `k`, so reading the index map gives exactly
what reading the dense masks gives: a `(H, W)` int32 map costs 4 bytes per pixel whatever the number of targets,
where the dense masks cost `N` bytes (bool) or `4 N` (float) per pixel.

Overlapping targets (COCO instances) need more than one index per pixel: the map then has `L` layers, `(L, H, W)`,
each pixel of a layer holding one target index or the ignore value, and each target living in one layer; a point's
reading sums the weights over all layers.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

# Elements of the (layers, pairs, points, 4) corner tensors built at once when reading matched pairs.
_CHUNK_ELEMENTS = 1 << 20


@dataclass(frozen=True)
class SegmentIndexMap:
    """One image's targets as a map of target indices.

    Args:
        index_map (`torch.Tensor` of shape `(height, width)` or `(layers, height, width)`): integer (int32 by
            default in the data path); pixel value `k` in `[0, num_targets)` belongs to target `k`, the `k`-th entry
            of the image's `class_labels`; `ignore_index` marks pixels of no target (void, crowd regions, padding).
            With layers, every target lives in one layer (overlapping targets in different ones).
        ignore_index (`int`): the value of pixels that belong to no target; must lie outside `[0, num_targets)`.
    """

    index_map: torch.Tensor
    ignore_index: int = -1

    def __post_init__(self) -> None:
        if not isinstance(self.index_map, torch.Tensor):
            raise TypeError(f"index_map must be a torch.Tensor, got {type(self.index_map).__name__}.")
        if (
            self.index_map.dtype.is_floating_point
            or self.index_map.dtype.is_complex
            or self.index_map.dtype == torch.bool
        ):
            raise ValueError(f"index_map must hold integers (int32), got dtype {self.index_map.dtype}.")
        if self.index_map.dim() not in (2, 3):
            raise ValueError(
                f"index_map must be (height, width) or (layers, height, width), got shape {tuple(self.index_map.shape)}."
            )

    @property
    def shape(self) -> torch.Size:
        return self.index_map.shape

    @property
    def device(self) -> torch.device:
        return self.index_map.device

    @property
    def layers(self) -> torch.Tensor:
        """The map as `(layers, height, width)` (a view)."""
        return self.index_map if self.index_map.dim() == 3 else self.index_map[None]

    def to(self, device=None, non_blocking: bool = False) -> SegmentIndexMap:
        """The same targets on `device` (what Accelerate's `send_to_device` calls)."""
        return SegmentIndexMap(self.index_map.to(device, non_blocking=non_blocking), self.ignore_index)

    def pad(self, height: int, width: int) -> SegmentIndexMap:
        """Padded at the bottom and right to `(height, width)` with `ignore_index` (padding belongs to no target)."""
        h, w = self.index_map.shape[-2:]
        if height < h or width < w:
            raise ValueError(f"cannot pad a target map of size {(h, w)} to the smaller size {(height, width)}.")
        if (height, width) == (h, w):
            return self
        out = self.index_map.new_full((*self.index_map.shape[:-2], height, width), self.ignore_index)
        out[..., :h, :w] = self.index_map
        return SegmentIndexMap(out, self.ignore_index)

    def to_dense(self, num_targets: int) -> torch.Tensor:
        """The `(num_targets, height, width)` bool masks these targets stand for (e.g. for transformers' loss)."""
        ids = torch.arange(num_targets, device=self.device, dtype=self.index_map.dtype)
        return (self.layers[None] == ids[:, None, None, None]).any(1)  # (targets, height, width)

    def check(self, num_targets: int, where: str) -> None:
        """Raise a `ValueError` naming `where` if a value is neither a target index nor the ignore value."""
        if 0 <= self.ignore_index < num_targets:
            raise ValueError(
                f"{where}: ignore_index {self.ignore_index} is a target index (the image has {num_targets} targets); "
                "it must lie outside [0, num_targets), e.g. -1."
            )
        values = self.index_map
        bad = (values != self.ignore_index) & ((values < 0) | (values >= num_targets))
        if bad.any():
            raise ValueError(
                f"{where}: the target map holds the value {int(values[bad][0])}, but its values must be target indices "
                f"in [0, {num_targets}) (one per class label) or ignore_index {self.ignore_index}."
            )


def bilinear_corners(
    coords: torch.Tensor, map_size: tuple[int, int], frame_size: tuple[int, int] | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The four pixels that bilinear reading (`grid_sample`, `align_corners=False`, zero padding) combines at each
    point, and their weights.

    Args:
        coords (`torch.Tensor` of shape `(..., num_points, 2)`): `(x, y)` in `[0, 1]` of the frame.
        map_size (`tuple[int, int]`): `(height, width)` of the map read.
        frame_size (`tuple[int, int]`, *optional*): `(height, width)` of the frame the coordinates refer to (the map
            is read as if padded to it, as [`sample_targets`] does); defaults to `map_size`.

    Returns:
        `(flat_index, weights)`, both `(..., num_points, 4)`: the corners' positions in the flattened `height *
        width` map (clamped into it) and their weights in `coords.dtype`, 0 for corners outside the map.
    """
    height, width = map_size
    if frame_size is not None and tuple(frame_size) != (height, width):
        coords = coords * coords.new_tensor([frame_size[1] / width, frame_size[0] / height])
    grid = 2.0 * coords - 1.0
    # grid_sample's unnormalisation for align_corners=False: pixel centres at integer + 0.5.
    x = ((grid[..., 0] + 1) * width - 1) / 2
    y = ((grid[..., 1] + 1) * height - 1) / 2
    x0, y0 = x.floor(), y.floor()
    x1, y1 = x0 + 1, y0 + 1
    weights = torch.stack([(x1 - x) * (y1 - y), (x - x0) * (y1 - y), (x1 - x) * (y - y0), (x - x0) * (y - y0)], -1)
    xs = torch.stack([x0, x1, x0, x1], -1)
    ys = torch.stack([y0, y0, y1, y1], -1)
    inside = (xs >= 0) & (xs < width) & (ys >= 0) & (ys < height)
    weights = weights * inside
    flat_index = ys.clamp(0, height - 1).long() * width + xs.clamp(0, width - 1).long()
    return flat_index, weights


def sample_all_targets(
    targets: SegmentIndexMap,
    coords: torch.Tensor,
    num_targets: int,
    *,
    frame_size: tuple[int, int] | None = None,
) -> torch.Tensor:
    """Every target of one image read at the same points (the matcher's case).

    Args:
        targets (`SegmentIndexMap`): the image's targets.
        coords (`torch.Tensor` of shape `(num_points, 2)`): `(x, y)` in `[0, 1]` of `frame_size`.
        num_targets (`int`): N, the number of targets (class labels) of the image.
        frame_size (`tuple[int, int]`, *optional*): as in [`bilinear_corners`].

    Returns:
        `torch.Tensor` of shape `(num_targets, num_points)` in `coords.dtype`: what sampling the dense masks gives.
    """
    layers = targets.layers
    num_layers = layers.shape[0]
    num_points = coords.shape[0]
    flat_index, weights = bilinear_corners(coords, tuple(layers.shape[-2:]), frame_size)  # (points, 4)
    ids = layers.reshape(num_layers, -1)[:, flat_index].long()  # (layers, points, 4)
    # Corners of no target (ignore value, outside the map) add their weight to a spare row N, dropped at the end.
    ids = torch.where((ids >= 0) & (ids < num_targets), ids, num_targets)
    out = weights.new_zeros(num_targets + 1, num_points)
    out.scatter_add_(
        0,
        ids.permute(0, 2, 1).reshape(4 * num_layers, num_points),  # (layers * 4, points)
        weights.t().repeat(num_layers, 1),
    )
    return out[:num_targets]


def sample_target_pairs(
    targets: SegmentIndexMap,
    target_indices: torch.Tensor,
    coords: torch.Tensor,
    *,
    frame_size: tuple[int, int] | None = None,
) -> torch.Tensor:
    """Chosen targets of one image, each read at its own points (the criterion's matched pairs).

    Args:
        targets (`SegmentIndexMap`): the image's targets.
        target_indices (`torch.LongTensor` of shape `(num_pairs,)`): which target each row reads.
        coords (`torch.Tensor` of shape `(num_pairs, num_points, 2)`): `(x, y)` in `[0, 1]` of `frame_size`.
        frame_size (`tuple[int, int]`, *optional*): as in [`bilinear_corners`].

    Returns:
        `torch.Tensor` of shape `(num_pairs, num_points)` in `coords.dtype`.
    """
    layers = targets.layers
    num_layers = layers.shape[0]
    flat_layers = layers.reshape(num_layers, -1)
    num_pairs, num_points = coords.shape[:2]
    target_indices = target_indices.to(layers.device, layers.dtype)
    # A few pairs at a time: the corner ids of all pairs would take 32 bytes per point and layer.
    step = max(1, _CHUNK_ELEMENTS // max(1, 4 * num_points * num_layers))
    out = []
    for start in range(0, num_pairs, step):
        flat_index, weights = bilinear_corners(coords[start : start + step], tuple(layers.shape[-2:]), frame_size)
        ids = flat_layers[:, flat_index]  # (layers, pairs, points, 4)
        hit = ids == target_indices[start : start + step, None, None]
        out.append((weights * hit).sum(-1).sum(0))  # (pairs, points)
    if not out:
        return coords.new_zeros(0, num_points)
    return torch.cat(out)
