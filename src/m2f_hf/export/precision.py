"""Lower-precision CPU inference in PyTorch: bf16 weights and activations, and int8 dynamic quantisation.

    from m2f_hf.export.precision import load_for_precision, quantize_int8

    model = load_for_precision("path/or/hub-id", "bfloat16")   # = from_pretrained(..., dtype=torch.bfloat16)
    model = quantize_int8(model)                               # int8 linear layers, the rest float32

bf16: the whole model in bfloat16 (`from_pretrained(..., dtype=torch.bfloat16)` or `model.to(torch.bfloat16)`). On
the CPU the model feeds its backbone a channels-last image (oneDNN's bf16 convolutions run on AMX / AVX-512 BF16 in
that layout), samples the deformable attention with its float32 CPU kernel (the locations and weights in float32,
the values converted), and the processor post-processes in float32.

int8: `torch.ao.quantization.quantize_dynamic` over every `nn.Linear` (weights int8 per output channel,
activations quantised per call); the convolutions, norms and the attention sampling stay float32.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

# the names `--dtype` and `load_segmentation_model(dtype=...)` accept
PRECISIONS = ("float32", "bfloat16", "int8")


def check_precision(name: str) -> str:
    if not isinstance(name, str) or name not in PRECISIONS:
        raise ValueError(f"dtype must be one of {', '.join(PRECISIONS)}; got {name!r}.")
    return name


def torch_dtype(name: str) -> torch.dtype:
    """The floating-point dtype the model's weights are loaded in for precision `name` (int8 loads float32)."""
    return torch.bfloat16 if check_precision(name) == "bfloat16" else torch.float32


def _quantized_engine() -> str:
    engines = torch.backends.quantized.supported_engines
    for engine in ("x86", "fbgemm", "onednn", "qnnpack"):
        if engine in engines:
            return engine
    raise RuntimeError(f"this torch has no quantized engine for int8 linear layers (engines: {engines}).")


def quantize_int8(model: nn.Module) -> nn.Module:
    """A copy of `model` (float32, on the CPU, in evaluation mode) whose `nn.Linear` layers are int8 dynamically
    quantised modules. For inference only: the quantised layers have no gradients."""
    parameter = next(model.parameters())
    if parameter.device.type != "cpu":
        raise ValueError(f"int8 dynamic quantisation runs on the CPU; the model is on {parameter.device}.")
    if parameter.dtype != torch.float32:
        raise ValueError(f"int8 dynamic quantisation starts from a float32 model; this one is {parameter.dtype}.")
    torch.backends.quantized.engine = _quantized_engine()
    with warnings.catch_warnings():
        # torch announces the move of its quantized tensors to torchao; the eager dynamic quantisation still works
        warnings.filterwarnings("ignore", message=".*quantiz.*deprecated", category=UserWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

        quantized = quantize_dynamic(
            model.eval(), {nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8, inplace=False
        )
    quantized.m2f_precision = "int8"
    return quantized


def load_for_precision(name_or_path, precision: str = "float32", **kwargs) -> nn.Module:
    """`M2FForUniversalSegmentation.from_pretrained` in `precision` (float32, bfloat16 or int8), in evaluation
    mode."""
    from ..modeling_m2f import M2FForUniversalSegmentation

    check_precision(precision)
    model = M2FForUniversalSegmentation.from_pretrained(name_or_path, dtype=torch_dtype(precision), **kwargs).eval()
    return quantize_int8(model) if precision == "int8" else model


def to_precision(model: nn.Module, precision: str) -> nn.Module:
    """`model` (float32) in `precision`: cast to bf16, int8-quantised, or unchanged."""
    check_precision(precision)
    if precision == "bfloat16":
        return model.to(torch.bfloat16)
    if precision == "int8":
        return quantize_int8(model)
    return model
