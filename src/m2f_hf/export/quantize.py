"""onnxruntime's dynamic int8 quantisation of an exported float32 graph (`m2f-export --dtype int8`).

The weights of every MatMul / Gemm become int8 (per output channel) once; activations are quantised per call from
their observed range (`DynamicQuantizeLinear`), so no calibration data is needed. Convolutions stay in float32: the
quantiser's dynamic mode writes ConvInteger, which onnxruntime's CPU provider runs slower than its float kernels.
docs/deployment.md records the measured speed and the quality it costs.
"""

from __future__ import annotations

from pathlib import Path

# the operator types quantised; see the module docstring for why Conv is left out
QUANTIZED_OPS = ("MatMul", "Gemm")


def quantize_onnx_int8(float_path, output_path, *, per_channel: bool = True) -> Path:
    """Write the dynamic int8 quantisation of the graph at `float_path` to `output_path`; returns `output_path`."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    output_path = Path(output_path)
    quantize_dynamic(
        str(float_path),
        str(output_path),
        op_types_to_quantize=list(QUANTIZED_OPS),
        per_channel=per_channel,
        weight_type=QuantType.QInt8,
    )
    return output_path
