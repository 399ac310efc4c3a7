"""`m2f-demo` / `python -m m2f_hf.demo`: options checked before anything heavy, a clear message without Gradio or
with a model that cannot be loaded, and `import m2f_hf` free of Gradio."""

from __future__ import annotations

import subprocess
import sys

import pytest
from demo_helpers import GRADIO_MISSING, GRADIO_REASON

from m2f_hf.demo.cli import build_parser, main


def test_defaults_serve_this_machine_only():
    args = build_parser().parse_args([])
    assert (args.host, args.port, args.share, args.model) == ("127.0.0.1", 7860, False, None)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--port", "0"], "--port must be a positive integer; got 0."),
        (["--max-pixels", "-5"], "--max-pixels must be a positive integer; got -5."),
        (["--max-queue", "0"], "--max-queue must be a positive integer; got 0."),
    ],
)
def test_bad_options_exit_2_with_the_option_named(argv, message, capsys):
    assert main(argv) == 2
    assert capsys.readouterr().err.strip() == f"m2f-demo: error: {message}"


@pytest.mark.skipif(GRADIO_MISSING, reason=GRADIO_REASON)
def test_a_model_that_cannot_be_loaded_stops_before_serving(tmp_path, capsys):
    assert main(["--model", str(tmp_path / "nothing"), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("m2f-demo: error: --model ") and "no such file or directory" in err


def test_without_gradio_the_package_imports_and_the_command_names_the_extra():
    # A fresh interpreter in which `import gradio` fails, as on an install without the demo extra.
    code = (
        "import sys; sys.modules['gradio'] = None\n"
        "import m2f_hf, m2f_hf.demo, m2f_hf.demo.service\n"
        "from m2f_hf.demo.cli import main\n"
        "sys.exit(main(['--port', '7999']))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    assert 'pip install "m2f_hf[demo]"' in done.stderr and "Traceback" not in done.stderr


def test_the_console_script_is_this_main():
    import importlib

    tomllib = pytest.importorskip("tomllib", reason="tomllib is Python 3.11+")
    from pathlib import Path

    with open(Path(__file__).resolve().parents[2] / "pyproject.toml", "rb") as handle:
        target = tomllib.load(handle)["project"]["scripts"]["m2f-demo"]
    module, _, name = target.partition(":")
    assert getattr(importlib.import_module(module), name) is main
