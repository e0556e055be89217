"""Parquet and Arrow IPC/Feather: record batches read as stored, only the columns needed.

Parquet is read one row group's batches at a time (``iter_batches``), Arrow IPC through a
memory map; both are hashed on a background thread with their own file handle (the
readers seek, so the bytes are not read in order). Rows are located as ``path row N``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from tbptt_cli.errors import InputDataError, InputMissingError
from tbptt_cli.readers.columns import Roles
from tbptt_cli.readers.inputs import Part, open_input
from tbptt_cli.readers.source import BATCH_ROWS, SAMPLE_ROWS, Source
from tbptt_cli.sequences import FileInfo

READ_BUFFER = 1 << 20


class ColumnarSource(Source):
    """What Parquet and Arrow share: a sample, column selection, partition columns."""

    def __init__(self, part: Part, *unused: Any) -> None:
        super().__init__(part)
        open_input(part.path).close()  # the check that it exists and is readable, at once
        # Hashed from the first batches on: a sample alone (the layout decided on the first
        # part of a Dask run) reads no more than it needs.
        self.hashed: FileInfo | None = None
        self._sample: Any = None

    def stored(self, columns: list[str] | None, rows: int = BATCH_ROWS) -> Iterator[Any]:
        """The file's record batches of about ``rows`` rows, with these of its own columns
        (None: all)."""
        raise NotImplementedError

    def sample(self) -> Any:
        import pyarrow as pa

        if self._sample is None:
            taken, rows = [], 0
            for batch in self.stored(None, SAMPLE_ROWS):
                taken.append(self.with_partition(batch.slice(0, SAMPLE_ROWS - rows)))
                rows += taken[-1].num_rows
                if rows >= SAMPLE_ROWS:
                    break
            partition = pa.dictionary(pa.int32(), pa.string())
            fields = [*self.schema, *(pa.field(key, partition) for key, _ in self.part.partition)]
            schema = pa.schema(fields, metadata=self.schema.metadata)  # pandas' index
            self._sample = pa.Table.from_batches(taken, schema=schema)
        return self._sample

    def batches(self, roles: Roles, time_kind: str | None) -> Iterator[Any]:
        self.file_info()
        own = [name for name in roles.read if name in self.schema.names]
        for batch in self.stored(own):
            yield self.with_partition(batch)

    def file_info(self) -> FileInfo:
        if self.hashed is None:
            from tbptt_cli.readers import hash_file

            self.hashed = hash_file(self.part.path)
        return self.hashed

    @property
    def schema(self) -> Any:
        raise NotImplementedError


class ParquetSource(ColumnarSource):
    def __init__(self, part: Part, *unused: Any) -> None:
        super().__init__(part)
        self.file = self._open()
        self.names = self.file.schema_arrow.names + [key for key, _ in part.partition]

    def _open(self, dictionary: list[str] | None = None) -> Any:
        """The file, read through a 1 MiB buffer: a memory map or whole pre-buffered row
        groups held the file's pages resident (380 MB of RSS for a 264 MB file, against
        150). ``dictionary`` columns come dictionary-encoded (an id's text once per row
        group, not once per row)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            return pq.ParquetFile(
                self.part.path,
                pre_buffer=False,
                buffer_size=READ_BUFFER,
                read_dictionary=dictionary,
            )
        except (pa.ArrowException, OSError) as exc:
            raise InputDataError(
                f"{self.part.path}: not a Parquet file ({_first_line(exc)}); check the file or "
                "--format"
            ) from None

    @property
    def schema(self) -> Any:
        return self.file.schema_arrow

    def rows_hint(self) -> int:
        return int(self.file.metadata.num_rows)

    def batches(self, roles: Roles, time_kind: str | None) -> Iterator[Any]:
        import pyarrow as pa

        text = roles.id if roles.id in self.schema.names else None
        if text is not None and pa.types.is_string(self.schema.field(text).type):
            self.file = self._open([text])
        return super().batches(roles, time_kind)

    def stored(self, columns: list[str] | None, rows: int = BATCH_ROWS) -> Iterator[Any]:
        import pyarrow as pa

        try:
            yield from self.file.iter_batches(batch_size=rows, columns=columns)
        except (pa.ArrowException, OSError) as exc:
            raise InputDataError(f"{self.shown}: cannot read ({_first_line(exc)})") from None

    def close(self) -> None:
        self.file.close()


class ArrowSource(ColumnarSource):
    """Arrow IPC: the file format (Feather v2, ``.arrow``) or the stream format."""

    def __init__(self, part: Part, *unused: Any) -> None:
        import pyarrow as pa

        super().__init__(part)
        try:
            self.map = pa.memory_map(part.path)
        except OSError as exc:
            raise InputMissingError(f"{part.path}: cannot open ({exc})") from None
        if self.map.read(4) == b"FEA1":
            self.map.close()
            raise InputDataError(
                f"{part.path}: Feather version 1 is not read; write it again with "
                "pyarrow.feather.write_feather (version 2, the default)"
            )
        self.reader = self._open()
        self.names = self.reader.schema.names + [key for key, _ in part.partition]

    def _open(self) -> Any:
        import pyarrow as pa
        import pyarrow.ipc as ipc

        self.map.seek(0)
        try:
            return ipc.open_file(self.map)
        except pa.ArrowInvalid:
            self.map.seek(0)
        try:
            return ipc.open_stream(self.map)
        except pa.ArrowInvalid as exc:
            self.map.close()
            raise InputDataError(
                f"{self.part.path}: not an Arrow IPC/Feather file ({_first_line(exc)}); "
                "check the file or --format"
            ) from None

    @property
    def schema(self) -> Any:
        return self.reader.schema

    def stored(self, columns: list[str] | None, rows: int = BATCH_ROWS) -> Iterator[Any]:
        import pyarrow as pa

        # Batches as written (``rows`` does not apply); a stream is read once, so each
        # pass opens its own reader.
        reader = self._open()
        try:
            if hasattr(reader, "num_record_batches"):
                batches = (reader.get_batch(i) for i in range(reader.num_record_batches))
            else:
                batches = iter(reader)
            for batch in batches:
                yield batch.select(columns) if columns is not None else batch
        except (pa.ArrowException, OSError) as exc:
            raise InputDataError(f"{self.shown}: cannot read ({_first_line(exc)})") from None

    def close(self) -> None:
        self.map.close()


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
