"""Segment one image with a loaded model, exactly as `pipeline("image-segmentation")` post-processes it."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from .limits import ImageTooLargeError, check_plain_inference_fits
from .tta import check_tta_scales, default_tta_scales
from .windows import check_window_overlap, check_window_size

TASKS = ("panoptic", "instance", "semantic")
# a quarter of the window shared with each neighbour: 1.8x the pixels of the image are run through the model
DEFAULT_WINDOW_OVERLAP = 0.25


@dataclass(frozen=True)
class SegmentOptions:
    """What to segment and with which thresholds (the pipeline's and the CLI's defaults).

    Args:
        task: `panoptic`, `instance` or `semantic`.
        threshold: panoptic/instance: minimum segment score; unused for semantic.
        mask_threshold: mask probability for a pixel to join a segment.
        overlap_mask_area_threshold: drop a segment that keeps less than this fraction of its mask.
        keep_all_classes: instance: also report instances of stuff classes; by default only the model's thing
            classes (`config.thing_ids`) are, when its config lists them (as the original Mask2Former does).
        full_instance_masks: instance: `segmentation` holds each instance's whole (N, H, W) binary mask, which may
            overlap the others (what COCO AP evaluates), instead of an (H, W) map of the visible parts.
        sliding_window: segment the image at its own resolution in overlapping windows (`inference/sliding_window.py`):
            memory follows the window, not the image. An image that fits in one window is segmented whole, exactly
            as without the option.
        window_size: the window's side in pixels, a multiple of 32; None: the model's training size (the processor's
            `size["shortest_edge"]`, `windows.default_window_size`).
        window_overlap: the fraction of a window shared with each neighbour, in [0, 0.9].
        tta: test-time augmentation (`inference/tta.py`): the image at each of `tta_scales` (factors of the
            processor's resize size), and mirrored with `tta_flip`, the predictions averaged at the image's size.
        tta_scales: the scales of `tta`; None: the measured best for the task (semantic 0.75, 1, 1.25; panoptic and
            instance 1: the flip only, since scale ensembling lowered PQ and added no AP; docs/benchmarks.md).
        tta_flip: `tta` also runs each scale on the horizontally mirrored image.
    """

    task: str = "panoptic"
    threshold: float = 0.5
    mask_threshold: float = 0.5
    overlap_mask_area_threshold: float = 0.8
    keep_all_classes: bool = False
    full_instance_masks: bool = False
    sliding_window: bool = False
    window_size: int | None = None
    window_overlap: float = DEFAULT_WINDOW_OVERLAP
    tta: bool = False
    tta_scales: tuple[float, ...] | None = None
    tta_flip: bool = True

    @property
    def scales(self) -> tuple[float, ...]:
        """The TTA scales in use (`tta_scales`, or the task's default)."""
        return self.tta_scales if self.tta_scales is not None else default_tta_scales(self.task)

    def as_dict(self) -> dict:
        """The options as JSON-ready values (recorded with each result, so that a resumed run can tell whether an
        earlier result was made the same way); with `tta`, the scales in use, the task's default included."""
        values = asdict(self)
        if self.tta:
            values["tta_scales"] = self.scales
        return {key: list(value) if isinstance(value, tuple) else value for key, value in values.items()}

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {', '.join(TASKS)}; got {self.task!r}.")
        for name in ("threshold", "mask_threshold", "overlap_mask_area_threshold"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1]; got {value}.")
        check_window_size(self.window_size)
        check_window_overlap(self.window_overlap)
        if self.tta_scales is not None:
            object.__setattr__(self, "tta_scales", check_tta_scales(self.tta_scales))
        if self.sliding_window and self.full_instance_masks:
            raise ValueError(
                "full_instance_masks (whole, overlapping instance masks: --format coco --task instance) cannot be "
                "combined with sliding_window, whose instances are the visible parts merged over the windows."
            )
        if self.sliding_window and self.tta:
            raise ValueError("sliding_window and tta cannot be combined; choose one.")


def segment_image(loaded, image, options: SegmentOptions):
    """The post-processing result for one image (a PIL image or an array the processor takes) at its own size.

    Returns:
        semantic: an (H, W) int64 class map on the CPU; panoptic / instance: a dict with `segmentation` ((H, W) ids
        on the CPU) and `segments_info`, as the processor's `post_process_*_segmentation` gives them.
    """
    return segment_images(loaded, [image], options)[0]


def segment_images(loaded, images: list, options: SegmentOptions) -> list:
    """`segment_image` for several images in one forward pass (padded bottom-right to a common size, as the original
    batches them); one result per image, at its own size. With `sliding_window` or `tta`, one image at a time."""
    if needs_whole_images(options):
        return [segment_whole_image(loaded, image, options) for image in images]
    sizes = [image_size(i, loaded.processor) for i in images]
    check_plain_inference_fits(loaded, sizes, options)
    inputs = loaded.processor(images=list(images), return_tensors="pt")
    return segment_batch(loaded, inputs["pixel_values"], inputs["pixel_mask"], sizes, options)


def needs_whole_images(options: SegmentOptions) -> bool:
    """Sliding windows and test-time augmentation work on the image itself, not on the processor's one input."""
    return options.sliding_window or options.tta


def segment_whole_image(loaded, image, options: SegmentOptions):
    """One image with sliding windows or test-time augmentation (an image that fits in one window: plain)."""
    if options.tta:
        from .tta import segment_tta

        check_plain_inference_fits(loaded, [image_size(image, loaded.processor)], options)
        return segment_tta(loaded, image, options)
    from .sliding_window import as_window_source, segment_sliding, window_grid

    height, width = image_size(image, loaded.processor)
    if window_grid(loaded, height, width, options).single:
        plain = SegmentOptions(**{**options.__dict__, "sliding_window": False})
        return segment_images(loaded, [image], plain)[0]
    return segment_sliding(loaded, as_window_source(image, loaded.processor), options)


def segment_batch(
    loaded, pixel_values, pixel_mask, image_sizes: list[tuple[int, int]], options: SegmentOptions, images=None
) -> list:
    """Results of a pre-processed batch: `pixel_values` (B, 3, H, W) and `pixel_mask` (B, H, W) as the processor
    returns them, and each image's original (height, width). Batch runs pre-process in DataLoader workers and call
    this; `segment_image(s)` pre-process here. With `sliding_window` or `tta` the images themselves (`images`:
    (H, W, C) arrays or tensors) are segmented one by one and the pre-processed batch is not used (it may be None).

    Raises:
        ImageTooLargeError: plain post-processing of an image would need more memory than the machine has free.
    """
    if needs_whole_images(options):
        if images is None:
            raise ValueError("sliding_window and tta segment the images themselves: pass `images` to segment_batch.")
        return [segment_whole_image(loaded, image, options) for image in images]
    import torch

    check_plain_inference_fits(loaded, image_sizes, options)
    processor = loaded.processor
    with torch.inference_mode():
        outputs = loaded.model(pixel_values=pixel_values.to(loaded.device), pixel_mask=pixel_mask.to(loaded.device))
    # pixel_mask gives each image's unpadded region exactly, whatever the batch was padded to
    common = {"target_sizes": [tuple(size) for size in image_sizes], "pixel_mask": pixel_mask}
    if options.task == "semantic":
        return [m.cpu() for m in processor.post_process_semantic_segmentation(outputs, **common)]
    post_process = (
        processor.post_process_panoptic_segmentation
        if options.task == "panoptic"
        else processor.post_process_instance_segmentation
    )
    if options.task == "panoptic":
        # as the original's panoptic inference: the segments of one stuff class are one segment
        common["label_ids_to_fuse"] = stuff_label_ids(loaded.model.config)
    if options.task == "instance":
        common["thing_ids"] = None if options.keep_all_classes else getattr(loaded.model.config, "thing_ids", None)
        if options.full_instance_masks:
            common["return_binary_maps"] = True
    results = post_process(
        outputs,
        threshold=options.threshold,
        mask_threshold=options.mask_threshold,
        overlap_mask_area_threshold=options.overlap_mask_area_threshold,
        **common,
    )
    return [{"segmentation": r["segmentation"].cpu(), "segments_info": r["segments_info"]} for r in results]


def stuff_label_ids(config) -> set[int]:
    """Classes whose segments panoptic inference merges into one per class: the stuff classes when the config knows
    its thing classes (`config.thing_ids`), else none (every query stays its own segment, as in transformers)."""
    return set(getattr(config, "stuff_ids", None) or ())


def image_size(image, processor) -> tuple[int, int]:
    """(height, width) of a PIL image, or of an array read the processor's way (its channel count decides which
    axis holds the channels: a 13-band image may be CHW or HWC)."""
    from ..processing.image_ops import image_hw
    from ..processing.settings import channel_count

    settings = {name: getattr(processor, name, None) for name in ("num_channels", "image_mean", "image_std")}
    height, width = image_hw(image, num_channels=channel_count(settings))
    return int(height), int(width)


__all__ = [
    "DEFAULT_WINDOW_OVERLAP",
    "ImageTooLargeError",
    "SegmentOptions",
    "image_size",
    "needs_whole_images",
    "segment_batch",
    "segment_image",
    "segment_images",
    "segment_whole_image",
]
