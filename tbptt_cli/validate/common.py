"""What every check of `tbptt validate` shares: opening an output, its manifest, the
per-row index and reading big datasets slab by slab."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from tbptt_cli.errors import InputDataError, InputMissingError
from tbptt_cli.hdf5 import FORMAT_VERSION
from tbptt_cli.plan import Segments

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
INDEX = ("X", "sequence", "offset", "length", "reset", "mask")
SLAB_BYTES = 32 << 20  # bytes of one [rows, window, ...] slab read at a time
SHOWN = 10  # problems listed per kind of failure; the rest are counted
LAYOUT_KEYS = (
    "samples",
    "window",
    "batch_size",
    "batches",
    "stateful",
    "packing",
    "order",
    "ranks",
    "streams",
)


def open_output(path: str) -> h5py.File:
    """Open one of our outputs read-only; anything else is refused before it is read."""
    file = Path(path)
    if not file.exists():
        raise InputMissingError(f"{path}: no such file")
    if file.is_dir():
        raise InputMissingError(f"{path}: is a directory; expected an .h5 file written by tbptt")
    try:
        with open(file, "rb") as stream:
            head = stream.read(len(HDF5_SIGNATURE))
    except OSError as e:
        raise InputMissingError(f"{path}: cannot read ({e.strerror or e})") from None
    if head != HDF5_SIGNATURE:
        raise InputDataError(f"{path}: not an HDF5 file; give an .h5 output written by tbptt")
    try:
        f = h5py.File(file, "r")
    except OSError as e:
        raise InputDataError(f"{path}: cannot open as HDF5 ({e}); is the file complete?") from None
    if attr(f, "format") != "tbptt":
        f.close()
        raise InputDataError(
            f"{path}: not a tbptt output (no format='tbptt' attribute); only files written by "
            "tbptt can be checked"
        )
    version = attr(f, "format_version")
    if version != FORMAT_VERSION:
        f.close()
        raise InputDataError(
            f"{path}: format version {version}; this tbptt reads version {FORMAT_VERSION}, "
            "upgrade tbptt"
        )
    return f


def attr(f: h5py.File, name: str, default: Any = None) -> Any:
    """A root attribute as a plain Python value (numpy scalars unwrapped, bytes decoded)."""
    value = f.attrs.get(name, default)
    if isinstance(value, bytes):
        return value.decode()
    return value.item() if isinstance(value, np.generic) else value


def default_manifest(path: str) -> Path:
    output = Path(path)
    return output.with_name(output.stem + ".manifest.json")


def load_manifest(path: str, given: str | None) -> tuple[Path, dict[str, Any] | None, str | None]:
    """(manifest path, document or None, problem or None). A named but missing one is 66."""
    where = Path(given) if given else default_manifest(path)
    if not where.exists():
        if given:
            raise InputMissingError(f"{given}: no such manifest file")
        return where, None, f"{where}: no manifest beside the file; pass --manifest PATH"
    try:
        doc = json.loads(where.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        return where, None, f"{where}: cannot read the manifest ({e})"
    if not isinstance(doc, dict):
        return where, None, f"{where}: the manifest is not a JSON object"
    return where, doc, None


@dataclass
class Index:
    """The per-row index datasets, plus ``lead`` (the first real step) taken from ``mask``."""

    sequence: np.ndarray
    offset: np.ndarray
    length: np.ndarray
    reset: np.ndarray
    lead: np.ndarray
    window: int
    batch_size: int
    stateful: bool
    ids: list[str] | None = None  # from the manifest
    lengths: np.ndarray | None = None  # real steps of every sequence, from the manifest
    ranks: int = 1
    part: np.ndarray | None = None  # --streams: which part of its sequence a row holds
    segments: Segments | None = None  # --packing stream: the pieces of every row

    def name(self, i: int) -> str:
        if i < 0:
            return "a filler row"
        return f"sequence {self.ids[i]!r}" if self.ids and i < len(self.ids) else f"sequence {i}"

    def pieces(self) -> Segments:
        """Every row's real steps as pieces (one per row unless --packing stream)."""
        if self.segments is not None:
            return self.segments
        rows = np.arange(len(self.sequence), dtype=np.int64)
        return Segments(rows, self.lead, self.sequence, self.offset, self.length)

    def ends(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Per row: the sequence and offset of its first real step, and the sequence and
        end (one past the offset) of its last, -1 in empty rows."""
        if self.segments is None:
            end = np.where(self.sequence >= 0, self.offset + self.length, -1)
            return self.sequence, self.offset, self.sequence, end
        pieces, rows = self.segments, len(self.sequence)
        head_seq, head_offset, tail_seq, tail_end = (np.full(rows, -1) for _ in range(4))
        # Pieces are sorted by (row, column): a row's first and last are where it changes.
        heads = np.flatnonzero(np.diff(pieces.row, prepend=-1))
        tails = np.flatnonzero(np.diff(pieces.row, append=rows))
        head_seq[pieces.row[heads]] = pieces.sequence[heads]
        head_offset[pieces.row[heads]] = pieces.offset[heads]
        tail_seq[pieces.row[tails]] = pieces.sequence[tails]
        tail_end[pieces.row[tails]] = (pieces.offset + pieces.length)[tails]
        return head_seq, head_offset, tail_seq, tail_end

    def step_at(self, sample: int, t: int) -> tuple[int, int] | None:
        """(sequence, step) that time t of a row holds, or None on padding."""
        pieces = self.pieces()
        lo, hi = np.searchsorted(pieces.row, [sample, sample + 1])
        for p in range(int(lo), int(hi)):
            if pieces.column[p] <= t < pieces.column[p] + pieces.length[p]:
                return int(pieces.sequence[p]), int(pieces.offset[p] + t - pieces.column[p])
        return None


def listed(bad: np.ndarray, line: Callable[[int], str], kind: str) -> list[str]:
    """One line for each of the first SHOWN true positions of ``bad``, then a count."""
    where = np.flatnonzero(bad)
    lines = [line(i) for i in where[:SHOWN].tolist()]
    more = len(where) - len(lines)
    return lines + ([f"... and {more} more {kind}"] if more else [])


def slabs(ds: h5py.Dataset) -> Iterator[tuple[int, np.ndarray]]:
    """(first row, rows) of a [samples, ...] dataset, about SLAB_BYTES at a time."""
    for start, stop in slab_ranges(ds):
        yield start, ds[start:stop]


def slab_ranges(ds: h5py.Dataset) -> Iterator[tuple[int, int]]:
    row_bytes = max(1, int(np.prod(ds.shape[1:], dtype=np.int64)) * ds.dtype.itemsize)
    step = max(1, SLAB_BYTES // row_bytes)
    for start in range(0, ds.shape[0], step):
        yield start, min(ds.shape[0], start + step)
