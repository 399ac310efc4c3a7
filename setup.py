"""Install-time hook: with `M2F_BUILD_CUDA_KERNEL=1`, compile the deformable-attention CUDA kernel while installing.

Everything else about the package is declared in pyproject.toml. The kernel is compiled into the same cache that the
just-in-time build uses (docs/kernel.md), with the torch of the environment being installed into, so install with
`--no-build-isolation`:

    M2F_BUILD_CUDA_KERNEL=1 pip install --no-build-isolation -e .
    M2F_BUILD_CUDA_KERNEL=1 TORCH_CUDA_ARCH_LIST="8.0;9.0" pip install --no-build-isolation .   # no GPU needed

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


class BuildPyWithKernel(build_py):
    def run(self):
        super().run()
        if os.environ.get(KERNEL_ENV, "").strip().lower() not in ("1", "true", "yes"):
            return
        source = Path(__file__).resolve().parent / "src"
        code = "import sys; from m2f_hf.ops.build import main; sys.exit(main(['--verbose']))"
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(source), os.environ.get("PYTHONPATH")])))
        result = subprocess.run([sys.executable, "-c", code], env=env)
        if result.returncode != 0:
            raise SystemExit(
                f"{KERNEL_ENV}=1: the CUDA kernel could not be built (see the log above and docs/kernel.md); "
                f"unset {KERNEL_ENV} to install without it (it is then built on first use, or never on CPU)."
            )


setup(cmdclass={"build_py": BuildPyWithKernel})
