"""The precise CSV/TSV reader: stdlib ``csv`` row by row, numbers converted in chunks.

Values are float64: every cell is parsed exactly (numpy's string cast agrees with
``float()``, which is the fallback that names a bad cell), and the output dtype is
chosen later by the writer. Memory holds the parsed numbers, not the text.
"""

from __future__ import annotations

import csv
import gc
import hashlib
import importlib.util
import itertools
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import replace
from operator import itemgetter
from typing import BinaryIO

import numpy as np

from tbptt_cli.errors import InputDataError, TbpttError, UsageError
from tbptt_cli.options import InputOptions, target_column
from tbptt_cli.readers import (
    NAN_FIX,
    column_index,
    fast,
    finish,
    named_columns,
    open_input,
    parse_size,
    text_lines,
)
from tbptt_cli.sequences import SequenceSet, SourceInfo

MISSING = ("", "NA")  # cells that mean "no value", like nan
CHUNK_ROWS = 1 << 16
Row = tuple[int, list[str]]  # (physical line where the row starts, its fields)
Locate = Callable[[int], tuple[str, str, str]]  # flat cell index -> (path:line:col, column, text)


def read_delimited(
    opts: InputOptions,
    fmt: str,
    keep: Sequence[str],
    stdin: BinaryIO,
    spill_dir: str | None = None,
    tick: Callable[[int], None] | None = None,
) -> tuple[SequenceSet, SourceInfo]:
    path = str(opts.path)
    fast_result = _read_fast(opts, fmt, keep, spill_dir, tick)
    if fast_result is not None:
        return fast_result
    digest = hashlib.sha256()
    size = [0]
    stream = stdin if path == "-" else open_input(path)
    # Millions of short-lived row lists make the cycle collector rescan everything that
    # survived (about a quarter of the run time); rows of strings hold no cycles.
    collecting = gc.isenabled()
    gc.disable()
    try:
        lines = text_lines(stream, path, digest, size)
        rows = _numbered_rows(lines, _delimiter(opts, fmt), path)
        first = next(rows, None)
        if first is None:
            raise InputDataError(f"{path}: empty file; expected a header line")
        header_line, header = first
        names = [name.strip() for name in header]
        seen: set[str] = set()
        for name in names:
            if name in seen:
                raise InputDataError(
                    f"{path}:{header_line}: column '{name}' appears twice "
                    "in the header; give every column its own name"
                )
            seen.add(name)
        if opts.layout == "wide":
            data = _read_wide(path, opts, keep, header_line, names, rows)
        else:
            data = _read_long(path, opts, keep, header_line, names, rows)
    finally:
        if collecting:
            gc.enable()
        if stream is not stdin:
            stream.close()
    info = SourceInfo(path=path, format=fmt, size=size[0], digest=digest.hexdigest())
    return finish(data, opts, path), info


def _read_fast(
    opts: InputOptions,
    fmt: str,
    keep: Sequence[str],
    spill_dir: str | None,
    tick: Callable[[int], None] | None,
) -> tuple[SequenceSet, SourceInfo] | None:
    """The pyarrow path for a plain long file, or None: then the precise reader runs and
    reports whatever is wrong (a missing column, a bad cell) with its line and column."""
    path = str(opts.path)
    delimiter = _delimiter(opts, fmt)
    if opts.layout != "long" or path == "-" or importlib.util.find_spec("pyarrow") is None:
        return None
    names = fast.header_columns(path, delimiter)
    if names is None or len(set(names)) != len(names):
        return None
    index = {name: i for i, name in enumerate(names)}
    target = target_column(opts.target)
    wanted = [opts.id_col, opts.time_col, target, *keep, *(opts.features or ())]
    if any(name is not None and name not in index for name in wanted):
        return None
    columns = fast.Columns(
        names=names,
        features=[index[name] for name in opts.features or ()],
        target=index[target] if target else None,
        time=index[opts.time_col] if opts.time_col else None,
        keep=[index[name] for name in keep],
        id=index[opts.id_col] if opts.id_col else None,
    )
    if opts.features is None:
        skip = {columns.id, columns.time, columns.target, *columns.keep}
        columns.features = _default_features(
            path, delimiter, [i for i in range(len(names)) if i not in skip]
        )
    if not columns.features or columns.target in columns.features:
        return None
    try:
        data, info = fast.read_long(
            opts, path, fmt, delimiter, columns, parse_size(opts.memory_limit), spill_dir, tick
        )
    except fast.Rejected:
        return None
    finally:
        fast.give_back_memory()
    return finish(data, opts, path), info


