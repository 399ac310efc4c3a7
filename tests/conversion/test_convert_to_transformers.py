"""m2f_hf -> transformers-native export: exact round trip, logits, processor and card."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard
from transformers import Mask2FormerForUniversalSegmentation

from m2f_hf import M2FForUniversalSegmentation
from m2f_hf.convert import state_dict_from_transformers
from m2f_hf.convert.detectron2 import preprocessor_config_for, write_preprocessor_config
from m2f_hf.convert.model_zoo import get_zoo_entry
from m2f_hf.modelcard import write_model_card

from original_layout import tiny_config  # isort: skip

ROOT = Path(__file__).resolve().parents[2]


def _module():
    spec = importlib.util.spec_from_file_location(
        "convert_to_transformers", ROOT / "conversion/convert_to_transformers.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(params=["resnet", "swin"])
def ours_dir(request, tmp_path):
    torch.manual_seed(0)
    model = M2FForUniversalSegmentation(tiny_config(request.param)).eval()
    src = tmp_path / "ours"
    model.save_pretrained(src)
    write_preprocessor_config(
        preprocessor_config_for(get_zoo_entry("cityscapes/semantic-segmentation/maskformer2_R50_bs16_90k")), src
    )
    write_model_card(
        src,
        model_name="tiny-m2f",
        task="semantic",
        dataset_id="cityscapes",
        metrics={"mIoU": 12.5},
        license="apache-2.0",
        tags=["test"],
    )
    return src


def test_export_round_trip_and_logits(ours_dir, tmp_path):
    dst = tmp_path / "hf"
    assert _module().main(["--src", str(ours_dir), "--dst", str(dst)]) == 0
    ours = M2FForUniversalSegmentation.from_pretrained(ours_dir).eval()
    exported = Mask2FormerForUniversalSegmentation.from_pretrained(dst).eval()

    # ours -> transformers -> ours is exact
    back = state_dict_from_transformers(exported.state_dict())
    reference = ours.state_dict()
    assert set(back) == set(reference)
    for key, value in reference.items():
        assert torch.equal(back[key], value), key

    # the transformers model loaded from the export gives our logits
    pixel_values = torch.randn(2, 3, 64, 96, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        a, b = ours(pixel_values), exported(pixel_values=pixel_values)
    torch.testing.assert_close(b.class_queries_logits, a.class_queries_logits, rtol=0, atol=1e-4)
    torch.testing.assert_close(b.masks_queries_logits, a.masks_queries_logits, rtol=0, atol=1e-4)
    assert exported.config.id2label == ours.config.id2label


def test_export_writes_transformers_processor_and_card(ours_dir, tmp_path):
    from transformers import AutoImageProcessor

    dst = tmp_path / "hf"
    assert _module().main(["--src", str(ours_dir), "--dst", str(dst), "--check"]) == 0
    processor = AutoImageProcessor.from_pretrained(dst)
    assert type(processor).__name__.startswith("Mask2FormerImageProcessor")
    assert processor.size == {"shortest_edge": 1024, "longest_edge": 2048}
    assert processor.size_divisor == 32
    settings = json.loads((ours_dir / "preprocessor_config.json").read_text())
    assert list(processor.image_mean) == settings["image_mean"]
    card = ModelCard.load(dst / "README.md")
    assert card.data.library_name == "transformers"
    assert card.data.license == "apache-2.0"
    assert card.data.eval_results[0].metric_value == 12.5
    assert "Mask2FormerForUniversalSegmentation.from_pretrained" in card.text


def test_timm_backbone_cannot_be_exported(tmp_path, capsys):
    pytest.importorskip("timm")
    config = tiny_config("resnet")
    config.backbone_config = None
    config.timm_backbone = "resnet18"
    model = M2FForUniversalSegmentation(config)
    model.save_pretrained(tmp_path / "ours")
    assert _module().main(["--src", str(tmp_path / "ours"), "--dst", str(tmp_path / "hf")]) == 1
    assert "timm_backbone" in capsys.readouterr().err
