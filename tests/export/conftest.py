"""Exports shared by the tests of m2f_hf.export: each graph is written once per session (an export traces the whole
model, 20-50 s on a busy 2-core machine), then read by every test that needs it."""

from __future__ import annotations

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


@pytest.fixture(scope="session")
def default_export(tmp_path_factory):
    """The bundled model exported by `m2f-export`'s main() (validation on), and the command's exit status."""
    from m2f_hf.export.cli import main
    from m2f_hf.resources import default_model_path

    folder = tmp_path_factory.mktemp("onnx_default")
    status = main(["--model", str(default_model_path()), "--output", str(folder)])
    return status, folder
