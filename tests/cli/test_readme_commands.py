"""The README's `m2f-segment` commands for folders, globs and COCO results work as written and say what it says."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from m2f_hf.cli import main

ROOT = Path(__file__).resolve().parents[2]
SECTION = "### Folders, globs, videos and COCO results"
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def _commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"```bash\n(.*?)```", text[text.index(SECTION) :], re.S).group(1)
    return [line.split("  #")[0].strip() for line in block.splitlines() if line.strip()]


def test_the_readme_folder_commands(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)  # the commands name files of a checkout
    commands = [c.replace("outputs/", f"{tmp_path}/outputs/") for c in _commands()]
    assert [c.split()[0] for c in commands] == ["m2f-segment", "m2f-segment", "m2f-segment", "python"]
    assert main(shlex.split(commands[0])[1:]) == 0
    assert len(list((tmp_path / "outputs" / "folder").glob("*.json"))) == 3
    capsys.readouterr()
    assert main(shlex.split(commands[1])[1:]) == 0
    assert "skipped 3 of 3 images whose outputs exist" in capsys.readouterr().err
    assert main(shlex.split(commands[2])[1:]) == 0
    result = subprocess.run(
        [sys.executable, *shlex.split(commands[3])[1:]], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "DONE" in result.stdout  # pycocotools' loadRes read the results
