"""``torch.library`` registration: one opaque op for forward, one for backward, fake kernels and autograd.

``torch.compile`` and ``torch.export`` see ``m2f_hf::ms_deform_attn`` as a single node (no graph break), and the
autograd formula saves only the op's inputs: the backward op recomputes the sampling plan instead of keeping the
``(batch * heads, head_dim, queries, levels * points)`` sampled values alive, as grid_sample-based code does.

``use_cuda_kernel`` is decided by the dispatcher (``dispatch.py``) before the call, so the op itself never guesses:
True runs the compiled kernel (CUDA tensors only), False runs the PyTorch path on any device.
"""

from __future__ import annotations

import torch

from . import pytorch_impl
from .build import load_kernel


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
    use_cuda_kernel: bool,
) -> torch.Tensor:
    """Multi-scale deformable attention; `(batch, num_queries, num_heads * head_dim)` in `value`'s dtype."""
    if use_cuda_kernel:
        args = _kernel_inputs(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
        return load_kernel().forward(*args)
    return pytorch_impl.ms_deform_attn_forward(
        value, spatial_shapes, level_start_index, sampling_locations, attention_weights
    )


@ms_deform_attn.register_fake
def _(value, spatial_shapes, level_start_index, sampling_locations, attention_weights, use_cuda_kernel):
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
    use_cuda_kernel: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients of `value`, `sampling_locations`, `attention_weights`, each in its input's dtype."""
    if use_cuda_kernel:
        args = _kernel_inputs(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
        grad_value, grad_locations, grad_weights = load_kernel().backward(grad_output.contiguous(), *args)
        return (
            grad_value,
            grad_locations.to(sampling_locations.dtype),
            grad_weights.to(attention_weights.dtype),
        )
    return pytorch_impl.ms_deform_attn_backward(
        grad_output, value, spatial_shapes, level_start_index, sampling_locations, attention_weights
    )


@ms_deform_attn_backward.register_fake
def _(grad_output, value, spatial_shapes, level_start_index, sampling_locations, attention_weights, use_cuda_kernel):
    return torch.empty_like(value), torch.empty_like(sampling_locations), torch.empty_like(attention_weights)


def _setup_context(ctx, inputs, output):
    value, spatial_shapes, level_start_index, sampling_locations, attention_weights, use_cuda_kernel = inputs
    # inputs only: the backward recomputes everything else
    ctx.save_for_backward(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
    ctx.use_cuda_kernel = use_cuda_kernel


def _backward(ctx, grad_output):
    value, spatial_shapes, level_start_index, sampling_locations, attention_weights = ctx.saved_tensors
    grad_value, grad_locations, grad_weights = ms_deform_attn_backward(
        grad_output.contiguous(),
        value,
        spatial_shapes,
        level_start_index,
        sampling_locations,
        attention_weights,
        ctx.use_cuda_kernel,
    )
    return grad_value, None, None, grad_locations, grad_weights, None


ms_deform_attn.register_autograd(_backward, setup_context=_setup_context)
