#!/usr/bin/env bash
# One-shot check of the deformable attention CUDA kernel on a machine with an NVIDIA GPU (no network needed).
#
#   scripts/gpu_check.sh [OUTPUT_DIR]      # default: $OUT if set, else ./gpu_check_out
#
# Steps: environment report -> kernel build (JIT, cached) -> `pytest -m cuda tests/ops` -> kernel benchmark (uniform
# and local sampling locations) -> a training step at 1024x1024 against transformers: memory per image (issue 4; the
# paper reports about 6 GB), time, and a profile of one step -> end-to-end inference against transformers -> the
# kernel's scalar variant on the benchmark cases -> m2f-segment on a folder (batches, workers, COCO results) on the
# GPU -> the ops package's CPU-side tests with a GPU present -> the web demo on the GPU -> ONNX: onnxruntime's CUDA
# provider and TensorRT engines (plugin graph) on exported files against PyTorch, and the export package's cuda tests
# -> bf16 with CUDA graphs against transformers (scripts/bf16_gpu_check.py; alone: python scripts/bf16_gpu_check.py).
# Every step runs under its own time limit inside an overall budget (< 9 minutes), a failing step does not stop the
# following ones. OUTPUT_DIR receives three files: summary.json (each step's status and duration, the test counts
# and the benchmark figures), gpu_check.log (every step's log, in order) and tests.xml (the cuda tests, JUnit).
# Scratch files and the kernel cache live in GPU_CHECK_WORK (default: a fresh temporary directory).
# Assumes the package is importable (`pip install -e .` done) or falls back to PYTHONPATH=src; the CUDA steps need
# torch, transformers, timm, scipy and safetensors (not datasets, evaluate or pycocotools; the cli_batch step also
# needs pycocotools and accelerate, as m2f-segment does).
set -u
set -o pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT_DIR="${1:-${OUT:-$REPO/gpu_check_out}}"
mkdir -p "$OUT_DIR"
OUT_DIR="$(cd "$OUT_DIR" && pwd)"
cd "$REPO" || exit 1

TOTAL_BUDGET_S=${GPU_CHECK_BUDGET_S:-500}
if [ -z "${PYTHON:-}" ]; then
  PYTHON=python3
  command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python
fi
WORK_DIR="${GPU_CHECK_WORK:-$(mktemp -d)}"
mkdir -p "$WORK_DIR"
STEPS_FILE="$WORK_DIR/steps.tsv"
: >"$STEPS_FILE"

if ! "$PYTHON" -c "import m2f_hf" >/dev/null 2>&1; then
  export PYTHONPATH="$REPO/src${PYTHONPATH:+:$PYTHONPATH}"
fi
# torch guesses CUDA_HOME from `which nvcc`; a symlinked nvcc (e.g. /usr/local/bin) makes it miss lib64/libcudart
if [ -z "${CUDA_HOME:-}" ] && [ -x /usr/local/cuda/bin/nvcc ]; then
  export CUDA_HOME=/usr/local/cuda
fi
export M2F_DEFORM_ATTN_BUILD_DIR="${M2F_DEFORM_ATTN_BUILD_DIR:-$WORK_DIR/kernel_cache}"
export PYTHONUNBUFFERED=1

# run_step NAME LIMIT_S COMMAND...: runs with a timeout capped by the remaining budget, logs to WORK_DIR/NAME.log
run_step() {
  local name=$1 limit=$2
  shift 2
  local remaining=$((TOTAL_BUDGET_S - SECONDS))
  if [ "$remaining" -lt 10 ]; then
    printf '%s\t%s\t%s\t%s\n' "$name" "skipped_no_time" 0 "" >>"$STEPS_FILE"
    echo "[gpu_check] $name: skipped (time budget spent)"
    return 0
  fi
  [ "$limit" -gt "$remaining" ] && limit=$remaining
  local log="$WORK_DIR/$name.log" start=$SECONDS rc
  echo "[gpu_check] $name (limit ${limit}s) ..."
  timeout --kill-after=10 "$limit" "$@" >"$log" 2>&1
  rc=$?
  local status=ok
  if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then status=timeout; elif [ "$rc" -ne 0 ]; then status=failed; fi
  printf '%s\t%s\t%s\t%s\n' "$name" "$status" "$((SECONDS - start))" "$rc" >>"$STEPS_FILE"
  echo "[gpu_check] $name: $status (rc=$rc, $((SECONDS - start))s)"
  tail -n 5 "$log"
  { echo "===== $name: $status (rc=$rc, $((SECONDS - start))s) ====="; cat "$log"; echo; } >>"$OUT_DIR/gpu_check.log"
  return 0
}

: >"$OUT_DIR/gpu_check.log"
run_step environment 60 bash -c "nvidia-smi; command -v nvcc && nvcc --version; command -v ninja; \
  $PYTHON -c 'import torch, sys; print(sys.version); print(torch.__version__, torch.version.cuda, \
  torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)'"
run_step build 240 "$PYTHON" -m m2f_hf.ops --verbose
run_step tests 150 "$PYTHON" -m pytest -m cuda tests/ops -q -rs -p no:cacheprovider --junitxml="$OUT_DIR/tests.xml"
run_step benchmark_uniform 90 "$PYTHON" benchmarks/bench_deform_attn.py --quick --locations uniform
run_step benchmark_local 90 "$PYTHON" benchmarks/bench_deform_attn.py --quick --locations local
run_step train_memory 150 "$PYTHON" benchmarks/bench_train.py --device cuda --image-size 1024 --batch 2 --amp bf16 \
  --steps 2 --warmup 1 --profile
