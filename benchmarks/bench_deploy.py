"""CPU deployment paths against transformers' float32 Mask2Former, in one run: speed and quality per precision.

    python benchmarks/bench_deploy.py [--height 512 --width 512] [--batch 1] [--repeats 7] [--threads 2]
                                      [--quality-images 100] [--no-quality]

Speed: ResNet-50 Mask2Former with random weights (transformers' model, converted to ours), one input, median of
`--repeats` interleaved runs after a warm-up, per variant: transformers fp32, ours fp32 (eager), ours bf16
(`model.to(torch.bfloat16)`), ours int8 (`m2f_hf.export.precision.quantize_int8`), and ONNX Runtime fp32 / int8 when
`m2f_hf.export` provides the ONNX exporter and runtime class (otherwise the JSON says why they are missing). Ours also
report per-stage times (backbone, pixel decoder, transformer decoder) and each variant its largest mask-logit
difference from ours in fp32.

Quality: the bundled default model in each precision on its held-out set (docs/default_model.md: the validation
split of seed 1, `--quality-images` of its 100 images), PQ with the stuff classes fused at score threshold 0.8, mIoU
of the semantic post-processing and of the panoptic output, with the helpers of tests/cli/conftest.py (the figures
the docs and tests use). Prints one JSON line.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_inference import StageTimer, build_pair, stages_of  # noqa: E402

from m2f_hf.export.precision import quantize_int8, to_precision  # noqa: E402
from m2f_hf.ops.dispatch import select_backend  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def onnx_variants(ours, work: Path, threads: int) -> tuple[dict, str | None]:
    """{name: M2FOnnxModel} for ONNX Runtime fp32 and int8 (m2f_hf.export), or what is there and why not the rest."""
    try:
        from m2f_hf.export import M2FOnnxModel, export_onnx, quantize_onnx_int8
    except ImportError as error:
        return {}, f"m2f_hf.export's ONNX exporter is not available: {error}"
    variants = {}
    try:
        folder = work / "fp32"
        export_onnx(ours, folder, validate=False)
        variants["onnxruntime_fp32"] = M2FOnnxModel.from_pretrained(folder, num_threads=threads)
        int8_folder = work / "int8"
        int8_folder.mkdir()
        for name in ("config.json", "preprocessor_config.json"):
            (int8_folder / name).write_bytes((Path(folder) / name).read_bytes())
        quantize_onnx_int8(Path(folder) / "model.onnx", int8_folder / "model.onnx")
        variants["onnxruntime_int8"] = M2FOnnxModel.from_pretrained(int8_folder, num_threads=threads)
    except Exception as error:  # report, keep the PyTorch figures
        return variants, f"ONNX export or session failed: {type(error).__name__}: {error}"
    return variants, None


def time_variants(variants: dict, pixel_values: torch.Tensor, repeats: int, timers: dict) -> dict[str, list[float]]:
    totals = {name: [] for name in variants}
    stage_runs = {name: [] for name in timers}
    with torch.no_grad():
        for run in variants.values():  # warm-up (the first call picks oneDNN kernels)
            run(pixel_values)
            run(pixel_values)
        for _ in range(repeats):
            for name, run in variants.items():
                if name in timers:
                    timers[name].reset()
                start = time.perf_counter()
                run(pixel_values)
                totals[name].append(time.perf_counter() - start)
                if name in timers:
                    stage_runs[name].append(dict(timers[name].times))
    stages = {
        name: {k: statistics.median(r[k] for r in runs) for k in runs[0]} for name, runs in stage_runs.items() if runs
    }
    return totals, stages


def quality(precisions: list[str], count: int) -> dict[str, dict[str, float]]:
    spec = importlib.util.spec_from_file_location("cli_conftest", REPO / "tests" / "cli" / "conftest.py")
    helpers = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(helpers)
    from m2f_hf import M2FForUniversalSegmentation
    from m2f_hf.image_processing_m2f import M2FImageProcessor
    from m2f_hf.resources import default_model_path

    model = M2FForUniversalSegmentation.from_pretrained(default_model_path()).eval()
    processor = M2FImageProcessor.from_pretrained(default_model_path())
    samples = helpers.held_out_samples(count)
    results = {}
    for precision in precisions:
        low = to_precision(copy.deepcopy(model), precision)
        start = time.perf_counter()
        results[precision] = helpers.measure_quality(low, processor, samples)
        results[precision]["seconds"] = time.perf_counter() - start
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--height", type=int, default=512)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--quality-images", type=int, default=100)
    parser.add_argument("--no-quality", action="store_true")
    parser.add_argument("--no-onnx", action="store_true", help="skip the ONNX Runtime rows")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    ours, reference = build_pair("resnet50")
    pixel_values = torch.randn(args.batch, 3, args.height, args.width)
    ours_bf16 = copy.deepcopy(ours).to(torch.bfloat16)
    ours_int8 = quantize_int8(ours)
    variants = {
        "transformers_fp32": reference,
        "ours_fp32": ours,
        "ours_bf16": ours_bf16,
        "ours_int8": ours_int8,
    }
    onnx_note = "skipped (--no-onnx)"
    if not args.no_onnx:
        import tempfile

        work = Path(tempfile.mkdtemp(prefix="bench_deploy_"))
        extra, onnx_note = onnx_variants(ours, work, args.threads)
        variants.update(extra)
    timers = {name: StageTimer(stages_of(variants[name], "ours")) for name in ("ours_fp32", "ours_bf16", "ours_int8")}
    totals, stages = time_variants(variants, pixel_values, args.repeats, timers)

    with torch.no_grad():
        base = ours(pixel_values).masks_queries_logits
        diffs = {}
        for name, run in variants.items():
            logits = run(pixel_values).masks_queries_logits
            logits = torch.as_tensor(logits).float()
            diffs[name] = (logits - base).abs().max().item()

    seconds = {name: statistics.median(times) for name, times in totals.items()}
    speedup = {name: seconds["transformers_fp32"] / s for name, s in seconds.items()}
    result = {
        "benchmark": "deploy",
        "backbone": "resnet50",
        "input": [args.batch, 3, args.height, args.width],
        "threads": args.threads,
        "repeats": args.repeats,
        "ours_deform_attn": select_backend(None, "cpu"),
        "seconds": seconds,
        "speedup_vs_transformers_fp32": speedup,
        "ours_stages_s": stages,
        "max_abs_mask_logit_diff_vs_ours_fp32": diffs,
        "onnx": onnx_note or "included",
    }
    if not args.no_quality:
        result["quality_default_model"] = quality(["float32", "bfloat16", "int8"], args.quality_images)
        result["quality_images"] = args.quality_images
        fp32_pq = result["quality_default_model"]["float32"]["PQ"]
        names = {"ours_fp32": "float32", "ours_bf16": "bfloat16", "ours_int8": "int8"}
        within = [n for n, p in names.items() if fp32_pq - result["quality_default_model"][p]["PQ"] <= 1.0]
        fastest = max(within, key=lambda n: speedup[n])
        result["fastest_within_1_pq"] = fastest
        result["target_3_5x_met"] = speedup[fastest] >= 3.5
    print(json.dumps(result))


if __name__ == "__main__":
    main()
