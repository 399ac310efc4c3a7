"""The JSON of `m2f-segment`: one record per segment, with its COCO run-length encoding, and the per-image document.

Each record has `id`, `label_id` (the model's class index), `category_id` (the dataset's id of that class:
`config.dataset_category_ids[label_id]`, or `label_id` when the config has none), `label`, `score` (null for
semantic classes), `area` (pixels), `bbox` (COCO `[x, y, width, height]`) and `segmentation` (COCO RLE of its mask,
`counts` as a string, readable with `pycocotools.mask.decode`).
"""

from __future__ import annotations


def encode_mask(mask) -> dict:
    """COCO run-length encoding of a (H, W) bool mask, `counts` as str (JSON-ready; pycocotools reads it back)."""
    import numpy as np

    from ..evaluation.instance import encode_masks

    rle = encode_masks(np.asarray(mask, dtype=bool)[None])[0]
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"]}


def decode_mask(segmentation: dict):
    """The (H, W) bool numpy mask of a record's `segmentation` (the inverse of [`encode_mask`])."""
    from pycocotools import mask as mask_utils

    counts = segmentation["counts"]
    rle = {"size": list(segmentation["size"]), "counts": counts.encode() if isinstance(counts, str) else counts}
    return mask_utils.decode(rle).astype(bool)


def segment_record(mask, segment_id: int, label_id: int, score, id2label: dict, category_ids=None) -> dict:
    """The record of one segment given its (H, W) bool numpy mask; `category_ids` maps class index -> dataset id."""
    import numpy as np

    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    bbox = [0, 0, 0, 0]
    if rows.size:
        bbox = [int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1)]
    return {
        "id": int(segment_id),
        "label_id": int(label_id),
        "category_id": int(label_id) if category_ids is None else int(category_ids[int(label_id)]),
        "label": id2label.get(int(label_id), str(label_id)),
        "score": None if score is None else float(score),
        "area": int(mask.sum()),
        "bbox": bbox,
        "segmentation": encode_mask(mask),
    }


def segments_to_records(result, id2label: dict, category_ids=None) -> list[dict]:
    """One record per segment of a post-processing result (a class map for semantic segmentation; for instance
    segmentation also the (N, H, W) binary maps of `return_binary_maps`, in `segments_info` order).

    Args:
        result: one image's post-processing result.
        id2label: class names.
        category_ids: per class index, the dataset's category id (`config.dataset_category_ids`); None: the index.
    """
    import numpy as np

    if isinstance(result, dict):
        segmentation = np.asarray(result["segmentation"])
        if segmentation.ndim == 3:  # full instance masks, possibly overlapping
            masks = [segmentation[k] > 0 for k in range(segmentation.shape[0])]
        else:
            masks = [segmentation == s["id"] for s in result["segments_info"]]
        return [
            segment_record(mask, s["id"], s["label_id"], s["score"], id2label, category_ids)
            for mask, s in zip(masks, result["segments_info"])
        ]
    class_map = np.asarray(result)
    return [segment_record(class_map == c, c, c, None, id2label, category_ids) for c in np.unique(class_map).tolist()]


def result_document(
    *, image: str, height: int, width: int, model: str, task: str, records: list[dict], options: dict | None = None
) -> dict:
    """The JSON document written for one image; `options` (`SegmentOptions.as_dict()`), when given, records how the
    segments were made."""
    document = {"image": image, "height": height, "width": width, "model": model, "task": task}
    if options is not None:
        document["options"] = options
    document["segments"] = records
    return document
