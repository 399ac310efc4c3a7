"""Deployment beyond PyTorch: ONNX export (standard operators, or TensorRT's deformable-attention plugin), an
onnxruntime model class, and onnxruntime's int8 quantisation of the exported graph (docs/deployment.md).

Needs the `export` extra (`pip install "m2f_hf[export]"`: onnx, onnxruntime, onnxscript); importing this package
imports none of them until a function is used.
"""

from __future__ import annotations

_EXPORTS = {
    "export_onnx": "onnx_export",
    "ExportError": "onnx_export",
    "DEFAULT_OPSET": "onnx_export",
    "MIN_OPSET": "onnx_export",
    "M2FOnnxModel": "runtime",
    "OnnxModelError": "runtime",
    "find_onnx_model": "runtime",
    "quantize_onnx_int8": "quantize",
    "validate_export": "validate",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
