"""Segment one image with a loaded model, exactly as `pipeline("image-segmentation")` post-processes it."""

from __future__ import annotations

from dataclasses import dataclass

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
    """

    task: str = "panoptic"
    threshold: float = 0.5
    mask_threshold: float = 0.5
    overlap_mask_area_threshold: float = 0.8
    keep_all_classes: bool = False

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
    import torch

    processor = loaded.processor
    inputs = processor(images=[image], return_tensors="pt")
    inputs = {key: value.to(loaded.device) for key, value in inputs.items()}
    with torch.inference_mode():
        outputs = loaded.model(**inputs)
    height, width = _image_size(image, processor)
    target_sizes = [(height, width)]
    if options.task == "semantic":
        return processor.post_process_semantic_segmentation(outputs, target_sizes=target_sizes)[0].cpu()
    thresholds = dict(
        threshold=options.threshold,
        mask_threshold=options.mask_threshold,
        overlap_mask_area_threshold=options.overlap_mask_area_threshold,
        target_sizes=target_sizes,
    )
    if options.task == "panoptic":
        result = processor.post_process_panoptic_segmentation(outputs, **thresholds)[0]
    else:
        thing_ids = None if options.keep_all_classes else getattr(loaded.model.config, "thing_ids", None)
        result = processor.post_process_instance_segmentation(outputs, **thresholds, thing_ids=thing_ids)[0]
    return {"segmentation": result["segmentation"].cpu(), "segments_info": result["segments_info"]}


def _image_size(image, processor) -> tuple[int, int]:
    """(height, width) of a PIL image, or of an array read the processor's way (its channel count decides which
    axis holds the channels: a 13-band image may be CHW or HWC)."""
    from ..processing.image_ops import image_hw
    from ..processing.settings import channel_count

    settings = {name: getattr(processor, name, None) for name in ("num_channels", "image_mean", "image_std")}
    height, width = image_hw(image, num_channels=channel_count(settings))
    return int(height), int(width)
