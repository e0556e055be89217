"""The one core every table format feeds: parts -> record batches -> `SequenceSet`.

Formats are chosen from one table (`SOURCES`, format -> `Source`); each part of the
input is opened as a `Source` and its record batches go through one `Assembler`: float64
columns side by side, each row's sequence number (by first appearance), its time, all
held in memory up to ``--memory-limit`` and spilled beyond it. At the end rows are
grouped by sequence and ordered by time (only if they did not come so), duplicate times
and gaps are dealt with (`steps`), and the columns become a `SequenceSet`.

The seam for reading parts elsewhere (one part per Dask worker, `parts.py`): the `Layout`
is decided once, on the first part; an assembler reads one part into `Rows` (grouped and
in time order within that part); rows of whole sequences are made `regular` and then
`as_sequences`; and the `OrderWatch` of each part can be `joined`.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from shlex import quote
from typing import IO, Any, BinaryIO

import numpy as np

from tbptt_cli.errors import InputDataError
from tbptt_cli.options import InputOptions
from tbptt_cli.readers import NAN_FIX, all_finite, steps
from tbptt_cli.readers.buffers import local_runs, numbers, numeric, text_type, valid
from tbptt_cli.readers.columns import Roles, resolve_roles
from tbptt_cli.readers.inputs import Part
from tbptt_cli.readers.source import Matrix, Source
from tbptt_cli.readers.spill import Codes, Store, regrouped, spill_file
from tbptt_cli.readers.steps import Rows
from tbptt_cli.readers.timecol import NUMBER, NotTime, check_kind, seconds, times
from tbptt_cli.sequences import FileInfo, SequenceSet

ARRAYS = ("values", "rest", "time")  # the names of `Rows.arrays`
SOURCES = {  # format -> the `Source` that reads it, imported on first use
    "csv": "tbptt_cli.readers.csvfile:CsvSource",
    "tsv": "tbptt_cli.readers.csvfile:CsvSource",
    "parquet": "tbptt_cli.readers.columnar:ParquetSource",
    "arrow": "tbptt_cli.readers.columnar:ArrowSource",
}


def open_source(
    part: Part,
    opts: InputOptions,
    stdin: BinaryIO,
    tee: IO[bytes] | None,
    tick: Callable[[int], None] | None,
) -> Source:
    """The part opened by its format's `Source` (stdin, its copy and the progress tick
    matter to text formats only)."""
    module, name = SOURCES[part.format].split(":")
    source: Source = getattr(importlib.import_module(module), name)(part, opts, stdin, tee, tick)
    return source


def read_table(
    parts: Sequence[Part],
    opts: InputOptions,
    keep: Sequence[str],
    stdin: BinaryIO,
    budget: int,
    spill_dir: str | None,
    tick: Callable[[int], None] | None,
    values_dtype: str = "float64",
    times: bool = True,
) -> tuple[SequenceSet, list[FileInfo], list[str], tuple[str | None, str | None]]:
    """Every part read into one set, the values at ``values_dtype``, the time column in
    ``extra`` if ``times``; the files read, the warnings for the report and the hinted
    id and time columns: without --id-col, the text column that likely names the
    sequences, and without --time-col, the column the rows are out of order of."""
    warnings: list[str] = []
    files: list[FileInfo] = []
    with contextlib.ExitStack() as stack:
        tee = stack.enter_context(spill_file(spill_dir)) if parts[0].path == "-" else None

        def reopen(part: Part) -> Source:
            """The part again from its start; stdin from the copy taken while reading it."""
            if tee is None:
                return open_source(part, opts, stdin, None, None)
            tee.flush()
            tee.seek(0)
            return open_source(part, opts, tee, tee, None)  # type: ignore[arg-type]

        first = stack.enter_context(
            first_with_rows(parts, lambda part: open_source(part, opts, stdin, tee, tick))
        )
        layout = decide(first, opts, keep, parts)
        warnings += layout.warnings
        expected = first.rows_hint() * len(parts)
        assembler = layout.assembler(
            opts, budget, spill_dir, expected, dtype=values_dtype, times=times
        )
        stack.callback(assembler.close)  # spill files, whatever ends the read
        for part in parts:
            opened = open_source(part, opts, stdin, None, tick) if part is not first.part else None
            with opened or contextlib.nullcontext(first) as source:
                check_columns(source, layout)
                assembler.read(source)
                files.append(source.file_info())
                warnings += source.warnings
        give_back_memory()  # before the regrouping allocates its buckets
        data = assembler.finish(
            first, lambda: steps.RowFinder(parts, reopen, layout.roles, layout.time_kind), warnings
        )
    warnings += id_warnings(layout.roles, data.count, int(data.lengths.max(initial=0)))
    return data, files, warnings, (layout.roles.id_hint, assembler.unordered_by)


def id_warnings(roles: Roles, sequences: int, longest: int) -> list[str]:
    """A long table whose --id-col starts a new sequence on every row: a time given as
    the id? (``longest``: the longest sequence, before --nan drop.)"""
    if roles.layout == "long" and roles.id is not None and sequences > 1 and longest <= 1:
        return [
            f"column '{roles.id}' (--id-col) starts a new sequence on every row, so every "
            f"sequence is one step; if it is the time, pass --time-col {roles.id} instead"
        ]
    return []


@dataclass(frozen=True)
class Layout:
    """How every part of one input is read, decided on the first part: the roles of the
    columns, the time column's kind, the first part's column names and the warnings the
    choice gives (calendar columns left out)."""

    roles: Roles
    time_kind: str | None
    names: list[str]
    warnings: list[str]

    def assembler(
        self, opts: InputOptions, budget: int, spill_dir: str | None, expected: int = 0, **more: Any
    ) -> Assembler:
        """The part's assembler; ``more`` are Assembler's ``dtype``, ``times``, ``spill_to``."""
        kind = WideAssembler if self.roles.layout == "wide" else LongAssembler
        return kind(self.roles, opts, self.time_kind, budget, spill_dir, expected, **more)


def first_with_rows(parts: Sequence[Part], opener: Callable[[Part], Source]) -> Source:
    """The first part that holds a row, opened: the layout is decided on its sample, and
    an empty part (Spark and Dask write them) decides nothing. When every part is empty,
    the first, for `decide` to refuse."""
    for part in parts:
        source = opener(part)
        if source.sample().num_rows or len(parts) == 1:
            return source
        source.close()
    return opener(parts[0])


def decide(
    first: Source, opts: InputOptions, keep: Sequence[str], parts: Sequence[Part] = ()
) -> Layout:
    """The `Layout` from the first part's header and sample (and the partition keys whose
    value changes between the ``parts``)."""
    sample = first.sample()
    if not sample.num_rows:
        raise _no_rows(first)
    warnings: list[str] = []
    keys = [key for key, _ in first.part.partition]
    varying = [k for k in keys if len({dict(p.partition).get(k) for p in parts}) > 1]
    roles = resolve_roles(
        first.shown, first.names, sample, first.numeric, opts, keep, warnings, varying
    )
    time_kind = first.time_kind(roles.time) if roles.time else None
    return Layout(roles, time_kind, list(first.names), warnings)


def give_back_memory() -> None:
    """Hand what the parse freed back to the system. glibc keeps freed blocks in its heap
    and pyarrow's allocator keeps its own: after a 380 MB CSV that was 270 MB resident
    for nothing through the whole write."""
    import ctypes

    import pyarrow as pa

    pa.default_memory_pool().release_unused()
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to trim
        ctypes.CDLL(None).malloc_trim(0)


def check_columns(source: Source, layout: Layout) -> None:
    """Every part holds the columns the first part's roles read."""
    present = set(source.names)
    missing = [name for name in layout.roles.read if name not in present]
    if missing:
        raise InputDataError(
            f"{source.shown}: no column '{missing[0]}', which the first file has "
            f"({', '.join(layout.names)}); every file must hold the same columns"
        )


