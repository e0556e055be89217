"""What every table format gives the core: a `Source` of record batches for one part.

A format is one small class: its column names, a sample of its first rows (types as the
format stores or infers them), its record batches with the columns the roles need, and
where a row sits (``path:line:col`` for text, ``path row N`` otherwise). The core never
sees a file: this is the seam where parts can be read elsewhere (one part per worker).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO, Any

import numpy as np

from tbptt_cli.readers.buffers import constant
from tbptt_cli.readers.columns import Roles
from tbptt_cli.readers.inputs import Part
from tbptt_cli.readers.timecol import NotTime, kind_of, times
from tbptt_cli.sequences import FileInfo

SAMPLE_ROWS = 1 << 15  # rows of a columnar file the roles are chosen from
BATCH_ROWS = 1 << 18  # rows per record batch of a columnar file (fewer Python steps)


@dataclass(frozen=True)
class Matrix:
    """Wide rows as one block: an Arrow batch of a million step columns would cost
    seconds of per-column work, so a wide text file hands over this instead."""

    values: np.ndarray  # float64 [rows, steps], NaN where missing
    present: np.ndarray  # bool [rows, steps]: the cell was not missing
    ids: list[str] | None


class Source:
    """One part; subclasses fill in ``names`` and the batches."""

    names: list[str]

    def __init__(self, part: Part) -> None:
        self.part = part
        self.shown = part.path
        self.warnings: list[str] = []

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def sample(self) -> Any:
        """The first rows as an Arrow table (partition columns included)."""
        raise NotImplementedError

    def batches(self, roles: Roles, time_kind: str | None) -> Iterator[Any]:
        """Record batches holding (at least) ``roles.read``, partition columns included."""
        raise NotImplementedError

    def time_kind(self, column: str) -> str | None:
        """What the column holds: numbers, naive or UTC timestamps (None: neither)."""
        values = self.sample().column(column).combine_chunks()
        kind = kind_of(values.type)
        if kind is not None or len(values) == 0:
            return kind
        try:
            return times(values.drop_null()).kind
        except NotTime:
            return None

    def rows_hint(self) -> int:
        """About how many rows the part holds (0: unknown), to size buffers."""
        return 0

    def numeric(self, column: str) -> bool:
        """Whether the column holds numbers (a default feature candidate)."""
        from tbptt_cli.readers.columns import numeric_type

        return numeric_type(self.sample().column(column).type)

    def where(self, row: int, column: str) -> tuple[str, str | None]:
        """The place of a cell (``row`` counts data rows from 0) and its text if known."""
        return f"{self.shown} row {row + 1}", None

    def row_place(self, row: int) -> str:
        return f"{self.shown} row {row + 1}"

    def with_partition(self, batch: Any) -> Any:
        """The batch with a constant column per hive ``key=value`` folder above the file."""
        for key, value in self.part.partition:
            batch = batch.append_column(key, constant(value, batch.num_rows))
        return batch

    def file_info(self) -> FileInfo:
        raise NotImplementedError

    def close(self) -> None:
        pass


class Tap:
    """A binary file that hashes, counts and reports every byte read from it; reading
    stdin, it also keeps a copy (``tee``) so that a problem can be located afterwards."""

    def __init__(
        self,
        stream: IO[bytes],
        tick: Callable[[int], None] | None = None,
        tee: IO[bytes] | None = None,
    ) -> None:
        self.stream, self.tick, self.tee = stream, tick, tee
        self.digest = hashlib.sha256()
        self.size = 0

    def read(self, count: int = -1) -> bytes:
        block = self.stream.read(count)
        self.digest.update(block)
        self.size += len(block)
        if self.tee is not None:
            self.tee.write(block)
        if self.tick:
            self.tick(len(block))
        return block

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def tell(self) -> int:
        return self.size

    def close(self) -> None:
        self.stream.close()

    @property
    def closed(self) -> bool:
        return self.stream.closed

    def info(self, path: str) -> FileInfo:
        """Size and sha256 of everything read (call once the stream is exhausted)."""
        while self.read(1 << 20):  # the rest, if the reader stopped short of the end
            pass
        return FileInfo(path, self.size, self.digest.hexdigest())
