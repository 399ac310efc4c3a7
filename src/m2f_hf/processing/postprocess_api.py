"""The public post-processing methods of `M2FImageProcessor` (transformers' signatures and return formats) over
the algorithms of `postprocess.py`."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from transformers.image_processing_outputs import SemanticSegmentationPostProcessorOutput

from .postprocess import (
    binary_mask_to_rle,
    instance_inference,
    panoptic_inference,
    resolve_geometry,
    semantic_inference,
)


def _class_set(ids: Iterable[int] | None, num_classes: int, argument: str) -> frozenset[int] | None:
    if ids is None:
        return None
    if isinstance(ids, (str, bytes)) or not isinstance(ids, Iterable):
        raise ValueError(f"`{argument}` must be a collection of class indices or None; got {ids!r}.")
    values = list(ids)
    if any(isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < num_classes for i in values):
        raise ValueError(
            f"`{argument}` must hold class indices in [0, {num_classes}) (the model's classes); got {values!r}."
        )
    return frozenset(values)


class PostProcessingMixin:
    """`post_process_semantic_segmentation`, `post_process_instance_segmentation` and
    `post_process_panoptic_segmentation`; the class using it provides `mask_stride` and `resized_size`."""

    def _outputs(self, outputs) -> tuple[torch.Tensor, torch.Tensor]:
        def get(name):
            value = getattr(outputs, name, None)
            if value is None and isinstance(outputs, dict):
                value = outputs.get(name)
            if value is None:
                raise ValueError(f"`outputs` must provide `{name}`; got {type(outputs).__name__}.")
            return value

        class_logits, mask_logits = get("class_queries_logits"), get("masks_queries_logits")
        if class_logits.ndim != 3 or mask_logits.ndim != 4 or class_logits.shape[:2] != mask_logits.shape[:2]:
            raise ValueError(
                "expected class_queries_logits (batch, queries, classes + 1) and masks_queries_logits (batch, "
                f"queries, height, width); got {tuple(class_logits.shape)} and {tuple(mask_logits.shape)}."
            )
        return class_logits.detach().float(), mask_logits.detach().float()

    def _geometry(self, mask_logits, target_sizes, pixel_mask):
        return resolve_geometry(
            tuple(mask_logits.shape[-2:]),
            mask_logits.shape[0],
            target_sizes=target_sizes,
            pixel_mask=pixel_mask,
            mask_stride=self.mask_stride,
            resized_size_fn=self.resized_size,
        )

    def post_process_semantic_segmentation(
        self,
        outputs,
        target_sizes: list[tuple[int, int]] | None = None,
        return_segmentation_scores: bool = False,
        *,
        pixel_mask: torch.Tensor | None = None,
        exact: bool = True,
    ):
        r"""Semantic segmentation maps from `M2FForUniversalSegmentation` outputs.

        Args:
            outputs: model outputs with `class_queries_logits` and `masks_queries_logits`.
            target_sizes (`list[tuple[int, int]]`, *optional*): per image, the output (height, width), normally the
                original image size. Without `pixel_mask` these are taken as the original sizes to find the
                unpadded region.
            return_segmentation_scores (`bool`): also return per-class scores (C, H, W).
            pixel_mask (`torch.Tensor`, *optional*): the `pixel_mask` returned by pre-processing; gives the padded
                and unpadded sizes exactly.
            exact (`bool`, defaults to `True`): the original Mask2Former's class map, which upsamples every query's
                mask logits before the sigmoid and the sum over queries (computed with bounds, so that only
                confident queries and undecided pixels cost full-resolution work). `False` combines the class scores at mask resolution
                and upsamples those instead: faster, but not the original's numbers (sigmoid and resizing do not
                commute; about 3% of pixels can change class).

        Returns:
            a list with one (H, W) int64 class map per image, or with `return_segmentation_scores` one
            `SemanticSegmentationPostProcessorOutput` (`segmentation`, `segmentation_scores`) per image. Without
            `target_sizes` the maps have the unpadded input size (with `pixel_mask`) or the padded input size.
        """
        class_logits, mask_logits = self._outputs(outputs)
        geometry = self._geometry(mask_logits, target_sizes, pixel_mask)
        results = []
        for i, geo in enumerate(geometry):
            segmentation, scores = semantic_inference(
                class_logits[i], mask_logits[i], geo, exact=exact, with_scores=return_segmentation_scores
            )
            if return_segmentation_scores:
                results.append(
                    SemanticSegmentationPostProcessorOutput(
                        data={"segmentation": segmentation, "segmentation_scores": scores}
                    )
                )
            else:
                results.append(segmentation)
        return results

    def post_process_instance_segmentation(
        self,
        outputs,
        threshold: float = 0.5,
        mask_threshold: float = 0.5,
        overlap_mask_area_threshold: float = 0.8,
        target_sizes: list[tuple[int, int]] | None = None,
        return_coco_annotation: bool | None = False,
        return_binary_maps: bool | None = False,
        *,
        pixel_mask: torch.Tensor | None = None,
        thing_ids: Iterable[int] | None = None,
    ) -> list[dict]:
        r"""Instance segmentation from `M2FForUniversalSegmentation` outputs.

        Args:
            outputs: model outputs with `class_queries_logits` and `masks_queries_logits`.
            threshold (`float`): minimum instance score (class probability x mean mask probability in the mask).
            mask_threshold (`float`): mask probability above which a pixel belongs to the instance's mask.
            overlap_mask_area_threshold (`float`): instances are painted by decreasing score; one whose visible part
                is below this fraction of its mask is dropped (use 0 to keep every instance, as for COCO AP).
            target_sizes, pixel_mask: as in `post_process_semantic_segmentation`.
            return_coco_annotation (`bool`): `segmentation` is a list with one run-length encoding (transformers'
                format) of each instance's full mask, in `segments_info` order.
            return_binary_maps (`bool`): `segmentation` is a (N, H, W) float tensor of the full (possibly
                overlapping) instance masks, in `segments_info` order.
            thing_ids (`Iterable[int]`, *optional*): the classes that can be instances, normally
                `model.config.thing_ids`. As in the original Mask2Former, the top-scoring (query, class) pairs are
                chosen first and those of other ("stuff") classes are then dropped. `None` keeps every class (what
                transformers does; right for a model trained on instances only).

        Returns:
            one dict per image: `segmentation` ((H, W) int32 map of segment ids, -1 for background, unless one of the
            options above) and `segments_info` (list of `id`, `label_id`, `was_fused`, `score`), by decreasing score.
        """
        if return_coco_annotation and return_binary_maps:
            raise ValueError("`return_coco_annotation` and `return_binary_maps` cannot both be True.")
        class_logits, mask_logits = self._outputs(outputs)
        things = _class_set(thing_ids, class_logits.shape[-1] - 1, "thing_ids")
        geometry = self._geometry(mask_logits, target_sizes, pixel_mask)
        results = []
        for i, geo in enumerate(geometry):
            segmentation, segments, binary_maps = instance_inference(
                class_logits[i],
                mask_logits[i],
                geo,
                threshold=threshold,
                mask_threshold=mask_threshold,
                overlap_mask_area_threshold=overlap_mask_area_threshold,
                thing_ids=things,
            )
            if return_coco_annotation:
                segmentation = [binary_mask_to_rle(mask) for mask in binary_maps]
            elif return_binary_maps:
                segmentation = binary_maps
            results.append({"segmentation": segmentation, "segments_info": segments})
        return results

    def post_process_panoptic_segmentation(
        self,
        outputs,
        threshold: float = 0.5,
        mask_threshold: float = 0.5,
        overlap_mask_area_threshold: float = 0.8,
        label_ids_to_fuse: set[int] | None = None,
        target_sizes: list[tuple[int, int]] | None = None,
        *,
        pixel_mask: torch.Tensor | None = None,
    ) -> list[dict]:
        r"""Panoptic segmentation from `M2FForUniversalSegmentation` outputs.

        Args:
            outputs: model outputs with `class_queries_logits` and `masks_queries_logits`.
            threshold (`float`): queries whose best class probability is not above it are dropped.
            mask_threshold (`float`): a pixel joins its winning query's segment only if that query's mask
                probability reaches it.
            overlap_mask_area_threshold (`float`): a segment keeping less than this fraction of its own mask is dropped.
            label_ids_to_fuse (`set[int]`, *optional*): classes (typically "stuff") whose segments share one id.
            target_sizes, pixel_mask: as in `post_process_semantic_segmentation`.

        Returns:
            one dict per image: `segmentation` ((H, W) int32, 0 = no segment, ids from 1) and `segments_info`
            (one entry per id: `id`, `label_id`, `was_fused`, `score`).
        """
        class_logits, mask_logits = self._outputs(outputs)
        geometry = self._geometry(mask_logits, target_sizes, pixel_mask)
        fuse = set(label_ids_to_fuse) if label_ids_to_fuse is not None else set()
        results = []
        for i, geo in enumerate(geometry):
            segmentation, segments = panoptic_inference(
                class_logits[i],
                mask_logits[i],
                geo,
                threshold=threshold,
                mask_threshold=mask_threshold,
                overlap_mask_area_threshold=overlap_mask_area_threshold,
                label_ids_to_fuse=fuse,
            )
            results.append({"segmentation": segmentation, "segments_info": segments})
        return results