def regular(
    rows: Rows,
    layout: Layout,
    opts: InputOptions,
    finder: Callable[[], steps.RowFinder],
    changes: steps.Changes,
    budget: int,
    spill_dir: str | None,
) -> Rows:
    """Rows of whole sequences with duplicate times and gaps dealt with (`steps`)."""
    roles = layout.roles
    if not roles.time:
        return rows
    target_width = 1 if roles.target else 0
    kind = layout.time_kind
    return steps.regularize(rows, kind, opts, finder(), target_width, changes, budget, spill_dir)


def as_sequences(rows: Rows, layout: Layout, times: bool = True) -> SequenceSet:
    """Rows as a `SequenceSet`: kept columns and, if ``times``, the time (in seconds) in
    ``extra``."""
    roles = layout.roles
    values, rest, stamps = rows.arrays
    data = SequenceSet.from_offsets(
        values=values,
        offsets=np.concatenate([[0], np.cumsum(rows.lengths)]),
        ids=rows.ids,
        feature_names=roles.features if roles.layout == "long" else ["value"],
        targets=rest[:, :1] if roles.target else None,
        target_names=[roles.target] if roles.target else (),
    )
    first_kept = 1 if roles.target else 0
    extra = {name: rest[:, first_kept + j] for j, name in enumerate(roles.keep)}
    if roles.time and times and stamps.shape[1]:  # (the Dask engine loads windows without it)
        extra[roles.time] = seconds(stamps[:, 0], layout.time_kind or NUMBER)
    return replace(data, extra=extra)


