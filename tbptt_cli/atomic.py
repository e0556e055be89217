"""Outputs appear whole or not at all: temp files in the target directory, fsync, rename.

HDF5 files cut short by a full disk read back as silent zeros, so nothing reaches a
final path before it has been flushed, fsynced and read back. A kernel ``flock`` on a
lock file beside each output keeps overlapping cron runs apart.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

from tbptt_cli.errors import Interrupted, LockedError, OutputError, WriteError


def check_writable(path: Path, no_clobber: bool) -> None:
    """Fail early (exit 73), before any work, when the output cannot be created."""
    directory = path.parent
    if path.is_dir():
        raise OutputError(f"{path}: is a directory; give a file name such as {path}/out.h5")
    if not directory.is_dir():
        raise OutputError(f"{path}: directory {directory} does not exist; create it first")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise OutputError(f"{path}: cannot write to directory {directory} (permission denied)")
    if no_clobber and path.exists():
        raise OutputError(f"{path}: exists and --no-clobber was given; remove it or drop the flag")


def lock_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.lock")


@contextlib.contextmanager
def output_lock(path: Path, wait: float = 0.0) -> Iterator[None]:
    """Hold an exclusive flock for ``path``; exit 75 at once, or after ``wait`` seconds."""
    lock = lock_path(path)
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise OutputError(f"{lock}: cannot create the lock file ({e.strerror})") from None
    deadline = time.monotonic() + wait
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise LockedError(
                        f"{path}: another tbptt run holds the lock {lock}; wait for it or "
                        f"pass --wait SECONDS"
                    ) from None
                time.sleep(0.05)
        remove_orphans(path)
        yield
    finally:
        os.close(fd)


def temp_prefix(path: Path) -> str:
    return f".{path.name}.tmp."


def remove_orphans(path: Path) -> None:
    """Temp files of a killed run: safe to remove, since we now hold the lock."""
    for orphan in path.parent.glob(temp_prefix(path) + "*"):
        with contextlib.suppress(OSError):
            orphan.unlink()


class Transaction:
    """Temp files staged beside their final paths, renamed in order on ``commit``."""

    def __init__(self) -> None:
        self.staged: list[tuple[Path, Path]] = []

    def stage(self, final: Path) -> Path:
        fd, name = tempfile.mkstemp(prefix=temp_prefix(final), dir=final.parent)
        os.close(fd)
        temp = Path(name)
        # mkstemp creates 0600; outputs get the usual 0666 minus the umask.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temp, 0o666 & ~umask)
        self.staged.append((temp, final))
        return temp

    def commit(self) -> None:
        """fsync every file, rename in staging order, then fsync the directories."""
        for temp, _ in self.staged:
            fsync_file(temp)
        for temp, final in self.staged:
            os.replace(temp, final)
        for directory in {final.parent for _, final in self.staged}:
            fsync_directory(directory)
        self.staged.clear()

    def rollback(self) -> None:
        for temp, _ in self.staged:
            with contextlib.suppress(OSError):
                temp.unlink()
        self.staged.clear()


@contextlib.contextmanager
def transaction() -> Iterator[Transaction]:
    """Roll back on any error or signal; the caller commits explicitly."""
    txn = Transaction()
    try:
        yield txn
    finally:
        txn.rollback()


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_error(path: Path, error: OSError) -> WriteError:
    """A one-line WriteError; a full disk says so in the words users search for."""
    text = str(error)
    if error.errno == errno.ENOSPC or "No space left" in text or "errno = 28" in text:
        return WriteError(f"{path}: No space left on device; free space and run again")
    reason = error.strerror or text.splitlines()[0] if text else type(error).__name__
    return WriteError(f"{path}: write failed: {reason}")


@contextlib.contextmanager
def signals_raise() -> Iterator[None]:
    """Turn SIGTERM (and SIGINT) into an ``Interrupted`` exception so cleanup runs."""

    def handler(signum: int, frame: FrameType | None) -> None:
        # A second signal while cleaning up skips the cleanup.
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        raise Interrupted(signum)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)
