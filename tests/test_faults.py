"""Faults mid-write: SIGKILL, SIGTERM, SIGINT, a full disk, unwritable places.

Every test runs the real CLI in a subprocess and checks the promise of DESIGN.md: the
documented exit code, no traceback, the old output byte-for-byte, no temp file left.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO)}


def tbptt(*args: object, prefix: tuple[str, ...] = (), **kwargs: object) -> subprocess.Popen[str]:
    command = [*prefix, sys.executable, "-m", "tbptt_cli", *map(str, args)]
    options = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, **kwargs}
    return subprocess.Popen(command, env=ENV, text=True, **options)  # type: ignore[call-overload]


def finish(process: subprocess.Popen[str], timeout: float = 60) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=timeout)
    return process.returncode, out, err


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """100 MB of float32: gzip:9 takes seconds to write it, long enough to interrupt."""
    path = tmp_path_factory.mktemp("big") / "big.npy"
    np.save(path, np.random.default_rng(0).normal(size=(64, 400_000)).astype(np.float32))
    return path


@pytest.fixture
def old_output(tmp_path: Path) -> tuple[Path, dict[str, bytes]]:
    """A good output and manifest from an earlier run, and their bytes."""
    small = tmp_path / "small.npy"
    np.save(small, np.arange(60, dtype=np.float32).reshape(3, 20))
    out = tmp_path / "out.h5"
    code, _, err = finish(tbptt("split", small, "--length", 5, "-o", out))
    assert code == 0, err
    files = {p.name: p.read_bytes() for p in (out, tmp_path / "out.manifest.json")}
    return out, files


def assert_untouched(out: Path, files: dict[str, bytes]) -> None:
    for name, content in files.items():
        assert (out.parent / name).read_bytes() == content, name
    with h5py.File(out) as f:
        assert f["X"].shape == (12, 5, 1)
    json.loads((out.parent / "out.manifest.json").read_text())


def temps(directory: Path) -> list[Path]:
    return [p for p in directory.iterdir() if ".tmp." in p.name]


def start_writing(big: Path, out: Path, *extra: object) -> subprocess.Popen[str]:
    """A slow run, returned once its temp file exists (it is mid-write)."""
    process = tbptt("split", big, "--length", 100, "--compression", "gzip:9", "-o", out, *extra)
    deadline = time.monotonic() + 30
    while not temps(out.parent) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert temps(out.parent), "the run never started writing"
    time.sleep(0.3)
    assert process.poll() is None, "the run finished before it could be interrupted"
    return process


def test_sigkill_mid_write_then_the_next_run_cleans_up(big, old_output, tmp_path):
    out, files = old_output
    process = start_writing(big, out)
    process.kill()
    process.communicate(timeout=10)
    assert process.returncode == -signal.SIGKILL
    assert_untouched(out, files)
    orphans = temps(tmp_path)
    assert len(orphans) <= 1
    code, _, err = finish(tbptt("split", tmp_path / "small.npy", "--length", 4, "-o", out))
    assert code == 0, err
    assert temps(tmp_path) == []
    with h5py.File(out) as f:
        assert f["X"].shape == (15, 4, 1)


def test_orphans_of_a_live_run_are_kept(tmp_path):
    """Only files older than a lock nobody holds go: a temp made after we took it stays."""
    from tbptt_cli import atomic

    out = tmp_path / "out.h5"
    old = tmp_path / ".out.h5.tmp.old"
    old.write_bytes(b"x")
    os.utime(old, ns=(time.time_ns() - 10**9, time.time_ns() - 10**9))
    with atomic.output_lock(out):
        young = tmp_path / ".out.h5.tmp.young"
        young.write_bytes(b"y")
        atomic.remove_orphans(out, time.time_ns() - 10**8)
        assert not old.exists() and young.exists()


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_mid_write(big, old_output, tmp_path, sig, code):
    out, files = old_output
    process = start_writing(big, out)
    lines: list[str] = []
    reader = threading.Thread(
        target=lambda: lines.extend(process.stderr),  # type: ignore[union-attr,arg-type]
        daemon=True,
    )
    reader.start()
    process.send_signal(sig)
    process.wait(timeout=10)
    reader.join(timeout=5)
    process.stdout.close()  # type: ignore[union-attr]
    process.stderr.close()  # type: ignore[union-attr]
    assert process.returncode == code
    assert lines[0] == f"tbptt: {sig.name}, cleaning up\n"  # said first, before the cleanup
    text = "".join(lines)
    assert "Traceback" not in text and f"interrupted by {sig.name}" in text
    assert_untouched(out, files)
    assert temps(tmp_path) == []


def test_sigterm_leaves_no_manifest_where_there_was_none(big, tmp_path):
    """An old output without a manifest: it stays as it was, and no manifest appears."""
    out = tmp_path / "out.h5"
    out.write_bytes(b"old output")
    process = start_writing(big, out)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=10)
    assert process.returncode == 143
    assert "SIGTERM" in err and "Traceback" not in err
    assert out.read_bytes() == b"old output"
    assert temps(tmp_path) == []
    assert not (tmp_path / "out.manifest.json").exists()


def test_second_ctrl_c_skips_cleanup(big, old_output, tmp_path):
    out, files = old_output
    process = start_writing(big, out)
    process.send_signal(signal.SIGINT)
    time.sleep(0.02)
    process.send_signal(signal.SIGINT)
    process.communicate(timeout=10)
    # Killed by the second signal (the shell shows 130), or done cleaning up first.
    assert process.returncode in (-signal.SIGINT, 130)
    assert_untouched(out, files)


@pytest.fixture
def tiny_disk(tmp_path: Path):
    """A real 2 MiB tmpfs; skipped where this process may not mount one."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=True)


