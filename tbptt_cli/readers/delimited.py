"""The precise CSV/TSV walker: stdlib ``csv`` row by row, to say where a problem is.

pyarrow parses every CSV (`csvfile`), but it cannot say on which line a bad cell sits.
When it rejects a block, or the table core finds a bad cell in a parsed row, this module
reads the text again from the start and names ``path:line:col``: `scan` reports the first
problem in file order, `cell_at` the place and text of one cell. Errors cost a second
read; clean files never pay for it.
"""

from __future__ import annotations

import csv
import io
import itertools
import re
from collections.abc import Collection, Iterable, Iterator
from datetime import datetime
from typing import Any, BinaryIO

import numpy as np

from tbptt_cli.errors import InputDataError
from tbptt_cli.options import InputOptions
from tbptt_cli.readers import NAN_FIX, read_blocks
from tbptt_cli.readers.buffers import float_array, string_array
from tbptt_cli.readers.columns import Roles
from tbptt_cli.readers.source import Matrix
from tbptt_cli.readers.timecol import NUMBER, UTC

BOM = b"\xef\xbb\xbf"
MAX_LINE = 256 << 20  # bytes: one CSV line may hold a 10-million-step wide row
MISSING = ("", "NA")  # cells that mean "no value", as pyarrow is told
CHUNK_ROWS = 1 << 16
Row = tuple[int, list[str]]  # (physical line where the row starts, its fields)


def text_lines(stream: BinaryIO, path: str) -> Iterator[str]:
    """Decoded lines with their line ends (``csv`` wants them)."""
    # chain() hands out the lines in C; Python only runs once per 1 MiB block.
    return itertools.chain.from_iterable(_text_blocks(stream, path))


def _text_blocks(stream: BinaryIO, path: str) -> Iterator[io.StringIO]:
    """Blocks cut after their last newline, which never splits a UTF-8 character, so a
    NUL byte or bad UTF-8 is found per block and its line number counted exactly."""
    # A line's blocks are joined once, at its end: growing one bytes object per block
    # would copy a long line over and over, and a line past MAX_LINE is refused first.
    pending: list[bytes] = []
    held = 0
    lines_before = 0
    first = True
    for block in read_blocks(stream, path):
        if first and block.startswith(BOM):
            block = block[len(BOM) :]
        first = False
        cut = block.rfind(b"\n") + 1
        if not cut:
            pending.append(block)
            held += len(block)
            if held > MAX_LINE:
                raise InputDataError(
                    f"{path}:{lines_before + 1}: line longer than {MAX_LINE >> 20} MiB; "
                    "this is not CSV text with line breaks (for wide data put one "
                    "sequence per line)"
                )
            continue
        data = b"".join([*pending, block[:cut]])
        pending, held = [block[cut:]], len(block) - cut
        yield _decode(data, path, lines_before)
        lines_before += data.count(b"\n")
    if held:
        yield _decode(b"".join(pending), path, lines_before)


def _decode(chunk: bytes, path: str, lines_before: int) -> io.StringIO:
    nul = chunk.find(b"\0")
    if nul >= 0:
        line = lines_before + chunk.count(b"\n", 0, nul) + 1
        raise InputDataError(
            f"{path}:{line}: NUL byte; this looks like a binary file, "
            "not CSV text (for NumPy data pass --format npy|npz)"
        )
    try:
        text = chunk.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = lines_before + chunk.count(b"\n", 0, exc.start) + 1
        raise InputDataError(
            f"{path}:{line}: byte 0x{chunk[exc.start]:02x} is not UTF-8 "
            "text; save the file as UTF-8"
        ) from None
    # newline="" splits lines on \n, \r\n and \r but leaves the ends for csv to handle.
    return io.StringIO(text, newline="")


def numbered_rows(lines: Iterable[str], delimiter: str, path: str) -> Iterator[Row]:
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


class Walk:
    """The rows of one CSV text: the header's names, then numbered data rows."""

    def __init__(self, stream: BinaryIO, path: str, delimiter: str, no_header: bool) -> None:
        self.path = path
        self.rows = numbered_rows(text_lines(stream, path), delimiter, path)
        first = next(self.rows, None)
        if first is None:
            raise InputDataError(f"{path}: empty file; expected a header line")
        self.header_line = first[0]
        if no_header:
            self.names = [f"c{i}" for i in range(len(first[1]))]
            self.rows = itertools.chain([first], self.rows)
        else:
            self.names = header_names(first[1])
            _refuse_twice(self.names, path, first[0])

    def data(self) -> Iterator[Row]:
        """The data rows; a row with another field count is an error."""
        count = 0
        for line, row in self.rows:
            if len(row) != len(self.names):
                raise InputDataError(
                    f"{self.path}:{line}:1: row has {_fields(len(row))}, "
                    f"the header has {len(self.names)}"
                )
            count += 1
            yield line, row
        if not count:
            raise InputDataError(f"{self.path}:{self.header_line}: header but no data rows")


