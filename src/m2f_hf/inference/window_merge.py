"""Instance and panoptic segments of overlapping windows merged into one result for the whole image.

Every pixel is taken from one window only, the one whose centre is nearest (each window owns its "core": from the
middle of its overlap with the previous window to the middle of the overlap with the next), so a segment predicted
by two windows in their overlap is not painted twice and each pixel comes from a window that saw context on every
side of it. Segments of two overlapping windows are then linked when they have the same class and their masks agree
over the windows' shared area (intersection over union at least `LINK_IOU`): a segment that continues over a
window border, or that both windows predicted, becomes one segment of the result. Linked parts form one segment
(union-find); its score is the mean of its parts' scores weighted by the pixels each part contributed.

Window maps are kept only for the current and the previous row of windows; the image-sized state is one int32 map.
"""

from __future__ import annotations

import numpy as np
import torch

from .windows import WindowGrid

LINK_IOU = 0.5


class _UnionFind:
    def __init__(self) -> None:
        self.parent: list[int] = [0]  # node 0: no segment

    def add(self) -> int:
        self.parent.append(len(self.parent))
        return len(self.parent) - 1

    def find(self, node: int) -> int:
        root = node
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[node] != root:
            self.parent[node], node = root, self.parent[node]
        return root

    def union(self, a: int, b: int) -> None:
        a, b = self.find(a), self.find(b)
        if a != b:
            self.parent[max(a, b)] = min(a, b)


