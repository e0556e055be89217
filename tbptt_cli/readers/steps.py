"""Rows grouped and in time order, made regular: duplicate times and ``--freq`` gaps.

Two rows of one sequence at the same time are refused, naming both (``--duplicates
error``), or merged: the first, the last or their mean. With ``--freq`` every step must be
a whole number of periods; a missing step (a gap) is refused, starts a new sequence
(``--gaps split``, ids ``name#1``, ``name#2``, ...) or is inserted as NaN for ``--nan`` to
fill (``--gaps fill``). Checks read the time column in slabs; rewrites go sequence by
sequence into spilling stores, so a large input stays within ``--memory-limit``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from tbptt_cli.errors import DUPLICATE_TIME, GAP, OFF_GRID, InputDataError
from tbptt_cli.options import InputOptions
from tbptt_cli.readers.buffers import local_codes
from tbptt_cli.readers.columns import Roles, yyyymmdd
from tbptt_cli.readers.source import Source
from tbptt_cli.readers.spill import Store
from tbptt_cli.readers.timecol import NUMBER, NotTime, parse_freq, shown, times

SLAB_ROWS = 1 << 20
Arrays = list[np.ndarray]  # values [N, F], rest [N, R] (target first), time [N, 1]


class RowFinder:
    """Where the rows of one sequence at one time are: the input is read again, id and
    time columns only (the error path of duplicates and gaps)."""

    def __init__(
        self,
        parts: Sequence[Any],
        reopen: Callable[[Any], Source],
        roles: Roles,
        kind: str | None,
    ) -> None:
        self.parts, self.reopen, self.kind = parts, reopen, kind
        self.roles = Roles(roles.id, roles.time, [])

    def places(self, sequence: str, when: float, count: int = 2) -> list[str]:
        found: list[str] = []
        for part in self.parts:
            with self.reopen(part) as source:
                row = 0
                for batch in source.batches(self.roles, self.kind):
                    for r in self._matches(batch, sequence, when)[: count - len(found)]:
                        found.append(source.row_place(row + int(r)))
                    if len(found) >= count:
                        return found
                    row += batch.num_rows
        return found

    def _matches(self, batch: Any, sequence: str, when: float) -> np.ndarray:

        try:
            match = times(batch.column(str(self.roles.time))).values == when
        except NotTime:
            return np.zeros(0, dtype=np.int64)
        if self.roles.id is not None:
            local, keys, _ = local_codes(batch.column(self.roles.id))
            if sequence not in keys:
                return np.zeros(0, dtype=np.int64)
            match &= local == keys.index(sequence)
        return np.flatnonzero(match)


@dataclass(frozen=True)
class Rows:
    """Rows read, grouped by sequence (numbered by first appearance), in time order within
    each: ``arrays`` are the features [N, F], the other float columns [N, R] (the target
    first, then the kept columns) and the time [N, 1] as read (numbers, or microseconds;
    width 0 without a time column)."""

    arrays: Arrays
    lengths: np.ndarray
    ids: list[str]
    repeats: bool  # a time may repeat within a sequence
    # After --gaps split: the sequence of the rows read each sequence was cut from.
    owner: np.ndarray | None = None


@dataclass
class Changes:
    """What `regularize` did, counted: the warnings say it once for the whole input, also
    when its sequences were made regular in several pieces (by Dask workers)."""

    merged: int = 0  # rows at the time of the row before them, merged into it
    gaps: int = 0
    inserted: int = 0  # rows inserted by --gaps fill

    def __add__(self, other: Changes) -> Changes:
        return Changes(
            self.merged + other.merged, self.gaps + other.gaps, self.inserted + other.inserted
        )

    @property
    def rows(self) -> bool:
        """Whether rows were merged or inserted (``--gaps split`` only renames)."""
        return bool(self.merged or self.inserted)

    def warnings(self, opts: InputOptions) -> list[str]:
        found = []
        if self.merged:
            found.append(
                f"--duplicates {opts.duplicates}: {self.merged} row(s) at the same "
                f"{opts.time_col} as the row before them in their sequence were merged"
            )
        what = f"{self.gaps} gap(s) at --freq {opts.freq}"
        if self.gaps and opts.gaps == "split":
            found.append(f"--gaps split: {what} started new sequences (ids name#1, name#2, ...)")
        elif self.gaps:
            found.append(
                f"--gaps fill: {what}: {self.inserted} missing step(s) inserted, filled by "
                f"--nan {opts.nan}"
            )
        return found


def regularize(
    rows: Rows,
    kind: str | None,
    opts: InputOptions,
    finder: RowFinder,
    target_width: int,
    changes: Changes,
    budget: int,
    spill_dir: str | None,
) -> Rows:
    """Duplicate times dealt with (looked for only if a time repeats, or may), then gaps;
    what it did is counted in ``changes``."""
    arrays, lengths, ids = rows.arrays, rows.lengths, rows.ids
    kind = kind or NUMBER
    name = str(opts.time_col)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    found = [r[d == 0] for r, d in _differences(arrays[2], offsets)] if rows.repeats else []
    duplicates = np.concatenate(found or [np.zeros(0, int)])
    if len(duplicates):
        first = duplicates[0]
        sequence = ids[int(np.searchsorted(offsets, first, side="right")) - 1]
        when = arrays[2][first, 0]
        if opts.duplicates == "error":
            places = " and ".join(finder.places(sequence, when))
            raise InputDataError(
                f"{places}: two rows of sequence '{sequence}' have {name} {shown(when, kind)}; "
                "keep one, or pass --duplicates first|last|mean",
                DUPLICATE_TIME,
            )
        arrays, lengths = rewrite(arrays, lengths, lambda a, n: _merge(a, n, opts.duplicates),
                                  budget, spill_dir)  # fmt: skip
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        changes.merged += len(duplicates)
    if opts.freq is None:
        return replace(rows, arrays=arrays, lengths=lengths)
    step = parse_freq(opts.freq, kind)
    gaps = _gaps(arrays[2], offsets, step, ids, name, kind, opts.freq, finder)
    if not len(gaps):
        return replace(rows, arrays=arrays, lengths=lengths)
    if opts.gaps == "error":
        row = int(gaps[0])
        sequence = ids[int(np.searchsorted(offsets, row, side="right")) - 1]
        before, after = arrays[2][row - 1, 0], arrays[2][row, 0]
        rows_at = finder.places(sequence, before, 1) + finder.places(sequence, after, 1)
        missing = int(round((after - before) / step)) - 1
        raise InputDataError(
            f"{' and '.join(rows_at)}: sequence '{sequence}' skips {missing} step(s) of --freq "
            f"{opts.freq} between {name} {shown(before, kind)} and {shown(after, kind)}; pass "
            "--gaps split or --gaps fill (or check --freq)",
            GAP,
        )
    changes.gaps += len(gaps)
    if opts.gaps == "split":
        lengths, ids, owner = _split(offsets, gaps, ids)
        return replace(rows, arrays=arrays, lengths=lengths, ids=ids, owner=owner)
    before_rows = int(offsets[-1])
    arrays, lengths = rewrite(arrays, lengths, lambda a, n: _fill(a, n, step, target_width),
                              budget, spill_dir)  # fmt: skip
    changes.inserted += int(lengths.sum()) - before_rows
    return replace(rows, arrays=arrays, lengths=lengths)


def _differences(time: np.ndarray, offsets: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(row, its time minus the time of the row before) for every row that is not the
    first of its sequence, a slab at a time."""
    total = int(offsets[-1])
    for start in range(1, total, SLAB_ROWS):
        stop = min(total, start + SLAB_ROWS)
        t = np.asarray(time[start - 1 : stop, 0])
        rows = np.arange(start, stop)
        first = offsets[np.minimum(np.searchsorted(offsets, rows), len(offsets) - 1)] == rows
        yield rows[~first], np.diff(t)[~first]