def header_names(raw: list[str]) -> list[str]:
    """The header's names, stripped; an empty one is named by its place as pandas names
    it, ``Unnamed: <i>`` (spreadsheets export empty trailing columns; to_csv leaves its
    index unnamed)."""
    return [name.strip() or f"Unnamed: {i}" for i, name in enumerate(raw)]


def _refuse_twice(names: list[str], path: str, line: int) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise InputDataError(
                f"{path}:{line}: column '{name}' appears twice in the header; "
                "give every column its own name"
            )
        seen.add(name)


def cell_at(
    stream: BinaryIO, path: str, delimiter: str, no_header: bool, row: int, column: str
) -> tuple[str, str]:
    """``path:line:col`` and the text of one cell of data row ``row`` (0-based)."""
    walk = Walk(stream, path, delimiter, no_header)
    col = walk.names.index(column) if column in walk.names else 0
    for line, fields in itertools.islice(walk.rows, row, None):
        return f"{path}:{line}:{col + 1}", fields[col] if col < len(fields) else ""
    return path, ""


def scan(
    stream: BinaryIO,
    path: str,
    delimiter: str,
    opts: InputOptions,
    roles: Roles,
    time_kind: str | None,
    booleans: Collection[str] = (),
) -> None:
    """Raise for the first problem in file order, as pyarrow and the core would see it;
    ``booleans`` are the value columns read as true/false."""
    walk = Walk(stream, path, delimiter, opts.no_header)
    names = walk.names
    index = {name: i for i, name in enumerate(names)}
    checked = {*roles.features, *([roles.target] if roles.target else [])}
    floats = [
        (index[n], n, n in checked and opts.nan == "error") for n in roles.floats if n in index
    ]
    id_col = index.get(roles.id) if roles.id else None
    time_col = index.get(roles.time) if roles.time else None
    for line, row in walk.data():
        if id_col is not None and row[id_col] == "":
            raise InputDataError(
                f"{path}:{line}:{id_col + 1}: empty id in column '{names[id_col]}'; every row "
                "needs a sequence id"
            )
        if time_col is not None:
            _check_time(row[time_col], time_kind, f"{path}:{line}:{time_col + 1}", names[time_col])
        for col, name, strict in floats:
            text = row[col]
            where = f"{path}:{line}:{col + 1}"
            if text in MISSING:
                if strict:
                    what = "empty cell" if text == "" else f"non-finite value '{text}'"
                    raise InputDataError(f"{where}: {what} in column '{name}'; {NAN_FIX}")
                continue
            if name in booleans:
                if text not in TRUE_FALSE:
                    raise InputDataError(
                        f"{where}: '{text}' is not true or false (column '{name}', read as 1 and 0)"
                    )
                continue
            try:
                value = number(text, opts.decimal)
            except ValueError:
                raise InputDataError(
                    f"{where}: '{text}' is not a number (column '{name}')"
                ) from None
            if strict and not _finite(value):
                raise InputDataError(
                    f"{where}: non-finite value '{text}' in column '{name}'; {NAN_FIX}"
                )


# What pyarrow's CSV reader takes for true and false (its defaults).
TRUE_FALSE = frozenset({"1", "True", "TRUE", "true", "0", "False", "FALSE", "false"})


def number(text: str, decimal: str = ".") -> float:
    """A cell as pyarrow reads it: no digit separators, ASCII digits only."""
    if "_" in text or not text.isascii():
        raise ValueError(text)
    if decimal != ".":
        if "." in text:
            raise ValueError(text)
        text = text.replace(decimal, ".")
    return float(text)


def _finite(value: float) -> bool:
    return value - value == 0


FINER_THAN_MICROSECONDS = re.compile(r":\d\d[.,]\d{7}")  # Python reads them, pyarrow does not
ANY_TIME = "a number or an ISO 8601 date/time (2024-03-31, 2024-03-31 14:00)"


