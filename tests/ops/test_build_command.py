"""`python -m m2f_hf.ops` on a machine without a GPU points to the CPU kernel (`--cpu`)."""

from __future__ import annotations

import json

import torch

from m2f_hf.ops import build


def test_without_a_gpu_the_build_command_points_to_cpu(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.delenv("TORCH_CUDA_ARCH_LIST", raising=False)
    # a CUDA kernel loaded or refused earlier in this process must not answer for this machine (restored afterwards)
    monkeypatch.setattr(build, "_kernel", None)
    monkeypatch.setattr(build, "_failure", None)
    status = build.main([])
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert status == 1 and report["built"] is False
    assert "python -m m2f_hf.ops --cpu" in report["hint"] and "--arch" in report["hint"]
