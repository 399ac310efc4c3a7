"""Shared protocol and input validation for the segmentation evaluators.

Every evaluator follows the Detectron2 protocol ``reset() / process(predictions, references) / evaluate()`` and keeps
only additive statistics between calls, so that a whole dataset fits in bounded memory and partial results from
several processes can be summed (`merge`, `synchronize`).
"""

from __future__ import annotations

import abc
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

__all__ = ["Evaluator", "as_index_map", "normalize_id2label"]


def normalize_id2label(id2label: Mapping[Any, str]) -> dict[int, str]:
    """Returns `id2label` with integer keys (configs loaded from JSON carry string keys), validating them."""
    if not isinstance(id2label, Mapping) or len(id2label) == 0:
        raise ValueError(f"`id2label` must be a non-empty mapping from class id to name, got {id2label!r}.")
    normalized = {}
    for key, name in id2label.items():
        try:
            class_id = int(key)
        except (TypeError, ValueError) as error:
            raise ValueError(f"`id2label` keys must be integer class ids, got {key!r}.") from error
        normalized[class_id] = str(name)
    return dict(sorted(normalized.items()))


def normalize_thing_ids(thing_ids: Iterable[int], id2label: Mapping[int, str]) -> frozenset[int]:
    """Validates that every thing class id is a known class."""
    things = frozenset(int(class_id) for class_id in thing_ids)
    unknown = sorted(things - set(id2label))
    if unknown:
        raise ValueError(f"`thing_ids` contains ids {unknown} that are not keys of `id2label` ({sorted(id2label)}).")
    return things


def as_index_map(value: Any, name: str, ndim: int = 2) -> torch.Tensor:
    """Converts a tensor / array of integer ids to a CPU integer tensor with `ndim` dimensions.

    Integer inputs keep their dtype (an int64 copy of every map would double the memory traffic); bool and float
    inputs become int64.
    """
    if isinstance(value, np.ndarray):
        value = torch.from_numpy(value)
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"`{name}` must be a torch.Tensor or numpy array, got {type(value).__name__}.")
    if value.ndim != ndim:
        raise ValueError(f"`{name}` must have {ndim} dimensions, got shape {tuple(value.shape)}.")
    if value.is_floating_point():
        # transformers' post-processing returns a float map (filled with -1) when nothing was detected.
        rounded = value.round()
        if not torch.equal(rounded, value):
            raise ValueError(f"`{name}` must hold integer ids, got non-integer values.")
        value = rounded
    if value.is_floating_point() or value.dtype == torch.bool:
        value = value.to(torch.int64)
    return value.detach().cpu()


def as_list(value: Any, name: str) -> list:
    """Accepts one item or a sequence of per-image items and returns a list."""
    if isinstance(value, Mapping) or (isinstance(value, (torch.Tensor, np.ndarray)) and value.ndim == 2):
        return [value]
    if isinstance(value, (torch.Tensor, np.ndarray)):
        return list(value)
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        return list(value)
    raise TypeError(f"`{name}` must be a list with one entry per image, got {type(value).__name__}.")


def check_same_length(predictions: list, references: list) -> None:
    if len(predictions) != len(references):
        raise ValueError(
            f"`predictions` has {len(predictions)} images but `references` has {len(references)}; "
            "expected one prediction per reference."
        )


def check_same_shape(prediction: torch.Tensor, reference: torch.Tensor, index: int, shape_dims: slice = slice(None)):
    pred_shape, ref_shape = tuple(prediction.shape[shape_dims]), tuple(reference.shape)
    if pred_shape != ref_shape:
        raise ValueError(
            f"predictions[{index}] has segmentation size {pred_shape} but references[{index}] has size {ref_shape}; "
            "expected equal sizes (pass `target_sizes` to the post-processing)."
        )


