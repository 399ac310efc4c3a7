"""GPU step of scripts/gpu_check.sh for m2f_hf.export: onnxruntime's CUDA provider and TensorRT on exported graphs.

    python scripts/onnx_gpu_check.py [--backbone resnet50] [--repeats 10]

Exports a full-size model with random weights (133 classes) twice: the standard graph and the TensorRT-plugin one.
Then, for each runtime that is installed (onnxruntime-gpu's CUDAExecutionProvider; `tensorrt`, fp32 and fp16), and
batch 1 and 8 at 512x512 and 1024x1024: the largest difference from the PyTorch model on the GPU (fp32) and frames
per second, with the PyTorch fp32 model's own figures in the same run. A runtime that is missing is reported as
skipped with the reason. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from bench_onnx import full_size_model  # noqa: E402

SHAPES = [(1, 512, 512), (8, 512, 512), (1, 1024, 1024), (8, 1024, 1024)]


def fps(run, batch: int, repeats: int) -> float:
    run()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return round(batch / statistics.median(times), 2)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    from m2f_hf.export import export_onnx
    from m2f_hf.export.runtime import CPU_PROVIDER, CUDA_PROVIDER, M2FOnnxModel

    model = full_size_model(args.backbone)
    result = {"backbone": args.backbone, "gpu": torch.cuda.get_device_name(0), "rows": [], "skipped": {}}
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        export_onnx(model, work / "standard")  # validated on the CPU against PyTorch
        export_onnx(model, work / "tensorrt", deform_attn_plugin="tensorrt")
        cuda_model = model.to("cuda")
        runtimes = {}
        import onnxruntime

        if CUDA_PROVIDER in onnxruntime.get_available_providers():
            runtimes["onnxruntime_cuda"] = M2FOnnxModel.from_pretrained(
                work / "standard", providers=[CUDA_PROVIDER, CPU_PROVIDER]
            )
        else:
            result["skipped"]["onnxruntime_cuda"] = f"no {CUDA_PROVIDER} (pip install onnxruntime-gpu)"
        try:
            import tensorrt
        except ImportError as error:
            result["skipped"]["tensorrt"] = f"tensorrt not installed ({error})"
            tensorrt = None
        for batch, height, width in SHAPES:
            pixel_values = torch.randn(batch, 3, height, width, device="cuda")
            with torch.inference_mode():
                reference = cuda_model(pixel_values=pixel_values)
                row = {
                    "input": [batch, 3, height, width],
                    "pytorch_fp32_fps": fps(lambda x=pixel_values: cuda_model(pixel_values=x), batch, args.repeats),
                }
                for name, runtime in runtimes.items():
                    outputs = runtime(pixel_values=pixel_values)
                    row[f"{name}_max_abs_diff"] = float(
                        (outputs.masks_queries_logits.cuda() - reference.masks_queries_logits).abs().max()
                    )
                    row[f"{name}_fps"] = fps(lambda r=runtime, x=pixel_values: r(pixel_values=x), batch, args.repeats)
                if tensorrt is not None:
                    from m2f_hf.export.tensorrt_engine import build_engine, run_engine

                    for precision in ("fp32", "fp16"):
                        try:
                            shape = (batch, 3, height, width)
                            engine = build_engine(
                                work / "tensorrt" / "model.onnx",
                                min_shape=shape,
                                opt_shape=shape,
                                max_shape=shape,
                                fp16=precision == "fp16",
                                tensorrt=tensorrt,
                            )
                            _, masks = run_engine(engine, pixel_values)
                            row[f"tensorrt_{precision}_max_abs_diff"] = float(
                                (masks - reference.masks_queries_logits).abs().max()
                            )
                            row[f"tensorrt_{precision}_fps"] = fps(
                                lambda e=engine, x=pixel_values: run_engine(e, x), batch, args.repeats
                            )
                        except RuntimeError as error:
                            row[f"tensorrt_{precision}_error"] = str(error)[:300]
            result["rows"].append(row)
            print(json.dumps(row), file=sys.stderr)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
