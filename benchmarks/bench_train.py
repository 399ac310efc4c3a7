#!/usr/bin/env python
"""One training step (forward, loss, backward, AdamW step) of m2f_hf vs transformers' Mask2Former, same weights and batch.

ResNet-50 backbone (random init, no download), 384x384 images, batch 2, 10 random masks per image. Each
implementation runs in its own subprocess so that its peak RSS (`ru_maxrss`) is its own; both load the same converted
weights from disk. Also reported: bytes of tensors saved for backward (`saved_tensors_hooks`) in one forward + loss.

    python benchmarks/bench_train.py [--steps 3] [--warmup 1] [--rounds 1] [--threads N] [--device cpu|cuda]
                                     [--image-size 384] [--batch 2] [--amp no|bf16] [--deform-attn IMPL]
    # GPU memory per image at the paper's crop (scripts/gpu_check.sh):
    python benchmarks/bench_train.py --device cuda --image-size 1024 --batch 2 --amp bf16 --steps 2 [--profile]

With `--rounds R` the two workers run R times, alternately (transformers, ours, transformers, ...), so that both see
the same drift of a shared machine; step times are the median over all rounds' steps, peak RSS the median of the
rounds' peaks (every round's figures are kept under "rounds").

Prints one JSON line: per implementation the median step time, forward / loss / backward split of the last step, peak
RSS (and peak CUDA memory on a GPU), saved-tensor bytes, and the ratios ours / transformers.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import torch

from m2f_hf.ops.dispatch import select_backend

IMAGE_SIZE = 384
BATCH = 2
MASKS_PER_IMAGE = 10
NUM_LABELS = 80


def transformers_config():
    from transformers import Mask2FormerConfig, ResNetConfig

    backbone = ResNetConfig(
        depths=[3, 4, 6, 3],
        hidden_sizes=[256, 512, 1024, 2048],
        embedding_size=64,
        layer_type="bottleneck",
        out_features=["stage1", "stage2", "stage3", "stage4"],
    )
    return Mask2FormerConfig(backbone_config=backbone, num_labels=NUM_LABELS, use_pretrained_backbone=False)


def prepare(directory: str, image_size: int = IMAGE_SIZE, batch: int = BATCH) -> None:
    """Save a random transformers model and its conversion to ours, plus one batch."""
    from transformers import Mask2FormerForUniversalSegmentation

    from m2f_hf import M2FForUniversalSegmentation
    from m2f_hf.convert import config_from_transformers, state_dict_from_transformers

    torch.manual_seed(0)
    reference = Mask2FormerForUniversalSegmentation(transformers_config())
    reference.save_pretrained(os.path.join(directory, "transformers"))
    ours = M2FForUniversalSegmentation(config_from_transformers(reference.config))
    ours.load_state_dict(state_dict_from_transformers(reference.state_dict()), strict=True)
    ours.save_pretrained(os.path.join(directory, "ours"))

    generator = torch.Generator().manual_seed(1)
    pixel_values = torch.randn(batch, 3, image_size, image_size, generator=generator)
    mask_labels, class_labels = [], []
    for _ in range(batch):
        # random rectangles: a realistic mix of sizes, and no empty mask
        masks = torch.zeros(MASKS_PER_IMAGE, image_size, image_size)
        for mask in masks:
            top, left = torch.randint(0, image_size - 32, (2,), generator=generator).tolist()
            height, width = torch.randint(16, image_size // 2, (2,), generator=generator).tolist()
            mask[top : top + height, left : left + width] = 1
        mask_labels.append(masks)
        class_labels.append(torch.randint(0, NUM_LABELS, (MASKS_PER_IMAGE,), generator=generator))
    torch.save(
        {"pixel_values": pixel_values, "mask_labels": mask_labels, "class_labels": class_labels},
        os.path.join(directory, "batch.pt"),
    )


def saved_tensor_bytes(model, batch) -> int:
    """Bytes of the tensors autograd keeps for backward during one forward + loss (each storage counted once)."""
    storages = {}

    def pack(tensor):
        try:
            storage = tensor.untyped_storage()
            storages[storage.data_ptr()] = storage.nbytes()
        except (RuntimeError, NotImplementedError):
            pass
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss = model(**batch).loss
    del loss
    return sum(storages.values())


def profile_step(train_step, top: int = 15) -> dict:
    """One more step under torch.profiler: kernel launches, device time, and the ops that take the most of it."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    with profile(activities=activities) as prof:
        wall = train_step()["step_s"]
    events = prof.key_averages()

    def device_us(event):
        return getattr(event, "self_device_time_total", None) or getattr(event, "self_cuda_time_total", 0) or 0

    kernels = [e for e in events if e.device_type == DeviceType.CUDA]
    by_device = sorted(events, key=device_us, reverse=True)[:top]
    by_cpu = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:top]
    return {
        "step_s": wall,
        "kernel_launches": sum(e.count for e in kernels),
        "device_busy_s": sum(device_us(e) for e in kernels) / 1e6,
        "top_device_ms": [[e.key[:90], round(device_us(e) / 1e3, 2), e.count] for e in by_device],
        "top_self_cpu_ms": [[e.key[:90], round(e.self_cpu_time_total / 1e3, 2), e.count] for e in by_cpu],
    }


