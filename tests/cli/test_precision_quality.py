"""The bundled model's held-out quality in bf16 and int8 against float32 (docs/deployment.md has the full table)."""

from __future__ import annotations

import copy
import importlib.util
from pathlib import Path

import pytest

from m2f_hf.export.precision import to_precision

# this folder's conftest holds the held-out set and the metric helper (conftest modules are not importable by name)
_spec = importlib.util.spec_from_file_location("cli_quality_helpers", Path(__file__).with_name("conftest.py"))
helpers = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(helpers)

COUNT = 30  # the first 30 of the 100 held-out images: a few seconds per precision


@pytest.mark.parametrize("precision", ["bfloat16", "int8"])
def test_low_precision_stays_within_a_point_of_float32(default_model, held_out_quality, precision):
    model, processor = default_model
    reference = held_out_quality(COUNT)
    low = to_precision(copy.deepcopy(model), precision)
    quality = helpers.measure_quality(low, processor, helpers.held_out_samples(COUNT))
    for metric in ("PQ", "mIoU", "mIoU_pan"):
        assert abs(quality[metric] - reference[metric]) <= 1.0, (precision, metric, quality, reference)
