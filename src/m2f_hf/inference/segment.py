"""Segment one image with a loaded model, exactly as `pipeline("image-segmentation")` post-processes it."""

from __future__ import annotations

from dataclasses import asdict, dataclass

TASKS = ("panoptic", "instance", "semantic")


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
    """

    task: str = "panoptic"
    threshold: float = 0.5
    mask_threshold: float = 0.5
    overlap_mask_area_threshold: float = 0.8
    keep_all_classes: bool = False
    full_instance_masks: bool = False

    def as_dict(self) -> dict:
        """The options as JSON-ready values (recorded with each result, so that a resumed run can tell whether an
        earlier result was made the same way)."""
        return asdict(self)

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {', '.join(TASKS)}; got {self.task!r}.")
        for name in ("threshold", "mask_threshold", "overlap_mask_area_threshold"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1]; got {value}.")


def segment_image(loaded, image, options: SegmentOptions):
    """The post-processing result for one image (a PIL image or an array the processor takes) at its own size.

    Returns:
        semantic: an (H, W) int64 class map on the CPU; panoptic / instance: a dict with `segmentation` ((H, W) ids
        on the CPU) and `segments_info`, as the processor's `post_process_*_segmentation` gives them.
    """
    return segment_images(loaded, [image], options)[0]


def segment_images(loaded, images: list, options: SegmentOptions) -> list:
    """`segment_image` for several images in one forward pass (padded bottom-right to a common size, as the original
    batches them); one result per image, at its own size."""
    inputs = loaded.processor(images=list(images), return_tensors="pt")
    return segment_batch(
        loaded,
        inputs["pixel_values"],
        inputs["pixel_mask"],
        [_image_size(i, loaded.processor) for i in images],
        options,
    )


def segment_batch(
    loaded, pixel_values, pixel_mask, image_sizes: list[tuple[int, int]], options: SegmentOptions
) -> list:
    """Results of a pre-processed batch: `pixel_values` (B, 3, H, W) and `pixel_mask` (B, H, W) as the processor
    returns them, and each image's original (height, width). Batch runs pre-process in DataLoader workers and call
    this; `segment_image(s)` pre-process here."""
    import torch

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


def _image_size(image, processor) -> tuple[int, int]:
    """(height, width) of a PIL image, or of an array read the processor's way (its channel count decides which
    axis holds the channels: a 13-band image may be CHW or HWC)."""
    from ..processing.image_ops import image_hw
    from ..processing.settings import channel_count

    settings = {name: getattr(processor, name, None) for name in ("num_channels", "image_mean", "image_std")}
    height, width = image_hw(image, num_channels=channel_count(settings))
    return int(height), int(width)
