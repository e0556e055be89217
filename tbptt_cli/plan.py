"""The Plan: which source steps fill which output row. Index arrays only, no data."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tbptt_cli.errors import UsageError


@dataclass(frozen=True)
class Plan:
    """Row s holds ``length[s]`` steps of sequence ``sequence[s]`` starting at ``offset[s]``,
    placed at ``lead[s]`` (left padding) in a window of ``window`` steps.

    ``sequence == -1`` marks a filler row. ``reset`` = 1: zero this row's state first.
    ``loss_from`` (decoupled): the loss counts window steps ``t >= loss_from`` only.
    """

    sequence: np.ndarray  # int64 [S]
    offset: np.ndarray  # int64 [S]
    length: np.ndarray  # int32 [S]
    reset: np.ndarray  # uint8 [S]
    lead: np.ndarray  # int32 [S]
    window: int
    batch_size: int
    stateful: bool
    packing: str | None = None
    order: str | None = None
    batch_length: np.ndarray | None = None  # int32 [batches], variable-length BPTT
    loss_from: int | None = None
    attrs: dict[str, Any] = field(default_factory=dict)  # extra HDF5 root attributes
    report: dict[str, Any] = field(default_factory=dict)  # extra manifest keys ("analysis")
    text: str = ""  # for people, on stderr unless -q/--json (a correlogram)
    warnings: tuple[str, ...] = ()

    @property
    def samples(self) -> int:
        return len(self.sequence)

    @property
    def batches(self) -> int:
        return -(-self.samples // self.batch_size)


def filler_rows(samples: int) -> dict[str, Any]:
    """Index arrays for ``samples`` rows that are all filler (no real step)."""
    return {
        "sequence": np.full(samples, -1, dtype=np.int64),
        "offset": np.zeros(samples, dtype=np.int64),
        "length": np.zeros(samples, dtype=np.int32),
        "reset": np.zeros(samples, dtype=np.uint8),
        "lead": np.zeros(samples, dtype=np.int32),
    }


def ragged_arange(counts: np.ndarray) -> np.ndarray:
    """``concatenate([arange(c) for c in counts])`` without the Python loop."""
    counts = np.asarray(counts, dtype=np.int64)
    total = int(counts.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    ends = np.cumsum(counts)
    starts = np.repeat(ends - counts, counts)
    return np.arange(total, dtype=np.int64) - starts


def parse_batch_size(value: str | int) -> int | None:
    """``auto`` gives None; otherwise a positive integer."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        return None
    try:
        size = int(value)
    except (TypeError, ValueError):
        raise UsageError(
            f"--batch-size must be auto or a positive integer, not {value!r}"
        ) from None
    if size < 1:
        raise UsageError(f"--batch-size must be at least 1, not {size}")
    return size


def stateless_hints(samples: int) -> tuple[int, list[int]]:
    """(recommended, valid) batch sizes of a stateless file: divisors of the sample count."""
    valid = [b for b in range(1, min(samples, 1024) + 1) if samples % b == 0]
    small = [b for b in valid if b <= 128]
    return (small[-1] if small else 1), valid


def stateless_plan(
    sequence: np.ndarray,
    offset: np.ndarray,
    length: np.ndarray,
    lead: np.ndarray,
    window: int,
    batch_size: int | None = None,
    **extra: Any,
) -> Plan:
    """Rows that each start from a zero state: ``reset = 1`` everywhere, any batch size."""
    rows = len(sequence)
    return Plan(
        sequence=np.asarray(sequence, dtype=np.int64),
        offset=np.asarray(offset, dtype=np.int64),
        length=np.asarray(length, dtype=np.int32),
        reset=np.ones(rows, dtype=np.uint8),
        lead=np.asarray(lead, dtype=np.int32),
        window=window,
        batch_size=batch_size or stateless_hints(rows)[0],
        stateful=False,
        **extra,
    )
