"""Checks of an exported graph: its interface, its operator domains, and onnxruntime against the PyTorch model.

`validate_export` runs after every export (`export_onnx(..., validate=True)`); the tests call the pieces directly.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .onnx_export import INPUT_NAME, OUTPUT_NAMES
from .translations import TENSORRT_DOMAIN, TENSORRT_PLUGIN

# the operator sets of the ONNX standard ("" and "ai.onnx" are the same default domain)
STANDARD_DOMAINS = frozenset({"", "ai.onnx", "ai.onnx.ml"})
# onnxruntime's own operators, which its dynamic int8 quantiser may write
ONNXRUNTIME_DOMAIN = "com.microsoft"
PARITY_TOLERANCE = 1e-4
# queries whose masked attention flipped at the 0.5 threshold (see validate_export): how many, and by how much
MAX_FLIPPED_FRACTION = 0.02
FLIP_TOLERANCE = 1e-2
# the plugin's inputs in its order, as (rank, element type) of each (onnx.TensorProto: FLOAT = 1, INT32 = 6)
TENSORRT_PLUGIN_INPUTS = (
    ("value", 4, 1),
    ("spatial_shapes", 2, 6),
    ("level_start_index", 1, 6),
    ("sampling_locations", 6, 1),
    ("attention_weights", 5, 1),
)


class ExportValidationError(AssertionError):
    """An exported graph that does not have the promised interface or does not match the PyTorch model."""


def _load(path):
    import onnx

    return onnx.load(str(path))


def all_nodes(proto) -> list:
    """Every node of the graph, of its sub-graphs (If, Loop, Scan bodies) and of its local functions."""
    nodes = []
    pending = [list(proto.graph.node)] + [list(function.node) for function in proto.functions]
    while pending:
        for node in pending.pop():
            nodes.append(node)
            for attribute in node.attribute:
                if attribute.HasField("g"):
                    pending.append(list(attribute.g.node))
                pending.extend(list(graph.node) for graph in attribute.graphs)
    return nodes


def node_domains(path_or_proto) -> dict[str, set[str]]:
    """{domain: operator types} of every node (domain "" is the ONNX default)."""
    proto = _load(path_or_proto) if isinstance(path_or_proto, (str, Path)) else path_or_proto
    domains: dict[str, set[str]] = {}
    for node in all_nodes(proto):
        domains.setdefault(node.domain, set()).add(node.op_type)
    return domains


def _dims(value_info) -> list:
    return [d.dim_value if d.HasField("dim_value") else d.dim_param for d in value_info.type.tensor_type.shape.dim]


def check_interface(proto) -> None:
    """One input `pixel_values` (batch, C, height, width) with symbolic batch/height/width; exactly the two outputs."""
    inputs = [(i.name, _dims(i)) for i in proto.graph.input]
    if len(inputs) != 1 or inputs[0][0] != INPUT_NAME or len(inputs[0][1]) != 4:
        raise ExportValidationError(f"expected one input {INPUT_NAME!r} of rank 4, got {inputs}.")
    batch, _, height, width = inputs[0][1]
    static = [name for name, dim in (("batch", batch), ("height", height), ("width", width)) if isinstance(dim, int)]
    if static:
        raise ExportValidationError(f"input {INPUT_NAME} has static {', '.join(static)}: {inputs[0][1]}.")
    outputs = tuple(o.name for o in proto.graph.output)
    if outputs != OUTPUT_NAMES:
        raise ExportValidationError(f"expected exactly the outputs {OUTPUT_NAMES}, got {outputs}.")


def check_domains(proto, *, deform_attn_plugin: str | None, dtype: str = "float32") -> None:
    """Standard ONNX domains only (plus onnxruntime's for int8), or standard plus the TensorRT plugin node."""
    domains = node_domains(proto)
    allowed = set(STANDARD_DOMAINS)
    if dtype == "int8":
        allowed.add(ONNXRUNTIME_DOMAIN)
    if deform_attn_plugin == "tensorrt":
        plugin_types = domains.get(TENSORRT_DOMAIN, set())
        if plugin_types != {TENSORRT_PLUGIN}:
            raise ExportValidationError(
                f"expected {TENSORRT_PLUGIN} nodes in domain {TENSORRT_DOMAIN!r}, got {domains}."
            )
        allowed.add(TENSORRT_DOMAIN)
    other = {domain: sorted(types) for domain, types in domains.items() if domain not in allowed}
    if other:
        raise ExportValidationError(f"nodes outside the allowed operator domains {sorted(allowed)}: {other}.")


def plugin_nodes(proto) -> list:
    """The `MultiscaleDeformableAttnPlugin_TRT` nodes of a graph."""
    return [n for n in all_nodes(proto) if n.domain == TENSORRT_DOMAIN and n.op_type == TENSORRT_PLUGIN]


def plugin_input_signatures(proto) -> list[list[tuple[int, int]]]:
    """Per plugin node, the (rank, element type) of each input, from the graph's shape information."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(proto)
    known = {v.name: v for v in list(inferred.graph.value_info) + list(inferred.graph.input)}
    signatures = []
    for node in plugin_nodes(inferred):
        signature = []
        for name in node.input:
            info = known.get(name)
            if info is None:
                signature.append((-1, 0))
                continue
            tensor = info.type.tensor_type
            signature.append((len(tensor.shape.dim) if tensor.HasField("shape") else -1, tensor.elem_type))
        signatures.append(signature)
    return signatures


def check_plugin_inputs(proto) -> None:
    """Each plugin node takes value, spatial_shapes, level_start_index, sampling_locations, attention_weights."""
    expected = [(rank, elem) for _, rank, elem in TENSORRT_PLUGIN_INPUTS]
    for signature in plugin_input_signatures(proto):
        if signature != expected:
            names = [name for name, _, _ in TENSORRT_PLUGIN_INPUTS]
            raise ExportValidationError(
                f"{TENSORRT_PLUGIN} inputs (rank, onnx element type) {signature} do not match {list(zip(names, expected))}."
            )


@dataclass
class Comparison:
    """Largest absolute differences between onnxruntime and PyTorch on one input shape, and how many
    (image, query) pairs differ by more than `PARITY_TOLERANCE` in either logit."""

    shape: tuple[int, ...]
    class_logits: float
    mask_logits: float
    queries_over_tolerance: int = 0
    num_queries: int = 0

    @property
    def worst(self) -> float:
        return max(self.class_logits, self.mask_logits)


def compare_with_pytorch(session_or_path, model, shapes, *, seed: int = 0) -> list[Comparison]:
    """Run onnxruntime (CPU, unless a session is given) and the PyTorch model on random inputs of each shape."""
    from .runtime import make_session

    session = make_session(session_or_path) if isinstance(session_or_path, (str, Path)) else session_or_path
    generator = torch.Generator().manual_seed(seed)
    results = []
    for shape in shapes:
        pixel_values = torch.randn(*shape, generator=generator)
        with torch.inference_mode():
            reference = model(pixel_values=pixel_values, output_auxiliary_logits=False)
        class_logits, mask_logits = session.run(list(OUTPUT_NAMES), {INPUT_NAME: pixel_values.numpy()})
        class_error = np.abs(class_logits - reference.class_queries_logits.numpy())  # (batch, queries, classes)
        mask_error = np.abs(mask_logits - reference.masks_queries_logits.numpy())
        per_query = np.maximum(class_error.max(-1), mask_error.reshape(*mask_error.shape[:2], -1).max(-1))
        results.append(
            Comparison(
                shape=tuple(shape),
                class_logits=float(class_error.max()),
                mask_logits=float(mask_error.max()),
                queries_over_tolerance=int((per_query > PARITY_TOLERANCE).sum()),
                num_queries=int(per_query.size),
            )
        )
    return results


def validation_shape(model) -> tuple[int, int, int, int]:
    """An input shape unlike the export example's (batch 2, 7 x 9 strides): batch 1, 5 x 4 strides."""
    stride = max(model.model.backbone.strides)
    return (1, model.config.num_channels, 5 * stride, 4 * stride)


def validate_export(path, model, *, deform_attn_plugin: str | None = None, dtype: str = "float32") -> None:
    """The checks every export runs: interface, domains (plugin inputs for TensorRT), parity for float32 graphs.

    Raises:
        ExportValidationError: with what differs.
    """
    proto = _load(path)
    check_interface(proto)
    check_domains(proto, deform_attn_plugin=deform_attn_plugin, dtype=dtype)
    if deform_attn_plugin == "tensorrt":
        check_plugin_inputs(proto)
        return  # onnxruntime cannot run TensorRT's plugin
    model.eval()
    (comparison,) = compare_with_pytorch(path, model, [validation_shape(model)])
    # The masked attention keeps pixels whose previous mask probability is >= 0.5: a logit within float rounding of
    # 0 may flip one attention-mask pixel and move that query by ~1e-4..1e-3 (our own eager CPU paths differ so
    # too). The random validation input makes such logits likely, so a few queries may exceed the tolerance;
    # anything broken in the graph moves every query, or by far more.
    flipped = comparison.queries_over_tolerance / max(comparison.num_queries, 1)
    if dtype == "float32" and not (comparison.worst <= FLIP_TOLERANCE and flipped <= MAX_FLIPPED_FRACTION):
        raise ExportValidationError(
            f"onnxruntime differs from the PyTorch model by up to {comparison.worst:.3g} (class logits "
            f"{comparison.class_logits:.3g}, mask logits {comparison.mask_logits:.3g}; "
            f"{comparison.queries_over_tolerance} of {comparison.num_queries} queries beyond {PARITY_TOLERANCE}) at "
            f"input shape {comparison.shape}; expected {PARITY_TOLERANCE} on at least "
            f"{1 - MAX_FLIPPED_FRACTION:.0%} of the queries and {FLIP_TOLERANCE} on all."
        )
    if not np.isfinite(comparison.worst):
        raise ExportValidationError(f"onnxruntime returned non-finite logits at input shape {comparison.shape}.")
