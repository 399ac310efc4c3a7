"""The README's large-image and test-time augmentation commands work as written and write what it says."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from m2f_hf.cli import main

ROOT = Path(__file__).resolve().parents[2]
SECTION = "### Large images and test-time augmentation"
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def _commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"```bash\n(.*?)```", text[text.index(SECTION) :], re.S).group(1)
    return [line.split("  #")[0].strip() for line in block.splitlines() if line.strip()]


def test_the_readme_large_image_commands(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)  # the first command runs a script of the checkout
    commands = [c.replace("outputs/", f"{tmp_path}/outputs/") for c in _commands()]
    assert [c.split()[0] for c in commands] == ["python", "m2f-segment", "m2f-segment", "m2f-segment"]
    made = subprocess.run([sys.executable, *shlex.split(commands[0])[1:]], capture_output=True, text=True, timeout=120)
    assert made.returncode == 0, made.stderr
    outputs = tmp_path / "outputs"
    assert Image.open(outputs / "mosaic.png").size == (1280, 768)
    assert main(shlex.split(commands[1])[1:]) == 0
    document = json.loads((outputs / "large" / "mosaic.json").read_text())
    assert document["options"]["sliding_window"] and len(document["segments"]) > 30  # a scene per 128x128 tile
    assert Image.open(outputs / "large" / "mosaic.png").size[1] == 768
    assert main(shlex.split(commands[2])[1:]) == 0
    semantic = json.loads((outputs / "large-semantic" / "mosaic.json").read_text())
    assert semantic["options"]["window_size"] == 256 and semantic["options"]["window_overlap"] == 0.5
    assert {s["label"] for s in semantic["segments"]} == {"circle", "square", "triangle", "grass", "water", "sand"}
    assert main(shlex.split(commands[3])[1:]) == 0
    tta = json.loads((outputs / "tta" / "shapes_1.json").read_text())
    assert tta["options"]["tta"] and tta["options"]["tta_scales"] == [0.75, 1.0, 1.25]
    assert {s["label"] for s in tta["segments"]} == {"circle", "square", "triangle", "grass", "water"}
