"""Model cards (metadata, usage) and push_to_hub (exactly which files go up), without network."""

from __future__ import annotations

from unittest import mock

import pytest
from huggingface_hub import ModelCard

from m2f_hf.convert.model_zoo import ZOO, get_zoo_entry
from m2f_hf.hub import files_to_upload, push_to_hub
from m2f_hf.modelcard import card_for_zoo_entry, render_model_card, write_model_card


def test_card_metadata(tmp_path):
    write_model_card(
        tmp_path,
        model_name="me/m2f-r50-ade",
        task="semantic",
        dataset_id="scene_parse_150",
        dataset_name="ADE20K val",
        metrics={"mIoU": 47.1, "mIoU (ms+flip)": 49.0},
        base_model="me/m2f-r50-coco",
        tags=["ade20k"],
    )
    card = ModelCard.load(tmp_path / "README.md")
    data = card.data
    assert data.library_name == "m2f_hf"
    assert data.pipeline_tag == "image-segmentation"
    assert data.license == "apache-2.0"
    assert data.datasets == ["scene_parse_150"]
    assert data.base_model == "me/m2f-r50-coco"
    assert {"image-segmentation", "semantic-segmentation", "ade20k"} <= set(data.tags)
    results = {r.metric_name: (r.metric_type, r.metric_value) for r in data.eval_results}
    assert results == {"mIoU": ("mean_iou", 47.1), "mIoU (ms+flip)": ("miou_ms_flip", 49.0)}
    assert data.eval_results[0].dataset_name == "ADE20K val"
    text = card.text
    assert 'M2FForUniversalSegmentation.from_pretrained("me/m2f-r50-ade")' in text
    assert 'pipeline("image-segmentation"' in text and "convert_to_transformers.py" in text
    assert "post_process_semantic_segmentation" in text


def test_card_rejects_bad_arguments():
    with pytest.raises(ValueError, match="task="):
        render_model_card(model_name="x", task="depth")
    with pytest.raises(ValueError, match="library_name="):
        render_model_card(model_name="x", library_name="timm")
    with pytest.raises(ValueError, match="dataset_id"):
        render_model_card(model_name="x", metrics={"PQ": 1.0})


@pytest.mark.parametrize("name", sorted(ZOO))
def test_zoo_cards_parse_and_carry_the_license(name):
    entry = ZOO[name]
    card = ModelCard(card_for_zoo_entry(entry))
    assert card.data.license == "cc-by-nc-4.0"
    assert [r.metric_value for r in card.data.eval_results] == list(entry.metrics.values())
    assert entry.url in card.text and "non-commercial" in card.text


def test_zoo_card_names_distinguish_in21k():
    a = ModelCard(
        card_for_zoo_entry(get_zoo_entry("coco/panoptic-segmentation/swin/maskformer2_swin_base_384_bs16_50ep"))
    )
    b = ModelCard(
        card_for_zoo_entry(get_zoo_entry("coco/panoptic-segmentation/swin/maskformer2_swin_base_IN21k_384_bs16_50ep"))
    )
    assert a.data.model_name != b.data.model_name


def _model_dir(tmp_path, weights=("model.safetensors",)):
    for name in ("config.json", "README.md", "preprocessor_config.json", *weights):
        (tmp_path / name).write_text("{}")
    for junk in ("optimizer.pt", "model_final.pkl", "training_args.bin", "events.out.tfevents"):
        (tmp_path / junk).write_text("x")
    (tmp_path / "checkpoint-100").mkdir()
    return tmp_path


def test_push_to_hub_uploads_exactly_the_model_files(tmp_path):
    model_dir = _model_dir(tmp_path)
    api = mock.MagicMock()
    api.upload_folder.return_value = "commit-info"
    assert push_to_hub(model_dir, "me/m2f", private=True, api=api) == "commit-info"
    api.create_repo.assert_called_once_with(repo_id="me/m2f", repo_type="model", private=True, exist_ok=True)
    api.upload_folder.assert_called_once()
    kwargs = api.upload_folder.call_args.kwargs
    assert kwargs["repo_id"] == "me/m2f" and kwargs["repo_type"] == "model"
    assert kwargs["folder_path"] == str(model_dir)
    assert kwargs["allow_patterns"] == ["README.md", "config.json", "model.safetensors", "preprocessor_config.json"]


def test_push_to_hub_sharded_weights(tmp_path):
    shards = ("model.safetensors.index.json", "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors")
    files = files_to_upload(_model_dir(tmp_path, weights=shards))
    assert files == sorted(["README.md", "config.json", "preprocessor_config.json", *shards])


def test_push_to_hub_refuses_incomplete_folder(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors").write_text("{}")
    api = mock.MagicMock()
    with pytest.raises(FileNotFoundError, match="README.md"):
        push_to_hub(tmp_path, "me/m2f", api=api)
    api.create_repo.assert_not_called()
    (tmp_path / "README.md").write_text("card")
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="safetensors"):
        files_to_upload(tmp_path)
