"""3x3 convolution by Winograd's F(2x2, 3x3), from the compiled CPU kernel, for CPU inference.

The pixel decoder's FPN ends with a 3x3 convolution at 1/4 resolution (256 -> 256 channels), its largest single
product: 19 GFLOP for a 512x512 image, about 90 ms on the project's CPU through oneDNN's direct convolution.
Winograd's minimal filtering computes each 2x2 output block from a 4x4 input tile with 16 instead of 36
multiplications per channel pair (`csrc/conv3x3_winograd_cpu.cpp`); it took 57-67 ms for the same convolution.
Its transforms use only additions and halvings, so the result equals the direct convolution to float rounding
(about 1e-6 relative).

It runs only where it may: the CPU kernel has been built (it is part of that extension; never compiled
implicitly), float32 CPU tensors, no autograd (the kernel has no backward), eager mode, stride 1, padding 1,
dilation 1, one group. Everywhere else `conv3x3` is the module's own forward.
"""

from __future__ import annotations

import torch
from torch import nn

from . import dispatch

# switched off by tests (and for A/B timings) to compare with the direct convolution
enabled = True


def applies(conv: nn.Conv2d, x: torch.Tensor) -> bool:
    """Whether `conv3x3(conv, x)` takes the Winograd kernel."""
    return (
        enabled
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and x.dim() == 4
        and conv.weight.dtype == torch.float32
        and conv.kernel_size == (3, 3)
        and conv.stride == (1, 1)
        and conv.padding == (1, 1)
        and conv.dilation == (1, 1)
        and conv.groups == 1
        and conv.padding_mode == "zeros"
        and not torch.is_grad_enabled()
        and not torch.compiler.is_compiling()
        and dispatch.cpu_kernel_ready()
    )


def conv3x3(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """`conv(x)`, by the Winograd kernel where `applies(conv, x)`, else by `F.conv2d`."""
    if not applies(conv, x):
        return conv(x)
    from .build import load_cpu_kernel

    kernel = load_cpu_kernel()  # already built and loaded: `cpu_kernel_ready` checked that
    out = kernel.winograd_conv3x3(x, kernel.winograd_weight_transform(conv.weight))
    if conv.bias is not None:
        out += conv.bias.view(1, -1, 1, 1)
    return out
