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
from pathlib import Path
from typing import Any

import h5py

from tbptt_cli.digest import in_background, sha256_file

WRITEBACK_BYTES = 256 << 20  # start pushing dirty pages to the disk every this many bytes


def early_allocation() -> Any:
    """A dataset creation property list that places every chunk in the file at creation, so
    the file's layout (and every byte outside the chunks) is fixed before any data."""
    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
    # No fill values written at allocation (gigabytes of zeros, all overwritten anyway).
    # The file is new, so a chunk's unwritten tail (past the last row) still reads as 0.
    dcpl.set_fill_time(h5py.h5d.FILL_TIME_NEVER)
    return dcpl


class StreamHash:
    """sha256 of the output file, computed on a background thread while it is written.

    The whole file is hashed in file order: the bytes outside the data chunks as they
    will be after closing (predicted from a snapshot, see `_predicted`), and each chunk
    read back from the file once the slab holding it is written and flushed. `finish`
    checks the prediction against the closed file and re-hashes it whole if anything
    differs, so a different HDF5 version can only cost time, never a wrong digest.
    """

    def __init__(self, path: Path, pieces: list[tuple[int, int, int]], gaps: dict[int, bytes]):
        self.path, self.pieces, self.gaps = path, pieces, gaps
        self.fd = os.open(path, os.O_RDONLY)
        self.written, self.stopped = 0, False
        self.ready = threading.Condition()
        self.digest: Future[str] = in_background(self._run, "tbptt-sha256-out")

    @classmethod
    def start(cls, f: Any, path: Path, datasets: list[Any]) -> StreamHash | None:
        """Flush the file's structure and start hashing; None if the layout is unusual."""
        f.flush()
        chunks: list[tuple[int, int, int]] = []  # (file offset, bytes, rows needed first)
        for ds in datasets:
            rows = ds.chunks[0]

            def found(info: Any, rows: int = rows, samples: int = ds.shape[0]) -> None:
                end_row = min(samples, int(info.chunk_offset[0]) + rows)
                chunks.append((int(info.byte_offset), int(info.size), end_row))

            # One walk of the chunk index: get_chunk_info(i) walks it again for every i
            # (0.15 s for 4000 chunks). chunk_iter needs HDF5 >= 1.13.
            if hasattr(ds.id, "chunk_iter"):
                ds.id.chunk_iter(found)
            else:
                for i in range(ds.id.get_num_chunks()):
                    found(ds.id.get_chunk_info(i))
        chunks.sort()
        size = os.path.getsize(path)
        pieces: list[tuple[int, int, int]] = []
        position = 0
        for offset, length, end_row in [*chunks, (size, 0, 0)]:
            if offset < position:
                return None  # overlapping chunks: not a layout this class knows
            if offset > position:
                pieces.append((position, offset - position, -1))  # -1: not data
            if length:
                pieces.append((offset, length, end_row))
            position = offset + length
        gaps = _predicted(path, [(o, n) for o, n, end in pieces if end < 0])
        return cls(path, pieces, gaps)

    def wrote(self, rows: int) -> None:
        with self.ready:
            self.written = rows
            self.ready.notify()

    def abort(self) -> None:
        with self.ready:
            self.stopped = True
            self.ready.notify()

    def _run(self) -> str:
        digest = hashlib.sha256()
        try:
            for offset, length, end_row in self.pieces:
                if end_row < 0:
                    digest.update(self.gaps[offset])
                    continue
                with self.ready:
                    while self.written < end_row and not self.stopped:
                        self.ready.wait()
                    if self.stopped:
                        return ""
                digest.update(os.pread(self.fd, length, offset))
            return digest.hexdigest()
        finally:
            os.close(self.fd)

    def finish(self) -> str:
        """The closed file's sha256: the streamed one if the prediction held."""
        streamed = self.digest.result()
        with open(self.path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            expected = self.pieces[-1][0] + self.pieces[-1][1]
            same = size == expected and all(
                os.pread(f.fileno(), len(b), o) == b for o, b in self.gaps.items()
            )
        return streamed if same and streamed else sha256_file(self.path)


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
