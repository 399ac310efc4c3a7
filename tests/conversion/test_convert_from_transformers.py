"""The transformers-native -> m2f_hf converter CLI."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import Mask2FormerForUniversalSegmentation

from m2f_hf import M2FForUniversalSegmentation
from m2f_hf.convert import from_transformers_pretrained
from m2f_hf.testing import tiny_transformers_config

ROOT = Path(__file__).resolve().parents[2]


def _cli():
    spec = importlib.util.spec_from_file_location(
        "convert_from_transformers", ROOT / "conversion/convert_from_transformers.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


@pytest.fixture
def transformers_checkpoint(tmp_path):
    torch.manual_seed(0)
    model = Mask2FormerForUniversalSegmentation(tiny_transformers_config("swin")).eval()
    source = tmp_path / "src"
    model.save_pretrained(source)
    return model, source


def test_cli_converts_and_logits_match(transformers_checkpoint, tmp_path):
    reference, source = transformers_checkpoint
    destination = tmp_path / "dst"
    assert _cli()(["--src", str(source), "--dst", str(destination), "--check"]) == 0
    config = json.loads((destination / "config.json").read_text())
    assert config["model_type"] == "m2f_hf" and config["decoder_layers"] == 3
    ours = M2FForUniversalSegmentation.from_pretrained(destination).eval()
    pixel_values = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        expected, actual = reference(pixel_values), ours(pixel_values)
    assert (expected.masks_queries_logits - actual.masks_queries_logits).abs().max() <= 1e-4
    assert (expected.class_queries_logits - actual.class_queries_logits).abs().max() <= 1e-4


def test_cli_fails_loudly_on_an_unused_key(transformers_checkpoint, tmp_path, capsys):
    _, source = transformers_checkpoint
    weights = load_file(source / "model.safetensors")
    weights["model.pixel_level_module.decoder.extra_head.weight"] = torch.zeros(2)
    save_file(weights, source / "model.safetensors")
    assert _cli()(["--src", str(source), "--dst", str(tmp_path / "dst")]) == 1
    assert "extra_head" in capsys.readouterr().err


def test_missing_key_is_an_error(transformers_checkpoint):
    _, source = transformers_checkpoint
    weights = load_file(source / "model.safetensors")
    del weights["model.transformer_module.decoder.layernorm.weight"]
    save_file(weights, source / "model.safetensors")
    with pytest.raises(KeyError, match="layernorm.weight"):
        from_transformers_pretrained(str(source))


def test_missing_weights_file_is_an_error(tmp_path):
    tiny_transformers_config().save_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError, match="cannot read a transformers Mask2Former checkpoint"):
        from_transformers_pretrained(str(tmp_path))


def test_from_pretrained_converts_a_transformers_native_checkpoint(transformers_checkpoint):
    """Our from_pretrained must not read transformers' weights as ours (every key would be missing and the model
    silently random): it converts them."""
    from m2f_hf import M2FConfig, M2FModel

    reference, source = transformers_checkpoint
    ours = M2FForUniversalSegmentation.from_pretrained(source).eval()
    pixel_values = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected, actual = reference(pixel_values), ours(pixel_values)
    assert (expected.masks_queries_logits - actual.masks_queries_logits).abs().max() <= 1e-4
    assert isinstance(M2FModel.from_pretrained(source), M2FModel)
    config = M2FConfig.from_pretrained(source)
    assert config.model_type == "m2f_hf" and config.decoder_layers == reference.config.decoder_layers - 1
    assert config.id2label == reference.config.id2label


def test_thing_classes_come_from_a_known_label_set():
    from m2f_hf.convert import DATASETS, config_from_transformers

    # the Hub's COCO panoptic checkpoints name their classes as Detectron2 does
    coco = DATASETS["coco_panoptic"]
    config = config_from_transformers(tiny_transformers_config(num_labels=coco.num_labels))
    assert config.thing_ids is None  # class_0, class_1, ...: nothing to tell things from stuff
    source = tiny_transformers_config(num_labels=coco.num_labels)
    source.id2label = dict(coco.id2label)
    assert config_from_transformers(source).thing_ids == list(range(80))
    # ADE20K checkpoints spell some names their own way ("windowpane", "bed "): most names still agree
    ade = DATASETS["ade20k_panoptic"]
    hub_names = {0: "wall", 7: "bed ", 8: "windowpane", 12: "person", 13: "earth"}
    source = tiny_transformers_config(num_labels=ade.num_labels)
    source.id2label = {i: hub_names.get(i, name) for i, name in ade.id2label.items()}
    config = config_from_transformers(source)
    assert config.thing_ids == ade.thing_ids and config.id2label[8] == "windowpane"
    # a label set that is not a known dataset's (different names in the same count) stays unknown
    source.id2label = {i: f"{name} x" if i % 5 == 0 else f"other {i}" for i, name in ade.id2label.items()}
    assert config_from_transformers(source).thing_ids is None
