"""Just-in-time (and ahead-of-time) builds of the multi-scale deformable attention CUDA and CPU kernels.

The kernel is compiled with ``torch.utils.cpp_extension.load`` (ninja) the first time it is needed and cached in a
directory keyed by the torch version, the CUDA version and the target GPU architectures, so a torch upgrade or a
different GPU never picks up a stale, ABI-incompatible binary. Nothing here runs at ``import m2f_hf``.

Ahead of time (e.g. in a Docker image, on a machine with the CUDA toolkit)::

    python -m m2f_hf.ops                   # architectures of the visible GPUs
    python -m m2f_hf.ops --arch "8.0;9.0"  # no GPU needed; sets TORCH_CUDA_ARCH_LIST
    python -m m2f_hf.ops --cpu             # the CPU kernels (a C++ compiler and ninja; about 40 s)

The CPU kernel is compiled for the machine's own instruction set (``-march=native``), so its cache directory is keyed
by the CPU model and flags as well. It is never built implicitly: ``auto`` uses it for CPU tensors once it has been
built (by the command above, ``M2F_BUILD_CPU_KERNEL=1`` at install time, or ``implementation="cpu"``).

Environment:
    ``M2F_DEFORM_ATTN_BUILD_DIR``: cache root to use instead of ``$XDG_CACHE_HOME/m2f_hf`` (``~/.cache/m2f_hf``).
    ``TORCH_CUDA_ARCH_LIST``: architectures to compile for (read by torch's extension builder); defaults to those of
    the visible GPUs.
"""

from __future__ import annotations

import argparse
import functools
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
CPU_EXTENSION_NAME = "m2f_hf_ms_deform_attn_cpu"
CPU_SOURCES = ("ms_deform_attn_cpu.cpp", "conv3x3_winograd_cpu.cpp")
CPU_FLAGS = ["-O3", "-march=native", "-fopenmp"]

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


def _cache_root() -> Path:
    """``M2F_DEFORM_ATTN_BUILD_DIR``, else ``$XDG_CACHE_HOME/m2f_hf`` (``~/.cache/m2f_hf``)."""
    root = os.environ.get(BUILD_DIR_ENV)
    if root:
        return Path(root).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")).expanduser() / "m2f_hf"


def _first_line(error: BaseException) -> str:
    """`Type: first line of the message` (compiler errors are long; the verbose build shows the rest)."""
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0] if text else type(error).__name__}"


def build_directory(arch_list: str | None = None) -> Path:
    """Cache directory for the current torch / CUDA / architecture combination."""
    arch_list = cuda_arch_list() if arch_list is None else arch_list
    base = _cache_root()
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
                reason = f"building in {build_dir} failed ({_first_line(error)}; {_toolkit_hint()})"
        _failure = KernelUnavailableError(
            f"m2f_hf multi-scale deformable attention CUDA kernel unavailable: {reason}. "
            "Build it with `python -m m2f_hf.ops --verbose` to see the full log (docs/kernel.md)."
        )
        raise _failure


def reset() -> None:
    """Forget loaded kernels or remembered failures (tests, or after fixing the toolchain in a live session)."""
    global _kernel, _failure, _cpu_kernel, _cpu_failure
    with _lock:
        _kernel = None
        _failure = None
        _cpu_kernel = None
        _cpu_failure = None


# ---------------------------------------------------------------------------------------------------------------------
# CPU kernel

_cpu_kernel: ModuleType | None = None
_cpu_failure: KernelUnavailableError | None = None


@functools.lru_cache(maxsize=1)
def _cpu_signature() -> str:
    """The CPU model and instruction-set flags (what ``-march=native`` compiles for); read once per process."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        import platform

        return f"{platform.machine()}-{platform.processor()}"
    fields = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key in ("model name", "flags", "Features", "CPU part") and key not in fields:
            fields[key] = value.strip()
    return json.dumps(fields, sort_keys=True)


def cpu_build_directory() -> Path:
    """Cache directory of the CPU kernel for the current torch and CPU."""
    import hashlib

    base = _cache_root()
    cpu = hashlib.sha256(_cpu_signature().encode()).hexdigest()[:12]
    key = re.sub(r"[^A-Za-z0-9._+-]", "_", f"torch{torch.__version__}-cpu{cpu}")
    return base / "ms_deform_attn" / key


@functools.lru_cache(maxsize=1)
def _cpu_sources_digest() -> str:
    """Digest of the CPU sources and flags, computed once per process (`auto` asks on every call while the
    kernel is not built)."""
    import hashlib

    digest = hashlib.sha256(" ".join(CPU_FLAGS).encode())
    for name in CPU_SOURCES:
        digest.update((CSRC_DIR / name).read_bytes())
    return digest.hexdigest()


def _built_cpu_library() -> Path | None:
    """The CPU kernel's shared library when it was built from the current sources, else None."""
    directory = cpu_build_directory()
    library = directory / f"{CPU_EXTENSION_NAME}.so"
    stamp = directory / "sources.sha256"
    if library.is_file() and stamp.is_file() and stamp.read_text().strip() == _cpu_sources_digest():
        return library
    return None


