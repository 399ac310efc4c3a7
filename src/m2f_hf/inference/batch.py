"""Segment many images: read and pre-process them in DataLoader worker processes, run the model on batches, write
each image's outputs, skip images done by an earlier run, and report what failed without stopping.

    loaded = load_segmentation_model(None)
    inputs = collect_inputs(["photos/"])
    options = SegmentOptions(task="panoptic")
    summary = run_images(loaded, inputs.images, options, ImageWriter("out", loaded, options, draw=DrawOptions()))

Under `accelerate launch` each process takes its share of the inputs (`accelerate`'s `split_between_processes`,
see `split_for_this_process`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..processing.image_ops import pad_bottom_right, round_up
from .limits import ImageTooLargeError, check_plain_inference_fits
from .segment import SegmentOptions, needs_whole_images, segment_batch


def load_rgb_image(path: str, *, scaling: str = "range"):
    """The image at `path`, ready for the processor and for drawing (every mode and bit depth, EXIF orientation
    applied: `m2f_hf.processing.image_modes.load_image`); `OSError` with a readable reason otherwise."""
    from ..processing.image_modes import load_image

    return load_image(path, scaling=scaling)


@dataclass
class RunSummary:
    """What a run did: images segmented, skipped because their outputs existed, failed (path, reason), seconds."""

    processed: int = 0
    skipped: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def images_per_second(self) -> float:
        return self.processed / self.seconds if self.seconds > 0 else 0.0

    def merge(self, other: RunSummary) -> RunSummary:
        return RunSummary(
            self.processed + other.processed,
            self.skipped + other.skipped,
            self.failed + other.failed,
            max(self.seconds, other.seconds),
        )


class ImageFileDataset(Dataset):
    """Reads and pre-processes one image per item (in a worker process when the DataLoader has workers).

    An item is a dict: `index`, and either `error` (why the file could not be read) or `image` ((H, W, 3) uint8
    tensor, for drawing), `pixel_values` ((3, h, w)) and `pixel_mask` ((h, w)) from the processor.
    """

    def __init__(
        self, paths: list[str], processor, load_image: Callable | None = None, *, preprocess: bool = True
    ) -> None:
        self.paths = list(paths)
        self.processor = processor
        self.load_image = load_image or load_rgb_image
        self.preprocess = preprocess  # False: the image only (sliding windows and TTA work on it)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict:
        try:
            image = self.load_image(self.paths[index])
        except OSError as error:
            return {"index": index, "error": str(error)}
        # one copy of the pixels (a large image is hundreds of MB): convert only what is not RGB already
        pixels = torch.from_numpy(np.array(image if image.mode == "RGB" else image.convert("RGB")))
        if not self.preprocess:
            return {"index": index, "image": pixels}
        inputs = self.processor(images=[image], return_tensors="pt")
        return {
            "index": index,
            "image": pixels,
            "pixel_values": inputs["pixel_values"][0],
            "pixel_mask": inputs["pixel_mask"][0],
        }


def pad_collate(divisor: int):
    """A collate function that pads the batch's images bottom-right to a common size (a multiple of `divisor`), as
    pre-processing them together would, and passes unreadable items through as `errors`."""

    def collate(items: list[dict]) -> dict:
        good = [item for item in items if "error" not in item]
        batch = {
            "errors": [(item["index"], item["error"]) for item in items if "error" in item],
            "indices": [item["index"] for item in good],
            "images": [item["image"] for item in good],
        }
        if good and "pixel_values" in good[0]:
            height = round_up(max(item["pixel_values"].shape[-2] for item in good), divisor)
            width = round_up(max(item["pixel_values"].shape[-1] for item in good), divisor)
            batch["pixel_values"] = torch.stack(
                [pad_bottom_right(item["pixel_values"], (height, width)) for item in good]
            )
            batch["pixel_mask"] = torch.stack([pad_bottom_right(item["pixel_mask"], (height, width)) for item in good])
        return batch

    return collate


def _one_thread_per_worker(_worker_id: int) -> None:
    # pre-processing is light; several intra-op threads per worker would only fight the model's threads
    torch.set_num_threads(1)


def split_for_this_process(items: list, *, cpu: bool = False) -> tuple[list, object]:
    """This process's share of `items` under `accelerate launch` or `torchrun` (all of them in a single process),
    and the accelerate `PartialState` (for `wait_for_everyone`, `is_main_process`, `device`).

    `cpu`: the processes run on the CPU (a gloo group); accelerate uses the launcher's process group without a GPU
    only when told so.
    """
    from accelerate import PartialState

    state = PartialState(cpu=cpu)
    if state.num_processes == 1:
        return list(items), state
    with state.split_between_processes(list(items)) as share:
        return list(share), state


def _without_too_large(loaded, batch: dict, options, summary: RunSummary, pending: list, on_error) -> dict:
    """The batch without the images too large for plain inference (each counted as failed, with the suggestion to
    use sliding windows); the others go on."""
    keep = []
    for position, (index, image) in enumerate(zip(batch["indices"], batch["images"])):
        try:
            check_plain_inference_fits(loaded, [tuple(image.shape[:2])], options)
        except ImageTooLargeError as error:
            summary.failed.append((pending[index].path, str(error)))
            if on_error is not None:
                on_error(pending[index], str(error))
            continue
        keep.append(position)
    if len(keep) == len(batch["indices"]):
        return batch
    selected = {
        "errors": batch["errors"],
        "indices": [batch["indices"][k] for k in keep],
        "images": [batch["images"][k] for k in keep],
    }
    if keep:
        for key in ("pixel_values", "pixel_mask"):
            selected[key] = batch[key][keep]
    return selected


def run_images(
    loaded,
    items: list,
    options: SegmentOptions,
    writer,
    *,
    batch_size: int = 1,
    num_workers: int = 0,
    overwrite: bool = False,
    load_image: Callable | None = None,
    progress=None,
    on_written: Callable | None = None,
    on_error: Callable | None = None,
) -> RunSummary:
    """Segment the images of `items` (`InputItem`s) and write their outputs with `writer`.

    Args:
        loaded: a `LoadedModel`.
        items: the images; those whose outputs `writer.is_done` are skipped unless `overwrite`.
        options: task and thresholds.
        writer: an `ImageWriter` (or a subclass): `is_done(item)`, `write(item, image, result)`.
        batch_size: images per forward pass (padded to a common size).
        num_workers: DataLoader worker processes that read and pre-process images (0: in this process).
        load_image: `path -> PIL image`, raising `OSError` for an unreadable file.
        progress: a tqdm-like bar, advanced by one per image handled; its total is set to the images not skipped.
        on_written: called with (item, paths written, number of segments) after each image.
        on_error: called with (item, reason) for each image that could not be read.

    Returns:
        a `RunSummary`; unreadable images are counted in `failed`, the others are still processed.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1; got {batch_size}.")
    if num_workers < 0:
        raise ValueError(f"num_workers must be 0 or more; got {num_workers}.")
    summary = RunSummary()
    pending = items if overwrite else [item for item in items if not writer.is_done(item)]
    summary.skipped = len(items) - len(pending)
    if progress is not None and summary.skipped:  # the bar counts the work left, so that its rate is true
        progress.total = len(pending)
        progress.refresh()
    if not pending:
        return summary
    whole = needs_whole_images(options)
    dataset = ImageFileDataset([item.path for item in pending], loaded.processor, load_image, preprocess=not whole)
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        num_workers=min(num_workers, len(pending)),
        collate_fn=pad_collate(getattr(loaded.processor, "size_divisor", 0) or 0),
        worker_init_fn=_one_thread_per_worker if num_workers else None,
        pin_memory=loaded.device.type == "cuda",  # faster copies to the GPU
    )
    start = time.perf_counter()
    for batch in loader:
        for index, reason in batch["errors"]:
            summary.failed.append((pending[index].path, reason))
            if on_error is not None:
                on_error(pending[index], reason)
        if not whole:
            batch = _without_too_large(loaded, batch, options, summary, pending, on_error)
        if batch["indices"]:
            sizes = [tuple(image.shape[:2]) for image in batch["images"]]
            results = segment_batch(
                loaded, batch.get("pixel_values"), batch.get("pixel_mask"), sizes, options, images=batch["images"]
            )
            for index, image, result in zip(batch["indices"], batch["images"], results):
                written, num_segments = writer.write(pending[index], image.numpy(), result)
                summary.processed += 1
                if on_written is not None:
                    on_written(pending[index], written, num_segments)
        if progress is not None:
            progress.update(len(batch["indices"]) + len(batch["errors"]))
    summary.seconds = time.perf_counter() - start
    return summary


__all__ = ["ImageFileDataset", "RunSummary", "load_rgb_image", "pad_collate", "run_images", "split_for_this_process"]
