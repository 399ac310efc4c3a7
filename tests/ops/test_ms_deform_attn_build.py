"""The CUDA sources compile and link without a GPU (needs nvcc and ninja; slow: about two minutes)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch


@pytest.mark.slow
@pytest.mark.skipif(torch.version.cuda is None, reason="this PyTorch build has no CUDA support")
@pytest.mark.skipif(shutil.which("nvcc") is None or shutil.which("ninja") is None, reason="needs nvcc and ninja")
def test_kernel_builds_ahead_of_time_for_sm90(tmp_path):
    # torch guesses CUDA_HOME from `which nvcc`, which is wrong for a wrapper script such as /usr/local/bin/nvcc
    candidates = [os.environ.get("CUDA_HOME"), "/usr/local/cuda", str(Path(shutil.which("nvcc")).resolve().parents[1])]
    roots = [c for c in candidates if c and (Path(c) / "include" / "cuda_runtime.h").is_file()]
    if not roots:
        pytest.skip(f"no CUDA toolkit root with include/cuda_runtime.h among {candidates}")
    cuda_home = roots[0]
    env = {**os.environ, "CUDA_HOME": cuda_home, "M2F_DEFORM_ATTN_BUILD_DIR": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-m", "m2f_hf.ops", "--arch", "9.0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert result.returncode == 0 and report["built"], report
    assert Path(report["module"]).is_file()
    assert Path(report["build_dir"]).parent == tmp_path / "ms_deform_attn"
