"""Multi-scale deformable attention: dispatcher, fast PyTorch path, optional CUDA and CPU kernels (docs/kernel.md).

Importing this package registers the ``m2f_hf::ms_deform_attn`` custom op; it never compiles anything.
"""

from .build import KernelUnavailableError, cpu_kernel_built, load_cpu_kernel, load_kernel
from .dispatch import (
    ENV_VAR,
    IMPLEMENTATIONS,
    KernelFallbackWarning,
    get_default_implementation,
    kernel_available,
    multi_scale_deformable_attention,
    resolve_implementation,
    set_default_implementation,
)

__all__ = [
    "ENV_VAR",
    "IMPLEMENTATIONS",
    "KernelFallbackWarning",
    "KernelUnavailableError",
    "get_default_implementation",
    "kernel_available",
    "cpu_kernel_built",
    "load_cpu_kernel",
    "load_kernel",
    "multi_scale_deformable_attention",
    "resolve_implementation",
    "set_default_implementation",
]
