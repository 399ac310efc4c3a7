"""The onnxruntime model class: our output type, the processor's post-processing, the pipeline, `m2f-export` and
`m2f-segment --model FOLDER` end to end on the bundled model, int8 quantisation, and bad inputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from PIL import Image

from m2f_hf import M2FForUniversalSegmentation, M2FForUniversalSegmentationOutput, M2FImageProcessor
from m2f_hf.export import M2FOnnxModel, OnnxModelError, quantize_onnx_int8
from m2f_hf.export.validate import node_domains
from m2f_hf.resources import default_model_path, example_images


@pytest.fixture(scope="module")
def pytorch_default():
    path = default_model_path()
    return M2FForUniversalSegmentation.from_pretrained(path).eval(), M2FImageProcessor.from_pretrained(path)


@pytest.fixture(scope="module")
def onnx_default(default_export):
    status, folder, _ = default_export
    assert status == 0
    return M2FOnnxModel.from_pretrained(folder, num_threads=torch.get_num_threads())


def test_m2f_export_main_writes_the_folder(default_export, pytorch_default):
    status, folder, _ = default_export
    assert status == 0
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.onnx", "preprocessor_config.json"]
    config = json.loads((folder / "config.json").read_text())
    assert config["id2label"] == {str(k): v for k, v in pytorch_default[0].config.id2label.items()}
    assert M2FImageProcessor.from_pretrained(folder).to_dict() == pytorch_default[1].to_dict()


def _segments(model, processor, images, task):
    inputs = processor(images=images, return_tensors="pt")
    with torch.inference_mode():
        outputs = model(**inputs)
    sizes = [image.size[::-1] for image in images]
    if task == "semantic":
        return outputs, processor.post_process_semantic_segmentation(outputs, target_sizes=sizes)
    post = getattr(processor, f"post_process_{task}_segmentation")
    return outputs, post(outputs, target_sizes=sizes)


@pytest.mark.parametrize("task", ["panoptic", "instance", "semantic"])
def test_same_segments_as_pytorch_through_the_processor(onnx_default, pytorch_default, task):
    model, processor = pytorch_default
    images = [Image.open(path).convert("RGB") for path in example_images()]
    theirs, expected = _segments(model, processor, images, task)
    ours, results = _segments(onnx_default, processor, images, task)  # all examples in one padded batch
    assert isinstance(ours, M2FForUniversalSegmentationOutput)
    assert (ours.masks_queries_logits - theirs.masks_queries_logits).abs().max() <= 1e-4
    for result, reference in zip(results, expected):
        if task == "semantic":
            assert torch.equal(result, reference)
            continue
        assert torch.equal(result["segmentation"], reference["segmentation"])
        assert [s["label_id"] for s in result["segments_info"]] == [s["label_id"] for s in reference["segments_info"]]
        assert np.allclose(
            [s["score"] for s in result["segments_info"]], [s["score"] for s in reference["segments_info"]], atol=1e-5
        )
        assert len(result["segments_info"]) >= 3  # the examples hold several shapes


def test_pipeline_with_the_onnx_model(onnx_default, pytorch_default, caplog):
    from transformers import pipeline

    model, processor = pytorch_default
    image = str(example_images()[1])
    expected = pipeline("image-segmentation", model=model, image_processor=processor)(image)
    with caplog.at_level("ERROR"):
        segmenter = pipeline("image-segmentation", model=onnx_default, image_processor=processor)
    assert "not supported" not in caplog.text
    results = segmenter(image)
    assert [r["label"] for r in results] == [r["label"] for r in expected]
    for result, reference in zip(results, expected):
        assert np.array_equal(np.array(result["mask"]), np.array(reference["mask"]))


def test_the_readme_m2f_segment_command_on_the_exported_folder(default_export, tmp_path, monkeypatch):
    from m2f_hf.cli import main

    _, folder, commands = default_export
    assert commands[1][:2] == ["m2f-segment", "--example"] and commands[1][3] == str(folder)
    monkeypatch.chdir(Path(__file__).resolve().parents[2])  # as the README runs it, from the repository root
    assert main(commands[1][1:]) == 0
    assert main(["--example", "--output", str(tmp_path / "torch")]) == 0
    ours = json.loads((Path(commands[1][-1]) / "shapes_1.json").read_text())
    reference = json.loads((tmp_path / "torch" / "shapes_1.json").read_text())
    assert ours["model"] == str(folder)
    assert ours["segments"] == reference["segments"] and len(ours["segments"]) >= 3
    assert (Path(commands[1][-1]) / "shapes_1.png").is_file()


def test_loading_an_exported_folder(default_export):
    from m2f_hf.inference.loading import load_segmentation_model

    _, folder, _ = default_export
    loaded = load_segmentation_model(str(folder), device="cpu")
    assert isinstance(loaded.model, M2FOnnxModel)
    assert loaded.device == torch.device("cpu") and loaded.thing_ids == [0, 1, 2]
    assert loaded.id2label[3] == "grass"


def test_bad_inputs_name_the_value_and_what_was_expected(onnx_default):
    with pytest.raises(OnnxModelError, match=r"height x width 100x128.*multiples of 32"):
        onnx_default(pixel_values=torch.zeros(1, 3, 100, 128))
    with pytest.raises(OnnxModelError, match=r"4 channels \(shape \(1, 4, 64, 64\)\).*expects 3"):
        onnx_default(pixel_values=torch.zeros(1, 4, 64, 64))
    with pytest.raises(OnnxModelError, match=r"\(batch, channels, height, width\), got shape \(3, 64, 64\)"):
        onnx_default(pixel_values=torch.zeros(3, 64, 64))
    with pytest.raises(OnnxModelError, match="floating point.*torch.uint8"):
        onnx_default(pixel_values=torch.zeros(1, 3, 64, 64, dtype=torch.uint8))
    with pytest.raises(OnnxModelError, match="class and mask logits only; got output_hidden_states"):
        onnx_default(pixel_values=torch.zeros(1, 3, 64, 64), output_hidden_states=True)
    with pytest.raises(OnnxModelError, match="providers=.*CUDAExecutionProvider"):
        onnx_default.to("cuda")


def test_not_an_exported_folder(tmp_path):
    with pytest.raises(OnnxModelError, match=r"is not an exported ONNX model: expected a folder with model\.onnx"):
        M2FOnnxModel.from_pretrained(tmp_path)
    with pytest.raises(OnnxModelError, match="not available here"):
        from m2f_hf.export.runtime import make_session

        make_session(tmp_path / "model.onnx", providers=["NoSuchExecutionProvider"])


def test_int8_quantisation_runs_and_stays_close(default_export, pytorch_default, tmp_path):
    import shutil

    _, folder, _ = default_export
    for name in ("config.json", "preprocessor_config.json"):
        shutil.copy(folder / name, tmp_path / name)
    quantize_onnx_int8(folder / "model.onnx", tmp_path / "model.onnx")
    types = node_domains(tmp_path / "model.onnx")[""]
    assert {"DynamicQuantizeLinear", "MatMulInteger"} <= types
    proto = onnx.load(str(tmp_path / "model.onnx"))
    assert sum(t.data_type == onnx.TensorProto.INT8 for t in proto.graph.initializer) >= 10  # int8 weights
    onnx.checker.check_model(proto)
    quantised = M2FOnnxModel.from_pretrained(tmp_path, num_threads=torch.get_num_threads())
    model, processor = pytorch_default
    images = [Image.open(path).convert("RGB") for path in example_images()]
    _, expected = _segments(model, processor, images, "semantic")
    _, results = _segments(quantised, processor, images, "semantic")
    for result, reference in zip(results, expected):
        assert (result == reference).float().mean() > 0.97  # the class of nearly every pixel is kept


def test_from_pretrained_and_the_pipeline_by_path_point_to_the_onnx_class(default_export):
    from transformers import pipeline

    _, folder, _ = default_export
    with pytest.raises(OSError, match="exported ONNX model.*M2FOnnxModel.from_pretrained"):
        M2FForUniversalSegmentation.from_pretrained(folder)
    with pytest.raises(Exception, match="exported ONNX model.*M2FOnnxModel.from_pretrained"):
        pipeline("image-segmentation", model=str(folder))


@pytest.mark.parametrize(
    "options",
    [{"task": "panoptic", "sliding_window": True, "window_size": 64}, {"task": "semantic", "tta": True}],
    ids=["sliding_window", "tta"],
)
def test_sliding_windows_and_tta_with_the_exported_folder(default_export, options):
    from m2f_hf.inference.loading import load_segmentation_model
    from m2f_hf.inference.segment import SegmentOptions, segment_image

    _, folder, _ = default_export
    image = Image.open(example_images()[2]).convert("RGB")
    options = SegmentOptions(**options)
    ours = segment_image(load_segmentation_model(str(folder)), image, options)
    reference = segment_image(load_segmentation_model(None), image, options)
    if options.task == "semantic":
        assert torch.equal(ours, reference) and len(ours.unique()) >= 3
    else:
        assert torch.equal(ours["segmentation"], reference["segmentation"]) and len(ours["segments_info"]) >= 3
