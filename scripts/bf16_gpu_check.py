"""GPU step of scripts/gpu_check.sh for low precision: bf16 inference with CUDA graphs against transformers.

    python scripts/bf16_gpu_check.py [--repeats 10] [--shapes 1x512,8x512,1x1024,8x1024] [--no-graphs]

ResNet-50 Mask2Former with random weights (transformers' model converted to ours, as benchmarks/bench_inference.py).
For each batch x size, in one run: transformers fp32, transformers bf16 (`.to(torch.bfloat16)`), ours fp32, ours bf16
(`.to(torch.bfloat16)`) and ours bf16 with CUDA graphs (`torch.compile(mode="reduce-overhead")`, fixed input size,
compiled per size and warmed up before timing). Frames per second are batch / median seconds of `--repeats` runs,
each bracketed by `torch.cuda.synchronize()`; each variant also reports its largest mask-logit difference from ours in
fp32. A variant that fails (e.g. out of memory) is reported with its error and the others still run. Prints one JSON
line.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from bench_inference import build_pair  # noqa: E402

DEFAULT_SHAPES = "1x512,8x512,1x1024,8x1024"


def parse_shapes(text: str) -> list[tuple[int, int]]:
    shapes = []
    for item in text.split(","):
        batch, size = item.lower().split("x")
        shapes.append((int(batch), int(size)))
    return shapes


def median_seconds(run, pixel_values: torch.Tensor, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        torch.cuda.synchronize()
        start = time.perf_counter()
        run(pixel_values)
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def variants(ours, reference, graphs: bool) -> dict:
    ours_bf16 = copy.deepcopy(ours).to(torch.bfloat16)
    found = {
        "transformers_fp32": reference,
        "transformers_bf16": copy.deepcopy(reference).to(torch.bfloat16),
        "ours_fp32": ours,
        "ours_bf16": ours_bf16,
    }
    if graphs:
        compiled = torch.compile(ours_bf16, mode="reduce-overhead", dynamic=False)
        found["ours_bf16_cuda_graphs"] = compiled
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--shapes", default=DEFAULT_SHAPES, help="comma-separated BATCHxSIZE (square inputs)")
    parser.add_argument("--no-graphs", action="store_true", help="skip the torch.compile CUDA-graph variant")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print(json.dumps({"benchmark": "bf16_gpu", "skipped": "no CUDA device"}))
        return
    device = torch.device("cuda")
    ours, reference = build_pair("resnet50")
    ours, reference = ours.to(device).eval(), reference.to(device).eval()
    models = variants(ours, reference, graphs=not args.no_graphs)
    rows = []
    for batch, size in parse_shapes(args.shapes):
        pixel_values = torch.randn(batch, 3, size, size, device=device)
        row = {"batch": batch, "size": size, "fps": {}, "max_abs_mask_logit_diff_vs_ours_fp32": {}, "errors": {}}
        with torch.no_grad():
            base = ours(pixel_values).masks_queries_logits.float()
            for name, model in models.items():
                # transformers' bf16 model wants bf16 pixels; ours casts the float32 ones itself
                inputs = pixel_values.to(torch.bfloat16) if name == "transformers_bf16" else pixel_values
                try:
                    for _ in range(3):  # warm-up; for CUDA graphs: compile, record, replay
                        out = model(inputs)
                    seconds = median_seconds(model, inputs, args.repeats)
                    out = model(inputs)
                    diff = (out.masks_queries_logits.float() - base).abs().max().item()
                except Exception as error:  # out of memory, a compile failure: report, go on
                    row["errors"][name] = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
                    torch.cuda.empty_cache()
                    continue
                row["fps"][name] = batch / seconds
                row["max_abs_mask_logit_diff_vs_ours_fp32"][name] = diff
        reference_fps = row["fps"].get("transformers_fp32")
        if reference_fps:
            row["speedup_vs_transformers_fp32"] = {name: fps / reference_fps for name, fps in row["fps"].items()}
        rows.append(row)
        print(json.dumps({"partial": row}), file=sys.stderr)
    print(json.dumps({"benchmark": "bf16_gpu", "device": torch.cuda.get_device_name(device), "results": rows}))


if __name__ == "__main__":
    main()
