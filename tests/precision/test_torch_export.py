"""torch.export with a dynamic batch, height and width, and torch.compile(fullgraph=True), on tiny models."""

from __future__ import annotations

import pytest
import torch

from m2f_hf import M2FForUniversalSegmentation
from m2f_hf.export.torch_program import check_input_size, dynamic_shapes, export_program
from m2f_hf.testing import tiny_config

TOLERANCE = 1e-5


def _model(backbone="resnet"):
    torch.manual_seed(0)
    return M2FForUniversalSegmentation(tiny_config(backbone)).eval()


def _assert_matches(model, run, shape):
    torch.manual_seed(1)
    pixel_values = torch.randn(shape)
    with torch.no_grad():
        eager = model(pixel_values)
        other = run(pixel_values)
    assert other.masks_queries_logits.shape == eager.masks_queries_logits.shape
    assert (eager.masks_queries_logits - other.masks_queries_logits).abs().max() <= TOLERANCE
    assert (eager.class_queries_logits - other.class_queries_logits).abs().max() <= TOLERANCE


def test_exported_program_runs_at_other_sizes_and_batches():
    """Exported at 2x64x96; sizes, aspect ratios and batches other than the example's match eager."""
    model = _model()
    program = export_program(model)
    run = program.module()
    for shape in [(1, 3, 64, 64), (3, 3, 96, 128), (2, 3, 64, 160), (1, 3, 192, 64)]:
        _assert_matches(model, run, shape)


def test_plain_torch_export_call_with_dynamic_shapes():
    """The documented spelling: torch.export.export(model, (pixel_values,), dynamic_shapes=dynamic_shapes()), with an
    example batch of 2 (torch.export specialises a dimension that is 1 in the example)."""
    model = _model()
    with torch.no_grad():
        program = torch.export.export(model, (torch.randn(2, 3, 96, 64),), dynamic_shapes=dynamic_shapes())
    # nothing of the example's size was fixed: the batch and both sides are symbols in the graph signature
    placeholder = next(n for n in program.graph.nodes if n.op == "placeholder" and n.name == "pixel_values")
    shape = placeholder.meta["val"].shape
    assert all(isinstance(size, torch.SymInt) for size in (shape[0], shape[2], shape[3]))
    _assert_matches(model, program.module(), (1, 3, 128, 96))


def test_export_rejects_sizes_it_cannot_take():
    with pytest.raises(ValueError, match="multiples of 32"):
        check_input_size(torch.zeros(1, 3, 100, 64))
    with pytest.raises(ValueError, match="at least 64"):
        check_input_size(torch.zeros(1, 3, 32, 64))
    with pytest.raises(ValueError, match="max_batch"):
        dynamic_shapes(max_batch=0)
    # an example batch of 1 is doubled (a batch of 1 would be specialised), then runs at batch 1 and 3
    program = export_program(_model(), torch.zeros(1, 3, 64, 64))
    _assert_matches(_model(), program.module(), (3, 3, 64, 96))
    with pytest.raises(ValueError, match="max_batch=1"):
        export_program(_model(), torch.zeros(2, 3, 64, 64), max_batch=1)


def test_compile_fullgraph_has_no_graph_break():
    """fullgraph=True raises on any graph break (aot_eager: the graph capture without inductor's code generation;
    tests/test_modeling.py compiles with inductor)."""
    model = _model()
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    _assert_matches(model, compiled, (1, 3, 64, 96))