def unordered_warning(sequence: str, column: str) -> str:
    return (
        f"rows of sequence '{sequence}' are not in order of column '{column}' and no "
        f"--time-col was given; did you mean --time-col {quote(column)}?"
    )


class Assembler:
    """Record batches in, one part at a time; a `SequenceSet` out at the end."""

    def __init__(
        self,
        roles: Roles,
        opts: InputOptions,
        time_kind: str | None,
        budget: int,
        spill_dir: str | None,
        expected: int = 0,
        dtype: str = "float64",
        times: bool = True,
        spill_to: str | None = None,
    ) -> None:
        self.roles, self.opts, self.kind = roles, opts, time_kind
        self.budget, self.spill_dir, self.expected = budget, spill_dir, expected
        self.dtype = np.dtype(dtype)  # of the values (the target and kept columns: float64)
        self.keep_times = times  # the time column in ``extra`` at the end
        self.spill_to = spill_to  # long rows: written at once to spill_to.values|rest|time
        self.unordered_by: str | None = None  # without --time-col: the likely time column,
        # when the rows are out of its order
        self.watch = OrderWatch(roles.watch) if roles.watch else None

    def read(self, source: Source) -> None:
        """Every batch of one part; rows are counted from the part's first data row."""
        row = 0
        for batch in source.batches(self.roles, self.kind):
            self.add(batch, source, row)
            row += len(batch.values) if isinstance(batch, Matrix) else batch.num_rows

    def add(self, batch: Any, source: Source, first_row: int) -> None:
        raise NotImplementedError

    def rows(self) -> Rows:
        """Every row read, grouped by sequence and in time order (once: stores are let go)."""
        raise NotImplementedError

    def finish(
        self, first: Source, finder: Callable[[], steps.RowFinder], warnings: list[str]
    ) -> SequenceSet:
        """The whole input as a `SequenceSet`; what it did goes to ``warnings``."""
        rows = self.rows()
        if self.watch is not None and (code := self.watch.unordered()) is not None:
            self.unordered_by = self.watch.name
            warnings.append(unordered_warning(rows.ids[code], self.watch.name))
        if not rows.lengths.sum():
            raise _no_rows(first)
        self.close()
        changes = steps.Changes()
        layout = Layout(self.roles, self.kind, [], [])
        rows = regular(rows, layout, self.opts, finder, changes, self.budget, self.spill_dir)
        warnings += changes.warnings(self.opts)
        return as_sequences(rows, layout, self.keep_times)

    def close(self) -> None:
        raise NotImplementedError