def _default_features(path: str, delimiter: str, candidates: list[int]) -> list[int]:
    """The precise reader's rule (numeric first non-empty cell), run on the first rows."""
    try:
        with open_input(path) as stream:
            rows = _numbered_rows(text_lines(stream, path, hashlib.sha256(), [0]), delimiter, path)
            next(rows, None)  # the header
            return _numeric_columns(candidates, rows)[0]
    except TbpttError:
        return []  # the precise reader reports it


def _delimiter(opts: InputOptions, fmt: str) -> str:
    given = opts.delimiter
    if given is None:
        return "\t" if fmt == "tsv" else ","
    delimiter = {"\\t": "\t", "tab": "\t"}.get(given, given)
    if len(delimiter) != 1:
        raise UsageError(f"--delimiter {given!r} must be one character (or \\t for tab)")
    return delimiter


def _numbered_rows(lines: Iterable[str], delimiter: str, path: str) -> Iterator[Row]:
    """Non-blank rows with the physical line each starts on (quoted fields may span lines)."""
    return itertools.chain.from_iterable(_numbered_chunks(lines, delimiter, path))


def _numbered_chunks(lines: Iterable[str], delimiter: str, path: str) -> Iterator[list[Row]]:
    # Rows are handed over in lists: resuming a generator per row costs more than csv does.
    reader = csv.reader(lines, delimiter=delimiter)
    chunk: list[Row] = []
    last = 0
    try:
        for row in reader:
            start, last = last + 1, reader.line_num
            if row:
                chunk.append((start, row))
                if len(chunk) >= CHUNK_ROWS:
                    yield chunk
                    chunk = []
    except csv.Error as exc:
        raise InputDataError(
            f"{path}:{reader.line_num}: {exc}; check the quoting and --delimiter"
        ) from None
    yield chunk


def _parse(cells: np.ndarray, locate: Locate) -> np.ndarray:
    """float64 of the same shape; missing cells become NaN, anything else must be a number."""
    missing = (cells == "") | (cells == "NA")
    try:
        return np.where(missing, "nan", cells).astype(np.float64)
    except ValueError:
        pass  # find the bad cell (or parse what only float() accepts), one cell at a time
    out = np.empty(cells.size)
    for i, text in enumerate(cells.ravel().tolist()):
        if text.strip() in MISSING:
            out[i] = np.nan
            continue
        try:
            out[i] = float(text)
        except ValueError:
            where, column, _ = locate(i)
            raise InputDataError(f"{where}: '{text}' is not a number (column '{column}')") from None
    return out.reshape(cells.shape)


def _check_finite(
    floats: np.ndarray,
    checked: np.ndarray,
    locate: Locate,
    nan_error: bool,
    time_mask: np.ndarray | None = None,
) -> None:
    """Raise for the first cell in file order that is NaN/inf: always in the time column,
    in features and targets only under ``--nan error``."""
    bad_time = ~np.isfinite(floats) & time_mask if time_mask is not None else None
    bad_value = ~np.isfinite(floats) & checked if nan_error else None
    first = [
        int(np.argmax(b)) if b.any() else floats.size
        for b in (bad_time, bad_value)
        if b is not None
    ]
    if not first or min(first) == floats.size:
        return
    where, column, text = locate(min(first))
    if bad_time is not None and bad_time.flat[min(first)]:
        raise InputDataError(
            f"{where}: time value '{text}' in column '{column}' is not a "
            "finite number; every row needs a time"
        )
    what = "empty cell" if text == "" else f"non-finite value '{text}'"
    raise InputDataError(f"{where}: {what} in column '{column}'; {NAN_FIX}")


