"""The Plan: which source steps fill which output row. Index arrays only, no data."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from tbptt_cli.errors import UsageError

MAX_AUTO_BATCH = 128
DEFAULT_MAX_FILLER = 0.10
MAX_PADDED_SHARE = 0.5  # above it, a run warns and names the option that cuts the padding


@dataclass(frozen=True)
class BatchChoice:
    """The requested batch layout: ``size`` None for auto, the filler rows auto may add
    (a share of all rows), and the number of data-parallel ranks."""

    size: int | None
    max_filler: float = DEFAULT_MAX_FILLER
    ranks: int = 1
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class Segments:
    """Rows made of several pieces (``--packing stream``), sorted by row then column:
    piece p fills columns ``column[p] : column[p] + length[p]`` of row ``row[p]`` with
    the steps of sequence ``sequence[p]`` that start at ``offset[p]``."""

    row: np.ndarray  # int64 [P]
    column: np.ndarray  # int64 [P]
    sequence: np.ndarray  # int64 [P]
    offset: np.ndarray  # int64 [P]
    length: np.ndarray  # int64 [P]

    def rows(self, start: int, stop: int) -> Segments:
        """The pieces of rows ``start:stop``, their rows counted from ``start``."""
        lo, hi = np.searchsorted(self.row, [start, stop])
        part = slice(int(lo), int(hi))
        return Segments(
            self.row[part] - start,
            self.column[part],
            self.sequence[part],
            self.offset[part],
            self.length[part],
        )


@dataclass(frozen=True)
class Plan:
    """Row s holds ``length[s]`` steps of sequence ``sequence[s]`` starting at ``offset[s]``,
    placed at ``lead[s]`` (left padding) in a window of ``window`` steps.

    ``sequence == -1`` marks a filler row. ``reset`` = 1: zero this row's state first.
    ``loss_from`` (decoupled): the loss counts window steps ``t >= loss_from`` only.
    ``ranks`` > 1: batch k of rank r is rows ``[(k*R + r)*B, (k*R + r + 1)*B)``.
    ``part`` (``--streams``): which of its sequence's parallel streams a row holds.
    ``segments`` (``--packing stream``): the pieces of rows that hold several sequences;
    then ``sequence``/``offset`` name a row's first piece and ``length`` its real steps.
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
    ranks: int = 1
    streams: int = 1
    part: np.ndarray | None = None  # int32 [S], -1 for filler rows
    segments: Segments | None = None
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

    @property
    def filler_rows(self) -> int:
        return int(np.count_nonzero(self.sequence < 0))

    @property
    def filler_share(self) -> float:
        """Filler rows (no real step) over all rows."""
        return self.filler_rows / self.samples if self.samples else 0.0

    @property
    def padded_share(self) -> float:
        """Padded steps (masked tails and filler rows) over all steps."""
        cells = self.samples * self.window
        return (cells - int(self.length.sum(dtype=np.int64))) / cells if cells else 0.0

    def batching(self) -> dict[str, Any]:
        """The batch layout as a run reports it (`batch_text` says it in words)."""
        return {
            "batch_size": self.batch_size,
            "batches": self.batches,
            "filler_share": round(self.filler_share, 6),
            "ranks": self.ranks,
            "streams": self.streams,
        }

    def pieces(self, start: int, stop: int) -> Segments:
        """The real steps of rows ``start:stop`` as pieces, rows counted from ``start``."""
        if self.segments is not None:
            return self.segments.rows(start, stop)
        rows = slice(start, stop)
        return Segments(
            np.arange(stop - start, dtype=np.int64),
            self.lead[rows].astype(np.int64),
            self.sequence[rows],
            self.offset[rows],
            self.length[rows].astype(np.int64),
        )


def batch_text(t: Mapping[str, Any]) -> str:
    """``6 (15 batches, 18.9% filler)``; per rank ``6 x 2 ranks (8 batches each, ...)``;
    and with --streams the parts per sequence (``t``: `Plan.batching`)."""
    size, ranks = t["batch_size"], t["ranks"]
    count = t["batches"] // ranks
    each = f"{count} batch{'es' if count != 1 else ''}" + (" each" if ranks > 1 else "")
    streams = f"{t['streams']} streams per sequence, " if t["streams"] > 1 else ""
    width = f"{size} x {ranks} ranks" if ranks > 1 else f"{size}"
    return f"{width} ({streams}{each}, {t['filler_share']:.1%} filler)"


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