class LongAssembler(Assembler):
    """Long layout: one row per step; rows of a sequence may be spread over the input."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        roles, budget, spill_dir, expected = self.roles, self.budget, self.spill_dir, self.expected
        width = len(roles.floats)
        self.features = len(roles.features)
        time_dtype = np.float64 if self.kind == NUMBER else np.int64
        # The budget is shared in proportion to the bytes each store holds per row.
        kinds = [
            (self.features, self.dtype),
            (width - self.features, np.dtype(np.float64)),
            (1 if roles.time else 0, np.dtype(time_dtype)),
        ]
        row_bytes = [n * dtype.itemsize for n, dtype in kinds]
        share = [budget * b // max(sum(row_bytes), 1) for b in row_bytes]
        if self.spill_to is not None:
            share = [0, 0, 0]
        paths = [None if self.spill_to is None else f"{self.spill_to}.{n}" for n in ARRAYS]
        self.values, self.rest, self.times = (
            Store(n, part, spill_dir, dtype, expected, path)
            for (n, dtype), part, path in zip(kinds, share, paths, strict=True)
        )
        self.codes = Codes(spill_dir)
        self.ids: dict[str, int] = {}
        self.checked = self.features + (1 if roles.target else 0)

    def add(self, batch: Any, source: Source, first_row: int) -> None:
        roles = self.roles
        columns = float_columns(batch, roles.floats, source)
        if self.opts.nan == "error":
            self._refuse_missing(columns[: self.checked], source, first_row)
        runs, lengths = self._runs(batch, source, first_row)
        time = self._time(batch, source, first_row) if roles.time else None
        if self.watch is not None:
            self.watch.add(batch, np.repeat(runs, lengths))
        rows = batch.num_rows
        self.values.add_columns(columns[: self.features], rows)
        self.rest.add_columns(columns[self.features :], rows)
        # Without a time column it holds rows of width 0 (a regrouping moves every array).
        self.times.add_columns([time] if time is not None else [], rows)
        self.codes.add(runs, lengths, time)

    def _refuse_missing(self, columns: list[np.ndarray], source: Source, first_row: int) -> None:
        """The first row with a missing or infinite feature or target (its first such
        column) is an error."""
        names = [*self.roles.features, self.roles.target]
        first = [
            (int(np.argmax(~np.isfinite(column))), j)
            for j, column in enumerate(columns)
            if column.dtype.kind == "f" and not all_finite(column)
        ]
        if first:
            r, j = min(first)
            raise cell_error(source, first_row + r, str(names[j]), columns[j][r])

    def _runs(self, batch: Any, source: Source, first_row: int) -> tuple[np.ndarray, np.ndarray]:
        """The batch's rows as runs of one sequence: numbers and lengths."""
        if self.roles.id is None:
            self.ids.setdefault("0", 0)
            one = 1 if batch.num_rows else 0
            return np.zeros(one, dtype=np.int32), np.full(one, batch.num_rows)
        runs, lengths, bad = sequence_codes(batch.column(self.roles.id), self.ids)
        if bad >= 0:
            where, _ = source.where(first_row + bad, self.roles.id)
            raise InputDataError(
                f"{where}: empty id in column '{self.roles.id}'; every row needs a sequence id"
            )
        return runs, lengths

    def _time(self, batch: Any, source: Source, first_row: int) -> np.ndarray:
        name = str(self.roles.time)
        try:
            found = times(batch.column(name))
        except NotTime as problem:
            raise time_error(problem, source, first_row, name, self.kind) from None
        check_kind(found.kind, self.kind or found.kind, source.shown, name)
        if self.kind == NUMBER and not all_finite(found.values):
            r = int(np.argmax(~np.isfinite(found.values)))
            where, text = source.where(first_row + r, name)
            raise InputDataError(
                f"{where}: time value '{text if text is not None else found.values[r]}' in "
                f"column '{name}' is not a finite number; every row needs a time"
            )
        return found.values

    def rows(self) -> Rows:
        lengths = self.codes.lengths[: len(self.ids)]
        arrays = [self.values.array(), self.rest.array(), self.times.array()]
        if self.codes.rows and not self.codes.grouped:
            time = 2 if self.roles.time else None
            arrays = regrouped(arrays, self.codes, lengths, time, self.spill_dir, self.budget)
        repeats = self.codes.repeats or not self.codes.grouped
        return Rows(arrays, lengths, list(self.ids), repeats)

    def close(self) -> None:
        for store in (self.values, self.rest, self.times, self.codes):
            store.close()


def _no_rows(source: Source) -> InputDataError:
    explain = getattr(source, "explain", None)
    if explain is not None:
        return explain("no data rows")  # type: ignore[no-any-return]
    return InputDataError(f"{source.shown}: no data rows")


