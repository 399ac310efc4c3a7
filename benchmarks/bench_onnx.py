"""ONNX Runtime (fp32 and dynamic int8) against our PyTorch model: speed of a full-size model, quality of the bundled one.

    python benchmarks/bench_onnx.py [--backbone resnet50|swin_tiny] [--height 512 --width 512] [--batch 1]
                                    [--repeats 7] [--threads 2] [--quality-images 100] [--skip-speed]

Speed: a full-size model with random weights (133 classes), exported once with `m2f_hf.export.export_onnx` and
quantised with `quantize_onnx_int8`; PyTorch fp32 eager (the reference), onnxruntime fp32 and onnxruntime int8 run
interleaved on the same input with `--threads` threads each; the median of `--repeats` runs after a warm-up.
Quality: the bundled default model's held-out set (docs/default_model.md: the validation split of seed 1, 128 x 128,
first `--quality-images` images): PQ (stuff fused, score threshold 0.8, as examples/evaluate.py), the semantic
post-processing's mIoU and the panoptic output's mIoU, for PyTorch fp32, onnxruntime fp32 and onnxruntime int8.
Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def full_size_model(backbone: str):
    from transformers import ResNetConfig, SwinConfig

    from m2f_hf import M2FConfig, M2FForUniversalSegmentation

    stages = ["stage1", "stage2", "stage3", "stage4"]
    if backbone == "resnet50":
        backbone_config = ResNetConfig(out_features=stages)
    elif backbone == "swin_tiny":
        backbone_config = SwinConfig(embed_dim=96, depths=[2, 2, 6, 2], num_heads=[3, 6, 12, 24], out_features=stages)
    else:
        raise ValueError(f"--backbone {backbone!r}: expected resnet50 or swin_tiny")
    torch.manual_seed(0)
    return M2FForUniversalSegmentation(M2FConfig(backbone_config=backbone_config, num_labels=133)).eval()


def _median_seconds(run, repeats: int) -> float:
    run()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure_speed(args, work: Path) -> dict:
    from m2f_hf.export import M2FOnnxModel, export_onnx, quantize_onnx_int8

    model = full_size_model(args.backbone)
    start = time.perf_counter()
    export_onnx(model, work / "fp32", validate=False)
    export_seconds = time.perf_counter() - start
    (work / "int8").mkdir()
    for name in ("config.json", "preprocessor_config.json"):
        (work / "int8" / name).write_bytes((work / "fp32" / name).read_bytes())
    quantize_onnx_int8(work / "fp32" / "model.onnx", work / "int8" / "model.onnx")
    runtimes = {name: M2FOnnxModel.from_pretrained(work / name, num_threads=args.threads) for name in ("fp32", "int8")}
    pixel_values = torch.randn(args.batch, 3, args.height, args.width)
    with torch.inference_mode():
        reference = model(pixel_values=pixel_values)
    timings = {}
    runs = {
        "pytorch_fp32": lambda: model(pixel_values=pixel_values),
        "onnxruntime_fp32": lambda: runtimes["fp32"](pixel_values=pixel_values),
        "onnxruntime_int8": lambda: runtimes["int8"](pixel_values=pixel_values),
    }
    with torch.inference_mode():
        for name, run in runs.items():
            timings[name] = _median_seconds(run, args.repeats)
        differences = {}
        for name in ("fp32", "int8"):
            outputs = runtimes[name](pixel_values=pixel_values)
            differences[f"onnxruntime_{name}_max_abs_diff_masks"] = float(
                (outputs.masks_queries_logits - reference.masks_queries_logits).abs().max()
            )
    return {
        "export_seconds": round(export_seconds, 1),
        "seconds": {k: round(v, 4) for k, v in timings.items()},
        "speedup_vs_pytorch_fp32": {k: round(timings["pytorch_fp32"] / v, 3) for k, v in timings.items()},
        "file_mb": {name: round((work / name / "model.onnx").stat().st_size / 2**20, 1) for name in ("fp32", "int8")},
        **differences,
    }


def held_out_samples(count: int):
    """The held-out images with their reference panoptic annotation (model class ids: category id - 1)."""
    from m2f_hf.data.synthetic import make_synthetic_dataset
    from m2f_hf.evaluation.convert import rgb_to_id

    rows = make_synthetic_dataset("panoptic", num_train=1, num_validation=count, size=128, seed=1)["validation"]
    samples = []
    for row in rows:
        reference = {
            "segmentation": rgb_to_id(np.array(row["label"])),
            "segments_info": [
                {"id": s["id"], "category_id": s["category_id"] - 1, "iscrowd": s["iscrowd"]}
                for s in row["segments_info"]
            ],
        }
        samples.append((np.array(row["image"]), reference))
    return samples


@torch.inference_mode()
def measure_quality(model, processor, samples, thing_ids: list[int]) -> dict[str, float]:
    from m2f_hf.evaluation import PanopticEvaluator, SemanticEvaluator

    id2label = {int(k): v for k, v in model.config.id2label.items()}
    stuff = {i for i in id2label if i not in thing_ids}
    panoptic, semantic, semantic_pan = (
        PanopticEvaluator(id2label, thing_ids),
        SemanticEvaluator(id2label),
        SemanticEvaluator(id2label),
    )
    for image, reference in samples:
        inputs = processor(images=[image], return_tensors="pt")
        outputs = model(**inputs)
        sizes = [image.shape[:2]]
        prediction = processor.post_process_panoptic_segmentation(
            outputs, threshold=0.8, overlap_mask_area_threshold=0.8, label_ids_to_fuse=stuff, target_sizes=sizes
        )[0]
        panoptic.process([prediction], [reference])
        semantic_pan.process([prediction], [reference])
        semantic.process(processor.post_process_semantic_segmentation(outputs, target_sizes=sizes), [reference])
    return {
        "PQ": round(panoptic.evaluate()["PQ"], 2),
        "mIoU": round(semantic.evaluate()["mIoU"], 2),
        "mIoU_pan": round(semantic_pan.evaluate()["mIoU"], 2),
    }


def measure_default_model_quality(args, work: Path) -> dict:
    from m2f_hf import M2FForUniversalSegmentation, M2FImageProcessor
    from m2f_hf.data.synthetic import categories
    from m2f_hf.export import M2FOnnxModel, export_onnx, quantize_onnx_int8
    from m2f_hf.resources import default_model_path

    path = default_model_path()
    model = M2FForUniversalSegmentation.from_pretrained(path).eval()
    processor = M2FImageProcessor.from_pretrained(path)
    export_onnx(path, work / "default_fp32")
    (work / "default_int8").mkdir()
    for name in ("config.json", "preprocessor_config.json"):
        (work / "default_int8" / name).write_bytes((work / "default_fp32" / name).read_bytes())
    quantize_onnx_int8(work / "default_fp32" / "model.onnx", work / "default_int8" / "model.onnx")
    things = [c["id"] - 1 for c in categories("panoptic") if c["isthing"]]
    samples = held_out_samples(args.quality_images)
    results = {"images": len(samples), "pytorch_fp32": measure_quality(model, processor, samples, things)}
    for name in ("fp32", "int8"):
        runtime = M2FOnnxModel.from_pretrained(work / f"default_{name}", num_threads=args.threads)
        results[f"onnxruntime_{name}"] = measure_quality(runtime, processor, samples, things)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--height", type=int, default=512)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quality-images", type=int, default=100)
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--skip-quality", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import onnxruntime

    result = {
        "benchmark": "onnx",
        "backbone": args.backbone,
        "input": [args.batch, 3, args.height, args.width],
        "threads": args.threads,
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
    }
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        if not args.skip_speed:
            result["speed"] = measure_speed(args, work)
        if not args.skip_quality:
            result["quality_default_model"] = measure_default_model_quality(args, work)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