def cpu_kernel_built() -> bool:
    """True when the CPU kernel has been built for this torch, CPU and source (nothing is compiled to find out)."""
    return _cpu_kernel is not None or _built_cpu_library() is not None


def _import_library(library: Path) -> ModuleType:
    import importlib.util

    spec = importlib.util.spec_from_file_location(CPU_EXTENSION_NAME, library)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_cpu_kernel(*, verbose: bool = False) -> ModuleType:
    """Load the CPU extension, building it first when it is missing or its sources changed.

    Raises:
        KernelUnavailableError: no C++ compiler or ninja, or the build failed. Remembered like `load_kernel`'s.
    """
    global _cpu_kernel, _cpu_failure

    with _lock:
        if _cpu_kernel is not None:
            return _cpu_kernel
        if _cpu_failure is not None:
            raise _cpu_failure
        build_dir = cpu_build_directory()
        library = _built_cpu_library()
        try:
            if library is not None:  # a finished build: import it without the extension builder (or its checks)
                _cpu_kernel = _import_library(library)
                return _cpu_kernel
            from torch.utils import cpp_extension

            if not cpp_extension.is_ninja_available():
                raise OSError("ninja is not installed (pip install ninja)")
            build_dir.mkdir(parents=True, exist_ok=True)
            _cpu_kernel = cpp_extension.load(
                name=CPU_EXTENSION_NAME,
                sources=[str(CSRC_DIR / name) for name in CPU_SOURCES],
                extra_cflags=CPU_FLAGS,
                extra_ldflags=["-fopenmp"],
                build_directory=str(build_dir),
                verbose=verbose,
            )
            (build_dir / "sources.sha256").write_text(_cpu_sources_digest() + "\n")
            return _cpu_kernel
        except BUILD_EXCEPTIONS as error:
            reason = f"building or loading in {build_dir} failed ({_first_line(error)})"
        _cpu_failure = KernelUnavailableError(
            f"m2f_hf multi-scale deformable attention CPU kernel unavailable: {reason}. "
            "Build it with `python -m m2f_hf.ops --cpu --verbose` to see the full log (docs/kernel.md)."
        )
        raise _cpu_failure


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build the m2f_hf deformable attention kernels ahead of time.")
    parser.add_argument("--arch", help='architectures, e.g. "8.0;9.0" (sets TORCH_CUDA_ARCH_LIST)')
    parser.add_argument("--cpu", action="store_true", help="build the CPU kernel instead of the CUDA one")
    parser.add_argument("--verbose", action="store_true", help="show the compiler commands and output")
    args = parser.parse_args(argv)
    if args.cpu:
        return _build_and_report(load_cpu_kernel, cpu_build_directory, args.verbose)
    if args.arch:
        os.environ["TORCH_CUDA_ARCH_LIST"] = args.arch
    hint = None
    if not torch.cuda.is_available():
        # the usual case on a laptop or a CPU server: the kernel they want is the CPU one
        hint = "This machine has no GPU: build the CPU kernel with `python -m m2f_hf.ops --cpu`."
        if not args.arch:
            hint += ' To compile the CUDA kernel here for GPUs elsewhere, pass their architectures: --arch "8.0;9.0".'

    return _build_and_report(load_kernel, build_directory, args.verbose, hint=hint)


def _build_and_report(load, directory, verbose: bool, hint: str | None = None) -> int:
    """Build (or load) one kernel and print the outcome as one JSON line; the exit status of `main`."""
    try:
        module = load(verbose=verbose)
    except KernelUnavailableError as error:
        report = {"built": False, "reason": str(error)}
        if hint is not None:
            report["hint"] = hint
        print(json.dumps(report))
        return 1
    print(json.dumps({"built": True, "module": module.__file__, "build_dir": str(directory())}))
    return 0
