"""Label encoding: semantic, instance and COCO-panoptic maps -> per-image binary masks and class ids.

Mask2Former is trained by set prediction (paper 3.1): every image's target is a set of (binary mask, class) pairs,
one per segment, so a label map becomes `mask_labels` (N, H, W) and `class_labels` (N,).
"""

from __future__ import annotations

import numpy as np
import torch

try:
    from PIL import Image as PILImage
except ImportError:  # pragma: no cover
    PILImage = None


def label_map_to_tensor(label_map, index: int, panoptic: bool = False) -> torch.Tensor:
    """Convert one label map to an int64 (H, W) tensor; a panoptic map (H, W, 3) RGB is decoded to segment ids."""
    argument = f"segmentation_maps[{index}]"
    if PILImage is not None and isinstance(label_map, PILImage.Image):
        if panoptic and label_map.mode != "RGB":
            label_map = label_map.convert("RGB")
        label_map = np.asarray(label_map)
    if isinstance(label_map, np.ndarray):
        if not (np.issubdtype(label_map.dtype, np.integer) or label_map.dtype == np.bool_):
            raise ValueError(f"`{argument}` must hold integer labels; got a numpy array of dtype {label_map.dtype}.")
        tensor = torch.from_numpy(label_map.astype(np.int64, copy=False))
    elif isinstance(label_map, torch.Tensor):
        if label_map.is_floating_point() or label_map.is_complex():
            raise ValueError(f"`{argument}` must hold integer labels; got a tensor of dtype {label_map.dtype}.")
        tensor = label_map.detach().to(torch.int64)
    else:
        raise ValueError(
            f"`{argument}` must be a PIL image, numpy array or torch tensor; got {type(label_map).__name__}."
        )
    if panoptic:
        if tensor.ndim == 3 and tensor.shape[0] == 3 and tensor.shape[-1] != 3:
            tensor = tensor.permute(1, 2, 0)  # (3, H, W) -> (H, W, 3)
        if tensor.ndim == 3 and tensor.shape[-1] == 3:
            # COCO panoptic PNGs encode a segment id as R + 256 * G + 256**2 * B
            tensor = tensor[..., 0] + 256 * tensor[..., 1] + 256 * 256 * tensor[..., 2]
        elif tensor.ndim != 2:
            raise ValueError(
                f"`{argument}` must be an RGB-encoded panoptic map (H, W, 3) or a map of segment ids (H, W); got "
                f"shape {tuple(tensor.shape)}."
            )
    else:
        if tensor.ndim == 3 and 1 in (tensor.shape[0], tensor.shape[-1]):
            tensor = tensor.squeeze(0) if tensor.shape[0] == 1 else tensor.squeeze(-1)
        if tensor.ndim != 2:
            raise ValueError(f"`{argument}` must be a label map of shape (H, W); got shape {tuple(tensor.shape)}.")
    return tensor


def _check_classes(classes: torch.Tensor, num_labels: int | None, index: int, source: str) -> None:
    if num_labels is None or classes.numel() == 0:
        return
    bad = classes[(classes < 0) | (classes >= num_labels)]
    if bad.numel() > 0:
        raise ValueError(
            f"class id {int(bad[0])} in {source} of image {index} is out of range: expected 0 <= id < num_labels "
            f"({num_labels})."
        )


