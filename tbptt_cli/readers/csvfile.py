"""CSV/TSV (plain or compressed, a file or stdin) through pyarrow's streaming reader.

pyarrow parses blocks in C on every core and rounds every number correctly
(``fast_float``), so its float64 values are bit for bit those of Python's ``float()``.
The first MiB of text is parsed on its own first (the sample): it gives the column names
and the type of each column, from which the roles and the time column's kind are chosen;
then the whole text is streamed with those types. pyarrow cannot say on which line a bad
cell sits, so every problem is worded by `delimited`, which reads the text again.
"""

from __future__ import annotations

import codecs
import contextlib
import io
import os
from collections.abc import Iterator
from datetime import datetime
from typing import IO, Any, BinaryIO

from tbptt_cli.errors import InputDataError, UsageError
from tbptt_cli.options import InputOptions
from tbptt_cli.readers import delimited
from tbptt_cli.readers.buffers import text_type
from tbptt_cli.readers.columns import Roles
from tbptt_cli.readers.inputs import Part, decompressed, open_input, refuse_compressed
from tbptt_cli.readers.source import Source, Tap
from tbptt_cli.readers.timecol import NAIVE, NUMBER, UTC

BLOCK_SIZE = 2 << 20  # pyarrow reads ahead many blocks: small ones bound the memory
SAMPLE_BYTES = 1 << 20
MISSING = ["", "NA"]  # the cells that mean "no value"; "nan" and "inf" are numbers


class Malformed(Exception):
    """Text that is not UTF-8 or holds a NUL byte: `delimited` says where."""


class Checked:
    """The decompressed text as pyarrow reads it, refused at the first NUL or non-UTF-8."""

    def __init__(self, head: bytes, stream: Any, check: bool = True) -> None:
        self.head, self.stream, self.check = head, stream, check
        self.decoder = codecs.getincrementaldecoder("utf-8")()
        self.pending = False  # the last block ended inside a character

    def read(self, count: int = -1) -> bytes:
        if self.head:
            block, self.head = self.head, b""
        else:
            try:
                block = self.stream.read(count)
            except EOFError:
                raise Malformed("the compressed data ends early") from None
        if self.check:
            self.check_text(bytes(block))
        return bytes(block)

    def check_text(self, block: bytes) -> None:
        """Raise `Malformed` at a NUL byte or bytes that are not UTF-8 (a character may
        continue in the next block)."""
        if b"\0" in block:
            raise Malformed("NUL byte")
        if block.isascii() and not self.pending and block:
            return
        try:
            self.decoder.decode(block, final=not block)
        except UnicodeDecodeError:
            raise Malformed("bad UTF-8") from None
        self.pending = bool(self.decoder.getstate()[0])

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def close(self) -> None:
        pass

    @property
    def closed(self) -> bool:
        return False


