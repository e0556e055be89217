"""Bounded memory for the table core: rows held until ``--memory-limit``, then spilled.

Parsed rows stay in memory up to the budget; beyond it they go to an anonymous temporary
file beside the output (``spill_dir``), memory-mapped at the end. Rows of one sequence
need not be contiguous: spilled rows are grouped (and sorted by time) through bucket
files, one bucket in memory at a time (`regrouped`).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import IO, Any

import numpy as np

from tbptt_cli.materialize import release

CODES_BUDGET = 16 << 20  # bytes of int32 sequence codes held before they spill
REORDER_ROWS = 1 << 20  # rows read per step when grouping through the spill file ...
MAX_BUCKETS = 64  # ... into at most this many buckets (one file per array, and the codes)


def spill_file(directory: str | None) -> IO[bytes]:
    """An unnamed temporary file: nothing is left behind, whatever ends the run."""
    return tempfile.TemporaryFile(dir=directory or None, prefix=".tbptt-spill-")


def mapped(file: IO[bytes], rows: int, width: int, dtype: Any = np.float64) -> np.ndarray:
    """The spill file as a read-only memmap; the map keeps the unnamed file alive."""
    with file:
        file.flush()
        if rows == 0 or width == 0:
            return np.zeros((rows, width), dtype=dtype)
        return np.memmap(file, dtype=dtype, mode="r", shape=(rows, width))


@dataclass
class Store:
    """Rows of ``width`` values kept in memory until they pass the budget, then in a file.

    In memory they fill one buffer, sized from ``expected`` rows (a reader's estimate)
    and grown by half when that was short: no list of parts joined at the end, which
    held every row twice. Given a ``path``, they spill to that file (raw, no header).
    A store narrower than float64 (values only ever written at the output's precision)
    turns float64 at the first value it cannot hold, so that the writer sees that value,
    and refuses it as it would have."""

    width: int
    budget: int
    spill_dir: str | None
    dtype: Any = np.float64
    expected: int = 0
    path: str | None = None
    buffer: np.ndarray | None = None
    file: IO[bytes] | None = None
    rows: int = 0
    scratch: np.ndarray | None = None

    def add(self, block: np.ndarray) -> None:
        """Rows ``[count, width]``."""
        self.add_columns([block[:, j] for j in range(block.shape[1])], len(block))

    def add_columns(self, columns: Sequence[np.ndarray], count: int) -> None:
        """``count`` rows given as their ``width`` columns, of any numeric dtype: each is
        converted as it is copied into place, with no block of the rows made first."""
        if self.width and count:
            try:
                with np.errstate(over="raise"):
                    self._place(columns, count)
            except FloatingPointError:
                self._widen()
                self._place(columns, count)
        self.rows += count

    def _place(self, columns: Sequence[np.ndarray], count: int) -> None:
        row_bytes = self.width * np.dtype(self.dtype).itemsize
        # Spill at once when the rows expected will not fit: filling memory first only
        # to copy it all to the file costs a second copy and the memory's page faults.
        needed = max(self.rows + count, self.expected if self.buffer is None else 0)
        if self.file is None and needed * row_bytes > self.budget:
            self._spill()
        if self.file is None:
            self._fit(self.rows + count, row_bytes)
            assert self.buffer is not None
            room = self.buffer[self.rows : self.rows + count]
        else:  # through one reused block (a fresh one would fault in its pages)
            if self.scratch is None or len(self.scratch) < count:
                self.scratch = np.empty((count, self.width), dtype=self.dtype)
            room = self.scratch[:count]
        for j, column in enumerate(columns):
            room[:, j] = column
        if self.file is not None:
            room.tofile(self.file)

    def _widen(self) -> None:
        """float64 from now on; the rows so far convert exactly."""
        narrow, self.dtype, self.scratch = self.dtype, np.dtype(np.float64), None
        if self.buffer is not None:
            self.buffer = self.buffer.astype(self.dtype)
        elif self.file is not None:
            rows = mapped(self.file, self.rows, self.width, narrow)
            self.file = self._new_file()
            for start in range(0, self.rows, REORDER_ROWS):
                rows[start : start + REORDER_ROWS].astype(self.dtype).tofile(self.file)

    def _fit(self, rows: int, row_bytes: int) -> None:
        held = 0 if self.buffer is None else len(self.buffer)
        if held >= rows:
            return
        capacity = max(rows, held + held // 2, min(self.expected, self.budget // row_bytes))
        grown = np.empty((capacity, self.width), dtype=self.dtype)
        if self.buffer is not None:
            grown[: self.rows] = self.buffer[: self.rows]
        self.buffer = grown

    def _spill(self) -> None:
        self.file = self._new_file()
        if self.buffer is not None:
            self.buffer[: self.rows].tofile(self.file)
        self.buffer = None

    def _new_file(self) -> IO[bytes]:
        """An unnamed spill file, or a new file at ``path``: one there before (the narrow
        rows `_widen` reads through a map) is unlinked, not overwritten."""
        if self.path is None:
            return spill_file(self.spill_dir)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        return open(self.path, "w+b")  # noqa: SIM115

    def array(self) -> np.ndarray:
        """The rows, once: the buffer is let go (trimmed if the estimate was far off)."""
        self.scratch = None
        if self.file is not None:
            return mapped(self.file, self.rows, self.width, self.dtype)
        buffer, self.buffer = self.buffer, None
        if buffer is None:
            return np.zeros((self.rows if not self.width else 0, self.width), self.dtype)
        if len(buffer) > self.rows + self.rows // 4:
            return buffer[: self.rows].copy()
        return buffer[: self.rows]

    def close(self) -> None:
        self.buffer = self.scratch = None
        if self.file is not None:
            self.file.close()


class Codes:
    """Every row's sequence number, with what the end needs counted on the way: rows per
    sequence and whether the rows already come grouped (and in time order).

    Rows come as runs of one sequence. While they come grouped, a row's number follows
    from the counts (numbers count up from 0 in order of first appearance), so none is
    kept: the int32 numbers (spilled beyond 16 MiB) are written from the first batch that
    breaks the grouping on, with those of the rows before it, since only then does the
    end read them. A grouped file costs a few steps per sequence, not per row."""

    def __init__(self, spill_dir: str | None, budget: int | None = None) -> None:
        self.spill_dir = spill_dir
        self.budget = CODES_BUDGET if budget is None else budget
        self.parts: list[np.ndarray] = []  # held until they pass the budget
        self.file: IO[bytes] | None = None
        self.rows = 0
        self.kept = 0  # rows whose numbers are written
        self.lengths = np.zeros(0, dtype=np.int64)
        self.grouped = True
        self.repeats = False  # a time repeats within a sequence (known while grouped)
        self.last: tuple[int, Any] | None = None  # the previous row's number and time

    def add(self, runs: np.ndarray, lengths: np.ndarray, time: np.ndarray | None) -> None:
        """One batch: its runs' sequence numbers and lengths, and every row's time."""
        if not len(runs):
            return
        if self.grouped:
            self.grouped, repeats = _grouped(runs, lengths, time, self.last)
            self.repeats |= repeats
            self.last = (int(runs[-1]), time[-1] if time is not None else None)
            if not self.grouped:
                self._keep_counted()
        if not self.grouped:
            self._keep(np.repeat(runs.astype(np.int32), lengths))
        self.rows += int(lengths.sum())
        self._count(runs, lengths)

    def _count(self, runs: np.ndarray, lengths: np.ndarray) -> None:
        high = int(runs.max())
        if high >= len(self.lengths):
            grow = max(high + 1 - len(self.lengths), len(self.lengths))
            self.lengths = np.concatenate([self.lengths, np.zeros(grow, dtype=np.int64)])
        np.add.at(self.lengths, runs, lengths)

    def _keep_counted(self) -> None:
        """The numbers of the rows counted so far (grouped: sequence i, lengths[i] times)."""
        ends = np.cumsum(self.lengths)
        for start in range(self.kept, self.rows, REORDER_ROWS):
            rows = np.arange(start, min(self.rows, start + REORDER_ROWS))
            self._keep(np.searchsorted(ends, rows, side="right").astype(np.int32))

    def _keep(self, codes: np.ndarray) -> None:
        if self.file is None and (self.kept + len(codes)) * codes.itemsize > self.budget:
            self.file = spill_file(self.spill_dir)
            for part in self.parts:
                part.tofile(self.file)
            self.parts = []
        if self.file is not None:
            codes.tofile(self.file)
        else:
            self.parts.append(codes)
        self.kept += len(codes)

    def array(self) -> np.ndarray:
        """All the codes, read back (only for in-memory rows that must be regrouped)."""
        return np.concatenate(list(self.pieces(self.rows))) if self.rows else np.zeros(0, np.int32)

    def pieces(self, rows: int) -> Iterator[np.ndarray]:
        """The codes in file order, ``rows`` at a time."""
        self._keep_counted()  # grouped to the end: the numbers follow from the counts
        if self.file is None:
            held = np.concatenate(self.parts) if self.parts else np.zeros(0, dtype=np.int32)
            for start in range(0, len(held), rows):
                yield held[start : start + rows]
            return
        self.file.flush()
        self.file.seek(0)
        for start in range(0, self.rows, rows):
            yield np.fromfile(self.file, dtype=np.int32, count=min(rows, self.rows - start))

    def close(self) -> None:
        self.parts = []
        if self.file is not None:
            self.file.close()


def _grouped(
    runs: np.ndarray,
    lengths: np.ndarray,
    time: np.ndarray | None,
    last: tuple[int, Any] | None,
) -> tuple[bool, bool]:
    """Whether rows of a sequence are contiguous (numbers come by first appearance, so
    each run's number is above the one before, the first no lower than the last row's)
    and, with a time column, in time order within a sequence; and whether a time repeats
    within a sequence."""
    if (last is not None and runs[0] < last[0]) or bool((np.diff(runs) < 0).any()):
        return False, False
    if time is None:
        return True, False
    forward = np.diff(time)
    forward[np.cumsum(lengths)[:-1] - 1] = 1  # from one sequence to the next: no order
    # In order: no step back; a repeat: a step of 0 (the least step, when in order).
    least = forward.min() if len(forward) else 1
    if last is not None and runs[0] == last[0]:  # the sequence goes on from the last batch
        least = min(least, time[0] - last[1])
    return bool(least >= 0), bool(least == 0)


def order(sequence: np.ndarray, time: np.ndarray | None) -> np.ndarray:
    """The stable permutation that groups rows by sequence, then time."""
    if time is None:
        return np.argsort(sequence, kind="stable")
    return np.lexsort((time, sequence))


def regrouped(
    arrays: list[np.ndarray],
    codes: Codes,
    lengths: np.ndarray,
    time: int | None,
    spill_dir: str | None,
    budget: int,
) -> list[np.ndarray]:
    """Rows grouped by sequence (then by ``arrays[time]``), each array in the same order.

    Rows held in memory are sorted at once. Spilled rows go through two sequential
    passes, so neither a permutation of every row nor the pages of the whole spill file
    are ever held: consecutive sequences are dealt into buckets of about ``budget / 4``
    bytes (a longer sequence gets one of its own; the sort holds a bucket twice, and the
    writer's slabs come on top). The first pass reads the rows in file order and appends
    each to its bucket's files; the second sorts one bucket at a time in memory (stably,
    as one sort of every row would) and appends it to the grouped files.
    """
    if not any(isinstance(a, np.memmap) for a in arrays):
        permutation = order(codes.array(), arrays[time][:, 0] if time is not None else None)
        return [a[permutation] if a.shape[1] else a for a in arrays]
    row_bytes = sum(a.itemsize * a.shape[1] for a in arrays) + 4  # and an int32 code
    first_byte = (np.cumsum(lengths) - lengths) * row_bytes
    total = int(first_byte[-1] + lengths[-1] * row_bytes)
    target = max(budget // 4, total // MAX_BUCKETS + 1, 1)
    # Bucket numbers 0..K-1 without gaps, as int16: a stable argsort of those is a radix sort.
    bucket_of = np.unique(first_byte // target, return_inverse=True)[1].astype(np.int16)
    count = int(bucket_of.max()) + 1
    buckets = [[spill_file(spill_dir) for _ in range(len(arrays) + 1)] for _ in range(count)]
    step = max(1, min(REORDER_ROWS, budget // 4 // row_bytes))
    try:
        _deal(arrays, codes, bucket_of, buckets, step)
        return _sort_buckets(arrays, buckets, codes.rows, time, spill_dir)
    finally:
        for files in buckets:
            for file in files:
                file.close()


def _deal(
    arrays: list[np.ndarray],
    codes: Codes,
    bucket_of: np.ndarray,
    buckets: list[list[IO[bytes]]],
    step: int,
) -> None:
    """Append every row, in file order, to the files of its sequence's bucket."""
    start = 0
    for piece in codes.pieces(step):
        stop = start + len(piece)
        parts = [np.asarray(array[start:stop]) for array in arrays] + [piece]
        release(*arrays)  # read once, in order: no page of them is needed again
        which = bucket_of[piece]
        permutation = np.argsort(which, kind="stable")
        bounds = np.searchsorted(which[permutation], np.arange(len(buckets) + 1))
        for k in np.flatnonzero(np.diff(bounds)):
            rows = permutation[bounds[k] : bounds[k + 1]]
            for part, file in zip(parts, buckets[k], strict=True):
                part[rows].tofile(file)
        start = stop


def _sort_buckets(
    arrays: list[np.ndarray],
    buckets: list[list[IO[bytes]]],
    rows: int,
    time: int | None,
    spill_dir: str | None,
) -> list[np.ndarray]:
    grouped = [spill_file(spill_dir) for _ in arrays]
    for files in buckets:
        for file in files:
            file.flush()
            file.seek(0)
        sequence = np.fromfile(files[-1], dtype=np.int32)
        held = [
            np.fromfile(f, a.dtype).reshape(len(sequence), a.shape[1])
            for f, a in zip(files, arrays, strict=False)
        ]
        for file in files:
            file.close()
        permutation = order(sequence, held[time][:, 0] if time is not None else None)
        for part, file in zip(held, grouped, strict=True):
            part[permutation].tofile(file)
        del held, permutation
    return [
        mapped(file, rows, a.shape[1], a.dtype) for file, a in zip(grouped, arrays, strict=True)
    ]
