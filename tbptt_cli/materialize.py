"""Gather the rows of a Plan from a SequenceSet, one slab of samples at a time."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tbptt_cli.plan import Plan, ragged_arange
from tbptt_cli.sequences import SequenceSet


@dataclass(frozen=True)
class Slab:
    X: np.ndarray  # [n, K, F]
    y: np.ndarray | None  # [n, K, Ft]
    mask: np.ndarray  # uint8 [n, K]
    loss_mask: np.ndarray | None  # uint8 [n, K]


def gather(plan: Plan, data: SequenceSet, start: int, stop: int, dtype: np.dtype) -> Slab:
    """Rows ``start:stop`` of the output; padded steps hold 0 in X, y and mask."""
    rows = slice(start, stop)
    n, window = stop - start, plan.window
    counts = plan.length[rows].astype(np.int64)
    step = ragged_arange(counts)
    local_row = np.repeat(np.arange(n), counts)
    source = np.repeat(data.starts[np.maximum(plan.sequence[rows], 0)] + plan.offset[rows], counts)
    source += step
    column = np.repeat(plan.lead[rows].astype(np.int64), counts) + step
    X = np.zeros((n, window, data.features), dtype=dtype)
    X[local_row, column] = _take(data.values, source)
    mask = np.zeros((n, window), dtype=np.uint8)
    mask[local_row, column] = 1
    y = None
    if data.targets is not None:
        y = np.zeros((n, window, data.targets.shape[1]), dtype=dtype)
        y[local_row, column] = _take(data.targets, source + data.target_shift)
    loss_mask = None
    if plan.loss_from is not None:
        loss_mask = mask.copy()
        loss_mask[:, : plan.loss_from] = 0
    return Slab(X, y, mask, loss_mask)


def _take(values: np.ndarray, index: np.ndarray) -> np.ndarray:
    """``values[index]`` that reads a memory map in one pass when the index is one run."""
    if len(index) and index[-1] - index[0] + 1 == len(index) and np.all(np.diff(index) == 1):
        return np.asarray(values[int(index[0]) : int(index[-1]) + 1])
    return np.asarray(values[index])