class OrderWatch:
    """Without --time-col: whether the likely time column is in order within each sequence.

    It keeps each sequence's first and last value and which sequences went back in time,
    so that watches of parts read apart (by Dask workers) can be `joined` into what one
    watch of the parts read in order finds."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.kind: str | None = None
        self.gave_up = False  # not a time column after all: nothing to say
        self.seen = np.zeros(0, dtype=bool)
        self.first = np.zeros(0)
        self.last = np.zeros(0)
        self.back = np.zeros(0, dtype=bool)  # the sequence's rows went back in time

    def add(self, batch: Any, codes: np.ndarray) -> None:
        if self.gave_up or not len(codes):
            return
        try:
            found = times(batch.column(self.name))
        except NotTime:
            self.gave_up = True
            return
        if self.kind not in (None, found.kind):
            self.gave_up = True
            return
        self.kind = found.kind
        values = found.values.astype(np.float64)
        permutation = np.argsort(codes, kind="stable")
        c, v = codes[permutation], values[permutation]
        self._grow(int(c.max()) + 1)
        starts = np.flatnonzero(np.r_[True, c[1:] != c[:-1]])
        inside = np.r_[False, c[1:] == c[:-1]]
        back = inside & (np.r_[v[0], v[:-1]] > v)
        back[starts] = self.seen[c[starts]] & (v[starts] < self.last[c[starts]])
        self.back[c[back]] = True
        new = starts[~self.seen[c[starts]]]
        self.first[c[new]] = v[new]
        self.seen[c[new]] = True
        ends = np.r_[starts[1:] - 1, len(c) - 1]
        self.last[c[ends]] = v[ends]

    def _grow(self, count: int) -> None:
        more = count - len(self.seen)
        if more > 0:
            self.seen = np.r_[self.seen, np.zeros(more, dtype=bool)]
            self.first = np.r_[self.first, np.zeros(more)]
            self.last = np.r_[self.last, np.zeros(more)]
            self.back = np.r_[self.back, np.zeros(more, dtype=bool)]

    def unordered(self) -> int | None:
        """The first sequence (in order of appearance) whose rows go back in time."""
        if self.gave_up or not self.back.any():
            return None
        return int(np.argmax(self.back))

    @classmethod
    def joined(cls, watches: Sequence[OrderWatch], numbers: Sequence[np.ndarray]) -> OrderWatch:
        """One watch of the parts in order, from one watch of each; ``numbers[p]`` maps
        the sequence numbers of part p to those of the whole input."""
        whole = cls(watches[0].name)
        kinds = {w.kind for w in watches} - {None}
        whole.gave_up = any(w.gave_up for w in watches) or len(kinds) > 1
        whole._grow(max((int(n.max()) + 1 for n in numbers if len(n)), default=0))
        for watch, number in zip(watches, numbers, strict=True):
            seen = number[: len(watch.seen)][watch.seen]
            first, last = watch.first[watch.seen], watch.last[watch.seen]
            went_back = watch.back[watch.seen] | (whole.seen[seen] & (first < whole.last[seen]))
            whole.back[seen[went_back]] = True
            whole.first[seen[~whole.seen[seen]]] = first[~whole.seen[seen]]
            whole.seen[seen] = True
            whole.last[seen] = last
        return whole


def float_columns(batch: Any, names: list[str], source: Source) -> list[np.ndarray]:
    """The columns as numpy arrays that convert to float64 exactly as a cast does (Arrow's
    own buffers where the type allows: the stores convert while they copy); a missing
    cell is NaN."""
    columns = []
    for name in names:
        column = batch.column(name)
        converted = numeric(column)
        columns.append(
            converted if converted is not None else numbers(_to_float(column, name, source))
        )
    return columns


def _to_float(column: Any, name: str, source: Source) -> Any:
    """Other numeric types (decimal, bool, dictionary, text of numbers) through pyarrow."""
    import pyarrow as pa
    import pyarrow.compute as pc

    kind = column.type
    if pa.types.is_dictionary(kind):
        column, kind = column.cast(kind.value_type), kind.value_type
    numeric = pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind)
    if numeric or pa.types.is_boolean(kind) or pa.types.is_null(kind):
        return pc.cast(column, pa.float64(), safe=False)
    if text_type(kind):
        try:
            return pc.cast(column, pa.float64())
        except pa.ArrowInvalid:
            pass
    raise InputDataError(
        f"{source.shown}: column '{name}' holds {kind}, not numbers; it cannot be a feature, "
        "target or boundary column"
    )


def sequence_codes(column: Any, ids: dict[str, int]) -> tuple[np.ndarray, np.ndarray, int]:
    """The rows as runs of one sequence: each run's sequence number (numbered by first
    appearance across the input) and length; and the first row whose id is missing or
    empty (-1: none)."""
    local, lengths, keys, missing = local_runs(column)
    if missing >= 0:
        return local, lengths, missing
    used, first_run = np.unique(local, return_index=True)
    if "" in keys and keys.index("") in used:
        run = int(np.argmax(local == keys.index("")))
        return local, lengths, int(lengths[:run].sum())
    # Numbered in order of appearance: a dictionary column's own keys (pandas' categories)
    # come in an order of their own.
    table = np.zeros(len(keys), dtype=np.int32)
    for k in used[np.argsort(first_run)]:
        table[k] = ids.setdefault(keys[k], len(ids))
    return table[local], lengths, -1


def time_error(
    problem: NotTime, source: Source, first_row: int, name: str, kind: str | None
) -> InputDataError:
    """The --time-col's problem: its type, or the first row whose time is not one."""
    if problem.row < 0:
        return InputDataError(
            f"{source.shown}: column '{name}' holds {problem}, not numbers or dates/times; "
            "pass another --time-col"
        )
    where, text = source.where(first_row + problem.row, name)
    text = text if text is not None else problem.value
    if text is None:
        return InputDataError(f"{where}: no time in column '{name}'; every row needs a time")
    expected = "a finite number" if kind == NUMBER else "an ISO 8601 date/time"
    fault = problem.fault or f"is not {expected}; every row needs a time"
    return InputDataError(f"{where}: time value '{text}' in column '{name}' {fault}")


