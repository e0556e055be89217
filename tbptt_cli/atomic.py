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
import re
import select
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

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
        remove_orphans(path, time.time_ns())
        yield
    finally:
        os.close(fd)


def temp_prefix(path: Path) -> str:
    return f".{path.name}.tmp."


def remove_orphans(path: Path, before_ns: int) -> None:
    """Temp files of a killed run, removed only by the holder of the output's lock.

    A file older than our lock was made by a run that no longer holds it (the kernel
    drops a flock when its process dies), so nobody is writing to it any more.
    """
    for orphan in path.parent.glob(temp_prefix(path) + "*"):
        with contextlib.suppress(OSError):
            if orphan.is_file() and orphan.stat().st_mtime_ns < before_ns:
                orphan.unlink()


class Transaction:
    """Temp files staged beside their final paths, renamed in order on ``commit``."""

    def __init__(self) -> None:
        self.staged: list[tuple[Path, Path]] = []
        self.started_ns = time.time_ns()

    def stage(self, final: Path) -> Path:
        """A temp file beside ``final``; call it only while holding the output's lock."""
        # The manifest has no lock of its own: its orphans go when it is staged again.
        remove_orphans(final, self.started_ns)
        fd, name = tempfile.mkstemp(prefix=temp_prefix(final), dir=final.parent)
        os.close(fd)
        temp = Path(name)
        # mkstemp creates 0600; outputs get the usual 0666 minus the umask.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temp, 0o666 & ~umask)
        self.staged.append((temp, final))
        _STAGED.add(temp)
        return temp

    def commit(self) -> None:
        """fsync every file, rename in staging order, then fsync the directories."""
        for temp, _ in self.staged:
            fsync(temp)
        directories = {final.parent for _, final in self.staged}
        try:
            with signals_held():  # a signal between two renames would pair new data, old manifest
                for temp, final in self.staged:
                    os.replace(temp, final)
                    _STAGED.discard(temp)
                self.staged.clear()
        finally:
            for directory in directories:
                fsync(directory)

    def rollback(self) -> None:
        for temp, _ in self.staged:
            with contextlib.suppress(OSError):
                temp.unlink()
            _STAGED.discard(temp)
        self.staged.clear()


@contextlib.contextmanager
def transaction() -> Iterator[Transaction]:
    """Roll back on any error or signal; the caller commits explicitly."""
    txn = Transaction()
    try:
        yield txn
    finally:
        txn.rollback()


def fsync(path: Path) -> None:
    """Flush a file, or a directory's entries (after a rename), to the disk."""
    fd = os.open(path, os.O_RDONLY)
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


class _Held:
    """While ``active``, `signals_raise`'s handler only records the signal in ``pending``."""

    active = False
    pending: int | None = None


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """SIGINT and SIGTERM wait until the block is done, then raise ``Interrupted``
    saying the block's work (the renames of a commit) is in place.

    Masking the signal in the main thread is not enough: the kernel then hands it to
    another thread and Python still runs the handler in the main thread at its next
    bytecode, between two renames. So the handler itself is told to hold.
    """
    _Held.active, _Held.pending = True, None
    try:
        yield
    finally:
        _Held.active = False
    if _Held.pending is not None:
        signum, _Held.pending = _Held.pending, None
        raise Interrupted(signum, committed=True)


GRACE = 2.0  # seconds the main thread gets to clean up before the watcher does it


@contextlib.contextmanager
def signals_raise() -> Iterator[None]:
    """Turn SIGTERM (and SIGINT) into an ``Interrupted`` exception so cleanup runs.

    Python runs a signal handler only between bytecodes, and one h5py call compressing
    a slab can take seconds. So a watcher thread (h5py releases the GIL while it writes)
    hears the signal through ``set_wakeup_fd`` at once: it says so on stderr, gives the
    main thread ``GRACE`` seconds to clean up, and otherwise removes the staged temp
    files itself and exits. A second signal exits at once, without cleanup.
    """
    watcher = _Watcher()

    def handler(signum: int, frame: FrameType | None) -> None:
        watcher.announce(signum)
        if _Held.active:
            _Held.pending = signum
            return
        # A second signal while cleaning up skips the cleanup (the default action kills).
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        raise Interrupted(signum)

    def unraisable(info: Any) -> None:
        # The handler ran inside a weakref callback or a __del__, where Python prints the
        # exception and drops it: keep it for `raise_swallowed` instead.
        if isinstance(info.exc_value, Interrupted):
            _Swallowed.signal = info.exc_value
        else:
            previous_hook(info)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    previous_hook, sys.unraisablehook = sys.unraisablehook, unraisable
    watcher.start()
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)
        sys.unraisablehook = previous_hook
        watcher.stop()


class _Swallowed:
    signal: Interrupted | None = None


