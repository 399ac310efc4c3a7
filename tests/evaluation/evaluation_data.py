"""Random panoptic data shared by the evaluation tests (a plain module: `conftest` names clash across test folders)."""

from __future__ import annotations

import torch

THING_IDS = [1, 2, 3]
STUFF_IDS = [5, 7]
ID2LABEL = {1: "person", 2: "car", 3: "dog", 5: "sky", 7: "grass"}


def random_panoptic_pair(
    generator: torch.Generator,
    size: int = 32,
    cell: int = 8,
    block: int = 4,
    noise: float = 0.25,
    void_fraction: float = 0.15,
    crowd: bool = False,
    prediction_void: bool = False,
):
    """One (prediction, reference) pair of panoptic dicts.

    The reference tiles the image with `cell`-sized cells of 6 segments (3 things with random classes, one segment
    per stuff class), some cells void, optionally one thing crowd. The prediction starts from the reference and
    reassigns random `block`-sized blocks, flips some thing classes, and covers every pixel unless
    `prediction_void`.
    """
    cells = size // cell
    num_segments = len(STUFF_IDS) + 3
    ref_cells = torch.randint(1, num_segments + 1, (cells, cells), generator=generator)
    void = torch.rand(cells, cells, generator=generator) < void_fraction
    ref_map = torch.where(void, 0, ref_cells).repeat_interleave(cell, 0).repeat_interleave(cell, 1)
    ref_map = ref_map * 10 + 3  # ids unrelated to positions; void stays distinguishable below
    ref_map = torch.where(ref_map == 3, 0, ref_map)
    classes = [THING_IDS[int(i)] for i in torch.randint(0, len(THING_IDS), (3,), generator=generator)] + STUFF_IDS
    segments = [
        {"id": k * 10 + 3, "category_id": classes[k - 1], "iscrowd": int(crowd and k == 1)}
        for k in range(1, num_segments + 1)
    ]
    reference = {"segmentation": ref_map, "segments_info": segments}

    pred_cells = torch.where(void, torch.randint(1, num_segments + 1, (cells, cells), generator=generator), ref_cells)
    pred_map = pred_cells.repeat_interleave(cell, 0).repeat_interleave(cell, 1)
    blocks = size // block
    random_blocks = torch.randint(1, num_segments + 1, (blocks, blocks), generator=generator)
    replace = torch.rand(blocks, blocks, generator=generator) < noise
    random_map = random_blocks.repeat_interleave(block, 0).repeat_interleave(block, 1)
    pred_map = torch.where(replace.repeat_interleave(block, 0).repeat_interleave(block, 1), random_map, pred_map)
    if prediction_void:
        holes = torch.rand(blocks, blocks, generator=generator) < 0.1
        pred_map = torch.where(holes.repeat_interleave(block, 0).repeat_interleave(block, 1), 0, pred_map)
    pred_classes = list(classes)
    for k in range(3):
        if torch.rand(1, generator=generator).item() < 0.3:
            pred_classes[k] = THING_IDS[int(torch.randint(0, len(THING_IDS), (1,), generator=generator))]
    scores = torch.rand(num_segments, generator=generator).tolist()
    present = set(torch.unique(pred_map).tolist())
    prediction = {
        "segmentation": pred_map.to(torch.int32),
        "segments_info": [
            {"id": k, "label_id": pred_classes[k - 1], "was_fused": False, "score": scores[k - 1]}
            for k in range(1, num_segments + 1)
            if k in present
        ],
    }
    return prediction, reference
