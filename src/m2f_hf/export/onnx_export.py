"""Export a Mask2Former model to a deployable ONNX folder: `model.onnx`, `config.json`, `preprocessor_config.json`.

    from m2f_hf.export import export_onnx
    path = export_onnx("facebook/mask2former-swin-tiny-coco-panoptic", "m2f-onnx")  # -> m2f-onnx/model.onnx

The graph takes `pixel_values` `(batch, 3, height, width)` with dynamic batch, height and width (multiples of the
backbone's largest stride, 32) and returns exactly `class_queries_logits` and `masks_queries_logits`. It is captured
by `torch.export` (no Python control flow on tensor values or sizes reaches the graph) and translated by
`torch.onnx.export(dynamo=True)`; the deformable-attention op goes through `translations.py`. Every export is
validated at once (`validate.py`): graph inputs, outputs and operator domains, then onnxruntime against the PyTorch
model at a size and batch other than the example's.
"""

from __future__ import annotations

import copy
import os
import tempfile
from pathlib import Path

import torch

from .translations import PLUGINS, translation_table

ONNX_FILE = "model.onnx"
INPUT_NAME = "pixel_values"
OUTPUT_NAMES = ("class_queries_logits", "masks_queries_logits")
DEFAULT_OPSET = 18
# the oldest opset torch's dynamo exporter writes; GridSample needs 16, the exporter's own translations 18
MIN_OPSET = 18
DTYPES = ("float32", "int8")
# metadata_props of model.onnx, read back by the runtime
METADATA_PREFIX = "m2f_hf."


class ExportError(ValueError):
    """A model or option that cannot be exported, or an export that failed its validation; says which and why."""


