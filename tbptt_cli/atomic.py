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
import shutil
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


def clobber_refused(path: Path) -> OutputError:
    return OutputError(
        f"{path}: exists and --no-clobber is set (the flag, TBPTT_NO_CLOBBER or the config's"
        " no_clobber); remove it, or pass --clobber"
    )


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
        raise clobber_refused(path)


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
        recover(path)
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
    """Files and directories staged beside their final paths, renamed in order on ``commit``.

    A staged file is a temp file; a staged directory is a fresh directory that replaces
    the final one whole (see `swap_in`), and files placed inside it need no temp name of
    their own. Everything is fsynced before the first rename, and the renames run with
    SIGINT/SIGTERM held back, so an output and its manifest change together.
    """

    def __init__(self) -> None:
        self.staged: list[tuple[Path, Path]] = []  # (temp, final), in commit order
        self.started_ns = time.time_ns()
        self.obsolete: list[Path] = []  # directories removed once the commit is done
        self.created: list[Path] = []  # parent directories made for staging, gone on rollback

    def stage(self, final: Path) -> Path:
        """A temp file beside ``final``; call it only while holding the output's lock."""
        # The manifest has no lock of its own: its orphans go when it is staged again.
        remove_orphans(final, self.started_ns)
        temp = temp_file(final)
        self._add(temp, final)
        return temp

    def stage_dir(self, final: Path) -> Path:
        """A fresh directory beside ``final`` that replaces it on commit (under its lock)."""
        if not final.parent.exists():
            final.parent.mkdir()
            self.created.append(final.parent)
        staging = Path(tempfile.mkdtemp(prefix=temp_prefix(final), dir=final.parent))
        os.chmod(staging, 0o777 & ~_umask())  # mkdtemp makes 0700
        self._add(staging, final)
        return staging

    def place(self, final: Path) -> Path:
        """Where to write ``final``: its place inside a staged directory, else a temp file."""
        inside = self._inside(final)
        return inside if inside is not None else self.stage(final)

    def place_dir(self, final: Path) -> Path:
        """Where to build directory ``final``: inside a staged directory, else staged itself."""
        inside = self._inside(final)
        if inside is None:
            return self.stage_dir(final)
        inside.mkdir(parents=True, exist_ok=True)
        return inside

    def _inside(self, final: Path) -> Path | None:
        for temp, target in self.staged:
            if temp.is_dir() and final.is_relative_to(target) and final != target:
                return temp / final.relative_to(target)
        return None

    def _add(self, temp: Path, final: Path) -> None:
        self.staged.append((temp, final))
        _STAGED.add(temp)

    def commit(self) -> None:
        """fsync everything, rename in staging order, fsync the directories, then drop
        what the new outputs replaced."""
        for temp, _ in self.staged:
            fsync_tree(temp)
        directories = {final.parent for _, final in self.staged}
        asides: list[Path] = []
        try:
            with signals_held():  # a signal between two renames would pair new data, old manifest
                for temp, final in self.staged:
                    if temp.is_dir():
                        asides.append(swap_in(temp, final))
                    else:
                        os.replace(temp, final)
                    _STAGED.discard(temp)
                self.staged.clear()
        finally:
            for directory in directories:
                fsync(directory)
            for old in asides + (self.obsolete if not self.staged else []):
                shutil.rmtree(old, ignore_errors=True)

    def rollback(self) -> None:
        for temp, _ in self.staged:
            with contextlib.suppress(OSError):
                if temp.is_dir():
                    shutil.rmtree(temp)
                else:
                    temp.unlink()
            _STAGED.discard(temp)
        self.staged.clear()
        for directory in self.created:
            with contextlib.suppress(OSError):
                directory.rmdir()  # only if empty: a committed one holds the output
        self.created.clear()


@contextlib.contextmanager
def transaction() -> Iterator[Transaction]:
    """Roll back on any error or signal; the caller commits explicitly."""
    txn = Transaction()
    try:
        yield txn
    finally:
        txn.rollback()


def temp_file(final: Path) -> Path:
    """A new empty file beside ``final``, named for it, with the usual permissions."""
    fd, name = tempfile.mkstemp(prefix=temp_prefix(final), dir=final.parent)
    os.close(fd)
    # mkstemp creates 0600; outputs get the usual 0666 minus the umask.
    os.chmod(name, 0o666 & ~_umask())
    return Path(name)


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def track(path: Path) -> None:
    """Have the signal watcher remove ``path`` (a file or folder) if it must exit at once."""
    _STAGED.add(path)


def untrack(path: Path) -> None:
    _STAGED.discard(path)


# --- directories replaced whole -------------------------------------------------------
#
# A staged directory is swapped in with two renames: FINAL -> .FINAL.old, staging ->
# FINAL. A run killed between the two leaves .FINAL.old, which the next run (holding the
# same lock) puts back before it stages anything: `recover`.


def aside_path(final: Path) -> Path:
    return final.with_name(f".{final.name}.old")


def swap_in(staging: Path, final: Path) -> Path:
    """Replace directory ``final`` by ``staging``; returns the old one's aside path, for
    the caller to remove once every rename is done."""
    aside = aside_path(final)
    if final.exists():
        os.rename(final, aside)
    try:
        os.rename(staging, final)
    except OSError:
        if aside.exists():
            os.rename(aside, final)
        raise
    return aside


def recover(final: Path) -> None:
    """Under the lock: put back a directory left aside by a killed run, drop stale staging."""
    aside = aside_path(final)
    if aside.is_dir():
        if final.exists():
            shutil.rmtree(aside, ignore_errors=True)
        else:
            os.rename(aside, final)
    for orphan in final.parent.glob(temp_prefix(final) + "*"):
        if orphan.is_dir():
            shutil.rmtree(orphan, ignore_errors=True)


def recover_inside(folder: Path) -> None:
    """`recover` every directory of ``folder`` (one output's own folder, under its lock)."""
    if not folder.is_dir():
        return
    for entry in folder.iterdir():
        name = entry.name
        if name.startswith(".") and name.endswith(".old"):
            recover(folder / name[1:-4])
        elif name.startswith(".") and ".tmp." in name and entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)


def check_replaceable_dir(path: Path, no_clobber: bool, marker: str, kind: str) -> None:
    """Fail early (exit 73); never replace a directory that is not a previous output of
    this kind (one holding ``marker``)."""
    if path.name in ("", ".", ".."):
        raise OutputError(f"{path}: give the output directory a name, such as out/{kind}")
    parent = path.parent
    if not parent.is_dir():
        raise OutputError(f"{path}: directory {parent} does not exist; create it first")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"{path}: cannot write to directory {parent} (permission denied)")
    if path.exists() and not path.is_dir():
        raise OutputError(f"{path}: exists and is not a directory; {kind} writes a directory")
    if path.exists() and no_clobber:
        raise clobber_refused(path)
    if path.is_dir() and any(path.iterdir()) and not (path / marker).is_file():
        raise OutputError(
            f"{path}: exists and holds no {marker}, so it is not a {kind} output this run "
            f"may replace; choose a new directory"
        )


def fsync_tree(path: Path) -> None:
    """fsync a file, or every file in a directory tree and the directories themselves."""
    if path.is_dir():
        for entry in sorted(path.iterdir()):
            fsync_tree(entry)
    fsync(path)


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


_STAGED: set[Path] = set()  # temp files and directories of open transactions, for the watcher


def _remove_staged() -> None:
    for temp in list(_STAGED):
        if temp.is_dir():
            shutil.rmtree(temp, ignore_errors=True)
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
