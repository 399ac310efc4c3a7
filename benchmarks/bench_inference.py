"""Inference speed and peak memory: m2f_hf vs transformers' Mask2Former on the same converted random weights.

    python benchmarks/bench_inference.py [--backbone resnet50|swin_tiny] [--height 512 --width 512] [--batch 1]
                                         [--repeats 7] [--threads N] [--device cpu|cuda] [--amp no|bf16]

Both models run in one process, interleaved, on the same input; the median of `--repeats` timed runs after a warm-up
is reported, with the time spent in the backbone, the pixel decoder and the transformer decoder (forward hooks).
On the CPU, peak memory is measured in a fresh subprocess per model: the resident-set size sampled every 0.5 ms during
one forward (after a warm-up), minus the resident size before it, with glibc told to return freed memory at once.
On a GPU (`--device cuda`) every timer is bracketed by `torch.cuda.synchronize()` and peak memory is
`torch.cuda.max_memory_allocated()` during one forward, minus what was allocated before it. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import torch

from m2f_hf.ops.dispatch import select_backend


def build_pair(backbone: str, seed: int = 0, deform_attn_fp32: bool = True):
    from transformers import Mask2FormerConfig, Mask2FormerForUniversalSegmentation, ResNetConfig, SwinConfig

    from m2f_hf import M2FForUniversalSegmentation
    from m2f_hf.convert import config_from_transformers, state_dict_from_transformers

    stages = ["stage1", "stage2", "stage3", "stage4"]
    if backbone == "resnet50":
        backbone_config = ResNetConfig(out_features=stages)
    elif backbone == "swin_tiny":
        backbone_config = SwinConfig(embed_dim=96, depths=[2, 2, 6, 2], num_heads=[3, 6, 12, 24], out_features=stages)
    else:
        raise ValueError(f"--backbone {backbone!r}: expected resnet50 or swin_tiny")
    torch.manual_seed(seed)
    config = Mask2FormerConfig(backbone_config=backbone_config, num_labels=133)
    reference = Mask2FormerForUniversalSegmentation(config).eval()
    ours_config = config_from_transformers(config)
    ours_config.deform_attn_fp32 = deform_attn_fp32
    ours = M2FForUniversalSegmentation(ours_config).eval()
    ours.load_state_dict(state_dict_from_transformers(reference.state_dict()), strict=True)
    return ours, reference


def synchronizer(device: torch.device):
    """A function that waits for the device's queued work (a no-op on the CPU)."""
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


class StageTimer:
    """Accumulates wall time of named submodules through forward hooks."""

    def __init__(self, modules: dict[str, torch.nn.Module], sync=lambda: None):
        self.times = {name: 0.0 for name in modules}
        self._start = {}
        self._sync = sync
        for name, module in modules.items():
            module.register_forward_pre_hook(lambda m, a, name=name: self._begin(name))
            module.register_forward_hook(lambda m, a, o, name=name: self._stop(name))

    def _begin(self, name):
        self._sync()
        self._start[name] = time.perf_counter()

    def _stop(self, name):
        self._sync()
        self.times[name] += time.perf_counter() - self._start[name]

    def reset(self):
        self.times = dict.fromkeys(self.times, 0.0)


def stages_of(model, which: str) -> dict[str, torch.nn.Module]:
    if which == "ours":
        return {
            "backbone": model.model.backbone,
            "pixel_decoder": model.model.pixel_decoder,
            "transformer_decoder": model.model.transformer_decoder,
        }
    return {
        "backbone": model.model.pixel_level_module.encoder,
        "pixel_decoder": model.model.pixel_level_module.decoder,
        "transformer_decoder": model.model.transformer_module,
    }


