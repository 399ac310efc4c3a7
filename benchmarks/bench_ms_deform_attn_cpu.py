"""CPU benchmark: our deformable attention (PyTorch path and compiled CPU kernel) vs transformers' function.

Encoder self-attention of a 512x512 image (levels 64x64, 32x32, 16x16; queries = keys), hidden 256 = 8 heads x 32,
4 points, batch 1, float32. Forward and forward+backward are timed interleaved (ours, theirs, ours, ...), median of
`--repeats` runs after `--warmup` runs. Also reports the bytes autograd keeps for backward (unique storages seen by
`saved_tensors_hooks`). The CPU kernel (`python -m m2f_hf.ops --cpu`) is timed when it builds here, as
"ours_cpu_kernel"; "ours" is the pure PyTorch path. Prints one JSON line.

    python benchmarks/bench_ms_deform_attn_cpu.py [--image 512] [--batch 1] [--repeats 7] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch
from transformers.models.mask2former.modeling_mask2former import (
    multi_scale_deformable_attention as transformers_msda,
)

from m2f_hf.ops import KernelUnavailableError, load_cpu_kernel, multi_scale_deformable_attention

STRIDES = (8, 16, 32)


def make_inputs(image: int, batch: int, heads: int, head_dim: int, points: int, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    shapes = [(image // s, image // s) for s in STRIDES]
    spatial_shapes = torch.tensor(shapes, dtype=torch.int64)
    areas = spatial_shapes.prod(1)
    level_start_index = torch.cat([areas.new_zeros(1), areas.cumsum(0)[:-1]])
    num_keys = int(areas.sum())
    levels = len(shapes)
    value = torch.randn(batch, num_keys, heads, head_dim, generator=generator)
    # reference points plus small offsets, as in the encoder: mostly inside, some corners off the map
    locations = torch.rand(batch, num_keys, heads, levels, points, 2, generator=generator) * 1.02 - 0.01
    weights = torch.rand(batch, num_keys, heads, levels, points, generator=generator)
    weights = weights.view(batch, num_keys, heads, -1).softmax(-1).view_as(weights)
    return shapes, value, spatial_shapes, level_start_index, locations, weights


def saved_bytes(fn, *inputs) -> int:
    """Bytes of the distinct storages autograd saves for backward while running `fn`."""
    storages = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        out = fn(*inputs)
    del out
    return sum(storages.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", type=int, default=512)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--head-dim", type=int, default=32)
    parser.add_argument("--points", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    shapes, value, spatial_shapes, level_start_index, locations, weights = make_inputs(
        args.image, args.batch, args.heads, args.head_dim, args.points
    )

    def ours(v, loc, w):
        return multi_scale_deformable_attention(v, spatial_shapes, level_start_index, loc, w, implementation="pytorch")

    def theirs(v, loc, w):
        return transformers_msda(v, shapes, loc, w)

    def ours_cpu_kernel(v, loc, w):
        return multi_scale_deformable_attention(v, spatial_shapes, level_start_index, loc, w, implementation="cpu")

    max_abs_diff = (ours(value, locations, weights) - theirs(value, locations, weights)).abs().max().item()
    grad_out = torch.randn(args.batch, value.shape[1], args.heads * args.head_dim)
    leaves = [t.clone().requires_grad_() for t in (value, locations, weights)]

    def forward(fn):
        with torch.no_grad():
            fn(value, locations, weights)

    def forward_backward(fn):
        torch.autograd.grad(fn(*leaves), leaves, grad_out)

    candidates = {"ours": ours, "transformers": theirs}
    try:
        load_cpu_kernel()
        candidates["ours_cpu_kernel"] = ours_cpu_kernel
        kernel_diff = (ours_cpu_kernel(value, locations, weights) - theirs(value, locations, weights)).abs().max()
    except KernelUnavailableError as error:
        kernel_diff = str(error)
    times = {(name, mode): [] for name in candidates for mode in ("forward", "forward_backward")}
    for mode, runner in (("forward", forward), ("forward_backward", forward_backward)):
        for _ in range(args.warmup):
            for fn in candidates.values():
                runner(fn)
        for _ in range(args.repeats):
            for name, fn in candidates.items():
                start = time.perf_counter()
                runner(fn)
                times[(name, mode)].append(time.perf_counter() - start)
    median = {key: statistics.median(values) for key, values in times.items()}

    saved = {name: saved_bytes(fn, *leaves) for name, fn in candidates.items()}
    result = {
        "benchmark": "ms_deform_attn_cpu",
        "shape": {
            "image": args.image,
            "levels": shapes,
            "batch": args.batch,
            "queries": value.shape[1],
            "heads": args.heads,
            "head_dim": args.head_dim,
            "points": args.points,
        },
        "threads": torch.get_num_threads(),
        # other processes on a small machine distort multi-threaded timings (OpenMP barriers), so record the load
        "load_average_1min": round(os.getloadavg()[0], 2),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "torch": torch.__version__,
        "repeats": args.repeats,
        "max_abs_diff_vs_transformers": max_abs_diff,
        "cpu_kernel_max_abs_diff_vs_transformers": kernel_diff if isinstance(kernel_diff, str) else kernel_diff.item(),
        "forward_s": {name: median[(name, "forward")] for name in candidates},
        "forward_backward_s": {name: median[(name, "forward_backward")] for name in candidates},
        "speedup_forward": {
            name: median[("transformers", "forward")] / median[(name, "forward")]
            for name in candidates
            if name != "transformers"
        },
        "speedup_forward_backward": {
            name: median[("transformers", "forward_backward")] / median[(name, "forward_backward")]
            for name in candidates
            if name != "transformers"
        },
        "saved_for_backward_mb": {name: round(b / 2**20, 2) for name, b in saved.items()},
        "saved_for_backward_saving_mb": round((saved["transformers"] - saved["ours"]) / 2**20, 2),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
