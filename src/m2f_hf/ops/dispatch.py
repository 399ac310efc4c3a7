"""Choosing between the compiled kernels and the PyTorch path, and the public entry point.

Which implementation runs, in order of precedence:

1. the ``implementation`` argument of :func:`multi_scale_deformable_attention` when it is not None;
2. the environment variable ``M2F_DEFORM_ATTN`` (``auto`` / ``cuda`` / ``cpu`` / ``pytorch``);
3. the process default set by :func:`set_default_implementation` (the model sets it from its config field
   ``deform_attn_implementation``); ``auto`` initially.

``auto`` uses the CUDA kernel for CUDA tensors when it builds (built on first use), and the CPU kernel for CPU
tensors when it has been built before (``python -m m2f_hf.ops --cpu``; never compiled implicitly); otherwise the
PyTorch path. A kernel that fails to build or load produces one warning per process and never an exception.
``cuda`` and ``cpu`` mean "that kernel (built now if needed) or an error".
"""

from __future__ import annotations

import os
import warnings

import torch

from . import build
from .custom_op import ms_deform_attn

ENV_VAR = "M2F_DEFORM_ATTN"
IMPLEMENTATIONS = ("auto", "cuda", "cpu", "pytorch")

_default_implementation = "auto"
_fallback_warned = False
_cpu_fallback_warned = False


class KernelFallbackWarning(UserWarning):
    """A kernel could not be built or loaded, so `auto` fell back to the PyTorch path."""


def _validate(name: str, source: str) -> str:
    if not isinstance(name, str) or name.strip().lower() not in IMPLEMENTATIONS:
        raise ValueError(f"{source} must be one of {IMPLEMENTATIONS}, got {name!r}")
    return name.strip().lower()


def set_default_implementation(name: str) -> None:
    """Process-wide default used when neither the call nor ``M2F_DEFORM_ATTN`` names an implementation."""
    global _default_implementation
    _default_implementation = _validate(name, "deform_attn_implementation")


def get_default_implementation() -> str:
    return _default_implementation


def resolve_implementation(implementation: str | None = None) -> str:
    """The requested implementation name after applying argument > environment > default."""
    if implementation is not None:
        return _validate(implementation, "implementation")
    from_env = os.environ.get(ENV_VAR, "").strip()
    if from_env:
        return _validate(from_env, f"environment variable {ENV_VAR}")
    return _default_implementation


def _loads(load, warned_flag: str) -> bool:
    """Run a kernel loader; on `KernelUnavailableError` warn once per process (per flag) and return False."""
    try:
        load()
    except build.KernelUnavailableError as error:
        if not globals()[warned_flag]:
            globals()[warned_flag] = True
            warnings.warn(
                f"{error} Falling back to the PyTorch implementation; set {ENV_VAR}=pytorch to silence this warning.",
                KernelFallbackWarning,
                stacklevel=4,
            )
        return False
    return True


def kernel_available() -> bool:
    """True when the CUDA kernel is built (building it now if needed); warns once and returns False otherwise."""
    return _loads(build.load_kernel, "_fallback_warned")


def cpu_kernel_ready() -> bool:
    """True when the CPU kernel has been built before and loads; a built kernel that fails to load warns once."""
    return build.cpu_kernel_built() and _loads(build.load_cpu_kernel, "_cpu_fallback_warned")


def select_backend(implementation: str | None, device_type: str) -> str:
    """``"cuda"`` or ``"cpu"`` (compiled kernels) or ``"pytorch"`` for tensors on `device_type`.

    Raises:
        RuntimeError: a kernel was forced for tensors of another device, or it cannot be built (the error names why).
    """
    name = resolve_implementation(implementation)
    if name == "pytorch":
        return "pytorch"
    if name == "cpu":
        if device_type != "cpu":
            raise RuntimeError(
                f"multi-scale deformable attention implementation 'cpu' was requested (argument or {ENV_VAR}) but "
                f"the inputs are on device type {device_type!r}; use 'auto' / 'cuda' / 'pytorch' for them."
            )
        build.load_cpu_kernel()  # raises KernelUnavailableError with the reason
        return "cpu"
    if name == "cuda":
        if device_type != "cuda":
            raise RuntimeError(
                f"multi-scale deformable attention implementation 'cuda' was requested (argument or {ENV_VAR}) but "
                f"the inputs are on device type {device_type!r}; move them to a GPU or use 'auto' / 'pytorch'."
            )
        build.load_kernel()  # raises KernelUnavailableError with the reason
        return "cuda"
    if device_type == "cpu":
        return "cpu" if cpu_kernel_ready() else "pytorch"
    if device_type != "cuda":
        return "pytorch"
    return "cuda" if kernel_available() else "pytorch"


