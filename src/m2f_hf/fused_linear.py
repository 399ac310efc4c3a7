"""Linear layers with their bias and a ReLU or a residual add in one oneDNN call, for CPU inference.

PyTorch's CPU `addmm` writes the broadcast bias into the output before the matrix product accumulates onto it, and
a ReLU or residual add is another pass over the result. oneDNN's matmul primitive applies the bias and one
element-wise or binary post-op while the product's tiles are still in cache; on the project's CPU the encoder's
fc1 + ReLU takes 13.6 ms instead of 19.2 ms at 512x512, and fc2 + residual 13.8 ms instead of 16.1 ms (two threads,
5376 tokens). torch exposes that primitive as `torch.ops.mkldnn._linear_pointwise` (what inductor's CPU fusions
call); it has no autograd formula, so it is used only without autograd, in float32 (and bf16 where oneDNN has native bf16),
in eager mode, and wherever it is missing the result comes from the plain torch ops. Both give the same values up to float rounding.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

# switched off by tests (and for A/B timings) to compare with the plain formulation
enabled = True


def _onednn_linear_pointwise():
    """The op, if this torch has it and it computes a small product correctly on this machine; else None."""
    if not torch.backends.mkldnn.is_available():
        return None
    try:
        op = torch.ops.mkldnn._linear_pointwise
        x = torch.arange(6, dtype=torch.float32).view(2, 3)
        weight = torch.arange(12, dtype=torch.float32).view(4, 3) / 8
        bias = torch.ones(4)
        with torch.no_grad():
            works = torch.allclose(op(x, weight, bias, "relu", [], ""), F.linear(x, weight, bias).relu())
            works = works and torch.allclose(op.binary(x, bias.expand(2, 4), weight, None, "add"), x @ weight.t() + 1)
    except (AttributeError, RuntimeError, NotImplementedError):  # torch built without it, or a CPU it refuses
        return None
    return op if works else None


_LINEAR_POINTWISE = _onednn_linear_pointwise()


def _bf16_fusion_works() -> bool:
    """Whether oneDNN has native bf16 here (AVX-512 BF16 / AMX) and the op gives F.linear's bf16 result."""
    if _LINEAR_POINTWISE is None:
        return False
    try:
        if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
            return False
        x = (torch.arange(6, dtype=torch.float32).view(2, 3) / 4).bfloat16()
        weight = (torch.arange(12, dtype=torch.float32).view(4, 3) / 8).bfloat16()
        bias = torch.ones(4, dtype=torch.bfloat16)
        with torch.no_grad():
            fused = _LINEAR_POINTWISE(x, weight, bias, "relu", [], "")
            return fused.dtype == torch.bfloat16 and torch.equal(fused, F.linear(x, weight, bias).relu())
    except (AttributeError, RuntimeError, NotImplementedError):
        return False


# float32 everywhere the op works; bf16 where oneDNN runs it natively (on this project's CPU the encoder's bf16 fc1 +
# ReLU takes a third of the time of F.linear followed by a separate ReLU)
_FUSED_DTYPES = (torch.float32, torch.bfloat16) if _bf16_fusion_works() else (torch.float32,)


def fusion_applies(x: torch.Tensor) -> bool:
    """Whether `linear` takes the fused oneDNN path for this input."""
    return (
        enabled
        and _LINEAR_POINTWISE is not None
        and x.device.type == "cpu"
        and x.dtype in _FUSED_DTYPES
        and not torch.is_grad_enabled()
        and not torch.is_autocast_enabled("cpu")
        and not torch.compiler.is_compiling()
    )


def linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    relu: bool = False,
    residual: torch.Tensor | None = None,
) -> torch.Tensor:
    """`x @ weight.T + bias`, then ReLU (`relu=True`) or `+ residual` (a tensor of the output's shape)."""
    if relu and residual is not None:
        raise ValueError("linear: pass relu=True or a residual, not both")
    out_features = weight.shape[0]
    same_dtype = weight.dtype == x.dtype and (bias is None or bias.dtype == x.dtype)
    if same_dtype and fusion_applies(x) and (residual is None or residual.dtype == x.dtype):
        flat = x.reshape(-1, x.shape[-1]).contiguous()
        if residual is not None:
            other = residual.reshape(-1, out_features).contiguous()
            out = _LINEAR_POINTWISE.binary(flat, other, weight, bias, "add")
        else:
            out = _LINEAR_POINTWISE(flat, weight, bias, "relu" if relu else "none", [], "")
        return out.view(*x.shape[:-1], out_features)
    out = F.linear(x, weight, bias)
    if relu:
        out = out.relu_()
    if residual is not None:
        # out of place: under autocast `out` may be half precision while the residual stream is float32, and the
        # sum must take the wider type, as `residual + linear(x)` does
        out = residual + out
    return out


def has_weight_tensor(module: torch.nn.Module) -> bool:
    """Whether a linear module holds a plain weight tensor (a dynamically quantised one, from
    `m2f_hf.export.precision.quantize_int8`, keeps packed int8 weights and is called as a module)."""
    return isinstance(getattr(module, "weight", None), torch.Tensor)


def apply(
    module: torch.nn.Module, x: torch.Tensor, *, relu: bool = False, residual: torch.Tensor | None = None
) -> torch.Tensor:
    """`linear` with a module's weight and bias; a module without a weight tensor (int8) is called, then the ReLU
    or the residual added."""
    if has_weight_tensor(module):
        return linear(x, module.weight, module.bias, relu=relu, residual=residual)
    if relu and residual is not None:
        raise ValueError("apply: pass relu=True or a residual, not both")
    out = module(x)
    if relu:
        out = out.relu_()
    return out if residual is None else residual + out


def conv1x1(conv: torch.nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """`conv(x)` for a 1x1 convolution (stride 1, no padding, one group) of an NCHW map.

    Where the fusion applies, each image is one oneDNN product `weight (K, C) @ x (C, h*w)`, written straight into
    the NCHW output (oneDNN takes the map as the product's transposed second operand). On the project's CPU that is
    13 ms instead of oneDNN's convolution's 22.5 ms for a 256-channel 128x128 map.
    """
    plain = (
        not fusion_applies(x)
        or x.dim() != 4
        or conv.kernel_size != (1, 1)
        or conv.stride != (1, 1)
        or conv.padding != (0, 0)
        or conv.groups != 1
        or conv.weight.dtype != torch.float32
    )
    if plain:
        return conv(x)
    batch, channels, height, width = x.shape
    weight = conv.weight.view(conv.out_channels, channels)
    products = [
        _LINEAR_POINTWISE(weight, x[image].reshape(channels, height * width).t(), None, "none", [], "")
        for image in range(batch)
    ]  # (K, h*w) each
    out = (products[0][None] if batch == 1 else torch.stack(products)).view(batch, -1, height, width)
    if conv.bias is not None:
        out += conv.bias.view(1, -1, 1, 1)
    return out


def conv1x1_nchw(conv: torch.nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """`conv(x).contiguous()` for a 1x1 convolution: an NCHW result from an NCHW or channels-last map.

    A channels-last map (the low-precision CPU path's FPN) is, per image, a `(h*w, C)` matrix; `weight (K, C) @` its
    transpose writes the NCHW result directly. On the project's CPU that is 8 ms for a bf16 256-channel 128x128 map,
    where the convolution followed by the conversion to NCHW takes 67 ms (torch's bf16 layout copy is slow).
    """
    channels_last = x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    direct = (
        channels_last
        and x.device.type == "cpu"
        and not torch.is_grad_enabled()
        and not torch.compiler.is_compiling()
        and conv.weight.dtype == x.dtype
        and conv.kernel_size == (1, 1)
        and conv.stride == (1, 1)
        and conv.padding == (0, 0)
        and conv.groups == 1
    )
    if not direct:
        return conv1x1(conv, x).contiguous()
    batch, channels, height, width = x.shape
    tokens = x.permute(0, 2, 3, 1).reshape(batch, height * width, channels)  # a view of the channels-last memory
    weight = conv.weight.view(conv.out_channels, channels)
    out = torch.stack([torch.mm(weight, tokens[image].t()) for image in range(batch)])
    if conv.bias is not None:
        out += conv.bias.view(1, -1, 1)
    return out.view(batch, -1, height, width)
