"""The JSON of `m2f-segment`: one record per segment, with its COCO run-length encoding, and the per-image document.

Each record has `id`, `label_id`, `label`, `score` (null for semantic classes), `area` (pixels), `bbox` (COCO
`[x, y, width, height]`) and `segmentation` (COCO RLE of its mask, `counts` as a string, readable with
`pycocotools.mask.decode`).
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


def segment_record(mask, segment_id: int, label_id: int, score, id2label: dict) -> dict:
    """The record of one segment given its (H, W) bool numpy mask."""
    import numpy as np

    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    bbox = [0, 0, 0, 0]
    if rows.size:
        bbox = [int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1)]
    return {
        "id": int(segment_id),
        "label_id": int(label_id),
        "label": id2label.get(int(label_id), str(label_id)),
        "score": None if score is None else float(score),
        "area": int(mask.sum()),
        "bbox": bbox,
        "segmentation": encode_mask(mask),
    }


def segments_to_records(result, id2label: dict) -> list[dict]:
    """One record per segment of a post-processing result (a class map for semantic segmentation)."""
    import numpy as np

    if isinstance(result, dict):
        segmentation = np.asarray(result["segmentation"])
        return [
            segment_record(segmentation == s["id"], s["id"], s["label_id"], s["score"], id2label)
            for s in result["segments_info"]
        ]
    class_map = np.asarray(result)
    return [segment_record(class_map == c, c, c, None, id2label) for c in np.unique(class_map).tolist()]


def result_document(*, image: str, height: int, width: int, model: str, task: str, records: list[dict]) -> dict:
    """The JSON document written for one image."""
    return {"image": image, "height": height, "width": width, "model": model, "task": task, "segments": records}