def _read_long(
    path: str,
    opts: InputOptions,
    keep: Sequence[str],
    header_line: int,
    names: list[str],
    rows: Iterator[Row],
) -> SequenceSet:
    id_col = column_index(path, names, "--id-col", opts.id_col) if opts.id_col else None
    time_col = column_index(path, names, "--time-col", opts.time_col) if opts.time_col else None
    target_col, keep_cols, chosen = named_columns(path, names, opts, keep)
    buffered: list[Row] = []
    if chosen is not None:
        feature_cols = chosen
    else:
        skip = {id_col, time_col, target_col, *keep_cols}
        feature_cols, buffered = _numeric_columns(
            [i for i in range(len(names)) if i not in skip], rows
        )
        if not buffered:
            raise InputDataError(f"{path}:{header_line}: header but no data rows")
        if not feature_cols:
            raise InputDataError(
                f"{path}: no numeric feature column found; name the feature columns with --features"
            )
    roles = feature_cols + [c for c in (target_col, time_col) if c is not None] + keep_cols
    physical = sorted(set(roles))  # read in file order, so row-major order is file order
    position = {c: j for j, c in enumerate(physical)}
    checked = np.isin(physical, feature_cols + ([target_col] if target_col is not None else []))
    time_mask = np.array(physical) == time_col if time_col is not None else None
    getter = itemgetter(*physical, *physical[:1])  # always a tuple, even for one column
    id_parts: list[np.ndarray] = []
    float_parts: list[np.ndarray] = []
    for chunk in _chunks(buffered, rows):
        for line, row in chunk:
            if len(row) != len(names):
                raise InputDataError(
                    f"{path}:{line}:1: row has {_fields(len(row))}, the header has {len(names)}"
                )
        # One flat list converts faster than a list of tuples (numpy skips shape discovery).
        cells = np.array([cell for _, row in chunk for cell in getter(row)], dtype=np.str_)
        cells = cells.reshape(len(chunk), len(physical) + 1)[:, :-1]
        lines = [line for line, _ in chunk]

        def locate(
            flat: int, cells: np.ndarray = cells, lines: list[int] = lines
        ) -> tuple[str, str, str]:
            r, j = divmod(flat, len(physical))
            return f"{path}:{lines[r]}:{physical[j] + 1}", names[physical[j]], str(cells[r, j])

        floats = _parse(cells, locate)
        _check_finite(floats, checked, locate, opts.nan == "error", time_mask)
        float_parts.append(floats)
        if id_col is not None:
            id_parts.append(np.array([row[id_col] for _, row in chunk], dtype=np.str_))
    if not float_parts:
        raise InputDataError(f"{path}:{header_line}: header but no data rows")
    floats = np.concatenate(float_parts)
    if id_col is None:
        sequence, ids = np.zeros(len(floats), dtype=np.int64), ["0"]
    else:
        sequence, ids = _group(np.concatenate(id_parts))
    if time_col is not None:
        order = np.lexsort((floats[:, position[time_col]], sequence))  # stable
    else:
        order = np.argsort(sequence, kind="stable")
    floats = floats[order]
    lengths = np.bincount(sequence, minlength=len(ids))
    data = SequenceSet.from_offsets(
        values=np.ascontiguousarray(floats[:, [position[c] for c in feature_cols]]),
        offsets=np.concatenate([[0], np.cumsum(lengths)]),
        ids=ids,
        feature_names=[names[c] for c in feature_cols],
        targets=floats[:, [position[target_col]]] if target_col is not None else None,
        target_names=[names[target_col]] if target_col is not None else (),
    )
    extra = {
        names[c]: floats[:, position[c]].copy()
        for c in keep_cols + ([time_col] if time_col is not None else [])
    }
    return replace(data, extra=extra)


