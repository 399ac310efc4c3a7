"""A torch `Dataset` over a `datasets.Dataset` split, and the collate function that builds model batches."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch.utils.data import Dataset

from ..processing.image_ops import pad_bottom_right, rescale_and_normalize, round_up
from ..segment_targets import SegmentIndexMap
from .formats import DataError, FormatAdapter, Sample, reference_from_sample

# The value of target-map pixels that belong to no target (void, crowd, padding).
TARGET_IGNORE_INDEX = -1


def _trained_ids(sample: Sample) -> list[int]:
    """Ids of the segments still present in the (augmented) sample that are trained on: known, not crowd. A segment
    that an augmentation (an LSJ crop, a downscale) removed is absent from the map, so it is dropped here, before
    matching; crowd segments are left out of training, as in the original."""
    present = torch.unique(sample.segments).tolist()
    return [i for i in present if i in sample.classes and not sample.crowd.get(i, False)]


def encode_targets(sample: Sample) -> tuple[torch.Tensor, torch.Tensor]:
    """Dense targets: binary masks `(num_segments, H, W)` (bool) and classes `(num_segments,)` of the trained
    segments of the sample (see [`encode_target_map`] for the memory-light form the training data path uses)."""
    ids = _trained_ids(sample)
    height, width = sample.segments.shape[-2:]
    if not ids:
        return torch.zeros(0, height, width, dtype=torch.bool), torch.zeros(0, dtype=torch.long)
    ids_tensor = torch.tensor(ids, dtype=sample.segments.dtype)
    layers = sample.segments.reshape(-1, height, width)  # (layers, H, W); one layer for a flat map
    masks = (layers[None] == ids_tensor[:, None, None, None]).any(1)  # (segments, H, W)
    classes = torch.tensor([sample.classes[i] for i in ids], dtype=torch.long)
    return masks, classes


def encode_target_map(sample: Sample) -> tuple[SegmentIndexMap, torch.Tensor]:
    """Memory-light targets: a [`SegmentIndexMap`] (int32, `TARGET_IGNORE_INDEX` where no trained segment is) and
    the classes `(num_segments,)`, in the order of [`encode_targets`] (the k-th class is map value k).

    A layered `(L, H, W)` sample (overlapping instances) keeps its layers, less those left without a trained
    segment; the loss is then the one of the dense masks of [`encode_targets`], overlaps included.
    """
    ids = _trained_ids(sample)
    unique, inverse = torch.unique(sample.segments, return_inverse=True)
    lookup = torch.full((len(unique),), TARGET_IGNORE_INDEX, dtype=torch.int32)
    position = {value: index for index, value in enumerate(unique.tolist())}
    for target, segment_id in enumerate(ids):
        lookup[position[segment_id]] = target
    index_map = lookup[inverse]  # same shape as sample.segments
    if index_map.dim() == 3:
        used = (index_map != TARGET_IGNORE_INDEX).flatten(1).any(1)
        index_map = index_map[used] if used.any() else index_map[:1]
    classes = torch.tensor([sample.classes[i] for i in ids], dtype=torch.long)
    return SegmentIndexMap(index_map, TARGET_IGNORE_INDEX), classes


class SegmentationDataset(Dataset):
    """Decoded, augmented samples of one split.

    Args:
        dataset (`datasets.Dataset`): the split.
        adapter (`FormatAdapter`): decodes and checks rows.
        transform (callable, *optional*): `(Sample, torch.Generator) -> Sample`.
        split (`str`): name used in error messages.
        seed (`int`): base of the per-sample augmentation seeds.
        with_reference (`bool`): also return the evaluation reference (panoptic-style dict, original resolution).
        dense_targets (`bool`): give `mask_labels` as `(num_segments, H, W)` bool masks ([`encode_targets`]) instead
            of a [`SegmentIndexMap`] ([`encode_target_map`], the default; same losses, a fraction of the memory).
    """

    def __init__(
        self,
        dataset,
        adapter: FormatAdapter,
        transform: Callable[[Sample, torch.Generator], Sample] | None = None,
        *,
        split: str = "train",
        seed: int = 0,
        with_reference: bool = False,
        dense_targets: bool = False,
    ) -> None:
        if len(dataset) == 0:
            raise DataError(f"the {split} split is empty; expected at least one sample.")
        adapter.check_columns(dataset.column_names, split, getattr(dataset, "features", None))
        self.dataset = dataset
        self.adapter = adapter
        self.transform = transform
        self.split = split
        self.seed = seed
        self.epoch = 0
        self.with_reference = with_reference
        self.dense_targets = dense_targets

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = self.adapter(self.dataset[int(index)], where=f"{self.split} sample {index}")
        item: dict[str, Any] = {"index": int(index), "original_size": tuple(sample.image.shape[-2:])}
        if self.with_reference:
            item["reference"] = reference_from_sample(sample)
        if self.transform is not None:
            # A seed per (seed, epoch, index): the augmentation does not depend on workers or on resuming.
            generator = torch.Generator().manual_seed(hash((self.seed, self.epoch, int(index))) % (2**63))
            sample = self.transform(sample, generator)
        item["image"] = sample.image
        encode = encode_targets if self.dense_targets else encode_target_map
        item["mask_labels"], item["class_labels"] = encode(sample)
        return item


class Collator:
    """Normalise and pad images to the batch's largest (rounded up to `size_divisor`, or to `pad_size`), pad targets
    (dense masks with 0, [`SegmentIndexMap`]s with their ignore value: padding belongs to no segment).

    Args:
        image_mean, image_std (`float` or `Sequence[float]`): normalisation of `x * rescale_factor`, one value for
            every channel or one per channel.
        rescale_factor (`float`): applied before normalising (1/255 for uint8 images).
        size_divisor (`int`): padded sides are multiples of it.
        pad_size (`tuple[int, int]`, *optional*): fixed padded size (e.g. the crop size, for constant shapes).
    """

    def __init__(
        self,
        *,
        image_mean: float | Sequence[float],
        image_std: float | Sequence[float],
        rescale_factor: float = 1 / 255,
        size_divisor: int = 32,
        pad_size: tuple[int, int] | None = None,
    ) -> None:
        self.image_mean = [float(image_mean)] if isinstance(image_mean, (int, float)) else list(image_mean)
        self.image_std = [float(image_std)] if isinstance(image_std, (int, float)) else list(image_std)
        self.rescale_factor = rescale_factor
        self.size_divisor = size_divisor
        self.pad_size = pad_size

    @classmethod
    def from_image_processor(cls, processor, pad_size: tuple[int, int] | None = None) -> Collator:
        return cls(
            image_mean=processor.image_mean,
            image_std=processor.image_std,
            rescale_factor=processor.rescale_factor,
            size_divisor=getattr(processor, "size_divisor", 32) or 1,
            pad_size=pad_size,
        )

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        sizes = [tuple(item["image"].shape[-2:]) for item in items]
        height = max(h for h, _ in sizes)
        width = max(w for _, w in sizes)
        if self.pad_size is not None:
            height, width = max(height, self.pad_size[0]), max(width, self.pad_size[1])
        height, width = round_up(height, self.size_divisor), round_up(width, self.size_divisor)
        pixel_values = torch.zeros(len(items), items[0]["image"].shape[0], height, width)
        pixel_mask = torch.zeros(len(items), height, width, dtype=torch.long)
        mask_labels, class_labels = [], []
        for index, (item, (h, w)) in enumerate(zip(items, sizes)):
            pixel_values[index, :, :h, :w] = rescale_and_normalize(
                item["image"],
                do_rescale=True,
                rescale_factor=self.rescale_factor,
                do_normalize=True,
                image_mean=self.image_mean,
                image_std=self.image_std,
            )
            pixel_mask[index, :h, :w] = 1
            targets = item["mask_labels"]
            if isinstance(targets, SegmentIndexMap):
                mask_labels.append(targets.pad(height, width))
            else:
                mask_labels.append(pad_bottom_right(targets, (height, width), False))
            class_labels.append(item["class_labels"])
        batch = {
            "pixel_values": pixel_values,
            "pixel_mask": pixel_mask,
            "mask_labels": mask_labels,
            "class_labels": class_labels,
            "indices": [item["index"] for item in items],
            "image_sizes": sizes,
        }
        if "reference" in items[0]:
            batch["references"] = [item["reference"] for item in items]
            batch["original_sizes"] = [item["original_size"] for item in items]
        return batch