class CsvSource(Source):
    """One CSV/TSV part."""

    def __init__(
        self,
        part: Part,
        opts: InputOptions,
        stdin: BinaryIO,
        tee: IO[bytes] | None,
        tick: Any = None,
    ) -> None:
        super().__init__(part)
        self.opts = opts
        self.delimiter = delimiter(opts, part.format)
        # What the walker checks: nothing but the text until the roles are known.
        self.roles = Roles(None, None, [])
        self.kind: str | None = None
        self.named_by_us = False  # pyarrow is given the names (see _start)
        raw = stdin if part.path == "-" else open_input(part.path)
        self.tap = Tap(raw, tick, tee if tee is not raw else None)  # not when reading the copy
        self.tee = tee
        try:
            self._start(opts, part)
        except BaseException:
            self.close()
            raise

    def _start(self, opts: InputOptions, part: Part) -> None:
        """Read the head and parse the sample; the names come from it."""
        self.text = decompressed(self.tap, part)
        self.head = self._read_head()
        if opts.delimiter is None:
            self._refuse_other_delimiter()
        self.wide = opts.layout == "wide"
        if self.wide:
            self.sample_table = self._wide_sample()
            raw_names = names = self.walk.names  # the walker strips them (or names c0..)
        else:
            self.sample_table = self._sample()
            raw_names = list(self.sample_table.column_names)
            names = (
                [f"c{i}" for i in range(len(raw_names))]
                if opts.no_header
                else delimited.header_names(raw_names)
            )
            if len(set(names)) != len(names):
                raise self.explain("a column name appears twice")
            self.sample_table = self.sample_table.rename_columns(names)
            # Empty header cells (named Unnamed: <i>) leave pyarrow names it cannot tell apart:
            # the whole read then gives it ours, in place of the header line.
            self.named_by_us = len(set(raw_names)) != len(raw_names)
            if self.named_by_us:
                raw_names = names
        self.raw = dict(zip(names, raw_names, strict=True))
        self.sample_table = self.with_partition(self.sample_table)
        self.names = names + [key for key, _ in part.partition]
        if not opts.no_header and names and all(_numeric_text(n, opts.decimal) for n in raw_names):
            self.warnings.append(
                f"{self.shown}: the first line ({', '.join(raw_names[:4])}"
                f"{', ...' if len(names) > 4 else ''}) was read as the header, but its names "
                "are numbers; pass --no-header if it is data"
            )

    def _refuse_other_delimiter(self) -> None:
        """A header and first row that the default delimiter leaves whole but another one
        splits alike (``a;b`` over ``1,5;2,3``): a European, tab- or space-separated file, which
        would otherwise fail as one text column with no numeric feature."""
        lines = self.head.split(b"\n", 2)[:2]
        if len(lines) < 2 or self.delimiter.encode() in lines[0]:
            return
        for other in (";", "\t", "|", " "):
            count = lines[0].count(other.encode())
            if count and lines[1].count(other.encode()) == count:
                shown = "\\t" if other == "\t" else other
                raise InputDataError(
                    f"{self.shown}:1: the header has no {self.delimiter!r} but {count + 1} "
                    f"columns split by '{shown}'; pass --delimiter '{shown}'"
                )

    def _read_head(self) -> bytes:
        """The first MiB of text, or more until two lines end (a header and a row)."""
        pieces: list[bytes] = []
        size = ends = 0
        while size < SAMPLE_BYTES or (ends < 2 and size <= delimited.MAX_LINE):
            try:
                block = self.text.read(SAMPLE_BYTES)
            except (OSError, EOFError) as exc:
                raise InputDataError(f"{self.shown}: cannot decompress ({exc})") from None
            if not block:
                break
            pieces.append(bytes(block))
            size += len(block)
            ends += block.count(b"\n")
            if ends < 2 and size > delimited.MAX_LINE:
                raise InputDataError(
                    f"{self.shown}:{ends + 1}: line longer than {delimited.MAX_LINE >> 20} MiB; "
                    "this is not CSV text with line breaks (for wide data put one sequence "
                    "per line)"
                )
        head = b"".join(pieces)
        refuse_compressed(head[:8], self.part)
        self.complete = not block
        return head

    def _sample(self) -> Any:
        """The first rows, typed by pyarrow's inference (the head cut at a line end)."""
        import pyarrow as pa
        import pyarrow.csv as pacsv

        text = self.head if self.complete else self.head[: _last_line_end(self.head)]
        self.sampled = len(text)
        try:
            Checked(b"", None).check_text(text)
            return pacsv.read_csv(
                io.BytesIO(text),
                read_options=pacsv.ReadOptions(
                    use_threads=False, autogenerate_column_names=self.opts.no_header
                ),
                parse_options=self._parse_options(),
                convert_options=pacsv.ConvertOptions(
                    null_values=MISSING,
                    strings_can_be_null=False,
                    quoted_strings_can_be_null=True,
                    decimal_point=self.opts.decimal,
                ),
            )
        except (pa.ArrowInvalid, Malformed) as exc:
            raise self.explain(str(exc)) from None

    def sample(self) -> Any:
        return self.sample_table

    def rows_hint(self) -> int:
        """From the file's size and the sample's bytes per row (plain files only)."""
        if self.part.path == "-" or self.part.compression or self.wide:
            return 0
        size = os.path.getsize(self.part.path)
        return int(size * self.sample_table.num_rows / max(self.sampled, 1) * 1.02) + 1

    def _wide_sample(self) -> Any:
        """Wide rows may be short, which pyarrow refuses: the stdlib walker reads them."""
        import itertools

        text: Any = Checked(self.head, self.text, check=False)  # the walker checks the text
        self.walk = delimited.Walk(text, self.shown, self.delimiter, self.opts.no_header)
        self.head = b""
        taken = list(itertools.islice(self.walk.rows, delimited.SAMPLE_ROWS))
        if not taken:
            raise InputDataError(f"{self.shown}:{self.walk.header_line}: header but no data rows")
        self.walk.rows = itertools.chain(taken, self.walk.rows)
        return delimited.wide_sample(self.shown, self.walk.names, taken, self.opts.decimal)

    def _parse_options(self) -> Any:
        import pyarrow.csv as pacsv

        return pacsv.ParseOptions(delimiter=self.delimiter, newlines_in_values=True)

    def booleans(self, roles: Roles) -> set[str]:
        """The value columns that are true/false (R's TRUE/FALSE), read as 0 and 1 by the
        core: as pyarrow typed the sample, or text that starts with a true/false word (a
        bad cell among the first rows, found and named by the walker)."""
        import pyarrow as pa

        def true_false(name: str) -> bool:
            column = self.sample_table.column(name)
            if pa.types.is_boolean(column.type):
                return True
            if not text_type(column.type):
                return False
            first = next((v for v in column.slice(0, 100).to_pylist() if v is not None), "")
            return first in delimited.TRUE_FALSE - {"0", "1"}

        if self.wide:  # a wide row's steps are numbers
            return set()
        return {name for name in roles.floats if name in self.raw and true_false(name)}

    def column_types(self, roles: Roles, time_kind: str | None) -> dict[str, Any]:
        import pyarrow as pa

        types: dict[str, Any] = dict.fromkeys(roles.floats, pa.float64())
        types.update(dict.fromkeys(self.booleans(roles), pa.bool_()))
        if roles.id is not None:
            types[roles.id] = pa.dictionary(pa.int32(), pa.string())
        if roles.watch is not None:
            types[roles.watch] = pa.string()  # converted by the core, which may give up on it
        if roles.time is not None:
            if time_kind is None:
                raise self.explain("the time column holds no numbers or dates")
            types[roles.time] = {
                NUMBER: pa.float64(),
                NAIVE: pa.timestamp("us"),
                UTC: pa.timestamp("us", "UTC"),
            }[time_kind]
        return {self.raw[name]: t for name, t in types.items() if name in self.raw}

    def time_kind(self, column: str) -> str | None:
        """As pyarrow inferred it; for text (a bad cell among the first rows), what the
        first value is, so that the bad cell is the one reported."""
        kind = super().time_kind(column)
        text = self._first_text(column)
        if kind is not None or text is None:
            return kind
        if _numeric_text(text, self.opts.decimal):
            return NUMBER
        try:
            return UTC if datetime.fromisoformat(text).tzinfo is not None else NAIVE
        except ValueError:
            return None

    def numeric(self, column: str) -> bool:
        """Inferred numeric, or text whose values are mostly numbers (``n/a`` among
        readings, on the first line or further down): the bad cell is then reported where
        it is, rather than the column silently dropped."""
        import pyarrow as pa
        import pyarrow.compute as pc

        if super().numeric(column):
            return True
        values = self.sample_table.column(column)
        if not pa.types.is_string(values.type):
            return False
        # The first distinct values are enough to tell readings from labels.
        texts = [t for t in pc.unique(values).to_pylist()[:100] if t not in MISSING]
        numbers = sum(_numeric_text(t, self.opts.decimal) for t in texts)
        return bool(texts) and 2 * numbers >= len(texts)

    def _first_text(self, column: str) -> str | None:
        import pyarrow as pa

        values = self.sample_table.column(column)
        if not pa.types.is_string(values.type):
            return None
        for text in values.to_pylist():
            if text not in MISSING:
                return str(text)
        return None

    def batches(self, roles: Roles, time_kind: str | None) -> Iterator[Any]:
        import pyarrow as pa
        import pyarrow.csv as pacsv

        self.roles, self.kind = roles, time_kind
        if self.wide:
            yield from delimited.wide_matrices(
                self.walk, self.opts.decimal, roles.features, roles.id
            )
            return
        types = self.column_types(roles, time_kind)
        names = {raw: name for name, raw in self.raw.items()}
        read = pacsv.ReadOptions(block_size=BLOCK_SIZE, autogenerate_column_names=False)
        if self.opts.no_header or self.named_by_us:
            read = pacsv.ReadOptions(
                block_size=BLOCK_SIZE,
                column_names=list(self.raw.values()),
                skip_rows=0 if self.opts.no_header else 1,
            )
        convert = pacsv.ConvertOptions(
            column_types=types,
            include_columns=list(types),
            null_values=MISSING,
            strings_can_be_null=False,
            quoted_strings_can_be_null=True,
            decimal_point=self.opts.decimal,
        )
        stream = Checked(self.head, self.text)
        self.head = b""
        try:
            reader = pacsv.open_csv(
                stream,
                read_options=read,
                parse_options=self._parse_options(),
                convert_options=convert,
            )
            for batch in reader:
                yield self.with_partition(
                    batch.rename_columns([names[n] for n in batch.schema.names])
                )
        except (pa.ArrowInvalid, Malformed, UnicodeDecodeError) as exc:
            raise self.explain(str(exc)) from None

    @contextlib.contextmanager
    def replay(self) -> Iterator[BinaryIO]:
        """The text again from the start (stdin: from the copy taken while reading)."""
        if self.tee is not None:
            self.tee.flush()
            self.tee.seek(0)
            yield decompressed(self.tee, self.part)
            return
        with open_input(self.part.path) as raw:
            text = decompressed(raw, self.part)
            try:
                yield text
            finally:
                text.close()

    def explain(self, reason: str) -> InputDataError:
        """The first problem in the text, found by the precise walker (the reason pyarrow
        gave is the last resort)."""
        try:
            with self.replay() as text:
                delimited.scan(
                    text,
                    self.shown,
                    self.delimiter,
                    self.opts,
                    self.roles,
                    self.kind,
                    self.booleans(self.roles),
                )
        except InputDataError as error:
            return error
        return InputDataError(f"{self.shown}: {reason}; check the file's format and --delimiter")

    def where(self, row: int, column: str) -> tuple[str, str | None]:
        if column not in self.raw:  # a partition column
            return super().where(row, column)
        with self.replay() as text:
            return delimited.cell_at(
                text, self.shown, self.delimiter, self.opts.no_header, row, column
            )

    def row_place(self, row: int) -> str:
        return self.where(row, next(iter(self.raw)))[0].rsplit(":", 1)[0]

    def close(self) -> None:
        if self.part.path != "-":
            self.tap.close()

    def file_info(self) -> Any:
        return self.tap.info(self.part.path)


def delimiter(opts: InputOptions, fmt: str) -> str:
    given = opts.delimiter
    if given is None:
        chosen = "\t" if fmt == "tsv" else ","
    else:
        chosen = {"\\t": "\t", "tab": "\t"}.get(given, given)
        if len(chosen) != 1:
            raise UsageError(f"--delimiter {given!r} must be one character (or \\t for tab)")
    if chosen == opts.decimal:
        raise UsageError(
            f"--decimal {opts.decimal} is also the field delimiter; pass --delimiter ';' (or "
            "tab) for numbers written with a decimal comma"
        )
    return chosen


def _numeric_text(text: str, decimal: str) -> bool:
    try:
        delimited.number(text.strip(), decimal)
    except ValueError:
        return False
    return True


def _last_line_end(head: bytes) -> int:
    """The end of the last line of ``head`` that ends outside quotes (quoted fields may
    hold line breaks): before it the number of quote characters is even."""
    cut = head.rfind(b"\n")
    while cut > 0 and head.count(b'"', 0, cut) % 2:
        cut = head.rfind(b"\n", 0, cut)
    return cut + 1 if cut >= 0 else len(head)