def _reduce_sum(tensor: torch.Tensor, accelerator: Any | None) -> torch.Tensor:
    if accelerator is not None:
        if accelerator.num_processes == 1:
            return tensor
        return accelerator.reduce(tensor.to(accelerator.device), reduction="sum").cpu()
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        device = "cuda" if torch.distributed.get_backend() == "nccl" else "cpu"
        reduced = tensor.clone().to(device)
        torch.distributed.all_reduce(reduced, op=torch.distributed.ReduceOp.SUM)
        return reduced.cpu()
    return tensor


def _gather_list(items: list, accelerator: Any | None) -> list:
    if accelerator is not None:
        if accelerator.num_processes == 1:
            return items
        from accelerate.utils import gather_object

        return list(gather_object(items))
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        gathered: list = [None] * torch.distributed.get_world_size()
        torch.distributed.all_gather_object(gathered, items)
        return [item for part in gathered for item in part]
    return items


class Evaluator(abc.ABC):
    """Base class: `reset()`, `process(predictions, references)`, `evaluate() -> dict`.

    Subclasses keep their statistics in `self._state`, a dict whose values are either tensors (summed when merged)
    or lists (concatenated when merged).
    """

    def __init__(self) -> None:
        self._state: dict[str, torch.Tensor | list] = {}
        self.reset()

    @abc.abstractmethod
    def reset(self) -> None:
        """Clears the accumulated statistics."""

    @abc.abstractmethod
    def process(self, predictions: Any, references: Any) -> None:
        """Adds a batch of per-image predictions and references to the statistics."""

    @abc.abstractmethod
    def evaluate(self) -> dict[str, Any]:
        """Returns the metrics over everything processed since the last `reset()`."""

    def state_dict(self) -> dict[str, torch.Tensor | list]:
        """The accumulated statistics (tensors to sum, lists to concatenate); a copy safe to send elsewhere."""
        return {
            key: value.clone() if isinstance(value, torch.Tensor) else list(value)
            for key, value in self._state.items()
        }

    def load_state_dict(self, state: Mapping[str, torch.Tensor | list]) -> None:
        """Replaces the accumulated statistics with `state` (as returned by `state_dict()`)."""
        self._check_state(state)
        self._state = {
            key: value.detach().cpu().clone() if isinstance(value, torch.Tensor) else list(value)
            for key, value in state.items()
        }

    def merge(self, state: Mapping[str, torch.Tensor | list]) -> None:
        """Adds the statistics of another evaluator (its `state_dict()`), e.g. one that ran on another process."""
        self._check_state(state)
        for key, value in state.items():
            if isinstance(value, torch.Tensor):
                self._state[key] = self._state[key] + value.detach().cpu()
            else:
                self._state[key] = list(self._state[key]) + list(value)

    def synchronize(self, accelerator: Any | None = None) -> None:
        """Replaces the local statistics by their total over all processes.

        Uses `accelerator.reduce` / `accelerate.utils.gather_object` when an `accelerate.Accelerator` is given,
        otherwise `torch.distributed` when it is initialised, otherwise does nothing. Call it once, on every process,
        before `evaluate()`: calling it twice would count other processes' images twice.
        """
        total = {}
        for key, value in self._state.items():
            if isinstance(value, torch.Tensor):
                total[key] = _reduce_sum(value, accelerator)
            else:
                total[key] = _gather_list(list(value), accelerator)
        self._state = total

    def _check_state(self, state: Mapping[str, torch.Tensor | list]) -> None:
        if set(state) != set(self._state):
            raise ValueError(f"`state` has keys {sorted(state)}, expected {sorted(self._state)}.")
        for key, value in state.items():
            ours = self._state[key]
            if isinstance(ours, torch.Tensor) and (not isinstance(value, torch.Tensor) or value.shape != ours.shape):
                shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
                raise ValueError(
                    f"`state[{key!r}]` is {shape}, expected a tensor of shape {tuple(ours.shape)} "
                    "(was it produced by an evaluator with the same classes?)."
                )
