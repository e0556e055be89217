"""The disk side of the writer: pushing dirty pages out early, hashing while writing.

Kept apart from ``hdf5.py`` (what goes into the file) because both work on the bytes of
the file as the kernel sees them, not on HDF5 objects.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
from concurrent.futures import Future
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from tbptt_cli.digest import Worker, sha256_file
from tbptt_cli.errors import InternalError

WRITEBACK_BYTES = 256 << 20  # start pushing dirty pages to the disk every this many bytes


def early_allocation() -> Any:
    """A dataset creation property list that places every chunk in the file at creation, so
    the file's layout (and every byte outside the chunks) is fixed before any data."""
    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
    # No fill values written at allocation (gigabytes of zeros, all overwritten anyway):
    # every chunk is written whole, the last one padded with zeros (hdf5._chunks).
    dcpl.set_fill_time(h5py.h5d.FILL_TIME_NEVER)
    return dcpl


Key = tuple[str, int]  # a chunk: (dataset name, its first row)


@dataclass(frozen=True)
class Piece:
    offset: int  # in the file
    size: int
    chunk: Key | None  # None: bytes outside the data chunks
    end_row: int  # rows of its dataset that must be written before it can be read back


class StreamHash:
    """sha256 of the output file, computed on a thread of its own while it is written.

    The whole file is hashed in file order. The bytes outside the data chunks are hashed
    as they will be after closing (predicted from a snapshot, see `_predicted`). A chunk
    is hashed from the slab in memory if that slab is on offer when the hash reaches it
    (X comes first in the file, so all of X is), otherwise read back from the file once
    its rows are written. `finish` checks the prediction against the closed file and
    re-hashes it whole if anything differs, so a different HDF5 version can only cost
    time, never a wrong digest.
    """

    def __init__(self, path: Path, pieces: list[Piece], gaps: dict[int, bytes], rows: int):
        self.path, self.pieces, self.gaps, self.rows = path, pieces, gaps, rows
        self.digest = hashlib.sha256()
        self.next = 0  # index of the first piece not hashed yet
        self.stopped = False
        self.worker = Worker("tbptt-sha256-out")

    @classmethod
    def start(cls, f: Any, path: Path, datasets: list[Any]) -> StreamHash | None:
        """Flush the file's structure and start hashing; None if the layout is unusual."""
        f.flush()
        chunks: list[Piece] = []
        for ds in datasets:
            # h5py asks HDF5 for these on every access: bound once, not once per chunk.
            def found(
                info: Any, name: str = ds.name, rows: int = ds.chunks[0], end: int = ds.shape[0]
            ) -> None:
                first = int(info.chunk_offset[0])
                key, end_row = (name, first), min(end, first + rows)
                chunks.append(Piece(int(info.byte_offset), int(info.size), key, end_row))

            # One walk of the chunk index: get_chunk_info(i) walks it again for every i
            # (0.15 s for 4000 chunks). chunk_iter needs HDF5 >= 1.13.
            if hasattr(ds.id, "chunk_iter"):
                ds.id.chunk_iter(found)
            else:
                for i in range(ds.id.get_num_chunks()):
                    found(ds.id.get_chunk_info(i))
        chunks.sort(key=lambda piece: piece.offset)
        size = os.path.getsize(path)
        pieces: list[Piece] = []
        position = 0
        for piece in [*chunks, Piece(size, 0, None, 0)]:
            if piece.offset < position:
                return None  # overlapping chunks: not a layout this class knows
            if piece.offset > position:
                pieces.append(Piece(position, piece.offset - position, None, 0))
            if piece.size:
                pieces.append(piece)
            position = piece.offset + piece.size
        gaps = _predicted(path, [(p.offset, p.size) for p in pieces if p.chunk is None])
        return cls(path, pieces, gaps, max(ds.shape[0] for ds in datasets))

    def offer(self, written: int, chunks: dict[Key, np.ndarray]) -> Future[None]:
        """Hash on as far as possible: the first ``written`` rows of every dataset are in
        the file, and ``chunks`` (whole chunks' bytes, kept unchanged by the caller until
        the Future is done) in memory. Offers are hashed in turn, on a thread of their own."""
        return self.worker.submit(partial(self._advance, written, chunks))

    def abort(self) -> None:
        self.stopped = True
        self.worker.close()

    def _advance(self, written: int, chunks: dict[Key, np.ndarray]) -> None:
        fd = None
        try:
            while self.next < len(self.pieces) and not self.stopped:
                piece = self.pieces[self.next]
                if piece.chunk is None:
                    data: Any = self.gaps[piece.offset]
                elif piece.chunk in chunks:
                    data = chunks[piece.chunk]
                    if data.nbytes != piece.size:
                        size = f"{data.nbytes} bytes, not {piece.size}"
                        raise InternalError(f"{self.path}: chunk {piece.chunk} has {size}")
                elif piece.end_row <= written:
                    fd = os.open(self.path, os.O_RDONLY) if fd is None else fd
                    data = os.pread(fd, piece.size, piece.offset)
                else:
                    return  # its rows are not written yet
                self.digest.update(data)
                self.next += 1
        finally:
            if fd is not None:
                os.close(fd)

    def finish(self) -> str:
        """The closed file's sha256: the streamed one if the prediction held."""
        try:
            self.offer(self.rows, {}).result()
        finally:
            self.worker.close()
        with open(self.path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            expected = self.pieces[-1].offset + self.pieces[-1].size
            same = size == expected and all(
                os.pread(f.fileno(), len(b), o) == b for o, b in self.gaps.items()
            )
        done = self.next == len(self.pieces)
        return self.digest.hexdigest() if same and done else sha256_file(self.path)


def _predicted(path: Path, gaps: list[tuple[int, int]]) -> dict[int, bytes]:
    """The non-data bytes as they will be after closing: HDF5 clears the "open for writing"
    flags of a version 0 or 1 superblock (bytes 20-23) when it closes the file."""
    out: dict[int, bytes] = {}
    with open(path, "rb") as f:
        for offset, length in gaps:
            out[offset] = os.pread(f.fileno(), length, offset)
    head = out.get(0, b"")
    if len(head) >= 24 and head[:8] == b"\x89HDF\r\n\x1a\n" and head[8] in (0, 1):
        out[0] = head[:20] + bytes(4) + head[24:]
    return out


class Writeback:
    """Push written pages to the disk in the background while the next slab is gathered.

    Without it the kernel may hold gigabytes of dirty pages until the final fsync, and
    the disk sits idle while we compute, then the CPU idles while the disk catches up.
    """

    def __init__(self, path: Path, every: int = WRITEBACK_BYTES) -> None:
        self.path, self.every, self.pending = path, every, 0
        self.fd: int | None = None
        self.thread: threading.Thread | None = None

    def __enter__(self) -> Writeback:
        with contextlib.suppress(OSError):
            self.fd = os.open(self.path, os.O_RDONLY)
        return self

    def wrote(self, count: int) -> None:
        self.pending += count
        if self.fd is None or self.pending < self.every:
            return
        if self.thread is not None and self.thread.is_alive():
            return  # the disk is still busy with the last push; the next one takes both
        self.pending = 0
        self.thread = threading.Thread(target=self._sync, daemon=True)
        self.thread.start()

    def _sync(self) -> None:
        # Errors here are found again by the final fsync, which the caller checks.
        with contextlib.suppress(OSError):
            os.fdatasync(self.fd)  # type: ignore[arg-type]

    def __exit__(self, *exc: object) -> None:
        if self.thread is not None:
            self.thread.join()
        if self.fd is not None:
            os.close(self.fd)
