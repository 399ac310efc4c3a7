"""ONNX export: parity with the PyTorch model at sizes and batches other than the export example's, the graph's
interface and operator domains, the TensorRT plugin variant, and bad options."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch

from m2f_hf.export import ExportError, export_onnx
from m2f_hf.export.onnx_export import OUTPUT_NAMES, read_metadata
from m2f_hf.export.runtime import make_session
from m2f_hf.export.translations import TENSORRT_DOMAIN, TENSORRT_PLUGIN
from m2f_hf.export.validate import (
    FLIP_TOLERANCE,
    MAX_FLIPPED_FRACTION,
    PARITY_TOLERANCE,
    STANDARD_DOMAINS,
    check_interface,
    compare_with_pytorch,
    node_domains,
    plugin_input_signatures,
    plugin_nodes,
)

# the export example is batch 2 at 224 x 288 (7 x 9 strides); none of these is that size, all at batch 2 or 1
PARITY_SHAPES = [(2, 3, 128, 192), (2, 3, 224, 96), (1, 3, 64, 64)]


@pytest.mark.parametrize("backbone", ["resnet", "swin"])
def test_onnxruntime_matches_pytorch_at_other_sizes(tiny_exports, backbone):
    model, folder = tiny_exports(backbone)
    session = make_session(folder / "model.onnx", num_threads=torch.get_num_threads())
    comparisons = compare_with_pytorch(session, model, PARITY_SHAPES)
    for comparison in comparisons:
        assert comparison.class_logits <= PARITY_TOLERANCE, comparison
        assert comparison.mask_logits <= PARITY_TOLERANCE, comparison
        assert (
            comparison.queries_over_tolerance == 0
            and comparison.num_queries == comparison.shape[0] * model.config.num_queries
        )
    # and the outputs have the PyTorch model's shapes (queries, classes + 1, 1/4 resolution)
    class_logits, mask_logits = session.run(None, {"pixel_values": torch.zeros(2, 3, 96, 160).numpy()})
    assert class_logits.shape == (2, model.config.num_queries, model.config.num_labels + 1)
    assert mask_logits.shape == (2, model.config.num_queries, 24, 40)


def test_graph_interface_and_standard_domains(tiny_exports):
    _, folder = tiny_exports("resnet")
    proto = onnx.load(str(folder / "model.onnx"))
    check_interface(proto)  # one pixel_values input with symbolic batch/height/width, exactly the two outputs
    assert [o.name for o in proto.graph.output] == list(OUTPUT_NAMES)
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert dims[1].dim_value == 3 and all(d.dim_param for d in (dims[0], dims[2], dims[3]))
    domains = node_domains(proto)
    assert set(domains) <= STANDARD_DOMAINS, domains
    assert "GridSample" in domains[""]  # the deformable attention's standard translation
    assert not proto.functions
    onnx.checker.check_model(proto)


def test_folder_is_a_deployable_model(tiny_exports):
    model, folder = tiny_exports("resnet")
    config = json.loads((folder / "config.json").read_text())
    assert {int(k): v for k, v in config["id2label"].items()} == model.config.id2label
    assert (folder / "preprocessor_config.json").is_file()
    metadata = read_metadata(folder / "model.onnx")
    assert metadata["size_divisor"] == "32" and metadata["deform_attn_plugin"] == "none"
    assert metadata["dtype"] == "float32" and metadata["opset"] == "18"


def test_tensorrt_variant_has_the_plugin_node_with_its_inputs_in_order(tensorrt_export):
    model, folder = tensorrt_export
    proto = onnx.load(str(folder / "model.onnx"))
    nodes = plugin_nodes(proto)
    assert len(nodes) == model.config.encoder_layers  # one per deformable encoder layer
    assert all(node.domain == TENSORRT_DOMAIN and node.op_type == TENSORRT_PLUGIN for node in nodes)
    # value (N, S, M, D) float, spatial_shapes (L, 2) int32, level_start_index (L,) int32,
    # sampling_locations (N, Lq, M, L, P, 2) float, attention_weights (N, Lq, M, L, P) float
    float32, int32 = onnx.TensorProto.FLOAT, onnx.TensorProto.INT32
    expected = [(4, float32), (2, int32), (1, int32), (6, float32), (5, float32)]
    assert plugin_input_signatures(proto) == [expected] * len(nodes)
    assert "GridSample" not in node_domains(proto)[""]
    assert set(node_domains(proto)) == {"", TENSORRT_DOMAIN}
    check_interface(proto)


def test_runtime_refuses_a_tensorrt_graph(tensorrt_export):
    from m2f_hf.export import M2FOnnxModel, OnnxModelError

    with pytest.raises(OnnxModelError, match="tensorrt.*cannot run"):
        M2FOnnxModel.from_pretrained(tensorrt_export[1])


@pytest.mark.parametrize(
    "options, message",
    [
        ({"opset": 17}, r"opset 17 is too old.*opset 18 or newer"),
        ({"opset": "18"}, r"opset must be an integer, got '18'"),
        ({"opset": 99}, r"opset 99 is newer than this onnx package knows \(up to \d+\)"),
        (
            {"deform_attn_plugin": "openvino"},
            r"deform_attn_plugin must be None or one of \('tensorrt',\); got 'openvino'",
        ),
        ({"dtype": "float8"}, r"dtype must be one of float32, int8; got 'float8'"),
    ],
)
def test_bad_options_name_the_value(tmp_path, options, message):
    with pytest.raises(ExportError, match=message):
        export_onnx("unused", tmp_path, **options)


def test_a_path_that_is_not_a_model(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ExportError, match=r"without config\.json"):
        export_onnx(str(tmp_path), tmp_path / "out")
    with pytest.raises(ExportError, match=r"notes\.txt' is a file"):
        export_onnx(str(tmp_path / "notes.txt"), tmp_path / "out")
    with pytest.raises(ExportError, match=r"no such file or directory"):
        export_onnx(str(tmp_path / "missing" / "x"), tmp_path / "out")
    with pytest.raises(ExportError, match=r"got int"):
        export_onnx(3, tmp_path / "out")


def test_an_exported_folder_is_not_exported_again(tiny_exports, tmp_path):
    _, folder = tiny_exports("resnet")
    with pytest.raises(ExportError, match="exported ONNX folder already"):
        export_onnx(str(folder), tmp_path)


@pytest.mark.cuda
def test_tensorrt_engine_matches_pytorch(tensorrt_export):
    """Needs TensorRT (pip install tensorrt) and a GPU: builds an engine from the plugin graph and compares."""
    tensorrt = pytest.importorskip("tensorrt")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    from m2f_hf.export.tensorrt_engine import run_tensorrt

    model, folder = tensorrt_export
    pixel_values = torch.randn(2, 3, 128, 192)
    class_logits, mask_logits = run_tensorrt(tensorrt, folder / "model.onnx", pixel_values)
    with torch.inference_mode():
        reference = model(pixel_values=pixel_values)
    assert (class_logits - reference.class_queries_logits).abs().max() <= 1e-3
    assert (mask_logits - reference.masks_queries_logits).abs().max() <= 1e-3


@pytest.mark.slow  # full-size models: each export traces for minutes on 2 cores, and runs at 3 sizes
@pytest.mark.parametrize("backbone", ["resnet50", "swin_tiny"])
def test_full_size_parity(tmp_path, backbone):
    from transformers import ResNetConfig, SwinConfig

    from m2f_hf import M2FConfig, M2FForUniversalSegmentation

    stages = ["stage1", "stage2", "stage3", "stage4"]
    if backbone == "resnet50":
        backbone_config = ResNetConfig(depths=[3, 4, 6, 3], layer_type="bottleneck", out_features=stages)
    else:
        backbone_config = SwinConfig(
            embed_dim=96, depths=[2, 2, 6, 2], num_heads=[3, 6, 12, 24], window_size=7, out_features=stages
        )
    torch.manual_seed(0)
    model = M2FForUniversalSegmentation(M2FConfig(backbone_config=backbone_config, num_labels=133)).eval()
    export_onnx(model, tmp_path, validate=False)
    session = make_session(tmp_path / "model.onnx")
    generator = torch.Generator().manual_seed(0)
    for shape in [(2, 3, 256, 384), (2, 3, 320, 224)]:
        pixel_values = torch.randn(*shape, generator=generator)
        with torch.inference_mode():
            reference = model(pixel_values=pixel_values)
        class_logits, mask_logits = session.run(None, {"pixel_values": pixel_values.numpy()})
        # per (image, query): see validate_export (a query whose masked attention flips at the 0.5 threshold moves
        # by ~1e-4..1e-3; with random weights one or two per batch do, between our own eager paths as well)
        per_query = np.maximum(
            np.abs(class_logits - reference.class_queries_logits.numpy()).max(-1),
            np.abs(mask_logits - reference.masks_queries_logits.numpy()).reshape(*mask_logits.shape[:2], -1).max(-1),
        )  # (batch, queries)
        assert (per_query > PARITY_TOLERANCE).mean() <= MAX_FLIPPED_FRACTION, (shape, np.argwhere(per_query > 1e-4))
        assert per_query.max() <= FLIP_TOLERANCE, (shape, per_query.max())


@pytest.mark.slow  # one more whole-model trace (about 30 s on 2 cores)
def test_a_transformers_native_checkpoint_exports_and_matches_transformers(tmp_path):
    from transformers import Mask2FormerForUniversalSegmentation, Mask2FormerImageProcessor

    from m2f_hf.export import M2FOnnxModel
    from m2f_hf.testing import tiny_transformers_config

    torch.manual_seed(0)
    reference = Mask2FormerForUniversalSegmentation(tiny_transformers_config()).eval()
    reference.save_pretrained(tmp_path / "native")
    Mask2FormerImageProcessor().save_pretrained(tmp_path / "native")
    export_onnx(str(tmp_path / "native"), tmp_path / "onnx")
    exported = M2FOnnxModel.from_pretrained(tmp_path / "onnx")
    pixel_values = torch.randn(2, 3, 96, 128)
    with torch.inference_mode():
        expected = reference(pixel_values=pixel_values)
    outputs = exported(pixel_values=pixel_values)
    assert (outputs.class_queries_logits - expected.class_queries_logits).abs().max() <= PARITY_TOLERANCE
    assert (outputs.masks_queries_logits - expected.masks_queries_logits).abs().max() <= PARITY_TOLERANCE
