"""``torch.library`` registration: one opaque op for forward, one for backward, fake kernels and autograd.

``torch.compile`` and ``torch.export`` see ``m2f_hf::ms_deform_attn`` as a single node (no graph break), and the
autograd formula saves only the op's inputs: the backward op recomputes the sampling plan instead of keeping the
``(batch * heads, head_dim, queries, levels * points)`` sampled values alive, as grid_sample-based code does.

``backend`` is decided by the dispatcher (``dispatch.py``) before the call, so the op itself never guesses:
``"cuda"`` runs the compiled CUDA kernel (CUDA tensors), ``"cpu"`` the compiled CPU kernel (float32 / float64 CPU
tensors; bf16 / fp16 values are converted to float32 for its forward, and take the PyTorch path backward), ``"pytorch"`` the PyTorch path on any device.
"""

from __future__ import annotations

import torch

from . import pytorch_impl
from .build import load_cpu_kernel, load_kernel

BACKENDS = ("cuda", "cpu", "pytorch")


def _compiled(backend: str, value: torch.Tensor):
    """The compiled extension to run, or None for the PyTorch path."""
    if backend == "cuda":
        return load_kernel()
    if backend == "cpu" and value.dtype in (torch.float32, torch.float64):
        return load_cpu_kernel()
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    return None


def _kernel_inputs(
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    level_start_index: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> tuple[torch.Tensor, ...]:
    # the kernel takes contiguous tensors on one device, locations/weights in the accumulation dtype
    dtype = pytorch_impl.compute_dtype(value.dtype)
    device = value.device
    return (
        value.contiguous(),
        spatial_shapes.to(device=device, dtype=torch.int64).contiguous(),
        level_start_index.to(device=device, dtype=torch.int64).contiguous(),
        sampling_locations.to(dtype).contiguous(),
        attention_weights.to(dtype).contiguous(),
    )


@torch.library.custom_op("m2f_hf::ms_deform_attn", mutates_args=())
def ms_deform_attn(
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    level_start_index: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
    backend: str,
) -> torch.Tensor:
    """Multi-scale deformable attention; `(batch, num_queries, num_heads * head_dim)` in `value`'s dtype."""
    if backend == "cpu" and value.dtype in (torch.bfloat16, torch.float16):
        # the CPU kernel computes in float32, as the PyTorch path does for half-precision values: the same
        # arithmetic, several times faster; only the values are converted (the output back to their dtype)
        kernel = load_cpu_kernel()
        args = _kernel_inputs(value.float(), spatial_shapes, level_start_index, sampling_locations, attention_weights)
        return kernel.forward(*args).to(value.dtype)
    kernel = _compiled(backend, value)
    if kernel is not None:
        args = _kernel_inputs(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
        return kernel.forward(*args)
    return pytorch_impl.ms_deform_attn_forward(
        value, spatial_shapes, level_start_index, sampling_locations, attention_weights
    )


@ms_deform_attn.register_fake
def _(value, spatial_shapes, level_start_index, sampling_locations, attention_weights, backend):
    batch, _, num_heads, head_dim = value.shape
    return value.new_empty((batch, sampling_locations.shape[1], num_heads * head_dim))


@torch.library.custom_op("m2f_hf::ms_deform_attn_backward", mutates_args=())
def ms_deform_attn_backward(
    grad_output: torch.Tensor,
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    level_start_index: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
    backend: str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients of `value`, `sampling_locations`, `attention_weights`, each in its input's dtype."""
    kernel = _compiled(backend, value)
    if kernel is not None:
        args = _kernel_inputs(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
        grad_value, grad_locations, grad_weights = kernel.backward(grad_output.contiguous().to(value.dtype), *args)
        return (
            grad_value,
            grad_locations.to(sampling_locations.dtype),
            grad_weights.to(attention_weights.dtype),
        )
    return pytorch_impl.ms_deform_attn_backward(
        grad_output, value, spatial_shapes, level_start_index, sampling_locations, attention_weights
    )


@ms_deform_attn_backward.register_fake
def _(grad_output, value, spatial_shapes, level_start_index, sampling_locations, attention_weights, backend):
    return torch.empty_like(value), torch.empty_like(sampling_locations), torch.empty_like(attention_weights)


def _setup_context(ctx, inputs, output):
    value, spatial_shapes, level_start_index, sampling_locations, attention_weights, backend = inputs
    # inputs only: the backward recomputes everything else
    ctx.save_for_backward(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
    ctx.backend = backend


def _backward(ctx, grad_output):
    value, spatial_shapes, level_start_index, sampling_locations, attention_weights = ctx.saved_tensors
    grad_value, grad_locations, grad_weights = ms_deform_attn_backward(
        grad_output.contiguous(),
        value,
        spatial_shapes,
        level_start_index,
        sampling_locations,
        attention_weights,
        ctx.backend,
    )
    return grad_value, None, None, grad_locations, grad_weights, None


ms_deform_attn.register_autograd(_backward, setup_context=_setup_context)