def worker(
    impl: str,
    directory: str,
    steps: int,
    warmup: int,
    device: str,
    amp: str = "no",
    profile: bool = False,
    half_encoder: bool = False,
) -> dict:
    if impl == "ours":
        from m2f_hf import M2FForUniversalSegmentation as Model
    else:
        from transformers import Mask2FormerForUniversalSegmentation as Model
    model = Model.from_pretrained(os.path.join(directory, "transformers" if impl == "transformers" else "ours"))
    if impl == "ours" and half_encoder:
        model.model.pixel_decoder.compute_in_fp32 = False  # as config.deform_attn_fp32=False
    model.to(device).train()
    data = torch.load(os.path.join(directory, "batch.pt"))
    batch = {
        "pixel_values": data["pixel_values"].to(device),
        "mask_labels": [m.to(device) for m in data["mask_labels"]],
        "class_labels": [c.to(device) for c in data["class_labels"]],
    }
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.05)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    def mixed_precision():
        return torch.autocast(device.split(":")[0], dtype=torch.bfloat16, enabled=amp == "bf16")

    def sync():
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    def train_step():
        """One step; returns the wall-clock split (seconds)."""
        sync()
        start = time.perf_counter()
        with mixed_precision():
            outputs = model(pixel_values=batch["pixel_values"], output_auxiliary_logits=True)
        sync()
        forward_end = time.perf_counter()
        # the loss alone, from the same outputs (transformers exposes it as get_loss_dict, ours as the criterion),
        # under the same autocast as the forward (as a mixed-precision training loop runs it)
        with mixed_precision():
            if impl == "ours":
                model.criterion = model.criterion or model.build_criterion()
                aux = [
                    {
                        "masks_queries_logits": a["masks_queries_logits"],
                        "class_queries_logits": a["class_queries_logits"],
                    }
                    for a in (outputs.auxiliary_logits or [])
                ]
                loss_dict = model.criterion(
                    outputs.masks_queries_logits,
                    outputs.class_queries_logits,
                    batch["mask_labels"],
                    batch["class_labels"],
                    auxiliary_predictions=aux or None,
                )
            else:
                loss_dict = model.get_loss_dict(
                    outputs.masks_queries_logits,
                    outputs.class_queries_logits,
                    batch["mask_labels"],
                    batch["class_labels"],
                    outputs.auxiliary_logits,
                )
            loss = sum(loss_dict.values())
        sync()
        loss_end = time.perf_counter()
        loss.backward()
        sync()
        backward_end = time.perf_counter()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        sync()
        end = time.perf_counter()
        return {
            "step_s": end - start,
            "forward_s": forward_end - start,
            "loss_s": loss_end - forward_end,
            "backward_s": backward_end - loss_end,
            "optimizer_s": end - backward_end,
        }

    times, split = [], {}
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    for step in range(warmup + steps):
        torch.manual_seed(step)
        timing = train_step()
        if step >= warmup:
            times.append(timing.pop("step_s"))
            split = timing
    result = {
        "step_s": statistics.median(times),
        "steps_s": times,
        **split,
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "rss_after_load_bytes": rss_before,
    }
    if device.startswith("cuda"):
        result["peak_cuda_bytes"] = torch.cuda.max_memory_allocated()
    if profile:
        try:
            result["profile"] = profile_step(train_step)
        except Exception as error:  # a diagnostic: never lose the measurement above to it
            result["profile"] = {"error": f"{type(error).__name__}: {error}"}
    torch.manual_seed(0)
    result["saved_tensor_bytes"] = saved_tensor_bytes(model, batch)
    result["loss"] = float(model(**batch).loss)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=1, help="alternating worker runs per implementation")
    parser.add_argument("--image-size", type=int, default=IMAGE_SIZE, help="square image side (GPU check: 1024)")
    parser.add_argument("--batch", type=int, default=BATCH)
    parser.add_argument("--amp", choices=["no", "bf16"], default="no", help="bf16 autocast for the forward")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--half-encoder",
        action="store_true",
        help="under --amp, let our deformable encoder run in bf16 too (deform_attn_fp32=False; transformers' does)",
    )
    parser.add_argument(
        "--profile", action="store_true", help="one more step under torch.profiler (kernel launches, top ops)"
    )
    parser.add_argument("--worker", choices=["ours", "transformers"], help=argparse.SUPPRESS)
    parser.add_argument("--dir", help=argparse.SUPPRESS)
    parser.add_argument(
        "--deform-attn",
        choices=["auto", "cpu", "cuda", "pytorch"],
        default=None,
        help="our deformable attention implementation (sets M2F_DEFORM_ATTN; default: the environment's or auto)",
    )
    args = parser.parse_args()
    if args.deform_attn:
        os.environ["M2F_DEFORM_ATTN"] = args.deform_attn  # read at each call; inherited by worker processes
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.worker:
        result = worker(
            args.worker, args.dir, args.steps, args.warmup, args.device, args.amp, args.profile, args.half_encoder
        )
        print(json.dumps(result))
        return

    with tempfile.TemporaryDirectory() as directory:
        prepare(directory, args.image_size, args.batch)
        rounds = {"transformers": [], "ours": []}
        for _ in range(args.rounds):
            for impl in ("transformers", "ours"):
                command = [sys.executable, __file__, "--worker", impl, "--dir", directory, "--steps", str(args.steps)]
                command += ["--warmup", str(args.warmup), "--device", args.device, "--amp", args.amp]
                if args.threads:
                    command += ["--threads", str(args.threads)]
                if args.profile:
                    command.append("--profile")
                if args.half_encoder:
                    command.append("--half-encoder")
                output = subprocess.run(command, capture_output=True, text=True, check=False)
                if output.returncode != 0:
                    raise SystemExit(f"{impl} worker failed:\n{output.stderr[-3000:]}")
                rounds[impl].append(json.loads(output.stdout.strip().splitlines()[-1]))
    results = {}
    for impl, runs in rounds.items():
        merged = dict(runs[-1])
        merged["step_s"] = statistics.median(step for run in runs for step in run["steps_s"])
        merged["steps_s"] = [step for run in runs for step in run["steps_s"]]
        merged["peak_rss_bytes"] = statistics.median(run["peak_rss_bytes"] for run in runs)
        merged["peak_rss_bytes_per_round"] = [run["peak_rss_bytes"] for run in runs]
        results[impl] = merged
    ours, reference = results["ours"], results["transformers"]
    summary = {
        "benchmark": "train_step",
        "device": args.device,
        "threads": torch.get_num_threads() if not args.threads else args.threads,
        "image_size": args.image_size,
        "batch": args.batch,
        "masks_per_image": MASKS_PER_IMAGE,
        "rounds": args.rounds,
        "amp": args.amp,
        "ours_deform_attn_fp32": not args.half_encoder,
        "ours_deform_attn": select_backend(None, args.device.split(":")[0]),
        "ours": ours,
        "transformers": reference,
        "speedup": reference["step_s"] / ours["step_s"],
        "peak_rss_ratio": ours["peak_rss_bytes"] / reference["peak_rss_bytes"],
        "saved_tensor_ratio": ours["saved_tensor_bytes"] / reference["saved_tensor_bytes"],
        "loss_ratio": ours["loss"] / reference["loss"],
    }
    if "peak_cuda_bytes" in ours:
        summary["peak_cuda_ratio"] = ours["peak_cuda_bytes"] / reference["peak_cuda_bytes"]
        # the paper reports training memory per image (about 6 GB at 1024x1024)
        summary["peak_cuda_gib_per_image"] = {
            name: result["peak_cuda_bytes"] / args.batch / 2**30 for name, result in results.items()
        }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