class WindowMerger:
    """Collects the post-processed windows of a `WindowGrid` in row order and builds the merged result.

    Args:
        grid: the windows.
        instance: the windows are instance results (ids from 0, -1 for no instance); else panoptic (0 for none).
        fuse_labels: panoptic: classes (stuff) whose segments are one segment of the whole image, as plain panoptic
            inference fuses them (`label_ids_to_fuse`).
    """

    def __init__(self, grid: WindowGrid, *, instance: bool, fuse_labels=()) -> None:
        self.grid = grid
        self.instance = instance
        self.fuse_labels = set(fuse_labels)
        self.fused_node: dict[int, int] = {}  # fused class -> its first node
        self.nodes = _UnionFind()
        self.labels: list[int] = [-1]
        self.scores: list[float] = [0.0]
        self.pixels: list[int] = [0]
        self.ids = torch.zeros((grid.height, grid.width), dtype=torch.int32)  # node of each pixel
        self.windows: dict[tuple[int, int], torch.Tensor] = {}  # (row, col) -> (h, w) node map of the window
        self.core_rows, self.core_cols = grid.core_rows, grid.core_cols

    def add(self, row: int, col: int, segmentation: torch.Tensor, segments_info: list[dict]) -> None:
        """One window's result (`segmentation` at the window's size, ids as the processor gives them)."""
        offset = 1 if self.instance else 0  # local id + offset: 0 = none, 1.. segments
        local = segmentation.to(torch.int64) + offset
        largest = max([int(local.max()) if local.numel() else 0] + [s["id"] + offset for s in segments_info])
        lookup = torch.zeros(largest + 1, dtype=torch.int32)
        for segment in segments_info:
            node = self.nodes.add()
            lookup[segment["id"] + offset] = node
            self.labels.append(int(segment["label_id"]))
            self.scores.append(float(segment["score"]))
            self.pixels.append(0)
            if self.labels[-1] in self.fuse_labels:
                self.nodes.union(self.fused_node.setdefault(self.labels[-1], node), node)
        nodes = lookup[local.clamp_(min=0)]  # (h, w) node ids
        y0, x0 = self.grid.rows[row], self.grid.cols[col]
        (top, bottom), (left, right) = self.core_rows[row], self.core_cols[col]
        core = nodes[top - y0 : bottom - y0, left - x0 : right - x0]
        self.ids[top:bottom, left:right] = core
        counted = torch.bincount(core.flatten().to(torch.int64), minlength=len(self.labels))
        for node in torch.nonzero(counted[1:]).flatten().tolist():
            self.pixels[node + 1] += int(counted[node + 1])
        for (other_row, other_col), other in self.windows.items():
            self._link(nodes, (y0, x0), other, (self.grid.rows[other_row], self.grid.cols[other_col]))
        self.windows[(row, col)] = nodes
        for key in [key for key in self.windows if key[0] < row - 1]:  # no later window overlaps these
            del self.windows[key]

    def _link(self, nodes, origin, other, other_origin) -> None:
        h, w = self.grid.window_height, self.grid.window_width
        top, left = max(origin[0], other_origin[0]), max(origin[1], other_origin[1])
        bottom, right = min(origin[0], other_origin[0]) + h, min(origin[1], other_origin[1]) + w
        if top >= bottom or left >= right:
            return
        mine = nodes[top - origin[0] : bottom - origin[0], left - origin[1] : right - origin[1]].flatten()
        theirs = other[
            top - other_origin[0] : bottom - other_origin[0], left - other_origin[1] : right - other_origin[1]
        ]
        theirs = theirs.flatten()
        present = (mine > 0) | (theirs > 0)
        mine, theirs = mine[present].to(torch.int64), theirs[present].to(torch.int64)
        if mine.numel() == 0:
            return
        pairs, inter = torch.unique(mine * len(self.labels) + theirs, return_counts=True)
        a_nodes, a_area = torch.unique(mine, return_counts=True)
        b_nodes, b_area = torch.unique(theirs, return_counts=True)
        area = dict(zip(a_nodes.tolist(), a_area.tolist()))
        area_b = dict(zip(b_nodes.tolist(), b_area.tolist()))
        for pair, count in zip(pairs.tolist(), inter.tolist()):
            a, b = divmod(pair, len(self.labels))
            if a == 0 or b == 0 or self.labels[a] != self.labels[b]:
                continue
            if count / (area[a] + area_b[b] - count) >= LINK_IOU:
                self.nodes.union(a, b)

    def finish(self) -> dict:
        """The merged result: `segmentation` ((H, W) int32; instance: -1 for none, ids from 0 by decreasing score;
        panoptic: 0 for none, ids from 1 in raster order of the windows) and `segments_info`."""
        roots: dict[int, dict] = {}
        for node in range(1, len(self.labels)):
            root = self.nodes.find(node)
            entry = roots.setdefault(root, {"pixels": 0, "weighted": 0.0, "best": 0.0})
            entry["pixels"] += self.pixels[node]
            entry["weighted"] += self.pixels[node] * self.scores[node]
            entry["best"] = max(entry["best"], self.scores[node])
        visible = [root for root in sorted(roots) if roots[root]["pixels"] > 0]
        score = {root: roots[root]["weighted"] / roots[root]["pixels"] for root in visible}
        if self.instance:
            visible.sort(key=lambda root: -score[root])
        base = 0 if self.instance else 1
        none = -1 if self.instance else 0
        final = np.full(len(self.labels), none, dtype=np.int32)
        segments = []
        for index, root in enumerate(visible):
            segments.append(
                {
                    "id": index + base,
                    "label_id": self.labels[root],
                    "was_fused": self.labels[root] in self.fuse_labels,
                    "score": round(score[root], 6),
                }
            )
        position = {root: index + base for index, root in enumerate(visible)}
        for node in range(1, len(self.labels)):
            final[node] = position.get(self.nodes.find(node), none)
        lookup = torch.from_numpy(final)
        block = max(1, (1 << 22) // max(1, self.grid.width))  # about 4 M pixels relabelled at a time
        for start in range(0, self.grid.height, block):
            rows = self.ids[start : start + block]
            rows.copy_(lookup[rows.to(torch.int64)])
        self.windows.clear()
        return {"segmentation": self.ids, "segments_info": segments}


__all__ = ["LINK_IOU", "WindowMerger"]
