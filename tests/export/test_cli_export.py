"""`m2f-export` options: one-line errors and exit status 2 before anything heavy runs (the end-to-end export of the
bundled model is in test_runtime.py)."""

from __future__ import annotations

import pytest

from m2f_hf.export import cli, onnx_export, translations


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--opset", "16"], "--opset 16 is too old: the exported graph needs opset 18 or newer"),
        (["--deform-attn-plugin", "openvino"], "--deform-attn-plugin must be one of tensorrt; got 'openvino'"),
        (["--dtype", "bfloat16"], "--dtype must be one of float32, int8; got 'bfloat16'"),
        (["--dtype", "int8", "--deform-attn-plugin", "tensorrt"], "--dtype int8 is onnxruntime's quantiser"),
    ],
)
def test_bad_options(tmp_path, capsys, extra, message):
    assert cli.main(["--model", "unused", "--output", str(tmp_path)] + extra) == cli.EXIT_FATAL
    error = capsys.readouterr().err.strip()
    assert error.startswith("m2f-export: error: ") and message in error
    assert len(error.splitlines()) == 1
    assert not list(tmp_path.iterdir())  # nothing written


def test_a_model_that_does_not_exist(tmp_path, capsys):
    assert cli.main(["--model", str(tmp_path / "nowhere"), "--output", str(tmp_path / "out")]) == cli.EXIT_FATAL
    error = capsys.readouterr().err
    assert "--model" in error and "nowhere" in error and "no such file or directory" in error


def test_model_and_output_are_required(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--output", "x"])
    assert "--model" in capsys.readouterr().err


def test_cli_choices_are_the_library_ones():
    assert cli.PLUGINS == translations.PLUGINS
    assert cli.DTYPES == onnx_export.DTYPES
    assert (cli.DEFAULT_OPSET, cli.MIN_OPSET) == (onnx_export.DEFAULT_OPSET, onnx_export.MIN_OPSET)


def test_option_errors_answer_before_heavy_imports(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2] / "src"))
    command = [sys.executable, "-X", "importtime", "-m", "m2f_hf.export", "--model", "x", "--output", str(tmp_path)]
    result = subprocess.run(command + ["--opset", "3"], capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == cli.EXIT_FATAL
    assert "m2f-export: error: --opset 3 is too old" in result.stderr
    imported = {line.split("|")[-1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")}
    assert "m2f_hf.export.cli" in imported and not {"torch", "transformers", "onnx"} & imported
