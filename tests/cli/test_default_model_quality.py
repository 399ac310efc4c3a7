"""The bundled default model keeps the quality recorded in docs/default_model.md on the held-out synthetic set."""

from __future__ import annotations

# The 100 images render and segment in seconds on a CPU, so the full check runs on every CI run (no `slow` mark).
NUM_HELD_OUT = 100


def test_quality_on_the_held_out_set(held_out_quality):
    metrics = held_out_quality(NUM_HELD_OUT)
    assert metrics["PQ"] >= 70.0, metrics
    assert metrics["mIoU"] >= 80.0, metrics
    assert metrics["mIoU_pan"] >= 80.0, metrics
