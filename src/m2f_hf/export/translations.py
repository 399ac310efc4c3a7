"""ONNX translations of the `m2f_hf::ms_deform_attn` custom op, for `torch.onnx.export(dynamo=True)`.

The op is one opaque node in the exported program (`m2f_hf/ops/custom_op.py`); the exporter has no translation for
it, so the export passes one of these through `custom_translation_table`:

- `ms_deform_attn_grid_sample` (the default): standard ONNX operators only. Per level, the level's slice of `value`
  becomes a `(batch * heads, head_dim, height, width)` map and one `GridSample` (bilinear, zeros padding,
  `align_corners=0`: the op's sampling rule) reads it at the level's sampling points; the attention weights then sum
  points and levels. Plain onnxruntime runs it on any provider, with no custom-op library.
- `ms_deform_attn_tensorrt`: one `MultiscaleDeformableAttnPlugin_TRT` node, TensorRT's built-in plugin, whose inputs
  are exactly the op's: `value (N, S, M, D)`, `spatial_shapes (L, 2)` and `level_start_index (L,)` as int32 (the
  plugin accepts only int32 there), `sampling_locations (N, Lq, M, L, P, 2)`, `attention_weights (N, Lq, M, L, P)`.
  Its output `(N, Lq, M, D)` is reshaped to the op's `(N, Lq, M * D)`.

Level sizes are read from `spatial_shapes` at run time (never from the example input), so the graph runs at every
input size. The numbers of levels and points are fixed by the model's config (static dimensions of the inputs).
"""

from __future__ import annotations

import onnxscript
from onnxscript import opset18 as op

# TensorRT's ONNX parser looks plugins up by the node's op type (plugin version "1", empty namespace, unless the
# node has `plugin_version` / `plugin_namespace` attributes); the domain only keeps the node out of the ONNX ones.
TENSORRT_DOMAIN = "trt"
TENSORRT_PLUGIN = "MultiscaleDeformableAttnPlugin_TRT"
_TENSORRT = onnxscript.values.Opset(TENSORRT_DOMAIN, 1)
_INT32 = onnxscript.ir.DataType.INT32.value


def _plugin_op():
    """The plugin as an onnxscript op; its schema (five inputs, one output) is registered with onnx on first use,
    since onnxscript builds only ops that onnx knows."""
    import onnx
    from onnx.defs import OpSchema

    if not onnx.defs.has(TENSORRT_PLUGIN, TENSORRT_DOMAIN):
        parameter = OpSchema.FormalParameter
        schema = OpSchema(
            TENSORRT_PLUGIN,
            TENSORRT_DOMAIN,
            1,
            "TensorRT's multi-scale deformable attention plugin (output (N, Lq, M, D)).",
            inputs=[
                parameter("value", "T"),
                parameter("spatial_shapes", "I"),
                parameter("level_start_index", "I"),
                parameter("sampling_locations", "T"),
                parameter("attention_weights", "T"),
            ],
            outputs=[parameter("output", "T")],
            type_constraints=[
                ("T", ["tensor(float)", "tensor(float16)"], "values, locations, weights and output"),
                ("I", ["tensor(int32)"], "level shapes and start offsets"),
            ],
        )
        onnx.defs.register_schema(schema)
    return getattr(_TENSORRT, TENSORRT_PLUGIN)


def _static(dim, name: str) -> int:
    if not isinstance(dim, int):
        raise ValueError(f"ms_deform_attn export: {name} must be a static dimension, got {dim!r}.")
    return dim


