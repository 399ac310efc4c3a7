"""Exports shared by the tests of m2f_hf.export: each graph is written once per session (an export traces the whole
model, 20-50 s on a busy 2-core machine), then read by every test that needs it."""

from __future__ import annotations

import contextlib
import os
import re
import shlex
from pathlib import Path

import pytest
import torch

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from m2f_hf import M2FForUniversalSegmentation  # noqa: E402
from m2f_hf.export import export_onnx  # noqa: E402
from m2f_hf.testing import tiny_config  # noqa: E402


def _tiny(backbone: str) -> M2FForUniversalSegmentation:
    torch.manual_seed(0)
    return M2FForUniversalSegmentation(tiny_config(backbone)).eval()


@pytest.fixture(scope="session")
def tiny_exports(tmp_path_factory):
    """{backbone: (PyTorch model, exported folder)} for tiny R50-style and Swin configs; validation is left to the
    tests, which compare at more sizes."""
    exports = {}

    def get(backbone: str):
        if backbone not in exports:
            model = _tiny(backbone)
            folder = tmp_path_factory.mktemp(f"onnx_{backbone}")
            export_onnx(model, folder, validate=False)
            exports[backbone] = (model, folder)
        return exports[backbone]

    return get


@pytest.fixture(scope="session")
def tensorrt_export(tmp_path_factory):
    model = _tiny("resnet")
    folder = tmp_path_factory.mktemp("onnx_tensorrt")
    export_onnx(model, folder, deform_attn_plugin="tensorrt")  # validation: interface, domains, plugin inputs
    return model, folder


README_SECTION = "### Deploying with ONNX Runtime or TensorRT"
ROOT = Path(__file__).resolve().parents[2]


def readme_commands(outputs: Path) -> list[list[str]]:
    """The README's deployment commands, split, with `outputs/` moved to `outputs` (run from the repository root)."""
    text = (ROOT / "README.md").read_text()
    block = re.search(r"```bash\n(.*?)```", text[text.index(README_SECTION) :], re.S).group(1)
    lines = [line.split("  #")[0].strip() for line in block.splitlines() if line.strip()]
    return [shlex.split(line.replace("outputs/", f"{outputs}/")) for line in lines]


@contextlib.contextmanager
def in_repository_root():
    previous = os.getcwd()
    os.chdir(ROOT)
    try:
        yield
    finally:
        os.chdir(previous)


@pytest.fixture(scope="session")
def default_export(tmp_path_factory):
    """The bundled model exported by the README's `m2f-export` command through its main() (validation on): the exit
    status, the folder it wrote, and the README's commands (outputs in a temporary folder)."""
    from m2f_hf.export.cli import main

    commands = readme_commands(tmp_path_factory.mktemp("readme_outputs"))
    assert commands[0][0] == "m2f-export" and commands[0][-2] == "--output"
    with in_repository_root():
        status = main(commands[0][1:])
    return status, Path(commands[0][-1]), commands
