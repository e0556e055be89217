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

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
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


Statistics = tuple[int, np.ndarray, np.ndarray]  # per block: rows, (mean, m2) or (min, max)


def fit(
    data: SequenceSet, method: str, blocks: list[Statistics] | None = None
) -> tuple[SequenceSet, list[str]]:
    """``data`` carrying the parameters fitted on its own steps, and the warnings.
    ``blocks``: the statistics of its steps' blocks (`block_statistics`), when they were
    computed elsewhere (the Dask engine's workers hold the values)."""
    if method == "none":
        return data, []
    if blocks is None:
        blocks = block_statistics(method, steps_in_blocks(data.values, data.starts, data.lengths))
    with _too_large(method):
        count, center, spread = (_moments if method == "standard" else _range)(
            blocks, data.features
        )
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


@contextmanager
def _too_large(method: str) -> Iterator[None]:
    try:
        with np.errstate(over="raise", invalid="raise"):
            yield
    except FloatingPointError:
        raise InputDataError(
            f"--scale {method}: the values are too large to compute the scale in float64 "
            "(squares or ranges beyond 1e308); rescale the input first"
        ) from None


def block_statistics(method: str, blocks: Iterable[np.ndarray]) -> list[Statistics]:
    """Each block's rows and mean and sum of squared deviations (standard), or minimum and
    maximum (minmax) per column; merged in order by `fit`, always the same way, so the
    parameters are the same bits wherever the blocks were read."""
    found: list[Statistics] = []
    with _too_large(method):
        for block in blocks:
            if method == "standard":
                mean = block.mean(axis=0)
                found.append((len(block), mean, ((block - mean) ** 2).sum(axis=0)))
            else:
                found.append((len(block), block.min(axis=0), block.max(axis=0)))
    return found


def _moments(blocks: list[Statistics], features: int) -> tuple[int, np.ndarray, np.ndarray]:
    """Count, mean and standard deviation per column, merged block by block (Chan et al.)."""
    count, mean, m2 = 0, np.zeros(features), np.zeros(features)
    for n, block_mean, block_m2 in blocks:
        delta = block_mean - mean
        total = count + n
        mean = mean + delta * (n / total)
        m2 = m2 + block_m2 + delta**2 * (count * n / total)
        count = total
    return count, mean, np.sqrt(m2 / max(count, 1))


def _range(blocks: list[Statistics], features: int) -> tuple[int, np.ndarray, np.ndarray]:
    count = 0
    low, high = np.full(features, np.inf), np.full(features, -np.inf)
    for n, block_low, block_high in blocks:
        count += n
        low = np.minimum(low, block_low)
        high = np.maximum(high, block_high)
    if not count:
        return 0, np.zeros(features), np.zeros(features)
    return count, low, high - low


def covered(starts: np.ndarray, lengths: np.ndarray) -> tuple[int, int]:
    """The first row any range ``[starts[i], starts[i] + lengths[i])`` covers and the row
    after the last (0, 0 when they are all empty): the span `steps_in_blocks` cuts."""
    live = np.asarray(lengths) > 0
    if not live.any():
        return 0, 0
    begins = np.asarray(starts, dtype=np.int64)[live]
    return int(begins.min()), int((begins + np.asarray(lengths, dtype=np.int64)[live]).max())


def steps_in_blocks(
    source: np.ndarray,
    starts: np.ndarray,
    lengths: np.ndarray,
    origin: int | None = None,
    blocks: range | None = None,
    base: int = 0,
) -> Iterator[np.ndarray]:
    """The rows ``[starts[i], starts[i] + lengths[i])`` of ``source`` as float64 blocks
    ``[n, columns]``, each row once (ranges may overlap), in storage order: BLOCK_ROWS rows
    of the span the ranges cover at a time, less the rows no range covers.

    Blocks are counted from row ``origin`` (default: the first row covered); given
    ``blocks``, only those, from a ``source`` whose first row is row ``base`` (a worker
    holds some rows of the input, and the ranges that reach into them)."""
    order = np.argsort(starts, kind="stable")
    begins = np.asarray(starts, dtype=np.int64)[order]
    ends = begins + np.asarray(lengths, dtype=np.int64)[order]
    live = ends > begins
    begins, ends = begins[live], ends[live]
    if not len(begins):
        return
    reach = np.maximum.accumulate(ends)  # the furthest any range starting here or before goes
    first = int(begins[0]) if origin is None else origin
    last = int(reach[-1])
    count = -(-(last - first) // BLOCK_ROWS)
    for number in range(count) if blocks is None else blocks:
        begin = first + number * BLOCK_ROWS
        rows = np.arange(begin, min(begin + BLOCK_ROWS, last))
        before = np.searchsorted(begins, rows, side="right") - 1  # the last range begun
        inside = (before >= 0) & (reach[np.maximum(before, 0)] > rows)
        if inside.any():
            block = np.asarray(source[begin - base : begin - base + len(rows)], dtype=np.float64)
            yield block if inside.all() else block[inside]