def _gaps(
    time: np.ndarray,
    offsets: np.ndarray,
    step: float,
    ids: list[str],
    name: str,
    kind: str,
    freq: str,
    finder: RowFinder,
) -> np.ndarray:
    """Rows that follow a gap; a step that is not a whole number of periods is an error."""
    found = []
    for rows, d in _differences(time, offsets):
        periods = d / step
        off = np.abs(periods - np.round(periods)) > 1e-9 * np.maximum(1.0, np.abs(periods))
        if off.any():
            row = int(rows[np.argmax(off)])
            sequence = ids[int(np.searchsorted(offsets, row, side="right")) - 1]
            before, after = time[row - 1, 0], time[row, 0]
            places = finder.places(sequence, before, 1) + finder.places(sequence, after, 1)
            dates = kind == NUMBER and yyyymmdd(np.array([before, after]))
            raise InputDataError(
                f"{' and '.join(places)}: sequence '{sequence}' goes from {name} "
                f"{shown(before, kind)} to {shown(after, kind)}, not a whole number of "
                f"--freq {freq} steps; check --freq"
                + (
                    " (yyyymmdd numbers are not evenly spaced: write the dates as ISO 8601 text, "
                    "2024-03-31, and give --freq a duration such as 7D)"
                    if dates
                    else ""
                ),
                OFF_GRID,
            )
        found.append(rows[np.round(periods) > 1])
    return np.concatenate(found) if found else np.zeros(0, dtype=np.int64)