class _LogitsOnly(torch.nn.Module):
    """The model as a function of `pixel_values` returning the two logits tensors (no auxiliary outputs)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        outputs = self.model(pixel_values=pixel_values, output_auxiliary_logits=False, return_dict=True)
        return outputs.class_queries_logits, outputs.masks_queries_logits


def check_options(*, opset: int, deform_attn_plugin: str | None, dtype: str) -> None:
    """Raise `ExportError` for an option value the export cannot use."""
    if isinstance(opset, bool) or not isinstance(opset, int):
        raise ExportError(f"opset must be an integer, got {opset!r}.")
    if opset < MIN_OPSET:
        raise ExportError(
            f"opset {opset} is too old: the exported graph needs ONNX opset {MIN_OPSET} or newer (GridSample, and the "
            f"opset-{MIN_OPSET} forms of Resize, ReduceSum and LayerNormalization that torch's exporter writes)."
        )
    import onnx

    newest = onnx.defs.onnx_opset_version()
    if opset > newest:
        raise ExportError(f"opset {opset} is newer than this onnx package knows (up to {newest}).")
    if deform_attn_plugin is not None and deform_attn_plugin not in PLUGINS:
        raise ExportError(f"deform_attn_plugin must be None or one of {PLUGINS}; got {deform_attn_plugin!r}.")
    if dtype not in DTYPES:
        raise ExportError(f"dtype must be one of {', '.join(DTYPES)}; got {dtype!r}.")


def _resolve_model(model_or_path, processor):
    """(model on the CPU in eval mode, processor, source name) from a model object or anything loading takes."""
    from ..image_processing_m2f import M2FImageProcessor
    from ..modeling_m2f import M2FForUniversalSegmentation

    if isinstance(model_or_path, M2FForUniversalSegmentation):
        model, source = model_or_path, type(model_or_path).__name__
        if processor is None:
            processor = M2FImageProcessor()
    elif isinstance(model_or_path, (str, os.PathLike)):
        from ..inference.loading import ModelLoadError, load_segmentation_model

        spec = os.fspath(model_or_path)
        if os.path.isfile(os.path.join(os.path.expanduser(spec), ONNX_FILE)):
            raise ExportError(
                f"model {spec!r} is an exported ONNX folder already; export from the PyTorch checkpoint."
            )
        try:
            loaded = load_segmentation_model(spec, device="cpu")
        except ModelLoadError as error:
            raise ExportError(str(error)) from error
        model, source = loaded.model, spec
        processor = processor if processor is not None else loaded.processor
    else:
        raise ExportError(
            "model must be an M2FForUniversalSegmentation, a checkpoint folder or a Hub id; got "
            f"{type(model_or_path).__name__}."
        )
    parameter = next(model.parameters())
    if parameter.device.type != "cpu" or parameter.dtype != torch.float32:
        model = copy.deepcopy(model).to("cpu", torch.float32)  # traced on the CPU in float32; the user's model stays
    return model, processor, source


def _example_input(model) -> torch.Tensor:
    """The tracing example: batch 2 (torch.export specialises sizes 0 and 1) and unequal height and width, so that
    neither is tied to the batch or to the other."""
    stride = max(model.model.backbone.strides)
    return torch.zeros(2, model.config.num_channels, 7 * stride, 9 * stride)


def _dynamic_shapes(stride: int) -> dict:
    batch = torch.export.Dim("batch", min=1, max=1024)
    height = torch.export.Dim("height_blocks", min=1, max=4096 // stride)
    width = torch.export.Dim("width_blocks", min=1, max=4096 // stride)
    return {INPUT_NAME: {0: batch, 2: stride * height, 3: stride * width}}


def _trace_to_onnx(model, path: Path, *, opset: int, deform_attn_plugin: str | None) -> None:
    stride = max(model.model.backbone.strides)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            program = torch.onnx.export(
                _LogitsOnly(model).eval(),
                (_example_input(model),),
                dynamo=True,
                input_names=[INPUT_NAME],
                output_names=list(OUTPUT_NAMES),
                dynamic_shapes=_dynamic_shapes(stride),
                custom_translation_table=translation_table(deform_attn_plugin),
                opset_version=opset,
                optimize=True,
                verbose=False,
            )
    finally:
        model.train(was_training)
    program.save(str(path))


def _write_metadata(path: Path, entries: dict) -> None:
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    for node in proto.graph.node:
        # torch's per-node records (Python stack traces with this machine's paths, module names): not for deployment
        del node.metadata_props[:]
    for key, value in entries.items():
        item = proto.metadata_props.add()
        item.key, item.value = METADATA_PREFIX + key, str(value)
    onnx.save(proto, str(path))


def export_onnx(
    model_or_path,
    output_dir,
    *,
    opset: int = DEFAULT_OPSET,
    deform_attn_plugin: str | None = None,
    dtype: str = "float32",
    processor=None,
    validate: bool = True,
) -> Path:
    """Export a model to `output_dir` (created) as `model.onnx` + `config.json` + `preprocessor_config.json`.

    Args:
        model_or_path: an `M2FForUniversalSegmentation`, or anything `load_segmentation_model` takes (one of our
            checkpoint folders, a transformers-native Mask2Former checkpoint, a Hub id).
        output_dir: the folder to write (a deployable model: `M2FOnnxModel.from_pretrained`, `m2f-segment --model`).
        opset (`int`, defaults to 18): ONNX opset of the graph (18 or newer).
        deform_attn_plugin (`str`, *optional*): None for standard ONNX operators only; `"tensorrt"` for TensorRT's
            `MultiscaleDeformableAttnPlugin_TRT` node (a graph for TensorRT engines; onnxruntime cannot run it).
        dtype (`str`, defaults to `"float32"`): `"int8"` writes onnxruntime's dynamic int8 quantisation of the
            float32 graph (`quantize.py`: weights of MatMul/Gemm in int8, activations quantised per call).
        processor: the image processor to save; default: the checkpoint's (a default `M2FImageProcessor` for a
            model object).
        validate (`bool`, defaults to True): check the graph and compare onnxruntime with the PyTorch model.

    Returns:
        The path of `model.onnx`.

    Raises:
        ExportError: the model cannot be loaded, an option is out of range, or the exported graph fails validation.
    """
    check_options(opset=opset, deform_attn_plugin=deform_attn_plugin, dtype=dtype)
    if dtype == "int8" and deform_attn_plugin is not None:
        raise ExportError("dtype 'int8' (onnxruntime's quantiser) is for the standard graph; drop deform_attn_plugin.")
    model, processor, source = _resolve_model(model_or_path, processor)
    output_dir = Path(output_dir)
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ExportError(f"cannot create the output folder {str(output_dir)!r}: {error}") from error
    path = output_dir / ONNX_FILE
    with tempfile.TemporaryDirectory(dir=output_dir) as scratch:
        float_path = Path(scratch) / ONNX_FILE if dtype == "int8" else path
        _trace_to_onnx(model, float_path, opset=opset, deform_attn_plugin=deform_attn_plugin)
        if dtype == "int8":
            from .quantize import quantize_onnx_int8

            quantize_onnx_int8(float_path, path)
    stride = max(model.model.backbone.strides)
    _write_metadata(
        path,
        {
            "size_divisor": stride,
            "num_channels": model.config.num_channels,
            "deform_attn_plugin": deform_attn_plugin or "none",
            "dtype": dtype,
            "opset": opset,
            "source": source,
        },
    )
    model.config.save_pretrained(output_dir)
    processor.save_pretrained(output_dir)
    if validate:
        from .validate import ExportValidationError, validate_export

        try:
            validate_export(path, model, deform_attn_plugin=deform_attn_plugin, dtype=dtype)
        except ExportValidationError as error:
            raise ExportError(f"the exported graph {path} failed validation: {error}") from error
    return path


def read_metadata(path) -> dict[str, str]:
    """The `m2f_hf.*` entries of an exported model.onnx's metadata (without the prefix)."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    return {
        item.key[len(METADATA_PREFIX) :]: item.value
        for item in proto.metadata_props
        if item.key.startswith(METADATA_PREFIX)
    }


__all__ = [
    "DEFAULT_OPSET",
    "DTYPES",
    "ExportError",
    "MIN_OPSET",
    "ONNX_FILE",
    "OUTPUT_NAMES",
    "check_options",
    "export_onnx",
    "read_metadata",
]
