"""`synchronize` sums statistics across processes through accelerate or torch.distributed."""

from __future__ import annotations

import socket

import pytest
import torch
from evaluation_data import ID2LABEL, THING_IDS, random_panoptic_pair

from m2f_hf.evaluation import InstanceEvaluator, PanopticEvaluator


class TwoProcessAccelerator:
    """Stands in for an `accelerate.Accelerator` of two processes where the other process saw the same images."""

    num_processes = 2
    device = torch.device("cpu")

    def __init__(self):
        self.reduced = []

    def reduce(self, tensor, reduction="sum"):
        assert reduction == "sum"
        self.reduced.append(tensor)
        return tensor * 2


def test_synchronize_with_an_accelerator_reduces_tensors_and_gathers_lists(monkeypatch):
    import accelerate.utils

    pairs = [random_panoptic_pair(torch.Generator().manual_seed(7), crowd=True) for _ in range(3)]
    predictions, references = map(list, zip(*pairs))
    gathered = []
    monkeypatch.setattr(accelerate.utils, "gather_object", lambda items: gathered.append(items) or items + items)

    panoptic = PanopticEvaluator(ID2LABEL, THING_IDS)
    panoptic.process(predictions, references)
    expected = {key: value * 2 for key, value in panoptic.state_dict().items()}
    accelerator = TwoProcessAccelerator()
    panoptic.synchronize(accelerator)
    assert len(accelerator.reduced) == 4
    for key, value in panoptic.state_dict().items():
        assert torch.equal(value, expected[key])

    instance = InstanceEvaluator(ID2LABEL, THING_IDS)
    instance.process(predictions, references)
    instance.synchronize(TwoProcessAccelerator())
    assert len(gathered) == 1 and len(instance.state_dict()["images"]) == 6


def test_synchronize_with_torch_distributed():
    if not torch.distributed.is_available():
        pytest.skip("torch.distributed is not available in this build")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    try:
        pairs = [random_panoptic_pair(torch.Generator().manual_seed(8)) for _ in range(2)]
        predictions, references = map(list, zip(*pairs))
        for evaluator in (PanopticEvaluator(ID2LABEL, THING_IDS), InstanceEvaluator(ID2LABEL, THING_IDS)):
            evaluator.process(predictions, references)
            before = evaluator.evaluate()
            evaluator.synchronize()  # world size 1: the total is the local state
            after = evaluator.evaluate()
            assert [after[k] for k in before if not isinstance(before[k], dict)] == pytest.approx(
                [before[k] for k in before if not isinstance(before[k], dict)], nan_ok=True
            )
    finally:
        torch.distributed.destroy_process_group()
