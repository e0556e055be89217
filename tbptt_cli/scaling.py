"""``--scale standard|minmax``: per-feature parameters fitted on the training part only.

A scaled value is ``(x - center) / scale`` per column, computed in float64 from the raw
input and then cast to the output dtype; training code inverts predictions with
``x = X * scale + center``. standard: center = mean, scale = standard deviation
(population, ddof 0); minmax: center = min, scale = max - min. A constant column gets
scale 1. Target columns that repeat a feature (``--target next``) use that feature's
parameters; a target column that is not a feature is left as it is (center 0, scale 1).
Padded steps are never scaled: they stay 0.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from tbptt_cli.errors import InputDataError
from tbptt_cli.sequences import SequenceSet

BLOCK_ROWS = 1 << 16  # steps read at a time: memory stays bounded on a mapped input


@dataclass(frozen=True)
class Scaling:
    method: str
    center: np.ndarray  # float64 [F]
    scale: np.ndarray  # float64 [F]
    target_center: np.ndarray  # float64 [Ft]
    target_scale: np.ndarray  # float64 [Ft]
    sequences: int  # what the parameters were fitted on
    steps: int

    def features(self, values: np.ndarray) -> np.ndarray:
        """Scaled values ``[..., F]`` in float64."""
        return (np.asarray(values, dtype=np.float64) - self.center) / self.scale

    def targets(self, values: np.ndarray) -> np.ndarray:
        return (np.asarray(values, dtype=np.float64) - self.target_center) / self.target_scale

    def document(self, data: SequenceSet) -> dict[str, Any]:
        """The manifest's ``scale`` section and the file's ``scale`` attribute (as JSON)."""
        return {
            "method": self.method,
            "features": list(data.feature_names),
            "center": self.center.tolist(),
            "scale": self.scale.tolist(),
            "targets": list(data.target_names),
            "target_center": self.target_center.tolist(),
            "target_scale": self.target_scale.tolist(),
            "fitted_on": {"sequences": self.sequences, "steps": self.steps},
        }

    @classmethod
    def from_document(cls, doc: dict[str, Any]) -> Scaling:
        def array(key: str) -> np.ndarray:
            return np.asarray(doc[key], dtype=np.float64)

        fitted = doc.get("fitted_on") or {}
        return cls(
            str(doc["method"]),
            array("center"),
            array("scale"),
            array("target_center"),
            array("target_scale"),
            int(fitted.get("sequences", 0)),
            int(fitted.get("steps", 0)),
        )


def fit(data: SequenceSet, method: str) -> tuple[SequenceSet, list[str]]:
    """``data`` carrying the parameters fitted on its own steps, and the warnings."""
    if method == "none":
        return data, []
    try:
        with np.errstate(over="raise", invalid="raise"):
            count, center, spread = _moments(data) if method == "standard" else _range(data)
    except FloatingPointError:
        raise InputDataError(
            f"--scale {method}: the values are too large to compute the scale in float64 "
            "(squares or ranges beyond 1e308); rescale the input first"
        ) from None
    constant = count > 0 and not np.all(spread > 0)
    scale = np.where(spread > 0, spread, 1.0)
    warnings = []
    if constant:
        names = [n for n, s in zip(data.feature_names, spread, strict=True) if not s > 0]
        which = f"feature {names[0]} is" if len(names) == 1 else f"features {', '.join(names)} are"
        warnings.append(
            f"--scale {method}: {which} constant in the training part; it is written as 0 (scale 1)"
        )
    columns = data.target_features
    n_targets = len(data.target_names)
    target_center = np.zeros(n_targets) if columns is None else center[columns]
    target_scale = np.ones(n_targets) if columns is None else scale[columns]
    scaling = Scaling(method, center, scale, target_center, target_scale, data.count, int(count))
    return replace(data, scaling=scaling), warnings


def _moments(data: SequenceSet) -> tuple[int, np.ndarray, np.ndarray]:
    """Count, mean and standard deviation per column, merged block by block (Chan et al.)."""
    count, mean, m2 = 0, np.zeros(data.features), np.zeros(data.features)
    for block in steps_in_blocks(data.values, data.starts, data.lengths):
        n = len(block)
        block_mean = block.mean(axis=0)
        block_m2 = ((block - block_mean) ** 2).sum(axis=0)
        delta = block_mean - mean
        total = count + n
        mean = mean + delta * (n / total)
        m2 = m2 + block_m2 + delta**2 * (count * n / total)
        count = total
    return count, mean, np.sqrt(m2 / max(count, 1))


def _range(data: SequenceSet) -> tuple[int, np.ndarray, np.ndarray]:
    count = 0
    low, high = np.full(data.features, np.inf), np.full(data.features, -np.inf)
    for block in steps_in_blocks(data.values, data.starts, data.lengths):
        count += len(block)
        low = np.minimum(low, block.min(axis=0))
        high = np.maximum(high, block.max(axis=0))
    if not count:
        return 0, np.zeros(data.features), np.zeros(data.features)
    return count, low, high - low


def steps_in_blocks(
    source: np.ndarray, starts: np.ndarray, lengths: np.ndarray
) -> Iterator[np.ndarray]:
    """The rows ``[starts[i], starts[i] + lengths[i])`` of ``source`` as float64 blocks
    ``[n, columns]``, each row once (ranges may overlap), in storage order."""
    order = np.argsort(starts, kind="stable")
    begins = np.asarray(starts, dtype=np.int64)[order]
    ends = begins + np.asarray(lengths, dtype=np.int64)[order]
    live = ends > begins
    begins, ends = begins[live], ends[live]
    if not len(begins):
        return
    reach = np.maximum.accumulate(ends)  # the furthest any range starting here or before goes
    first, last = int(begins[0]), int(reach[-1])
    for begin in range(first, last, BLOCK_ROWS):
        rows = np.arange(begin, min(begin + BLOCK_ROWS, last))
        # rows start at begins[0], so every row has a range starting at or before it
        inside = reach[np.searchsorted(begins, rows, side="right") - 1] > rows
        if inside.any():
            block = np.asarray(source[begin : begin + len(rows)], dtype=np.float64)
            yield block if inside.all() else block[inside]