def raise_swallowed() -> None:
    """Raise the ``Interrupted`` of a signal that arrived where Python could not raise it
    (see `signals_raise`); long loops call this once per step."""
    if _Swallowed.signal is not None:
        interrupted, _Swallowed.signal = _Swallowed.signal, None
        raise interrupted


class _Watcher:
    """The thread behind `signals_raise`: reads signal numbers from the wakeup pipe."""

    def __init__(self) -> None:
        self.read_fd, self.write_fd = os.pipe()
        os.set_blocking(self.write_fd, False)
        self.done = threading.Event()
        self.said = threading.Lock()
        self.announced = False
        self.thread = threading.Thread(target=self.run, daemon=True, name="tbptt-signals")
        self.previous_fd = -1

    def start(self) -> None:
        self.previous_fd = signal.set_wakeup_fd(self.write_fd, warn_on_full_buffer=False)
        self.thread.start()

    def stop(self) -> None:
        signal.set_wakeup_fd(self.previous_fd)
        self.done.set()
        with contextlib.suppress(OSError):
            os.write(self.write_fd, b"\0")  # wakes the thread, which then leaves
        self.thread.join(timeout=1)
        for fd in (self.read_fd, self.write_fd):
            os.close(fd)

    def announce(self, signum: int) -> None:
        """Say once, straight to the descriptor, that the signal arrived."""
        with self.said:
            if self.announced:
                return
            self.announced = True
        with contextlib.suppress(OSError):
            os.write(2, f"tbptt: {signal.Signals(signum).name}, cleaning up\n".encode())

    def run(self) -> None:
        first = self.next_signal()
        if first is None:
            return
        self.announce(first)
        ready, _, _ = select.select([self.read_fd], [], [], GRACE)
        if self.done.is_set():
            return
        if not ready:  # the main thread is stuck in a long C call: clean up for it
            _remove_staged()
            message = (
                f"tbptt: error: interrupted by {signal.Signals(first).name}; partial "
                "output removed\n"
            )
            with contextlib.suppress(OSError):
                os.write(2, message.encode())
        os._exit(128 + first)  # a second signal skips the cleanup

    def next_signal(self) -> int | None:
        while True:
            try:
                byte = os.read(self.read_fd, 1)
            except OSError:
                return None
            if not byte or self.done.is_set():
                return None
            if byte[0] in (signal.SIGINT, signal.SIGTERM):
                return byte[0]


_STAGED: set[Path] = set()  # temp files of open transactions, for the signal watcher


def _remove_staged() -> None:
    for temp in list(_STAGED):
        with contextlib.suppress(OSError):
            temp.unlink()


@contextlib.contextmanager
def hdf5_file(path: Path, **options: Any) -> Iterator[Any]:
    """``h5py.File(path, "w")`` that fails cleanly on a full disk.

    HDF5 buffers writes, so a full disk often shows only at flush or close, and after a
    failed flush HDF5 can neither close the file nor free its objects: freeing them
    crashes the process (SIGSEGV, exit 139) after our error message. So on any error the
    file's descriptor is pointed at an anonymous memory file (no more writes reach the
    disk), the close is tried, and if HDF5 refuses, its objects are parked for good and
    `main` leaves with ``os._exit`` (`hdf5_broken`). The transaction removes the temp file.
    """
    import h5py

    f = h5py.File(path, "w", **options)
    try:
        try:
            yield f
            f.flush()  # the disk-full error surfaces here, not in a close we cannot undo
        except RuntimeError as e:  # h5py reports a failed flush as RuntimeError
            raise _as_os_error(e) from None
    except BaseException:
        _abandon(f)
        raise
    f.close()


_PARKED: list[Any] = []  # HDF5 objects that must never be freed (see hdf5_file)


def hdf5_broken() -> bool:
    """True once HDF5 was left in a state that its own teardown would crash on."""
    return bool(_PARKED)


def _abandon(f: Any) -> None:
    import gc

    import h5py

    with contextlib.suppress(Exception):
        sink = os.memfd_create("tbptt-abandoned")
        try:
            os.dup2(sink, f.id.get_vfd_handle())
        finally:
            os.close(sink)
    # Every live h5py id, found before the close that may break them: which file an id
    # belongs to cannot be asked safely, and leaking a few on this path costs nothing.
    # type(), not isinstance(): the latter reads __class__, which some proxies warn on.
    ids = [o for o in gc.get_objects() if issubclass(type(o), h5py._objects.ObjectID)]
    try:
        f.close()
    except Exception:
        _PARKED.extend(ids)  # one freed later would crash inside HDF5


def _as_os_error(error: RuntimeError) -> OSError:
    found = re.search(r"errno = (\d+)", str(error))
    code = int(found.group(1)) if found else errno.EIO
    return OSError(code, os.strerror(code) if found else str(error).splitlines()[0])
