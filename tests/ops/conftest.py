"""Shared input factory and dispatcher isolation for the deformable attention op tests."""

from __future__ import annotations

import pytest
import torch

from m2f_hf.ops import build, dispatch


def make_inputs(
    shapes,
    *,
    batch=2,
    queries=5,
    heads=2,
    head_dim=4,
    points=2,
    dtype=torch.float32,
    device="cpu",
    outside=0.25,
    seed=0,
    requires_grad=False,
):
    """Random op inputs; `outside` widens the location range to [-outside, 1 + outside] so some corners fall off."""
    generator = torch.Generator().manual_seed(seed)
    spatial_shapes = torch.tensor(shapes, dtype=torch.int64)
    areas = spatial_shapes[:, 0] * spatial_shapes[:, 1]
    level_start_index = torch.cat([areas.new_zeros(1), areas.cumsum(0)[:-1]])
    num_keys = int(areas.sum())
    levels = len(shapes)
    value = torch.randn(batch, num_keys, heads, head_dim, generator=generator, dtype=torch.float64)
    locations = torch.rand(batch, queries, heads, levels, points, 2, generator=generator, dtype=torch.float64)
    locations = locations * (1 + 2 * outside) - outside
    weights = torch.rand(batch, queries, heads, levels, points, generator=generator, dtype=torch.float64)
    tensors = [t.to(device=device, dtype=dtype).requires_grad_(requires_grad) for t in (value, locations, weights)]
    value, locations, weights = tensors
    return value, spatial_shapes.to(device), level_start_index.to(device), locations, weights


@pytest.fixture(scope="module")
def cpu_kernel():
    """The CPU extension, built once (cached); a module using it is skipped where it cannot be built."""
    try:
        return build.load_cpu_kernel()
    except build.KernelUnavailableError as error:
        pytest.skip(f"no CPU kernel on this machine: {error}")


@pytest.fixture(name="make_inputs")
def make_inputs_fixture():
    return make_inputs


@pytest.fixture(autouse=True)
def isolated_dispatch(monkeypatch):
    """Every test starts from the package defaults: no env override, default 'auto', nothing warned or cached."""
    monkeypatch.delenv(dispatch.ENV_VAR, raising=False)
    monkeypatch.setattr(dispatch, "_default_implementation", "auto")
    monkeypatch.setattr(dispatch, "_fallback_warned", False)
    monkeypatch.setattr(dispatch, "_cpu_fallback_warned", False)
    monkeypatch.setattr(build, "_kernel", build._kernel)
    monkeypatch.setattr(build, "_failure", None)
    monkeypatch.setattr(build, "_cpu_kernel", build._cpu_kernel)
    monkeypatch.setattr(build, "_cpu_failure", None)
    yield