@pytest.mark.parametrize("compression", ["none", "gzip:1"])
def test_full_disk_on_a_real_filesystem(tiny_disk, tmp_path, compression):
    data = tmp_path / "mid.npy"
    np.save(data, np.random.default_rng(1).normal(size=(8, 100_000)).astype(np.float32))
    out = tiny_disk / "out.h5"
    out.write_bytes(b"old output")
    (tiny_disk / "out.manifest.json").write_text("{}")
    code, _, err = finish(
        tbptt("split", data, "--length", 100, "--compression", compression, "-o", out)
    )
    assert code == 74, err  # not 139: HDF5 must not crash in its teardown
    assert err == f"tbptt: error: {out}: No space left on device; free space and run again\n"
    assert out.read_bytes() == b"old output"
    assert (tiny_disk / "out.manifest.json").read_text() == "{}"
    assert sorted(p.name for p in tiny_disk.iterdir()) == [
        ".out.h5.lock",
        "out.h5",
        "out.manifest.json",
    ]


def test_injected_flush_failure_is_74(tmp_path, monkeypatch, capsys):
    """h5py reports a failed flush as RuntimeError carrying the errno in its text."""
    from tbptt_cli.cli import run_main

    np.save(tmp_path / "in.npy", np.ones((4, 50), dtype=np.float32))

    def full(self):
        raise RuntimeError(
            "Unable to flush file's cached information (file write failed: "
            "errno = 28, error message = 'No space left on device')"
        )

    monkeypatch.setattr(h5py.File, "flush", full)
    out = tmp_path / "out.h5"
    assert run_main(["split", str(tmp_path / "in.npy"), "--length", "5", "-o", str(out)]) == 74
    assert "No space left on device" in capsys.readouterr().err
    assert not out.exists() and temps(tmp_path) == []


def test_injected_enospc_on_the_manifest(tmp_path, monkeypatch, capsys):
    from tbptt_cli.cli import run_main

    np.save(tmp_path / "in.npy", np.ones((4, 50), dtype=np.float32))
    real = Path.write_text

    def full(self, *args, **kwargs):
        if ".manifest.json.tmp." in self.name:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", full)
    out = tmp_path / "out.h5"
    assert run_main(["split", str(tmp_path / "in.npy"), "--length", "5", "-o", str(out)]) == 74
    assert "out.manifest.json: No space left on device" in capsys.readouterr().err
    assert not out.exists() and temps(tmp_path) == []