@torch.compiler.assume_constant_result
def _backend(implementation: str | None, device_type: str) -> str:
    # evaluated once at trace time under torch.compile, so the build / environment lookup never enters a graph
    return select_backend(implementation, device_type)


def _check_shapes(value, spatial_shapes, level_start_index, sampling_locations, attention_weights) -> None:
    if value.dim() != 4:
        raise ValueError(f"value must be (batch, num_keys, num_heads, head_dim), got shape {tuple(value.shape)}")
    if sampling_locations.dim() != 6 or sampling_locations.shape[-1] != 2:
        raise ValueError(
            "sampling_locations must be (batch, num_queries, num_heads, num_levels, num_points, 2), "
            f"got shape {tuple(sampling_locations.shape)}"
        )
    batch, _, num_heads, _ = value.shape
    if sampling_locations.shape[0] != batch or sampling_locations.shape[2] != num_heads:
        raise ValueError(
            f"sampling_locations batch/heads {tuple(sampling_locations.shape[0:3:2])} do not match value's "
            f"{(batch, num_heads)}"
        )
    if attention_weights.shape != sampling_locations.shape[:-1]:
        raise ValueError(
            f"attention_weights must have shape {tuple(sampling_locations.shape[:-1])} "
            f"(sampling_locations.shape[:-1]), got {tuple(attention_weights.shape)}"
        )
    num_levels = sampling_locations.shape[3]
    if spatial_shapes.shape != (num_levels, 2):
        raise ValueError(f"spatial_shapes must be ({num_levels}, 2), got shape {tuple(spatial_shapes.shape)}")
    if level_start_index.shape != (num_levels,):
        raise ValueError(f"level_start_index must be ({num_levels},), got shape {tuple(level_start_index.shape)}")
    if spatial_shapes.dtype.is_floating_point or level_start_index.dtype.is_floating_point:
        raise ValueError(
            f"spatial_shapes and level_start_index must be integer tensors, got {spatial_shapes.dtype} and "
            f"{level_start_index.dtype}"
        )


def multi_scale_deformable_attention(
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    level_start_index: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
    *,
    implementation: str | None = None,
) -> torch.Tensor:
    """Multi-scale deformable attention (Deformable DETR, used by Mask2Former's pixel decoder).

    Each query gathers, per head, `num_points` bilinearly sampled values on each level at `sampling_locations` and
    sums them with `attention_weights`. Sampling follows `grid_sample(align_corners=False, padding_mode="zeros")`.

    Args:
        value (`torch.Tensor` of shape `(batch, num_keys, num_heads, head_dim)`):
            Flattened feature maps of all levels, `num_keys = sum(height_l * width_l)`.
        spatial_shapes (`torch.Tensor` of shape `(num_levels, 2)`, int64):
            `(height, width)` of each level.
        level_start_index (`torch.Tensor` of shape `(num_levels,)`, int64):
            Offset of each level inside `num_keys`.
        sampling_locations (`torch.Tensor` of shape `(batch, num_queries, num_heads, num_levels, num_points, 2)`):
            `(x, y)` locations normalised to `[0, 1]`; points outside the map read zeros.
        attention_weights (`torch.Tensor` of shape `(batch, num_queries, num_heads, num_levels, num_points)`):
            Weight of each sampled point.
        implementation (`str`, *optional*):
            `"auto"`, `"cuda"`, `"cpu"` or `"pytorch"`; None defers to `M2F_DEFORM_ATTN`, then to
            `set_default_implementation`.

    Returns:
        `torch.Tensor` of shape `(batch, num_queries, num_heads * head_dim)` in `value`'s dtype.
    """
    _check_shapes(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
    backend = _backend(implementation, value.device.type)
    return ms_deform_attn(value, spatial_shapes, level_start_index, sampling_locations, attention_weights, backend)