def cell_error(source: Source, row: int, column: str, value: float) -> InputDataError:
    where, text = source.where(row, column)
    if text is None:
        what = "missing value" if np.isnan(value) else f"non-finite value {value}"
    else:
        what = "empty cell" if text == "" else f"non-finite value '{text}'"
    return InputDataError(f"{where}: {what} in column '{column}'; {NAN_FIX}")


class WideAssembler(Assembler):
    """Wide layout: one row per sequence, one column per step; trailing missing cells
    end a shorter row, missing cells before the end are handled by ``--nan``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.values = Store(1, self.budget, self.spill_dir, self.dtype)
        self.lengths: list[np.ndarray] = []
        self.ids: list[str] = []

    def add(self, batch: Any, source: Source, first_row: int) -> None:
        block = batch if isinstance(batch, Matrix) else self._matrix(batch, source, first_row)
        present = block.present
        width = present.shape[1]
        lengths = np.where(present.any(axis=1), width - np.argmax(present[:, ::-1], axis=1), 0)
        inside = np.arange(width) < lengths[:, None]
        if self.opts.nan == "error":
            bad = inside & ~np.isfinite(block.values)
            if bad.any():
                r, c = np.argwhere(bad)[0]
                name = self.roles.features[c]
                raise cell_error(source, first_row + int(r), name, block.values[r, c])
        self.values.add(block.values[inside][:, None])
        self.lengths.append(lengths)
        if block.ids is None:
            self.ids += [str(len(self.ids) + i) for i in range(len(lengths))]
            return
        if "" in block.ids:
            where, _ = source.where(first_row + block.ids.index(""), str(self.roles.id))
            raise InputDataError(
                f"{where}: empty id in column '{self.roles.id}'; every row needs a sequence id"
            )
        self.ids += block.ids

    def close(self) -> None:
        self.values.close()

    def _matrix(self, batch: Any, source: Source, first_row: int) -> Matrix:
        """An Arrow batch of step columns as one block."""
        steps = self.roles.features
        values = np.empty((batch.num_rows, len(steps)))
        for j, column in enumerate(float_columns(batch, steps, source)):
            values[:, j] = column
        present = np.column_stack([valid(batch.column(n)) for n in steps])
        if self.roles.id is None:
            return Matrix(values, present, None)
        column = batch.column(self.roles.id)
        if column.null_count:
            where, _ = source.where(first_row + int(np.argmax(~valid(column))),
                                    self.roles.id)  # fmt: skip
            raise InputDataError(
                f"{where}: empty id in column '{self.roles.id}'; every row needs a sequence id"
            )
        return Matrix(values, present, [str(v) for v in column.to_pylist()])

    def rows(self) -> Rows:
        lengths = np.concatenate(self.lengths) if self.lengths else np.zeros(0, dtype=np.int64)
        values = self.values.array()
        none = np.zeros((len(values), 0))
        return Rows([values, none, none], lengths.astype(np.int64), list(self.ids), False)
