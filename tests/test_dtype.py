"""--dtype float16/float32: a value the output cannot hold is exit 65 naming its column and
the largest value, in a real run and a dry run alike; never inf, never a numpy warning."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
OLD = b"previous output\n"


def csv(path: Path, big: str = "70000") -> Path:
    path.write_text(f"id,a,b,label\n1,1,2,0\n1,{big},3,1\n1,5,-1,2\n2,4,4,3\n2,6,6,4\n")
    return path


@pytest.mark.parametrize("dry", [False, True])
def test_float16_overflow_names_the_column_and_the_value(tmp_path, tbptt, dry):
    out = tmp_path / "o.h5"
    out.write_bytes(OLD)
    args = ["asis", csv(tmp_path / "in.csv"), "--id-col", "id", "--dtype", "float16", "-o", out]
    result = tbptt(*args, *(["-n"] if dry else []))
    assert (result.code, result.stderr) == (
        65,
        "tbptt: error: feature 'a' holds 70000, more than float16 can hold (largest 65504); "
        "pass --dtype float32 (or float64), or --scale standard\n",
    )
    assert out.read_bytes() == OLD and sorted(p.name for p in tmp_path.glob("[!.]*")) == [
        "in.csv", "o.h5",
    ]  # fmt: skip


def test_the_largest_of_several_and_a_target_column(tmp_path, tbptt):
    path = tmp_path / "in.csv"
    path.write_text("id,a,b,label\n1,70000,-1e6,0\n1,1,1,99999\n")
    result = tbptt("asis", path, "--id-col", "id", "--dtype", "float16", "-n")
    assert "feature 'b' holds 1e+06" in result.stderr and result.code == 65
    result = tbptt("asis", path, "--id-col", "id", "--features", "a", "--target", "label",
                   "--dtype", "float16", "--scale", "standard", "-n")  # fmt: skip
    assert result.code == 65 and result.stderr == (
        "tbptt: error: target 'label' holds 99999 after --scale standard, more than float16 "
        "can hold (largest 65504); pass --dtype float32 (or float64)\n"
    )


def test_float32_overflow_of_a_float64_input(tmp_path, tbptt):
    np.save(tmp_path / "x.npy", np.array([[1.0, 2.0, 1e39, 3.0]]))
    result = tbptt("split", tmp_path / "x.npy", "--length", 2, "-o", tmp_path / "o.h5")
    assert result.code == 65 and result.stderr == (
        "tbptt: error: feature 'x0' holds 1e+39, more than float32 can hold (largest "
        "3.40282e+38); pass --dtype float64, or --scale standard\n"
    )
    ok = tbptt("split", tmp_path / "x.npy", "--length", 2, "--dtype", "float64",
               "-o", tmp_path / "o.h5")  # fmt: skip
    assert ok.code == 0


def test_scaling_brings_the_values_into_range(tmp_path, tbptt):
    out = tmp_path / "o.h5"
    result = tbptt("asis", csv(tmp_path / "in.csv"), "--id-col", "id", "--dtype", "float16",
                   "--scale", "minmax", "-o", out)  # fmt: skip
    assert result.code == 0, result.stderr
    with h5py.File(out) as f:
        assert np.isfinite(f["X"][:]).all() and f["X"][:].max() == 1


def test_a_value_no_row_writes_is_not_refused(tmp_path, tbptt):
    """--remainder drop leaves the big value out: neither run refuses it."""
    np.save(tmp_path / "x.npy", np.array([[1.0, 2.0, 3.0, 4.0, 1e6]]))
    args = ("split", tmp_path / "x.npy", "--length", 2, "--remainder", "drop", "--dtype",
            "float16", "-o", tmp_path / "o.h5")  # fmt: skip
    assert tbptt(*args, "-n").code == 0
    assert tbptt(*args).code == 0
    with h5py.File(tmp_path / "o.h5") as f:
        assert f["X"][:, :, 0].tolist() == [[1, 2], [3, 4]]


def test_no_numpy_warning_reaches_the_terminal(tmp_path):
    """A fresh process without pytest's warning filters: stderr is the one error line."""
    process = subprocess.run(
        [sys.executable, "-m", "tbptt_cli", "asis", csv(tmp_path / "in.csv"), "--id-col", "id",
         "--dtype", "float16", "-o", tmp_path / "o.h5"],
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )  # fmt: skip
    assert process.returncode == 65
    assert process.stderr.startswith("tbptt: error: feature 'a' holds 70000")
    assert process.stderr.count("\n") == 1 and "Warning" not in process.stderr


@pytest.mark.parametrize("limit", ["256M", "1K"])
def test_a_table_value_beyond_float32_refused_where_a_row_writes_it(tmp_path, tbptt, limit):
    """Table values are read at float32 when only float32 is written; a larger value
    turns the store float64 (in memory or spilled), and the writer judges it as from NPY."""
    path = tmp_path / "in.csv"
    path.write_text("x\n1\n2\n1e39\n3\n4\n5\n6\n")
    args = ("split", path, "--length", 2, "--memory-limit", limit, "-o", tmp_path / "o.h5")
    result = tbptt(*args)
    assert result.code == 65 and result.stderr == (
        "tbptt: error: feature 'x' holds 1e+39, more than float32 can hold (largest "
        "3.40282e+38); pass --dtype float64, or --scale standard\n"
    )
    path.write_text("x\n1\n2\n3\n4\n5\n6\n1e39\n")  # in the tail --remainder drop drops
    assert tbptt(*args, "--remainder", "drop").code == 0
    with h5py.File(tmp_path / "o.h5") as f:
        assert f["X"][:, :, 0].tolist() == [[1, 2], [3, 4], [5, 6]]
