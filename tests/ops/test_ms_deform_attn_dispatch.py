"""Dispatcher: precedence of argument / environment / default, forced modes, and the warn-once build fallback."""

from __future__ import annotations

import warnings

import pytest
import torch

from m2f_hf.ops import (
    ENV_VAR,
    KernelFallbackWarning,
    KernelUnavailableError,
    build,
    dispatch,
    multi_scale_deformable_attention,
    resolve_implementation,
    set_default_implementation,
)


@pytest.fixture
def failing_build(monkeypatch):
    """A toolchain that looks usable but whose compilation raises, counting the attempts."""
    attempts = []

    def broken_compile(build_dir, verbose):
        attempts.append(build_dir)
        raise RuntimeError("Error building extension 'm2f_hf_ms_deform_attn': nvcc fatal")

    monkeypatch.setattr(build, "_check_toolchain", lambda: None)
    monkeypatch.setattr(build, "_compile", broken_compile)
    monkeypatch.setattr(build, "_kernel", None)
    return attempts


def test_auto_on_cpu_runs_the_selected_backend(make_inputs):
    """auto = the CPU kernel when it was built before, else the PyTorch path; both agree with the PyTorch path."""
    inputs = make_inputs([(3, 4), (2, 2)])
    selected = dispatch.select_backend("auto", "cpu")
    assert selected == ("cpu" if build.cpu_kernel_built() else "pytorch")
    auto = multi_scale_deformable_attention(*inputs, implementation="auto")
    assert torch.equal(auto, multi_scale_deformable_attention(*inputs, implementation=selected))
    torch.testing.assert_close(auto, multi_scale_deformable_attention(*inputs, implementation="pytorch"))


def test_forced_cuda_on_cpu_tensors_raises(make_inputs):
    inputs = make_inputs([(3, 4)])
    with pytest.raises(RuntimeError, match="'cuda' was requested.*device type 'cpu'"):
        multi_scale_deformable_attention(*inputs, implementation="cuda")


def test_precedence_argument_then_env_then_default(monkeypatch):
    assert resolve_implementation() == "auto"
    set_default_implementation("pytorch")
    assert resolve_implementation() == "pytorch"
    monkeypatch.setenv(ENV_VAR, "cuda")
    assert resolve_implementation() == "cuda"  # the variable wins over the config default
    assert resolve_implementation("pytorch") == "pytorch"  # an explicit argument wins over the variable


def test_env_var_wins_over_default_in_calls(make_inputs, monkeypatch):
    inputs = make_inputs([(3, 4)])
    set_default_implementation("pytorch")
    monkeypatch.setenv(ENV_VAR, "cuda")
    with pytest.raises(RuntimeError, match="'cuda' was requested"):
        multi_scale_deformable_attention(*inputs)
    set_default_implementation("cuda")
    monkeypatch.setenv(ENV_VAR, "PyTorch ")  # case and spaces are tolerated
    assert multi_scale_deformable_attention(*inputs).shape == (2, 5, 8)


def test_invalid_names_are_rejected(monkeypatch):
    with pytest.raises(ValueError, match="deform_attn_implementation must be one of .* got 'fast'"):
        set_default_implementation("fast")
    monkeypatch.setenv(ENV_VAR, "kernel")
    with pytest.raises(ValueError, match=f"environment variable {ENV_VAR} must be one of .* got 'kernel'"):
        resolve_implementation()


def test_auto_on_cpu_never_compiles(make_inputs, monkeypatch, tmp_path):
    """Without a CPU build in the cache, auto takes the PyTorch path: nothing is compiled, nothing is warned."""

    def must_not_build(**kwargs):
        raise AssertionError("auto mode with CPU tensors tried to build a kernel")

    monkeypatch.setenv(build.BUILD_DIR_ENV, str(tmp_path))  # an empty cache
    monkeypatch.setattr(build, "_cpu_kernel", None)
    monkeypatch.setattr(build, "load_kernel", must_not_build)
    monkeypatch.setattr(build, "load_cpu_kernel", must_not_build)
    assert dispatch.select_backend("auto", "cpu") == "pytorch"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = multi_scale_deformable_attention(*make_inputs([(2, 2)]))
    assert out.shape == (2, 5, 8)


def test_forced_cpu_kernel_on_cuda_tensors_raises():
    with pytest.raises(RuntimeError, match="'cpu' was requested.*device type 'cuda'"):
        dispatch.select_backend("cpu", "cuda")


def test_cpu_build_directory_is_keyed_by_torch_and_cpu(monkeypatch, tmp_path):
    monkeypatch.setenv(build.BUILD_DIR_ENV, str(tmp_path))
    directory = build.cpu_build_directory()
    assert directory.parent == tmp_path / "ms_deform_attn"
    assert torch.__version__.replace("+", "+") in directory.name and "-cpu" in directory.name
    monkeypatch.setattr(build, "_cpu_signature", lambda: "another cpu")
    assert build.cpu_build_directory() != directory


def test_failing_build_warns_once_and_falls_back(failing_build):
    with pytest.warns(KernelFallbackWarning) as record:
        first = dispatch.select_backend("auto", "cuda")
        second = dispatch.select_backend(None, "cuda")
    assert (first, second) == ("pytorch", "pytorch")
    assert len(record) == 1
    message = str(record[0].message)
    assert "nvcc fatal" in message and "python -m m2f_hf.ops" in message and ENV_VAR in message
    assert len(failing_build) == 1  # the failure is remembered, not rebuilt on every call


def test_failing_build_with_forced_cuda_raises(failing_build):
    with pytest.raises(KernelUnavailableError, match="nvcc fatal"):
        dispatch.select_backend("cuda", "cuda")


def test_missing_toolchain_reason_is_reported(monkeypatch):
    monkeypatch.setattr(build, "_kernel", None)
    monkeypatch.setattr(build, "_check_toolchain", lambda: "no CUDA toolkit found (nvcc)")
    with pytest.raises(KernelUnavailableError, match="no CUDA toolkit found"):
        build.load_kernel()


def test_build_directory_is_keyed_by_versions_and_arch(monkeypatch, tmp_path):
    monkeypatch.setenv(build.BUILD_DIR_ENV, str(tmp_path))
    directory = build.build_directory("8.0;9.0")
    assert directory.parent == tmp_path / "ms_deform_attn"
    assert f"cuda{torch.version.cuda}" in directory.name and "sm8.0_9.0" in directory.name
    assert build.build_directory("8.6") != directory
