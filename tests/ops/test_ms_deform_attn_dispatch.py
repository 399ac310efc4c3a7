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


def test_forced_pytorch_matches_auto_on_cpu(make_inputs):
    inputs = make_inputs([(3, 4), (2, 2)])
    forced = multi_scale_deformable_attention(*inputs, implementation="pytorch")
    auto = multi_scale_deformable_attention(*inputs, implementation="auto")
    assert torch.equal(forced, auto)


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


def test_auto_on_cpu_never_touches_the_build(make_inputs, monkeypatch):
    def must_not_build(**kwargs):
        raise AssertionError("auto mode with CPU tensors tried to build the kernel")

    monkeypatch.setattr(build, "load_kernel", must_not_build)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = multi_scale_deformable_attention(*make_inputs([(2, 2)]))
    assert out.shape == (2, 5, 8)


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