def _split(
    offsets: np.ndarray, gaps: np.ndarray, ids: list[str]
) -> tuple[np.ndarray, list[str], np.ndarray]:
    cuts = np.union1d(offsets, gaps)
    lengths = np.diff(cuts)
    owner = np.searchsorted(offsets, cuts[:-1], side="right") - 1
    pieces = np.bincount(owner, minlength=len(ids))
    number = np.arange(len(owner)) - np.searchsorted(owner, owner)
    names = [
        ids[o] if pieces[o] == 1 else f"{ids[o]}#{k + 1}"
        for o, k in zip(owner.tolist(), number.tolist(), strict=True)
    ]
    return lengths, names, owner


def rewrite(
    arrays: Arrays,
    lengths: np.ndarray,
    change: Callable[[Arrays, np.ndarray], tuple[Arrays, np.ndarray]],
    budget: int,
    spill_dir: str | None,
) -> tuple[Arrays, np.ndarray]:
    """``change`` applied to whole sequences, about SLAB_ROWS rows at a time, into stores
    that spill beyond the budget."""
    stores = [Store(a.shape[1], budget // 3, spill_dir, a.dtype) for a in arrays]
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    new_lengths = []
    first = 0
    while first < len(lengths):
        last = max(
            first + 1, int(np.searchsorted(offsets, offsets[first] + SLAB_ROWS, "right")) - 1
        )
        rows = slice(int(offsets[first]), int(offsets[last]))
        changed, counts = change([np.asarray(a[rows]) for a in arrays], lengths[first:last])
        for store, part in zip(stores, changed, strict=True):
            store.add(part)
        new_lengths.append(counts)
        first = last
    return [s.array() for s in stores], np.concatenate(new_lengths).astype(np.int64)


def _merge(arrays: Arrays, lengths: np.ndarray, mode: str) -> tuple[Arrays, np.ndarray]:
    values, rest, time = arrays
    t = time[:, 0]
    new = np.r_[True, t[1:] != t[:-1]]
    new[np.cumsum(lengths)[:-1]] = True  # a sequence's first row starts a group
    starts = np.flatnonzero(new)
    owner = np.repeat(np.arange(len(lengths)), lengths)[starts]
    counts = np.bincount(owner, minlength=len(lengths))
    if mode == "mean":
        size = np.diff(np.r_[starts, len(t)])[:, None]
        merged = [np.add.reduceat(a, starts, axis=0) / size if a.shape[1] else a[starts]
                  for a in (values, rest)]  # fmt: skip
        return [*merged, time[starts]], counts
    take = starts if mode == "first" else np.r_[starts[1:], len(t)] - 1
    return [a[take] for a in arrays], counts


def _fill(
    arrays: Arrays, lengths: np.ndarray, step: float, target_width: int
) -> tuple[Arrays, np.ndarray]:
    """Missing steps inserted after the row before each gap: NaN features and targets,
    kept columns (a boundary flag) 0, the time on the grid."""
    values, rest, time = arrays
    t = time[:, 0]
    missing = np.zeros(len(t), dtype=np.int64)
    ends = np.cumsum(lengths) - 1
    periods = np.r_[np.round(np.diff(t) / step), 1].astype(np.int64) - 1
    periods[ends] = 0
    missing[:] = np.maximum(periods, 0)
    position = np.arange(len(t)) + np.r_[0, np.cumsum(missing)[:-1]]
    total = len(t) + int(missing.sum())
    out_values = np.full((total, values.shape[1]), np.nan)
    out_rest = np.zeros((total, rest.shape[1]))
    out_rest[:, :target_width] = np.nan
    out_values[position], out_rest[position] = values, rest
    owner = np.repeat(np.arange(len(t)), missing + 1)
    within = np.arange(total) - position[owner]
    out_time = (t[owner] + within * step).astype(time.dtype)[:, None]
    sequence_of_row = np.repeat(np.arange(len(lengths)), lengths)
    counts = lengths + np.bincount(sequence_of_row, weights=missing, minlength=len(lengths))
    return [out_values, out_rest, out_time], counts.astype(np.int64)