def _check_time(text: str, kind: str | None, where: str, name: str) -> None:
    if kind == NUMBER or kind is None:
        try:
            if text not in MISSING and _finite(number(text)):
                return
        except ValueError:
            pass
        # No kind: the column's first value was neither, so '1974Q1' is not just "no number".
        expected = "a finite number" if kind == NUMBER else ANY_TIME
        raise InputDataError(
            f"{where}: time value '{text}' in column '{name}' is not {expected}; every "
            "row needs a time"
        )
    try:
        zoned = datetime.fromisoformat(text).tzinfo is not None
    except ValueError:
        raise InputDataError(
            f"{where}: time value '{text}' in column '{name}' is not an ISO 8601 date/time; "
            "every row needs a time"
        ) from None
    if FINER_THAN_MICROSECONDS.search(text):
        raise InputDataError(
            f"{where}: time value '{text}' in column '{name}' has more than 6 decimals of a "
            "second; write the times to the microsecond, the finest step read (pandas: "
            "to_csv(date_format='%Y-%m-%d %H:%M:%S.%f'))"
        )
    if zoned != (kind == UTC):
        has = "has a UTC offset" if zoned else "has no UTC offset"
        raise InputDataError(
            f"{where}: time value '{text}' in column '{name}' {has}, unlike the times "
            "before it; write every time the same way (all with an offset, or none)"
        )


def _fields(count: int) -> str:
    return f"{count} field" if count == 1 else f"{count} fields"


# --- wide CSV: rows of any length, read here (pyarrow wants every row full) -------------

WIDE_CELLS = 1 << 20  # cells per block of a wide file
SAMPLE_ROWS = 1000
SAMPLE_COLUMNS = 8  # a wide file's calendar column leads; a million step columns do not


def wide_sample(path: str, names: list[str], rows: list[Row], decimal: str) -> Any:
    """The first rows' leading columns as an Arrow table: numbers where every cell of a
    column parses, text otherwise."""
    import pyarrow as pa

    width = min(len(names), SAMPLE_COLUMNS)
    text = _padded(path, len(names), rows)[:, :width]
    columns = []
    for j in range(width):
        missing = (text[:, j] == "") | (text[:, j] == "NA")
        try:
            values = _floats(text[:, j : j + 1], missing[:, None], decimal, None)[:, 0]
            columns.append(float_array(values, ~missing))
        except ValueError:
            columns.append(string_array(text[:, j].tolist()))
    return pa.Table.from_arrays(columns, names=names[:width])


def wide_matrices(
    walk: Walk, decimal: str, steps: list[str], id_col: str | None
) -> Iterator[Matrix]:
    """The wide rows in blocks: the step columns parsed, a short row padded with
    missing cells, the ids as text."""
    chunk: list[Row] = []
    cells = 0
    for line_row in walk.rows:
        chunk.append(line_row)
        cells += len(walk.names)
        if cells >= WIDE_CELLS:
            yield _matrix(walk, chunk, decimal, steps, id_col)
            chunk, cells = [], 0
    if chunk:
        yield _matrix(walk, chunk, decimal, steps, id_col)


def _matrix(
    walk: Walk, chunk: list[Row], decimal: str, steps: list[str], id_col: str | None
) -> Matrix:
    text = _padded(walk.path, len(walk.names), chunk)
    index = {name: j for j, name in enumerate(walk.names)}
    columns = [index[name] for name in steps]
    cells = text[:, columns] if columns != list(range(len(walk.names))) else text
    missing = (cells == "") | (cells == "NA")
    lines = [line for line, _ in chunk]
    values = _floats(cells, missing, decimal, (walk.path, lines, columns, steps))
    ids = text[:, index[id_col]].tolist() if id_col is not None else None
    return Matrix(values, ~missing, ids)


def _padded(path: str, width: int, chunk: list[Row]) -> np.ndarray:
    for line, row in chunk:
        if len(row) > width:
            raise InputDataError(
                f"{path}:{line}:1: row has {_fields(len(row))}, the header has {width}"
            )
    padded = [row + [""] * (width - len(row)) for _, row in chunk]
    return np.array(padded, dtype=np.str_).reshape(len(chunk), width)


def _floats(
    cells: np.ndarray,
    missing: np.ndarray,
    decimal: str,
    place: tuple[str, list[int], list[int], list[str]] | None,
) -> np.ndarray:
    """float64 of the cells (missing ones NaN). A bad cell is an error naming it, given
    its ``place`` (path, lines, columns, names), else ValueError (the sample's text)."""
    if decimal == ".":
        try:
            return np.where(missing, "nan", cells).astype(np.float64)
        except ValueError:
            pass  # find the bad cell, one at a time
    out = np.full(cells.shape, np.nan)
    for r, c in np.argwhere(~missing):
        try:
            out[r, c] = number(str(cells[r, c]), decimal)
        except ValueError:
            if place is None:
                raise
            path, lines, columns, names = place
            raise InputDataError(
                f"{path}:{lines[r]}:{columns[c] + 1}: '{cells[r, c]}' is not a number "
                f"(column '{names[c]}')"
            ) from None
    return out
