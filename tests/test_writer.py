"""The HDF5 writer and the atomic protocol: determinism, locks, signals, a full disk."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import threading
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from tbptt_cli import hdf5
from tbptt_cli.hdf5 import CHUNK_MAX, chunk_rows, parse_compression


@pytest.fixture
def npy(tmp_path: Path) -> Path:
    path = tmp_path / "in.npy"
    np.save(path, np.random.default_rng(0).normal(size=(12, 1000)).astype(np.float32))
    return path


def test_byte_identical_outputs(npy, tmp_path, tbptt, monkeypatch):
    args = ["split", "../in.npy", "--length", 64, "--compression", "gzip:6", "--target", "next"]
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        monkeypatch.chdir(tmp_path / name)
        assert tbptt(*args, "-o", "out.h5").code == 0
    for file in ("out.h5", "out.manifest.json"):
        assert (tmp_path / "a" / file).read_bytes() == (tmp_path / "b" / file).read_bytes()
    # The .h5 does not record where it was written.
    assert tbptt(*args, "-o", tmp_path / "c.h5").code == 0
    assert (tmp_path / "c.h5").read_bytes() == (tmp_path / "a" / "out.h5").read_bytes()


def test_rewrite_is_byte_identical_too(npy, tmp_path, tbptt):
    out = tmp_path / "out.h5"
    assert tbptt("split", npy, "--length", 64, "-o", out).code == 0
    first = out.read_bytes()
    time.sleep(1.1)  # any stored timestamp would now differ
    assert tbptt("split", npy, "--length", 64, "-o", out).code == 0
    assert out.read_bytes() == first


@pytest.mark.parametrize(
    ("dtype", "compression"), [("float16", "lzf"), ("float64", "gzip:9"), ("float32", "none")]
)
def test_dtype_compression_and_labels(npy, tmp_path, tbptt, dtype, compression):
    out = tmp_path / "out.h5"
    assert (
        tbptt(
            "split", npy, "--length", 100, "--dtype", dtype, "--compression", compression, "-o", out
        ).code
        == 0
    )
    with h5py.File(out) as f:
        assert f["X"].dtype == np.dtype(dtype)
        assert f["X"].compression == (None if compression == "none" else compression.split(":")[0])
        assert [d.label for d in f["X"].dims] == ["sample", "time", "feature"]
        assert [d.label for d in f["mask"].dims] == ["sample", "time"]
        source = np.load(npy)
        assert np.array_equal(f["X"][0, :, 0], source[0, :100].astype(dtype))
    assert oct(out.stat().st_mode & 0o777) == oct(0o666 & ~_umask())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_bad_compression_is_a_usage_error(npy, tmp_path, tbptt):
    result = tbptt(
        "split", npy, "--length", 10, "--compression", "gzip:12", "-o", tmp_path / "o.h5"
    )
    assert result.code == 2 and "gzip[:0-9]" in result.stderr
    assert parse_compression("gzip") == ("gzip", 4)


@pytest.mark.parametrize(
    ("batch", "row_bytes"), [(1, 10), (100, 2000), (128, 200_000), (7, 3 << 20)]
)
def test_chunks_hold_whole_batches(batch, row_bytes):
    rows = chunk_rows(batch, row_bytes)
    if batch * row_bytes <= CHUNK_MAX:
        assert rows % batch == 0 and rows * row_bytes <= CHUNK_MAX
        assert rows * row_bytes >= min(100_000, batch * row_bytes)
    else:
        assert batch % rows == 0


def test_no_clobber_and_a_directory_as_output(npy, tmp_path, tbptt):
    out = tmp_path / "out.h5"
    out.write_bytes(b"keep")
    result = tbptt("split", npy, "--length", 10, "--no-clobber", "-o", out)
    assert result.code == 73 and "--no-clobber" in result.stderr and out.read_bytes() == b"keep"
    result = tbptt("split", npy, "--length", 10, "-o", tmp_path)
    assert result.code == 73 and "is a directory" in result.stderr


def test_lock_held_exits_75_or_waits(npy, tmp_path, tbptt):
    out = tmp_path / "out.h5"
    fd = os.open(tmp_path / ".out.h5.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        # the lock is never released while this run lasts: exit 75 means it did not wait
        result = tbptt("split", npy, "--length", 10, "-o", out)
        assert result.code == 75 and ".out.h5.lock" in result.stderr and not out.exists()
        threading.Timer(0.3, lambda: os.close(fd)).start()
        assert tbptt("split", npy, "--length", 10, "-o", out, "--wait", 5).code == 0
    finally:
        with contextlib.suppress(OSError):
            os.close(fd)
    assert out.exists()


@pytest.mark.parametrize("compression", ["none", "gzip"])
def test_full_disk_exits_74_and_keeps_the_old_output(
    npy, tmp_path, tbptt, monkeypatch, compression
):
    out = tmp_path / "out.h5"
    out.write_bytes(b"old")
    (tmp_path / "out.manifest.json").write_text("{}")
    real_setitem = h5py.Dataset.__setitem__

    def full(self, key, value):  # a filtered (compressed) write
        if self.name == "/X":
            raise OSError(errno.ENOSPC, "No space left on device")
        real_setitem(self, key, value)

    def full_chunks(*args):  # uncompressed chunks are written one by one
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(h5py.Dataset, "__setitem__", full)
    monkeypatch.setattr(hdf5, "_chunks", full_chunks)
    result = tbptt("split", npy, "--length", 10, "--compression", compression, "-o", out)
    assert result.code == 74
    assert "No space left on device" in result.stderr and str(out) in result.stderr
    assert out.read_bytes() == b"old" and (tmp_path / "out.manifest.json").read_text() == "{}"
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".out.h5.lock",
        "in.npy",
        "out.h5",
        "out.manifest.json",
    ]


def test_memory_limit_does_not_change_the_file(npy, tmp_path, tbptt):
    for limit in ("1M", "2G"):
        args = ["split", npy, "--length", 64, "--memory-limit", limit]
        assert tbptt(*args, "-o", tmp_path / f"{limit}.h5").code == 0
    assert (tmp_path / "1M.h5").read_bytes() == (tmp_path / "2G.h5").read_bytes()