def ms_deform_attn_grid_sample(
    value, spatial_shapes, level_start_index, sampling_locations, attention_weights, backend: str = "auto"
):
    """`m2f_hf::ms_deform_attn` in standard ONNX operators (one `GridSample` per level); `backend` is ignored."""
    heads = _static(value.shape[2], "num_heads")
    head_dim = _static(value.shape[3], "head_dim")
    levels = _static(sampling_locations.shape[3], "num_levels")
    points = _static(sampling_locations.shape[4], "num_points")
    one = op.Constant(value_ints=[1])
    batch = op.Shape(value, start=0, end=1)
    num_queries = op.Shape(sampling_locations, start=1, end=2)
    batch_heads = op.Mul(batch, op.Constant(value_ints=[heads]))

    # locations in [0, 1] -> GridSample's [-1, 1]; heads next to the batch: (N, M, Lq, L, P, 2)
    grids = op.Sub(op.Mul(sampling_locations, op.Constant(value_float=2.0)), op.Constant(value_float=1.0))
    grids = op.Transpose(grids, perm=[0, 2, 1, 3, 4, 5])
    weights = op.Transpose(attention_weights, perm=[0, 2, 1, 3, 4])  # (N, M, Lq, L, P)
    grid_shape = op.Concat(batch_heads, num_queries, op.Constant(value_ints=[points, 2]), axis=0)
    weight_shape = op.Concat(batch_heads, one, num_queries, op.Constant(value_ints=[points]), axis=0)

    total = None
    for level in range(levels):
        index = op.Constant(value_int=level)
        height_width = op.Gather(spatial_shapes, index, axis=0)  # (2,)
        start = op.Gather(level_start_index, op.Constant(value_ints=[level]), axis=0)  # (1,)
        end = op.Add(start, op.ReduceProd(height_width, keepdims=1))
        level_value = op.Slice(value, start, end, one)  # (N, h*w, M, D)
        level_value = op.Transpose(level_value, perm=[0, 2, 3, 1])  # (N, M, D, h*w)
        level_value = op.Reshape(
            level_value, op.Concat(batch_heads, op.Constant(value_ints=[head_dim]), height_width, axis=0)
        )  # (N*M, D, h, w)
        grid = op.Reshape(op.Gather(grids, index, axis=3), grid_shape)  # (N*M, Lq, P, 2)
        sampled = op.GridSample(level_value, grid, align_corners=0, mode="bilinear", padding_mode="zeros")
        weight = op.Reshape(op.Gather(weights, index, axis=3), weight_shape)  # (N*M, 1, Lq, P)
        summed = op.ReduceSum(op.Mul(sampled, weight), op.Constant(value_ints=[3]), keepdims=0)  # (N*M, D, Lq)
        total = summed if total is None else op.Add(total, summed)
    total = op.Reshape(total, op.Concat(batch, op.Constant(value_ints=[heads * head_dim]), num_queries, axis=0))
    return op.Transpose(total, perm=[0, 2, 1])  # (N, Lq, M*D)


def ms_deform_attn_tensorrt(
    value, spatial_shapes, level_start_index, sampling_locations, attention_weights, backend: str = "auto"
):
    """`m2f_hf::ms_deform_attn` as TensorRT's `MultiscaleDeformableAttnPlugin_TRT` node; `backend` is ignored."""
    attended = _plugin_op()(
        value,
        op.Cast(spatial_shapes, to=_INT32),
        op.Cast(level_start_index, to=_INT32),
        sampling_locations,
        attention_weights,
    )  # (N, Lq, M, D)
    return op.Reshape(attended, op.Constant(value_ints=[0, 0, -1]))  # (N, Lq, M*D)


# the `--deform-attn-plugin` choices; None: standard ONNX operators
TRANSLATIONS = {None: ms_deform_attn_grid_sample, "tensorrt": ms_deform_attn_tensorrt}
PLUGINS = tuple(name for name in TRANSLATIONS if name is not None)


def translation_table(deform_attn_plugin: str | None = None) -> dict:
    """`custom_translation_table` for `torch.onnx.export`: the deformable-attention op's translation."""
    import torch

    from .. import ops  # noqa: F401  (registers torch.ops.m2f_hf.ms_deform_attn)

    if deform_attn_plugin not in TRANSLATIONS:
        raise ValueError(f"deform_attn_plugin must be None or one of {PLUGINS}; got {deform_attn_plugin!r}.")
    return {torch.ops.m2f_hf.ms_deform_attn.default: TRANSLATIONS[deform_attn_plugin]}
