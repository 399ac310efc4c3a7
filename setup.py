"""Install-time hook: with `M2F_BUILD_CUDA_KERNEL=1` (or `M2F_BUILD_CPU_KERNEL=1`), compile the deformable-attention
CUDA (CPU) kernel while installing.

Everything else about the package is declared in pyproject.toml. The kernel is compiled into the same cache that the
just-in-time build uses (docs/kernel.md), with the torch of the environment being installed into, so install with
`--no-build-isolation`:

    M2F_BUILD_CUDA_KERNEL=1 pip install --no-build-isolation -e .
    M2F_BUILD_CUDA_KERNEL=1 TORCH_CUDA_ARCH_LIST="8.0;9.0" pip install --no-build-isolation .   # no GPU needed
    M2F_BUILD_CPU_KERNEL=1 pip install --no-build-isolation -e .

A requested build that fails stops the installation with the compiler's reason; without the variable nothing is
compiled and torch is not imported.
"""

import os
import subprocess
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

KERNEL_ENV = "M2F_BUILD_CUDA_KERNEL"
CPU_KERNEL_ENV = "M2F_BUILD_CPU_KERNEL"


def _requested(variable: str) -> bool:
    return os.environ.get(variable, "").strip().lower() in ("1", "true", "yes")


class BuildPyWithKernel(build_py):
    def run(self):
        super().run()
        for variable, flags, what in ((KERNEL_ENV, [], "CUDA"), (CPU_KERNEL_ENV, ["--cpu"], "CPU")):
            if not _requested(variable):
                continue
            source = Path(__file__).resolve().parent / "src"
            code = f"import sys; from m2f_hf.ops.build import main; sys.exit(main({flags + ['--verbose']!r}))"
            env = dict(
                os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(source), os.environ.get("PYTHONPATH")]))
            )
            result = subprocess.run([sys.executable, "-c", code], env=env)
            if result.returncode != 0:
                raise SystemExit(
                    f"{variable}=1: the {what} kernel could not be built (see the log above and docs/kernel.md); "
                    f"unset {variable} to install without it (the PyTorch path is used instead)."
                )


setup(cmdclass={"build_py": BuildPyWithKernel})
