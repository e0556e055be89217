"""What ``--nan ffill|zero|drop`` repaired, counted, so that a run says it.

Counted where the repair is made (`readers.repair_missing`), or by the Dask engine on each
part as read when no step changes between the read and the repair; the counts of the
pieces add up like `steps.Changes`, so every engine and every split of an input into
parts says the same.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from tbptt_cli.sequences import SequenceSet, SourceInfo

REPAIRS = ("ffill", "zero", "drop")
SLAB_BYTES = 16 << 20  # cells are counted a slab at a time (the values may be a memory map)
NAMED = 8  # the warning names this many columns, those with the most repairs
DONE = {"ffill": "filled from the step before", "zero": "set to 0"}


@dataclass(frozen=True)
class Repairs:
    """Missing (NaN/inf) cells per feature and target column, every column in input order
    (zeros too); the steps looked at; with ``--nan drop``, the steps dropped and the
    sequences that lost some."""

    columns: dict[str, int] = field(default_factory=dict)
    steps: int = 0
    dropped: int = 0
    shortened: int = 0

    @classmethod
    def counted(cls, names: Sequence[str], cells: np.ndarray, steps: int) -> Repairs:
        return cls(dict(zip(names, np.asarray(cells).tolist(), strict=True)), steps)

    @classmethod
    def clean(cls, data: SequenceSet) -> Repairs:
        """Nothing missing in ``data``."""
        names = columns(data)
        return cls.counted(names, np.zeros(len(names), dtype=np.int64), len(data.values))

    def __add__(self, other: Repairs) -> Repairs:
        summed = dict(self.columns)
        for name, count in other.columns.items():
            summed[name] = summed.get(name, 0) + count
        return Repairs(
            summed,
            self.steps + other.steps,
            self.dropped + other.dropped,
            self.shortened + other.shortened,
        )

    @property
    def cells(self) -> int:
        return sum(self.columns.values())

    def warnings(self, mode: str) -> list[str]:
        cells = self.cells
        if not cells:
            return []
        found = sorted(((-n, i, name) for i, (name, n) in enumerate(self.columns.items()) if n))
        named = ", ".join(f"{name} {-n:,}" for n, _, name in found[:NAMED])
        if len(found) > NAMED:
            named += f" and {len(found) - NAMED} more"
        where = f"in {len(found)} column(s): {named}"
        if mode == "drop":
            return [
                f"--nan drop: dropped {self.dropped:,} step(s) "
                f"({_share(self.dropped, self.steps)} of steps) from {self.shortened:,} "
                f"sequence(s), for {cells:,} missing cell(s) {where}"
            ]
        values = self.steps * len(self.columns)
        return [
            f"--nan {mode}: {cells:,} missing cell(s) ({_share(cells, values)} of values) "
            f"{DONE[mode]}, {where}"
        ]

    def document(self, mode: str) -> dict[str, Any]:
        """The manifest's ``input.missing``."""
        return {
            "nan": mode,
            "cells": self.cells,
            "columns": dict(self.columns),
            "steps_dropped": self.dropped,
            "sequences_shortened": self.shortened,
        }


def _share(part: int, whole: int) -> str:
    percent = 100 * part / max(whole, 1)
    return "<0.1%" if percent < 0.05 else f"{percent:.1f}%"


def columns(data: SequenceSet) -> list[str]:
    """The columns a repair looks at: the features, then the targets read from a column
    (``--target next`` is made after the repair, from the repaired features)."""
    return [*data.feature_names, *(data.target_names if data.targets is not None else [])]


def missing_cells(arrays: Sequence[np.ndarray]) -> np.ndarray:
    """The non-finite cells of each column of ``arrays`` side by side, a slab at a time."""
    counts = np.zeros(sum(a.shape[1] for a in arrays), dtype=np.int64)
    step = max(1, SLAB_BYTES // (8 * max(len(counts), 1)))
    for start in range(0, len(arrays[0]), step):
        slabs = [np.asarray(a[start : start + step]) for a in arrays]
        counts += np.concatenate([np.count_nonzero(~np.isfinite(x), axis=0) for x in slabs])
    return counts


def reported(source: SourceInfo, repairs: Repairs, mode: str) -> SourceInfo:
    """``source`` with what ``--nan`` repaired among its warnings and in the manifest's
    ``input.missing`` (nothing under ``--nan error``: a missing cell stopped the run)."""
    if mode not in REPAIRS:
        return source
    return replace(
        source,
        warnings=(*source.warnings, *repairs.warnings(mode)),
        details={**source.details, "missing": repairs.document(mode)},
    )
