"""Overlapping runs on one output (cron overlap): one wins, the other exits 75 or waits;
a reader polling the output only ever sees a whole old file or a whole new one."""

from __future__ import annotations

import hashlib
import io
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


def tbptt(*args: object) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tbptt_cli", *map(str, args)],
        env=ENV,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A slow input (gzip:9 takes a few seconds) and a fast one."""
    folder = tmp_path_factory.mktemp("inputs")
    rng = np.random.default_rng(0)
    np.save(folder / "slow.npy", rng.normal(size=(8, 200_000)).astype(np.float32))
    np.save(folder / "fast.npy", rng.normal(size=(4, 100)).astype(np.float32))
    return folder / "slow.npy", folder / "fast.npy"


def slow_run(slow: Path, out: Path) -> subprocess.Popen[str]:
    """Started and holding the lock (its temp file exists) when this returns."""
    process = tbptt("split", slow, "--length", 100, "--compression", "gzip:9", "-o", out)
    while not list(out.parent.glob(f".{out.name}.tmp.*")) and process.poll() is None:
        time.sleep(0.01)
    assert process.poll() is None, "the slow run ended too soon"
    return process


def test_second_run_exits_75_at_once_naming_the_lock(inputs, tmp_path):
    """The first run is stopped (SIGSTOP) while it holds the lock, so it cannot finish
    first however loaded the machine is, and a second run that waited for the lock
    instead of exiting at once would hang until the timeout. No clock is read."""
    slow, fast = inputs
    out = tmp_path / "out.h5"
    first = slow_run(slow, out)
    first.send_signal(signal.SIGSTOP)
    try:
        second = tbptt("split", fast, "--length", 10, "-o", out)
        _, err = second.communicate(timeout=120)
        assert first.poll() is None  # still stopped, still holding the lock
    finally:
        first.send_signal(signal.SIGCONT)
    assert second.returncode == 75
    assert err == (
        f"tbptt: error: {out}: another tbptt run holds the lock "
        f"{tmp_path / '.out.h5.lock'}; wait for it or pass --wait SECONDS\n"
    )
    first.communicate(timeout=120)
    assert first.returncode == 0
    with h5py.File(out) as f:
        assert f["X"].shape == (8 * 2000, 100, 1)


def test_wait_queues_behind_the_lock_and_readers_see_whole_files(inputs, tmp_path):
    slow, fast = inputs
    out = tmp_path / "out.h5"
    done = tbptt("split", fast, "--length", 10, "-o", out)
    done.communicate(timeout=30)
    assert done.returncode == 0
    snapshots: dict[str, bytes] = {}
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            content = out.read_bytes()
            snapshots.setdefault(hashlib.sha256(content).hexdigest(), content)
            time.sleep(0.005)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    first = slow_run(slow, out)
    second = tbptt("split", fast, "--length", 5, "--wait", 60, "-o", out)
    first.communicate(timeout=60)
    _, err = second.communicate(timeout=60)
    stop.set()
    poller.join()
    assert first.returncode == 0 and second.returncode == 0, err
    with h5py.File(out) as f:  # the waiting run wrote last
        assert f["X"].shape == (80, 5, 1)
    # Whatever a reader caught is a whole file: the old one, the slow run's or the last.
    shapes = set()
    for content in snapshots.values():
        with h5py.File(io.BytesIO(content)) as f:
            shapes.add(f["X"].shape)
            assert f["mask"][-1].any()
    assert shapes <= {(40, 10, 1), (8 * 2000, 100, 1), (80, 5, 1)}
    assert len(shapes) >= 2