def peak_rss_of_forward(which: str, args) -> float:
    """Run in a subprocess: MiB of resident memory above the pre-forward level during one forward."""
    code = f"""
import sys, threading, time, torch
sys.path.insert(0, {repr(sys.path[0])})
from bench_inference import build_pair
torch.set_num_threads({args.threads})
ours, reference = build_pair({args.backbone!r})
model = ours if {which!r} == "ours" else reference
del ours, reference
import gc; gc.collect()
x = torch.randn({args.batch}, 3, {args.height}, {args.width})
with torch.no_grad():
    model(x)  # warm-up, so one-off allocations are not counted
gc.collect()
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20
base = rss(); peak = [base]; done = [False]
def sample():
    while not done[0]:
        peak[0] = max(peak[0], rss()); time.sleep(0.0005)
t = threading.Thread(target=sample); t.start()
with torch.no_grad():
    model(x)
done[0] = True; t.join()
print(peak[0] - base)
"""
    # Large allocations go through mmap and freed memory goes back to the OS at once, so the sampled resident size
    # follows the live tensors instead of the allocator's cache.
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="0")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    return float(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="resnet50", choices=["resnet50", "swin_tiny"])
    parser.add_argument("--height", type=int, default=512)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    parser.add_argument(
        "--deform-attn",
        choices=["auto", "cpu", "cuda", "pytorch"],
        default=None,
        help="our deformable attention implementation (sets M2F_DEFORM_ATTN; default: the environment's or auto)",
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    parser.add_argument("--amp", choices=["no", "bf16"], default="no", help="bf16 autocast around both forwards")
    parser.add_argument(
        "--half-encoder",
        action="store_true",
        help="under --amp, let our deformable encoder run in bf16 too (deform_attn_fp32=False; transformers' does)",
    )
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: no CUDA GPU is visible")
    if args.deform_attn:
        os.environ["M2F_DEFORM_ATTN"] = args.deform_attn  # read at each call; inherited by worker processes
    torch.set_num_threads(args.threads)

    ours, reference = build_pair(args.backbone, deform_attn_fp32=not args.half_encoder)
    ours.to(device)
    reference.to(device)
    sync = synchronizer(device)
    timers = {
        "ours": StageTimer(stages_of(ours, "ours"), sync),
        "transformers": StageTimer(stages_of(reference, "ref"), sync),
    }
    models = {"ours": ours, "transformers": reference}
    pixel_values = torch.randn(args.batch, 3, args.height, args.width).to(device)
    totals = {name: [] for name in models}
    stage_runs = {name: [] for name in models}
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.amp == "bf16")
    with torch.no_grad(), autocast:
        for model in models.values():  # warm-up (twice: the first CUDA call also loads kernels and picks algorithms)
            model(pixel_values)
            model(pixel_values)
        for _ in range(args.repeats):
            for name, model in models.items():  # interleaved
                timers[name].reset()
                sync()
                start = time.perf_counter()
                out = model(pixel_values)
                sync()
                totals[name].append(time.perf_counter() - start)
                stage_runs[name].append(dict(timers[name].times))
        ours_logits = ours(pixel_values).masks_queries_logits.float()
        diff = (ours_logits - reference(pixel_values).masks_queries_logits.float()).abs().max()
        peak = {}
        if device.type == "cuda":
            for name, model in models.items():
                sync()
                torch.cuda.reset_peak_memory_stats(device)
                base = torch.cuda.memory_allocated(device)
                model(pixel_values)
                sync()
                peak[name] = (torch.cuda.max_memory_allocated(device) - base) / 2**20

    def median_stages(name):
        return {k: statistics.median(run[k] for run in stage_runs[name]) for k in stage_runs[name][0]}

    result = {
        "benchmark": "inference",
        "backbone": args.backbone,
        "input": [args.batch, 3, args.height, args.width],
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "amp": args.amp,
        "ours_deform_attn_fp32": not args.half_encoder,
        "threads": args.threads,
        "repeats": args.repeats,
        "ours_s": statistics.median(totals["ours"]),
        "transformers_s": statistics.median(totals["transformers"]),
        "ours_stages_s": median_stages("ours"),
        "transformers_stages_s": median_stages("transformers"),
        "max_abs_mask_logit_diff": diff.item(),
        "ours_deform_attn": select_backend(None, device.type),
    }
    result["speedup"] = result["transformers_s"] / result["ours_s"]
    result["stage_speedup"] = {
        k: result["transformers_stages_s"][k] / result["ours_stages_s"][k] for k in result["ours_stages_s"]
    }
    if peak:
        result["ours_peak_cuda_forward_mib"] = peak["ours"]
        result["transformers_peak_cuda_forward_mib"] = peak["transformers"]
        result["memory_ratio"] = peak["ours"] / peak["transformers"]
    elif not args.no_memory:
        result["ours_peak_forward_mib"] = peak_rss_of_forward("ours", args)
        result["transformers_peak_forward_mib"] = peak_rss_of_forward("transformers", args)
        result["memory_ratio"] = result["ours_peak_forward_mib"] / result["transformers_peak_forward_mib"]
    del out
    print(json.dumps(result))


if __name__ == "__main__":
    main()