def test_json_to_dev_full_and_to_a_closed_pipe(tmp_path):
    np.save(tmp_path / "in.npy", np.ones((4, 50), dtype=np.float32))
    args = ("split", tmp_path / "in.npy", "--length", 5, "--json", "-q", "-o", tmp_path / "a.h5")
    with open("/dev/full", "w") as full:
        code, _, err = finish(tbptt(*args, stdout=full))
    assert (
        code == 74
        and err == "tbptt: error: stdout: No space left on device; the outputs were written\n"
    )
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        code, _, err = finish(tbptt(*args, stdout=write_end))
    finally:
        os.close(write_end)
    assert code == 74 and "broken pipe" in err and "Traceback" not in err
    with h5py.File(tmp_path / "a.h5") as f:  # committed before stdout was written
        assert f["X"].shape == (40, 5, 1)


def unprivileged() -> tuple[str, ...]:
    """Root ignores permission bits; in a new user namespace the bits apply again."""
    probe = subprocess.run(["unshare", "-U", "true"], capture_output=True)
    if probe.returncode:
        pytest.skip("unshare -U is not permitted here")
    return ("unshare", "-U")


def test_permissions(tmp_path):
    prefix = unprivileged()
    data = tmp_path / "in.npy"
    np.save(data, np.ones((4, 50), dtype=np.float32))
    locked = tmp_path / "ro"
    locked.mkdir()
    (locked / "out.h5").write_bytes(b"old")
    locked.chmod(0o555)
    secret = tmp_path / "secret.npy"
    np.save(secret, np.ones((4, 50), dtype=np.float32))
    secret.chmod(0o000)
    try:
        cases = [
            ([data, "-o", locked / "out.h5"], 73, "permission denied"),
            ([data, "-o", tmp_path], 73, "is a directory"),
            ([secret, "-o", tmp_path / "x.h5"], 66, "permission denied"),
        ]
        for args, expected, phrase in cases:
            code, _, err = finish(tbptt("split", *args, "--length", 5, prefix=prefix))
            assert (code, err.count("\n")) == (expected, 1), err
            assert phrase in err and "Traceback" not in err
        assert (locked / "out.h5").read_bytes() == b"old"
        assert sorted(p.name for p in locked.iterdir()) == ["out.h5"]
    finally:
        locked.chmod(0o755)


def test_a_signal_held_during_the_renames_reports_the_commit(tmp_path, monkeypatch):
    """SIGTERM arriving while the renames hold signals: outputs in place, the message says so."""
    import signal as signals

    from tbptt_cli import atomic
    from tbptt_cli.errors import Interrupted

    staged = tmp_path / "staged"
    staged.write_text("new")
    final = tmp_path / "final"
    final.write_text("old")
    txn = atomic.Transaction()
    txn.staged.append((staged, final))
    real_replace = os.replace

    def replace_then_signal(src, dst):
        real_replace(src, dst)
        os.kill(os.getpid(), signals.SIGTERM)  # blocked now, delivered when the block ends

    monkeypatch.setattr(atomic.os, "replace", replace_then_signal)
    with atomic.signals_raise(), pytest.raises(Interrupted) as caught:
        txn.commit()
    assert final.read_text() == "new" and not staged.exists()
    assert str(caught.value) == "interrupted by SIGTERM; the outputs were already committed"
    assert caught.value.exit_code == 143


def test_a_signal_in_a_weakref_callback_is_raised_at_the_next_step(capsys):
    """Python drops an exception raised in a weakref callback (it prints "Exception
    ignored" and a traceback): the write loop raises it at its next slab instead."""
    import weakref

    from tbptt_cli import atomic
    from tbptt_cli.errors import Interrupted

    class Thing:
        pass

    def callback(_: object) -> None:
        os.kill(os.getpid(), signal.SIGTERM)  # the handler runs inside this callback
        sum(range(10))

    with atomic.signals_raise(), pytest.raises(Interrupted) as caught:
        thing = Thing()
        ref = weakref.ref(thing, callback)
        del thing  # the callback runs here; its Interrupted cannot propagate
        assert ref() is None
        atomic.raise_swallowed()
    assert caught.value.exit_code == 143
    assert "Exception ignored" not in capsys.readouterr().err
    atomic.raise_swallowed()  # raised once only
