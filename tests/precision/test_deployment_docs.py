"""docs/deployment.md's torch.export example runs as written (in a scratch folder)."""

from __future__ import annotations

import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[2] / "docs" / "deployment.md"


def _python_block(heading: str) -> str:
    text = DOC.read_text()
    section = text.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_torch_export_example_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    exec(compile(_python_block("torch.export"), str(DOC), "exec"), {})
    printed = capsys.readouterr().out
    assert "torch.Size([3, 20, 24, 40])" in printed
    difference = float(re.search(r"tensor\(([^)]+)\)", printed).group(1))
    assert difference < 1e-4
    assert (tmp_path / "m2f_program.pt2").is_file()