def encode_semantic_or_instance(
    label_map: torch.Tensor,
    index: int,
    *,
    instance_id_to_semantic_id: dict[int, int] | None,
    ignore_index: int | None,
    do_reduce_labels: bool,
    num_labels: int | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Binary masks (N, H, W) float32 and classes (N,) int64 for a semantic or instance label map.

    Matches transformers' `Mask2FormerImageProcessor`: with `do_reduce_labels` the label 0 becomes `ignore_index`
    and every other label is decremented; `ignore_index` pixels belong to no mask; segments are sorted by label.
    """
    if do_reduce_labels:
        if ignore_index is None:
            raise ValueError("`do_reduce_labels=True` needs `ignore_index` (the value given to label 0); got None.")
        label_map = torch.where(label_map == 0, torch.full_like(label_map, ignore_index), label_map - 1)
    labels = torch.unique(label_map)  # sorted
    if ignore_index is not None:
        labels = labels[labels != ignore_index]
    masks = (label_map.unsqueeze(0) == labels.view(-1, 1, 1)).to(torch.float32)  # (N, H, W)
    if instance_id_to_semantic_id is None:
        classes = labels
        source = "segmentation_maps"
    else:
        offset = 1 if do_reduce_labels else 0
        classes_list = []
        for instance_id in labels.tolist():
            key = instance_id + offset
            if key not in instance_id_to_semantic_id:
                raise ValueError(
                    f"instance id {key} of segmentation_maps[{index}] is missing from instance_id_to_semantic_id "
                    f"(keys: {sorted(instance_id_to_semantic_id)[:20]})."
                )
            classes_list.append(int(instance_id_to_semantic_id[key]) - offset)
        classes = torch.tensor(classes_list, dtype=torch.int64)
        source = "instance_id_to_semantic_id"
    classes = classes.to(torch.int64)
    _check_classes(classes, num_labels, index, source)
    return masks, classes


def check_panoptic_ids(id_map: torch.Tensor, segments_info: list[dict], index: int) -> None:
    """Every segment listed in `segments_info` must occur in its map (checked before resizing)."""
    present = set(torch.unique(id_map).tolist())
    for segment in segments_info:
        for key in ("id", "category_id"):
            if key not in segment:
                raise ValueError(f"segments_info[{index}] entry {segment} lacks the key '{key}'.")
        if int(segment["id"]) not in present:
            raise ValueError(
                f"segments_info[{index}] lists segment id {segment['id']}, which does not occur in "
                f"segmentation_maps[{index}] (ids present: {sorted(present)[:20]})."
            )


def encode_panoptic(
    id_map: torch.Tensor, segments_info: list[dict], index: int, *, num_labels: int | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Binary masks and classes for a decoded COCO panoptic map, in `segments_info` order.

    As in Mask2Former's COCO panoptic dataset mapper, crowd segments (`iscrowd=1`) and unlabeled pixels get no mask,
    so they are ignored by the loss rather than taught as any class.
    """
    kept = [segment for segment in segments_info if not segment.get("iscrowd", 0)]
    ids = torch.tensor([int(segment["id"]) for segment in kept], dtype=torch.int64)
    classes = torch.tensor([int(segment["category_id"]) for segment in kept], dtype=torch.int64)
    masks = (id_map.unsqueeze(0) == ids.view(-1, 1, 1)).to(torch.float32)  # (N, H, W)
    _check_classes(classes, num_labels, index, "segments_info")
    return masks, classes


def prepare_labels(segmentation_maps, instance_id_to_semantic_id, segments_info, image_sizes: list[tuple[int, int]]):
    """Check and pair each image's label map with its mapping or `segments_info`: a list of (id map, mapping, info)
    per image, or None without labels. Raises `ValueError` for missing, extra or mismatched labels."""
    if segmentation_maps is None:
        if segments_info is not None or instance_id_to_semantic_id is not None:
            raise ValueError("`segments_info` / `instance_id_to_semantic_id` were given without `segmentation_maps`.")
        return None
    panoptic = segments_info is not None
    if panoptic and instance_id_to_semantic_id is not None:
        raise ValueError("pass either `segments_info` (COCO panoptic) or `instance_id_to_semantic_id`, not both.")
    batch_size = len(image_sizes)
    # a single map is (H, W), or (H, W, 3) for an RGB-encoded panoptic map; one more axis is a batch
    single_rank = 3 if panoptic else 2
    if isinstance(segmentation_maps, (list, tuple)):
        maps = list(segmentation_maps)
    elif isinstance(segmentation_maps, (np.ndarray, torch.Tensor)) and segmentation_maps.ndim == single_rank + 1:
        maps = list(segmentation_maps)
    else:
        maps = [segmentation_maps]
    infos = None
    if panoptic:
        if not isinstance(segments_info, (list, tuple)):
            raise ValueError(f"`segments_info` must be a list; got {type(segments_info).__name__}.")
        one_image = len(segments_info) == 0 or isinstance(segments_info[0], dict)
        infos = [list(segments_info)] if one_image else [list(info) for info in segments_info]
    if len(maps) != batch_size:
        raise ValueError(f"got {batch_size} images but {len(maps)} segmentation maps; pass one map per image.")
    if infos is not None and len(infos) != batch_size:
        raise ValueError(f"got {batch_size} images but {len(infos)} segments_info lists; pass one per image.")
    if isinstance(instance_id_to_semantic_id, dict):
        mappings = [instance_id_to_semantic_id] * batch_size
    elif instance_id_to_semantic_id is None:
        mappings = [None] * batch_size
    else:
        mappings = list(instance_id_to_semantic_id)
        if len(mappings) != batch_size:
            raise ValueError(
                f"got {batch_size} images but {len(mappings)} instance_id_to_semantic_id mappings; pass one "
                "mapping, or one per image."
            )
    labels = []
    for index, label_map in enumerate(maps):
        tensor = label_map_to_tensor(label_map, index, panoptic=panoptic)
        image_hw = tuple(image_sizes[index])
        if tuple(tensor.shape) != image_hw:
            raise ValueError(
                f"segmentation_maps[{index}] has size {tuple(tensor.shape)} but its image has size {image_hw}; "
                "a label map must have the size of its image."
            )
        if panoptic:
            check_panoptic_ids(tensor, infos[index], index)
        labels.append((tensor, mappings[index], infos[index] if panoptic else None))
    return labels
