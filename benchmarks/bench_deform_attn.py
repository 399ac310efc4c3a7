"""GPU benchmark: the CUDA kernel vs the PyTorch path of multi-scale deformable attention (issue 8).

Encoder self-attention shapes (queries = keys) for 512x512 and 1024x1024 images (levels at strides 8, 16, 32),
hidden 256 = 8 heads x 32, 4 points; batch 1 and 8; float32 and bfloat16. Sampling locations are either uniform over
the whole map (`--locations uniform`, the default: every corner read is a random access, the worst case for caches)
or local (`--locations local`: each query samples around its own position, offsets N(0, 3 pixels) on each level, as
a trained encoder does). For each case both implementations run
interleaved, forward and forward+backward, median of `--repeats` after `--warmup`, timed with CUDA events; peak
memory above the inputs is measured per implementation. Achieved bandwidth counts the bytes the kernel must touch at
least once (value, locations, weights, output; plus gradients for backward) and is compared with the card's peak.

Prints one JSON line per case and a final summary line; without a GPU prints a JSON line saying so and exits 0.

    python benchmarks/bench_deform_attn.py [--quick] [--repeats 10] [--locations uniform|local]

`M2F_DEFORM_ATTN_CUDA_SCALAR=1` times the kernel's scalar variant (one warp per item) instead of the vector one.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys

import torch

from m2f_hf.ops import KernelUnavailableError, load_kernel, multi_scale_deformable_attention

STRIDES = (8, 16, 32)
# HBM peak bandwidth in bytes/s by device-name fragment, used when torch does not expose the memory clock
KNOWN_PEAK_BANDWIDTH = {"H200": 4.8e12, "H100 PCIe": 2.0e12, "H100": 3.35e12, "A100": 2.0e12, "L40S": 0.864e12}


def peak_bandwidth(props) -> tuple[float | None, str]:
    clock_khz = getattr(props, "memory_clock_rate", None)
    bus_bits = getattr(props, "memory_bus_width", None)
    if clock_khz and bus_bits:
        return 2 * clock_khz * 1e3 * bus_bits / 8, "memory_clock_rate x memory_bus_width"
    for fragment, peak in KNOWN_PEAK_BANDWIDTH.items():
        if fragment in props.name:
            return peak, f"table ({fragment})"
    return None, "unknown"


def query_positions(sizes: list[tuple[int, int]]) -> torch.Tensor:
    """(num_keys, 2) normalised (x, y) centre of every token of every level, in token order."""
    centres = []
    for height, width in sizes:
        ys, xs = torch.meshgrid(
            (torch.arange(height, device="cuda") + 0.5) / height,
            (torch.arange(width, device="cuda") + 0.5) / width,
            indexing="ij",
        )
        centres.append(torch.stack([xs, ys], -1).reshape(-1, 2))
    return torch.cat(centres)


def make_inputs(image: int, batch: int, dtype: torch.dtype, heads=8, head_dim=32, points=4, seed=0, spread="uniform"):
    generator = torch.Generator(device="cuda").manual_seed(seed)
    sizes = [(image // s, image // s) for s in STRIDES]
    spatial_shapes = torch.tensor(sizes, dtype=torch.int64, device="cuda")
    areas = spatial_shapes.prod(1)
    level_start_index = torch.cat([areas.new_zeros(1), areas.cumsum(0)[:-1]])
    num_keys = int(areas.sum())
    levels = len(STRIDES)
    value = torch.randn(batch, num_keys, heads, head_dim, device="cuda", generator=generator).to(dtype)
    if spread == "uniform":
        locations = torch.rand(batch, num_keys, heads, levels, points, 2, device="cuda", generator=generator)
        locations = locations * 1.02 - 0.01
    else:  # around each query's own position, 3-pixel standard deviation on each level
        pixels = torch.randn(batch, num_keys, heads, levels, points, 2, device="cuda", generator=generator) * 3
        level_size = spatial_shapes.flip(1).to(torch.float32)  # (levels, 2) as (width, height)
        locations = query_positions(sizes)[None, :, None, None, None, :] + pixels / level_size[:, None, :]
    weights = torch.rand(batch, num_keys, heads, levels, points, device="cuda", generator=generator).softmax(-1)
    return value, spatial_shapes, level_start_index, locations, weights


def time_ms(fn, warmup: int, repeats: int) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        out.append(start.elapsed_time(end))
    return out


def peak_extra_mb(fn) -> float:
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2**20


def run_case(image, batch, dtype, args, peak_bw):
    value, spatial_shapes, level_start_index, locations, weights = make_inputs(
        image, batch, dtype, spread=args.locations
    )
    leaves = [t.clone().requires_grad_() for t in (value, locations, weights)]
    grad_out = torch.randn(batch, value.shape[1], value.shape[2] * value.shape[3], device="cuda", dtype=dtype)

    def forward(impl):
        def fn():
            with torch.no_grad():
                multi_scale_deformable_attention(
                    value, spatial_shapes, level_start_index, locations, weights, implementation=impl
                )

        return fn

    def forward_backward(impl):
        def fn():
            out = multi_scale_deformable_attention(
                leaves[0], spatial_shapes, level_start_index, leaves[1], leaves[2], implementation=impl
            )
            torch.autograd.grad(out, leaves, grad_out)

        return fn

    results = {}
    for mode, make in (("forward", forward), ("forward_backward", forward_backward)):
        samples = {"cuda": [], "pytorch": []}
        for _ in range(args.rounds):  # interleave the two implementations
            for impl in samples:
                samples[impl] += time_ms(make(impl), args.warmup, args.repeats)
        for impl, values in samples.items():
            results[(impl, mode)] = {"ms": statistics.median(values), "peak_mb": peak_extra_mb(make(impl))}

    def nbytes(*tensors):
        return sum(t.numel() * t.element_size() for t in tensors)

    io_forward = nbytes(value, locations, weights, grad_out)  # grad_out has the output's size and dtype
    io_backward = io_forward + nbytes(grad_out, value, locations, weights)  # reads grad_out, writes three grads
    case = {
        "image": image,
        "batch": batch,
        "dtype": str(dtype).replace("torch.", ""),
        "locations": args.locations,
        "queries": value.shape[1],
    }
    for mode, io in (("forward", io_forward), ("forward_backward", io_forward + io_backward)):
        kernel, fallback = results[("cuda", mode)], results[("pytorch", mode)]
        achieved = io / (kernel["ms"] * 1e-3)
        case[mode] = {
            "kernel_ms": round(kernel["ms"], 4),
            "pytorch_ms": round(fallback["ms"], 4),
            "speedup": round(fallback["ms"] / kernel["ms"], 2),
            "kernel_peak_mb": round(kernel["peak_mb"], 1),
            "pytorch_peak_mb": round(fallback["peak_mb"], 1),
            "peak_memory_ratio": round(kernel["peak_mb"] / max(fallback["peak_mb"], 1e-9), 3),
            "kernel_min_bytes_gbps": round(achieved / 1e9, 1),
            "fraction_of_peak_bw": round(achieved / peak_bw, 3) if peak_bw else None,
        }
    return case


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds; samples = rounds x repeats")
    parser.add_argument("--quick", action="store_true", help="only batch 1 at 512 and batch 8 at 1024")
    parser.add_argument("--locations", choices=["uniform", "local"], default="uniform")
    args = parser.parse_args()

    if not torch.cuda.is_available():
        print(json.dumps({"benchmark": "ms_deform_attn_cuda", "skipped": True, "reason": "no CUDA GPU visible"}))
        return 0
    try:
        load_kernel()
    except KernelUnavailableError as error:
        print(json.dumps({"benchmark": "ms_deform_attn_cuda", "skipped": True, "reason": str(error)}))
        return 1

    props = torch.cuda.get_device_properties(0)
    peak_bw, peak_source = peak_bandwidth(props)
    grid = [(512, 1), (512, 8), (1024, 1), (1024, 8)]
    if args.quick:
        grid = [(512, 1), (1024, 8)]
    cases = []
    for dtype in (torch.float32, torch.bfloat16):
        for image, batch in grid:
            case = run_case(image, batch, dtype, args, peak_bw)
            cases.append(case)
            print(json.dumps({"benchmark": "ms_deform_attn_cuda", **case}), flush=True)
            torch.cuda.empty_cache()
    summary = {
        "benchmark": "ms_deform_attn_cuda_summary",
        "device": props.name,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "locations": args.locations,
        "kernel_variant": "scalar"
        if os.environ.get("M2F_DEFORM_ATTN_CUDA_SCALAR", "0") not in ("", "0")
        else "vector",
        "peak_bandwidth_gbps": round(peak_bw / 1e9, 1) if peak_bw else None,
        "peak_bandwidth_source": peak_source,
        "min_forward_backward_speedup": min(c["forward_backward"]["speedup"] for c in cases),
        "max_forward_backward_peak_memory_ratio": max(c["forward_backward"]["peak_memory_ratio"] for c in cases),
        "cases": cases,
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
