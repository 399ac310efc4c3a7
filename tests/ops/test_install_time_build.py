"""`M2F_BUILD_CUDA_KERNEL=1 pip install` compiles the kernel into the JIT cache (setup.py's build_py hook)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _has_toolkit() -> bool:
    return shutil.which("nvcc") is not None and Path("/usr/local/cuda").is_dir()


@pytest.mark.slow  # reason: compiles the CUDA sources with nvcc (about 40 s) inside a pip build
@pytest.mark.skipif(not _has_toolkit(), reason="needs nvcc and a CUDA toolkit in /usr/local/cuda")
def test_install_time_build_fills_the_cache(tmp_path):
    env = dict(
        os.environ,
        M2F_BUILD_CUDA_KERNEL="1",
        TORCH_CUDA_ARCH_LIST="9.0",
        CUDA_HOME="/usr/local/cuda",
        M2F_DEFORM_ATTN_BUILD_DIR=str(tmp_path / "cache"),
    )
    # a wheel build runs build_py (and so the hook) without touching the installed package
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-build-isolation",
            "--no-deps",
            "-w",
            str(tmp_path / "wheel"),
            str(ROOT),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert list((tmp_path / "cache").rglob("m2f_hf_ms_deform_attn*.so"))


def test_without_the_variable_setup_py_does_not_build(tmp_path):
    """The default install path must not import torch or compile anything: the hook returns at once."""
    env = {k: v for k, v in os.environ.items() if k != "M2F_BUILD_CUDA_KERNEL"}
    code = (
        "import sys, runpy; sys.argv = ['setup.py', '--name'];"
        "runpy.run_path('setup.py', run_name='__main__');"
        "assert 'torch' not in sys.modules"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "m2f_hf" in result.stdout
