"""The Spaces layout (demo/app.py, demo/requirements.txt, demo/README.md, demo/prepare_space.py) and the model
card's link to a Space."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import pytest
from demo_helpers import GRADIO_MISSING, GRADIO_REASON
from huggingface_hub import ModelCard, metadata_load

from m2f_hf.demo.space import MODEL_VARIABLE, space_default_model
from m2f_hf.modelcard import render_model_card

DEMO_DIR = Path(__file__).resolve().parents[2] / "demo"


@pytest.fixture
def prepare_space():
    sys.path.insert(0, str(DEMO_DIR))
    try:
        yield runpy.run_path(str(DEMO_DIR / "prepare_space.py"), run_name="prepare_space")["prepare_space"]
    finally:
        sys.path.remove(str(DEMO_DIR))


def test_space_card_is_a_gradio_space_running_app_py_with_the_demo_extra():
    tomllib = pytest.importorskip("tomllib", reason="tomllib is Python 3.11+")

    metadata = metadata_load(DEMO_DIR / "README.md")
    assert metadata["sdk"] == "gradio" and metadata["app_file"] == "app.py"
    with open(DEMO_DIR.parent / "pyproject.toml", "rb") as handle:
        extras = tomllib.load(handle)["project"]["optional-dependencies"]
    gradio_requirement = next(r for r in extras["demo"] if r.startswith("gradio"))
    major = int(gradio_requirement.split(">=")[1].split(",")[0].split(".")[0])
    assert int(str(metadata["sdk_version"]).split(".")[0]) == major  # the Space's Gradio satisfies the extra
    assert "m2f_hf[demo]" in (DEMO_DIR / "requirements.txt").read_text().split()


def test_prepare_space_writes_the_card_with_the_model_and_the_requirements(tmp_path, prepare_space, monkeypatch):
    out = prepare_space(tmp_path / "space", model="someone/m2f-model", wheel=False)
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "app.py", "requirements.txt"]
    assert metadata_load(out / "README.md")["models"] == ["someone/m2f-model"]
    assert (out / "app.py").read_text() == (DEMO_DIR / "app.py").read_text()
    monkeypatch.delenv(MODEL_VARIABLE, raising=False)
    assert space_default_model(out) == "someone/m2f-model"  # what the Space's page loads
    monkeypatch.setenv(MODEL_VARIABLE, "other/model")
    assert space_default_model(out) == "other/model"  # a Space variable wins
    monkeypatch.delenv(MODEL_VARIABLE)
    assert space_default_model(DEMO_DIR) is None and space_default_model(tmp_path) is None  # the bundled model


@pytest.mark.skipif(GRADIO_MISSING, reason=GRADIO_REASON)
def test_space_app_builds_the_demo_with_its_queue(monkeypatch):
    import gradio as gr

    monkeypatch.delenv(MODEL_VARIABLE, raising=False)
    namespace = runpy.run_path(str(DEMO_DIR / "app.py"), run_name="space")  # what the Space imports, not launched
    demo = namespace["demo"]
    assert isinstance(demo, gr.Blocks) and demo._queue is not None
    assert demo.m2f_app.default_model is None and None in demo.m2f_app.models  # the bundled model, loaded


def test_model_card_links_to_the_space():
    card = render_model_card(model_name="m2f-shapes", task="panoptic", space_id="someone/m2f-demo")
    ModelCard(card)  # the front matter still parses
    assert "## Try it" in card and "(https://huggingface.co/spaces/someone/m2f-demo)" in card
    assert "## Try it" not in render_model_card(model_name="m2f-shapes")
    with pytest.raises(ValueError, match="space_id='not a space' must be a Space's Hub id"):
        render_model_card(model_name="m2f-shapes", space_id="not a space")
