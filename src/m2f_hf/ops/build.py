"""Just-in-time (and ahead-of-time) build of the multi-scale deformable attention CUDA kernel.

The kernel is compiled with ``torch.utils.cpp_extension.load`` (ninja) the first time it is needed and cached in a
directory keyed by the torch version, the CUDA version and the target GPU architectures, so a torch upgrade or a
different GPU never picks up a stale, ABI-incompatible binary. Nothing here runs at ``import m2f_hf``.

Ahead of time (e.g. in a Docker image, on a machine with the CUDA toolkit)::

    python -m m2f_hf.ops                   # architectures of the visible GPUs
    python -m m2f_hf.ops --arch "8.0;9.0"  # no GPU needed; sets TORCH_CUDA_ARCH_LIST

Environment:
    ``M2F_DEFORM_ATTN_BUILD_DIR``: cache root to use instead of ``$XDG_CACHE_HOME/m2f_hf`` (``~/.cache/m2f_hf``).
    ``TORCH_CUDA_ARCH_LIST``: architectures to compile for (read by torch's extension builder); defaults to those of
    the visible GPUs.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import threading
from pathlib import Path
from types import ModuleType

import torch

EXTENSION_NAME = "m2f_hf_ms_deform_attn"
BUILD_DIR_ENV = "M2F_DEFORM_ATTN_BUILD_DIR"
CSRC_DIR = Path(__file__).resolve().parent / "csrc"
SOURCES = ("ms_deform_attn.cpp", "ms_deform_attn_cuda.cu")

# Exceptions a toolkit-less machine, a compiler error or an ABI mismatch raise from cpp_extension.load: compiler
# failures come as RuntimeError / CalledProcessError, a missing nvcc or unwritable cache as OSError, a broken .so as
# ImportError.
BUILD_EXCEPTIONS = (RuntimeError, OSError, ImportError, subprocess.CalledProcessError)


class KernelUnavailableError(RuntimeError):
    """The CUDA kernel cannot be used on this machine; the message says why and how to fix it."""


_lock = threading.Lock()
_kernel: ModuleType | None = None
_failure: KernelUnavailableError | None = None


def cuda_arch_list() -> str:
    """Target architectures: ``TORCH_CUDA_ARCH_LIST`` if set, else the compute capabilities of the visible GPUs."""
    explicit = os.environ.get("TORCH_CUDA_ARCH_LIST", "").strip()
    if explicit:
        return explicit
    if not torch.cuda.is_available():
        return ""
    capabilities = sorted({torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())})
    return ";".join(f"{major}.{minor}" for major, minor in capabilities)


def build_directory(arch_list: str | None = None) -> Path:
    """Cache directory for the current torch / CUDA / architecture combination."""
    arch_list = cuda_arch_list() if arch_list is None else arch_list
    root = os.environ.get(BUILD_DIR_ENV)
    if root:
        base = Path(root).expanduser()
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")).expanduser() / "m2f_hf"
    key = f"torch{torch.__version__}-cuda{torch.version.cuda}-sm{arch_list.replace(';', '_').replace(' ', '_')}"
    return base / "ms_deform_attn" / re.sub(r"[^A-Za-z0-9._+-]", "_", key)


def _check_toolchain() -> str | None:
    """Reason the kernel cannot be built here, or None when a build can be attempted."""
    from torch.utils import cpp_extension

    if torch.version.cuda is None:
        return f"this PyTorch build ({torch.__version__}) has no CUDA support"
    if cpp_extension.CUDA_HOME is None:
        return "no CUDA toolkit found (nvcc); install it or set CUDA_HOME"
    if not cpp_extension.is_ninja_available():
        return "ninja is not installed (pip install ninja)"
    if not cuda_arch_list():
        return "no GPU is visible and TORCH_CUDA_ARCH_LIST is not set, so there is no architecture to compile for"
    return None


def _toolkit_hint() -> str:
    from torch.utils import cpp_extension

    home = Path(cpp_extension.CUDA_HOME or "")
    hint = f"toolkit used: CUDA_HOME={cpp_extension.CUDA_HOME}"
    # torch guesses CUDA_HOME from `which nvcc`; a wrapper or symlink outside the toolkit yields a root without libs
    if not any(home.glob("lib*/libcudart.so*")) and not any(home.glob("targets/*/lib/libcudart.so*")):
        hint += " has no lib64/libcudart.so, set CUDA_HOME to the toolkit root, e.g. /usr/local/cuda"
    return hint


def _compile(build_dir: Path, verbose: bool) -> ModuleType:
    from torch.utils import cpp_extension

    build_dir.mkdir(parents=True, exist_ok=True)
    return cpp_extension.load(
        name=EXTENSION_NAME,
        sources=[str(CSRC_DIR / name) for name in SOURCES],
        extra_include_paths=[str(CSRC_DIR)],
        extra_cflags=["-O3"],
        extra_cuda_cflags=["-O3", "-lineinfo"],
        build_directory=str(build_dir),
        verbose=verbose,
    )


def load_kernel(*, verbose: bool = False) -> ModuleType:
    """Build (first call) or load (cached) the CUDA extension.

    Raises:
        KernelUnavailableError: the toolkit is missing, there is no architecture to build for, or the build failed.
            The result is remembered: later calls raise the same error without rebuilding.
    """
    global _kernel, _failure
    with _lock:
        if _kernel is not None:
            return _kernel
        if _failure is not None:
            raise _failure
        reason = _check_toolchain()
        if reason is None:
            build_dir = build_directory()
            try:
                _kernel = _compile(build_dir, verbose)
                return _kernel
            except BUILD_EXCEPTIONS as error:
                first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
                reason = f"building in {build_dir} failed ({type(error).__name__}: {first_line}; {_toolkit_hint()})"
        _failure = KernelUnavailableError(
            f"m2f_hf multi-scale deformable attention CUDA kernel unavailable: {reason}. "
            "Build it with `python -m m2f_hf.ops --verbose` to see the full log (docs/kernel.md)."
        )
        raise _failure


def reset() -> None:
    """Forget a loaded kernel or a remembered failure (tests, or after fixing the toolchain in a live session)."""
    global _kernel, _failure
    with _lock:
        _kernel = None
        _failure = None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build the m2f_hf deformable attention CUDA kernel ahead of time.")
    parser.add_argument("--arch", help='architectures, e.g. "8.0;9.0" (sets TORCH_CUDA_ARCH_LIST)')
    parser.add_argument("--verbose", action="store_true", help="show the compiler commands and output")
    args = parser.parse_args(argv)
    if args.arch:
        os.environ["TORCH_CUDA_ARCH_LIST"] = args.arch
    try:
        module = load_kernel(verbose=args.verbose)
    except KernelUnavailableError as error:
        print(json.dumps({"built": False, "reason": str(error)}))
        return 1
    print(json.dumps({"built": True, "module": module.__file__, "build_dir": str(build_directory())}))
    return 0