def _numeric_columns(candidates: list[int], rows: Iterator[Row]) -> tuple[list[int], list[Row]]:
    """Columns whose first non-empty data cell is a number, and the rows read to decide.

    The search stops after CHUNK_ROWS rows so that an empty column cannot make the whole
    file wait in memory; a column still empty by then is not a default feature.
    """
    buffered: list[Row] = []
    verdict: dict[int, bool] = {}
    for line_row in rows:
        buffered.append(line_row)
        row = line_row[1]
        for c in candidates:
            if c not in verdict and c < len(row) and row[c].strip() not in MISSING:
                verdict[c] = _is_number(row[c])
        if len(verdict) == len(candidates) or len(buffered) >= CHUNK_ROWS:
            break
    return [c for c in candidates if verdict.get(c, False)], buffered


def _fields(count: int) -> str:
    return f"{count} field" if count == 1 else f"{count} fields"


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _chunks(buffered: list[Row], rows: Iterator[Row]) -> Iterator[list[Row]]:
    """The buffered rows, then the rest, in lists of at most CHUNK_ROWS (bounded memory)."""
    if buffered:
        yield buffered
    while chunk := list(itertools.islice(rows, CHUNK_ROWS)):
        yield chunk


def _group(row_ids: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Sequence number of every row, numbered by first appearance, and the ids in that order."""
    unique, first, inverse = np.unique(row_ids, return_index=True, return_inverse=True)
    appearance = np.argsort(first, kind="stable")
    rank = np.empty_like(appearance)
    rank[appearance] = np.arange(len(appearance))
    return rank[inverse.ravel()], [str(i) for i in unique[appearance]]


def _read_wide(
    path: str,
    opts: InputOptions,
    keep: Sequence[str],
    header_line: int,
    names: list[str],
    rows: Iterator[Row],
) -> SequenceSet:
    """One row per sequence, one column per step; trailing empty cells end a shorter row."""
    if target_column(opts.target):
        raise UsageError("--target NAME needs --layout long; wide rows hold one feature")
    for flag, given in (
        ("--time-col", opts.time_col),
        ("--features", opts.features),
        ("a boundary column", list(keep)),
    ):
        if given:
            raise UsageError(f"{flag} needs --layout long; a wide row is one univariate sequence")
    id_col = column_index(path, names, "--id-col", opts.id_col) if opts.id_col else None
    ids: list[str] = []
    cells: list[str] = []
    lengths: list[int] = []
    lines: list[int] = []
    for line, row in rows:
        if len(row) > len(names):
            raise InputDataError(
                f"{path}:{line}:1: row has {_fields(len(row))}, the header has {len(names)}"
            )
        steps = row
        if id_col is not None:
            ids.append(row[id_col] if id_col < len(row) else "")
            steps = row[:id_col] + row[id_col + 1 :]
        else:
            ids.append(str(len(ids)))
        n = len(steps)
        while n and steps[n - 1] == "":
            n -= 1
        if "" in steps[:n]:
            j = steps.index("")
            col = j + 1 + (1 if id_col is not None and j >= id_col else 0)
            raise InputDataError(
                f"{path}:{line}:{col}: empty cell before the end of the row; "
                "in --layout wide only trailing cells may be empty (write NA "
                "for a missing value)"
            )
        cells.extend(steps[:n])
        lengths.append(n)
        lines.append(line)
    if not lengths:
        raise InputDataError(f"{path}:{header_line}: header but no data rows")
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    text = np.array(cells, dtype=np.str_)

    def locate(flat: int) -> tuple[str, str, str]:
        r = int(np.searchsorted(offsets, flat, side="right")) - 1
        j = flat - int(offsets[r])
        col = j + (1 if id_col is not None and j >= id_col else 0)
        return f"{path}:{lines[r]}:{col + 1}", names[col], cells[flat]

    values = _parse(text, locate)
    _check_finite(values, np.array(True), locate, opts.nan == "error")
    return SequenceSet.from_offsets(
        values.reshape(-1, 1), offsets, ids=ids, feature_names=["value"]
    )
