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


def encode_mask_in_box(crop, top: int, left: int, size: tuple[int, int]) -> dict:
    """[`encode_mask`] of an (H, W) = `size` mask that is empty outside `crop`, a bool array placed at (`top`,
    `left`): the same RLE, computed from the crop alone (a segment of a large image costs its box, not the image)."""
    import numpy as np
    from pycocotools import mask as mask_utils

    height, width = int(size[0]), int(size[1])
    starts, ends = _column_runs(crop, top, left, height)
    if starts.size == 0:
        counts = [height * width]
    else:
        gaps = starts - np.concatenate([[0], ends[:-1]])
        counts = np.stack([gaps, ends - starts], 1).ravel().tolist()
        if ends[-1] < height * width:
            counts.append(int(height * width - ends[-1]))
    rle = mask_utils.frPyObjects({"size": [height, width], "counts": counts}, height, width)
    counts = rle["counts"]
    return {"size": [height, width], "counts": counts.decode("ascii") if isinstance(counts, bytes) else counts}


# pixels of a segment's box looked at per block when run-length encoding it
_RUN_BLOCK_PIXELS = 1 << 22


def _column_runs(crop, top: int, left: int, height: int):
    """Start and end (exclusive) positions, column-major in an image of `height` rows, of the runs of True pixels of
    `crop` placed at (`top`, `left`); runs that continue from one column into the next are joined. Works on blocks
    of about 4 M pixels, so a segment covering most of a large image costs only its runs."""
    import numpy as np

    crop_height, crop_width = crop.shape
    step = max(1, _RUN_BLOCK_PIXELS // max(1, crop_height))
    starts, ends = [], []
    for first in range(0, crop_width, step):
        block = crop[:, first : first + step].T  # (columns, rows)
        padded = np.zeros((block.shape[0], crop_height + 2), dtype=bool)
        padded[:, 1:-1] = block
        columns, rows = np.nonzero(padded[:, 1:] != padded[:, :-1])  # per column: start, end, start, end, ...
        offsets = (columns.astype(np.int64) + first + left) * height + top + rows
        starts.append(offsets[0::2])
        ends.append(offsets[1::2])
    starts = np.concatenate(starts) if starts else np.zeros(0, dtype=np.int64)
    ends = np.concatenate(ends) if ends else np.zeros(0, dtype=np.int64)
    if starts.size > 1:
        separate = starts[1:] != ends[:-1]
        starts = starts[np.concatenate([[True], separate])]
        ends = ends[np.concatenate([separate, [True]])]
    return starts, ends


def segment_record(
    mask, segment_id: int, label_id: int, score, id2label: dict, category_ids=None, *, box=None, size=None
) -> dict:
    """The record of one segment given its (H, W) bool numpy mask; `category_ids` maps class index -> dataset id.

    With `box` (a pair of slices, e.g. from `scipy.ndimage.find_objects`) `mask` is only that box of the segment's
    mask in an image of `size` (H, W), and the segment has no pixel outside it.
    """
    import numpy as np

    top, left = (box[0].start, box[1].start) if box is not None else (0, 0)
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    bbox = [0, 0, 0, 0]
    if rows.size:
        bbox = [int(cols[0] + left), int(rows[0] + top), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1)]
    return {
        "id": int(segment_id),
        "label_id": int(label_id),
        "category_id": int(label_id) if category_ids is None else int(category_ids[int(label_id)]),
        "label": id2label.get(int(label_id), str(label_id)),
        "score": None if score is None else float(score),
        "area": int(mask.sum()),
        "bbox": bbox,
        "segmentation": encode_mask(mask) if box is None else encode_mask_in_box(mask, top, left, size),
    }


def _boxes(id_map, low: int, high: int) -> list:
    """Per id in [low, high], the bounding box (a pair of slices) of its pixels in `id_map`, or None: one pass over
    the map (`scipy.ndimage.find_objects`), in int32 (a shifted copy only when the ids do not start at 1)."""
    import numpy as np
    from scipy import ndimage

    labels = id_map
    if low != 1 or labels.dtype != np.int32:
        labels = id_map.astype(np.int32)
        if low != 1:
            labels += 1 - low
            np.maximum(labels, 0, out=labels)
    return ndimage.find_objects(labels, max_label=high - low + 1)


def _boxed_records(id_map, segments: list[tuple[int, int, object]], boxes, low, id2label, category_ids) -> list:
    """Records of the segments (id, label_id, score) of an (H, W) id map, each computed on its bounding box (many
    segments of a large image stay cheap)."""
    import numpy as np

    records = []
    for segment_id, label_id, score in segments:
        box = boxes[segment_id - low] if 0 <= segment_id - low < len(boxes) else None
        if box is None:  # no pixel: an empty mask, as the whole-image comparison gives
            empty = np.zeros(id_map.shape, dtype=bool)
            records.append(segment_record(empty, segment_id, label_id, score, id2label, category_ids))
            continue
        crop = id_map[box] == segment_id
        records.append(
            segment_record(crop, segment_id, label_id, score, id2label, category_ids, box=box, size=id_map.shape)
        )
    return records


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
            return [
                segment_record(segmentation[k] > 0, s["id"], s["label_id"], s["score"], id2label, category_ids)
                for k, s in enumerate(result["segments_info"])
            ]
        segments = [(int(s["id"]), int(s["label_id"]), s["score"]) for s in result["segments_info"]]
        if not segments:
            return []
        low, high = min(s[0] for s in segments), max(s[0] for s in segments)
        boxes = _boxes(segmentation, low, high)
        return _boxed_records(segmentation, segments, boxes, low, id2label, category_ids)
    class_map = np.asarray(result)
    if class_map.size == 0:
        return []
    low, high = int(class_map.min()), int(class_map.max())
    boxes = _boxes(class_map, low, high)
    classes = [low + k for k, box in enumerate(boxes) if box is not None]
    return _boxed_records(class_map, [(c, c, None) for c in classes], boxes, low, id2label, category_ids)


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