def parse_batch_size(value: str | int, flag: str = "--batch-size") -> int | None:
    """``auto`` gives None; otherwise a positive integer."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        return None
    try:
        size = int(value)
    except (TypeError, ValueError):
        raise UsageError(f"{flag} must be auto or a positive integer, not {value!r}") from None
    if size < 1:
        raise UsageError(f"{flag} must be at least 1, not {size}")
    return size


def batch_choice(params: Any) -> BatchChoice:
    """The batch layout a strategy's parameters ask for (``ranks`` where it has them)."""
    ranks = getattr(params, "ranks", 1)
    if ranks < 1:
        raise UsageError(f"--ranks must be at least 1, not {ranks}")
    size = parse_batch_size(params.batch_size)
    given = params.max_filler
    unused = given is not None and size is not None and getattr(params, "streams", 1) != "auto"
    warnings = (
        f"--max-filler {given} was not used: it bounds the filler of --batch-size auto "
        f"(and --streams auto), and the batch size is {size}",
    )
    max_filler = DEFAULT_MAX_FILLER if given is None else check_max_filler(given)
    return BatchChoice(size, max_filler, ranks, warnings if unused else ())


def check_max_filler(value: float) -> float:
    if not 0 <= value < 1:
        raise UsageError(f"--max-filler must be at least 0 and below 1, not {value}")
    return value


def choose_batch(
    limit: int,
    max_filler: float,
    filler: Callable[[int], tuple[int, int]],
    bound: Callable[[int], tuple[int, int]] | None = None,
) -> int:
    """The largest B <= min(limit, 128) whose ``filler(B)`` = (filler rows, all rows) has
    at most ``max_filler`` of the rows as filler; 1 when none does. ``bound(B)``, a cheap
    lower bound of the filler rows, skips the sizes that cannot pass."""
    for size in range(min(limit, MAX_AUTO_BATCH), 1, -1):
        if bound is not None and not within(*bound(size), max_filler):
            continue
        if within(*filler(size), max_filler):
            return size
    return 1


def within(filler: int, rows: int, max_filler: float) -> bool:
    return filler <= max_filler * rows


def batch_one_warning(max_filler: float, cures: str) -> str:
    return (
        f"--batch-size auto chose 1: every larger batch needs more than {max_filler:.0%} "
        f"filler rows (--max-filler); {cures}"
    )


def padding_warning(plan: Plan, shorter: str) -> str | None:
    """When more than half of the steps are padding: how much, and the option that cures
    it (``shorter``: the cure for padded tails, which is the strategy's)."""
    if plan.padded_share <= MAX_PADDED_SHARE:
        return None
    cells = plan.samples * plan.window
    in_filler = plan.filler_rows * plan.window / cells
    if in_filler >= plan.padded_share / 2:
        cure = "a smaller --batch-size"
        if plan.stateful and plan.packing == "block":
            cure = "--packing lanes (rows take the next sequence) or " + cure
    else:
        cure = shorter
    return (
        f"{plan.padded_share:.0%} of the steps written are padding ({in_filler:.0%} in "
        f"filler rows); {cure} cuts it"
    )


def stateless_hints(samples: int) -> list[int]:
    """The batch sizes a stateless file splits into evenly: divisors of the sample count."""
    return [b for b in range(1, min(samples, 1024) + 1) if samples % b == 0]


def stateless_plan(
    sequence: np.ndarray,
    offset: np.ndarray,
    length: np.ndarray,
    lead: np.ndarray,
    window: int,
    batch: BatchChoice,
    shorter: str,
    **extra: Any,
) -> Plan:
    """Rows that each start from a zero state: ``reset = 1`` everywhere. Padded with
    filler rows to a multiple of the batch size (times the ranks)."""
    rows = len(sequence)
    ranks = batch.ranks

    def filler(size: int) -> tuple[int, int]:
        total = -(-rows // (size * ranks)) * size * ranks
        return total - rows, total

    size = batch.size or choose_batch(max(1, rows), batch.max_filler, filler)
    warnings = [*extra.pop("warnings", ()), *batch.warnings]
    if batch.size is None and size == 1 and rows > 1:
        warnings.append(batch_one_warning(batch.max_filler, "pass --batch-size B"))
    fill = filler_rows(filler(size)[0])
    plan = Plan(
        sequence=np.concatenate([np.asarray(sequence, dtype=np.int64), fill["sequence"]]),
        offset=np.concatenate([np.asarray(offset, dtype=np.int64), fill["offset"]]),
        length=np.concatenate([np.asarray(length, dtype=np.int32), fill["length"]]),
        reset=np.ones(rows + len(fill["reset"]), dtype=np.uint8),
        lead=np.concatenate([np.asarray(lead, dtype=np.int32), fill["lead"]]),
        window=window,
        batch_size=size,
        stateful=False,
        ranks=ranks,
        **extra,
    )
    padded = padding_warning(plan, shorter)
    return replace(plan, warnings=tuple(warnings + ([padded] if padded else [])))