run_step inference 150 bash -c "rc=0; \
  $PYTHON benchmarks/bench_inference.py --device cuda --height 512 --width 512 --batch 1 --repeats 20 || rc=1; \
  $PYTHON benchmarks/bench_inference.py --device cuda --height 1024 --width 1024 --batch 4 --repeats 10 \
    --amp bf16 || rc=1; \
  $PYTHON benchmarks/bench_inference.py --device cuda --height 1024 --width 1024 --batch 4 --repeats 10 \
    --amp bf16 --half-encoder || rc=1; exit \$rc"
# the kernel's scalar variant on the same cases, for the comparison with the vector one
run_step benchmark_scalar_uniform 60 env M2F_DEFORM_ATTN_CUDA_SCALAR=1 "$PYTHON" benchmarks/bench_deform_attn.py \
  --quick --rounds 1 --locations uniform
run_step benchmark_scalar_local 60 env M2F_DEFORM_ATTN_CUDA_SCALAR=1 "$PYTHON" benchmarks/bench_deform_attn.py \
  --quick --rounds 1 --locations local
# m2f-segment's batch path on the GPU: a folder in batches with DataLoader workers, then COCO results
run_step cli_batch 90 bash -c "$PYTHON -m m2f_hf src/m2f_hf/assets/examples --device cuda --batch-size 3 \
  --num-workers 2 --output '$WORK_DIR/cli_out' && $PYTHON -m m2f_hf src/m2f_hf/assets/examples --device cuda \
  --task instance --format coco --output '$WORK_DIR/cli_coco' && test -s '$WORK_DIR/cli_coco/coco_instances_results.json'"
run_step ops_cpu_side 90 "$PYTHON" -m pytest tests/ops -q -x -p no:cacheprovider
# the web demo's handler with the model on the GPU (m2f-demo --device cuda): a bundled example gives segments
run_step demo_cuda 90 "$PYTHON" -c "from m2f_hf.demo.app import DemoApp; from m2f_hf import example_images; \
  p = str(example_images()[0]); app = DemoApp(device='cuda'); \
  out = app.segment({'path': p, 'orig_name': 'shapes_1.png'}, '', 'panoptic', 0.5, 0.5); \
  print(out[1], out[4]); assert out[1] and app.models.get(None).device.type == 'cuda'"

# ONNX (m2f_hf.export): onnxruntime's CUDA provider on the exported graph (needs onnxruntime-gpu) and TensorRT on the
# plugin graph (needs `tensorrt`; each is reported as skipped when missing), against PyTorch in the same run; then the
# export tests' cuda test (a TensorRT engine from the plugin graph against PyTorch)
run_step onnx_gpu 240 "$PYTHON" scripts/onnx_gpu_check.py --backbone resnet50 --repeats 5
# low precision (issue 14): fps at batch 1 and 8, 512 and 1024, transformers fp32/bf16 vs ours fp32/bf16/bf16 with CUDA
# graphs (torch.compile mode="reduce-overhead"), one run
run_step bf16_gpu 300 "$PYTHON" scripts/bf16_gpu_check.py --repeats 10
run_step onnx_tests 120 "$PYTHON" -m pytest -m cuda tests/export -q -rs -p no:cacheprovider

"$PYTHON" - "$OUT_DIR" "$WORK_DIR" <<'PY'
import json, pathlib, sys
out, work = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])


def json_lines(name):
    path = work / f"{name}.log"
    if not path.exists():
        return []
    rows = []
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                pass
    return rows


steps = {}
for line in (work / "steps.tsv").read_text().splitlines():
    name, status, seconds, rc = line.split("\t")
    steps[name] = {"status": status, "seconds": int(seconds), "rc": int(rc) if rc else None}
summary = {"steps": steps, "ok": all(s["status"] == "ok" for s in steps.values())}
build = json_lines("build")
summary["build"] = build[-1] if build else None
tests_xml = out / "tests.xml"
if tests_xml.exists():
    import xml.etree.ElementTree as ET
    suite = ET.parse(tests_xml).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    summary["tests"] = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
summary["benchmark"] = {}
for name in ("benchmark_uniform", "benchmark_local", "benchmark_scalar_uniform", "benchmark_scalar_local"):
    rows = json_lines(name)
    if rows:
        summary["benchmark"][name] = rows[-1]
summary["inference"] = json_lines("inference")
onnx_rows = json_lines("onnx_gpu")
summary["onnx_gpu"] = onnx_rows[-1] if onnx_rows else None
bf16_rows = json_lines("bf16_gpu")
summary["bf16_gpu"] = bf16_rows[-1] if bf16_rows else None
train = json_lines("train_memory")
if train:
    row = train[-1]
    summary["train_memory"] = {
        key: row.get(key) for key in ("peak_cuda_gib_per_image", "peak_cuda_ratio", "speedup", "image_size", "batch")
    }
    summary["train_memory_full"] = row
(out / "summary.json").write_text(json.dumps(summary, indent=2))
print(json.dumps({"ok": summary["ok"], "steps": {k: v["status"] for k, v in steps.items()}}))
PY
echo "[gpu_check] summary: $OUT_DIR/summary.json (total ${SECONDS}s)"
