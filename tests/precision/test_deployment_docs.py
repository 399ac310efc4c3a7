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


def test_readme_precision_commands(tmp_path, monkeypatch, capsys):
    import json
    import shlex

    from m2f_hf.cli import main

    text = (DOC.parents[1] / "README.md").read_text()
    section = text[text.index("### Lower precision on the CPU, torch.export") :]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    commands = [line.strip() for line in block.splitlines() if line.strip()]
    assert [c.split()[0] for c in commands] == ["m2f-segment", "m2f-segment"]
    monkeypatch.chdir(tmp_path)
    for command, precision in zip(commands, ("bfloat16", "int8")):
        assert main(shlex.split(command)[1:]) == 0
        record = json.loads(
            (tmp_path / "outputs" / precision.replace("bfloat16", "bf16") / "shapes_1.json").read_text()
        )
        assert record["model"] == f"m2f_hf default model [{precision}]"
        # the bundled example's five regions, as in float32 (docs/default_model.md)
        assert sorted(s["label"] for s in record["segments"]) == ["circle", "grass", "square", "triangle", "water"]
