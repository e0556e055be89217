"""NPY/NPZ as people save them: every numeric dtype and byte order, Fortran order, one
array per sequence (``numpy.savez(path, *arrays)``), and stdin never held in memory."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from tbptt_cli.errors import InputDataError
from tbptt_cli.options import InputOptions
from tbptt_cli.readers import read_input

REPO = Path(__file__).resolve().parents[1]
SEQUENCES = np.arange(300).reshape(3, 100, 1)  # 3 sequences of 100 steps, values 0..299


def chunks(path: Path) -> np.ndarray:
    """X of ``split --length 10``, each chunk's rows in sequence order."""
    with h5py.File(path) as f:
        order = np.lexsort((f["offset"][:], f["sequence"][:]))
        return f["X"][:][order]


@pytest.mark.parametrize(
    "dtype", ["int64", "int32", ">i4", "uint16", "int8", "bool", "float16", "float64", ">f8"]
)
@pytest.mark.parametrize("fortran", [False, True])
def test_every_numeric_dtype_and_order_is_written_exactly(tmp_path, tbptt, dtype, fortran):
    array = (SEQUENCES % 100 if dtype == "int8" else SEQUENCES).astype(dtype)
    np.save(tmp_path / "x.npy", np.asfortranarray(array) if fortran else array)
    out = tmp_path / "o.h5"
    result = tbptt("split", tmp_path / "x.npy", "--length", 10, "-o", out)
    assert result.code == 0, result.stderr
    want = array.astype(np.float32).reshape(30, 10, 1)
    np.testing.assert_array_equal(chunks(out), want)
    assert tbptt("validate", out, "--against", tmp_path / "x.npy").code == 0


def test_integers_beyond_the_output_dtype_are_refused(tmp_path, tbptt):
    np.save(tmp_path / "x.npy", np.array([[1, 70000, 3, 4]], dtype=np.int32))
    args = ("split", tmp_path / "x.npy", "--length", 2, "--dtype", "float16")
    for extra in (["-n"], ["-o", tmp_path / "o.h5"]):
        result = tbptt(*args, *extra)
        assert (result.code, result.stderr) == (
            65,
            "tbptt: error: feature 'x0' holds 70000, more than float16 can hold (largest "
            "65504); pass --dtype float32 (or float64), or --scale standard\n",
        )
    assert not (tmp_path / "o.h5").exists()


def test_integers_stay_mapped_as_stored(tmp_path):
    path = tmp_path / "x.npy"
    np.save(path, np.arange(6, dtype=">i2").reshape(2, 3))
    data, _ = read_input(InputOptions(path=str(path)))
    assert data.values.dtype == np.dtype(">i2") and isinstance(data.values, np.memmap)
    assert data.sequence(1)[:, 0].tolist() == [3, 4, 5]


def test_a_fortran_array_beyond_the_memory_limit_is_reordered_on_disk(tmp_path):
    path, spill = tmp_path / "x.npy", tmp_path / "spill"
    spill.mkdir()
    array = np.arange(4000.0).reshape(4, 500, 2)
    np.save(path, np.asfortranarray(array))
    for limit, mapped in (("1M", False), ("1K", True)):
        options = InputOptions(path=str(path), memory_limit=limit)
        data, _ = read_input(options, spill_dir=spill)
        assert isinstance(data.values, np.memmap) == mapped
        np.testing.assert_array_equal(data.values, array.reshape(2000, 2))
        assert data.lengths.tolist() == [500] * 4
    assert list(spill.iterdir()) == []  # the spill file has no name: nothing left behind


def test_savez_of_a_list_is_one_sequence_per_array(tmp_path, tbptt):
    path = tmp_path / "r.npz"
    sequences = [np.full((n, 2), k, dtype=np.int32) for k, n in enumerate(range(1, 12))]
    np.savez(path, *sequences)  # arr_0 .. arr_10: arr_10 is the last, not the third
    data, _ = read_input(InputOptions(path=str(path)))
    assert data.lengths.tolist() == list(range(1, 12))
    assert data.ids == [str(k) for k in range(11)] and data.feature_names == ["x0", "x1"]
    for k in range(11):
        assert (data.sequence(k) == k).all()
    result = tbptt("asis", path, "-o", tmp_path / "o.h5")
    assert result.code == 0, result.stderr
    assert tbptt("validate", tmp_path / "o.h5", "--against", path).code == 0
    np.savez(path, np.arange(5.0), np.arange(3, dtype=np.int8))  # [T]: one feature, any dtype
    data, _ = read_input(InputOptions(path=str(path)))
    assert data.lengths.tolist() == [5, 3] and data.sequence(1)[:, 0].tolist() == [0, 1, 2]


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        (
            [np.ones((3, 2)), np.ones((4, 3))],
            "'arr_0' has 2 feature(s) but 'arr_1' has 3; every sequence needs the same features",
        ),
        (
            [np.ones((3, 2, 1))],
            "member 'arr_0': shape (3, 2, 1); with one array per sequence each must be [time] "
            "or [time, features]",
        ),
        ([np.array(["a", "b"])], "member 'arr_0': string arrays are not supported"),
        ([np.ones(0), np.ones((0,))], "every array is empty; nothing to read"),
    ],
)
def test_savez_of_a_list_refuses_what_it_cannot_read(tmp_path, arrays, message):
    path = tmp_path / "r.npz"
    np.savez(path, *arrays)
    with pytest.raises(InputDataError) as caught:
        read_input(InputOptions(path=str(path)))
    assert str(caught.value).startswith(f"{path}: {message}")


def test_an_archive_of_other_names_says_both_ways_to_save(tmp_path):
    path = tmp_path / "r.npz"
    np.savez(path, np.ones(3), lengths=np.array([3]))
    with pytest.raises(InputDataError) as caught:
        read_input(InputOptions(path=str(path)))
    assert str(caught.value) == (
        f"{path}: no 'values' array (the archive has lengths, arr_0); save it with "
        "numpy.savez(path, values=..., lengths=...), or one array per sequence with "
        "numpy.savez(path, *sequences)"
    )


def test_stdin_npy_is_mapped_from_an_unnamed_copy(tmp_path):
    buffer = io.BytesIO()
    np.save(buffer, np.arange(12, dtype=np.int16).reshape(3, 4))
    options = InputOptions(path="-", format="npy")
    data, info = read_input(options, stdin=io.BytesIO(buffer.getvalue()), spill_dir=tmp_path)
    assert isinstance(data.values, np.memmap) and data.values.dtype == np.int16
    assert data.sequence(2)[:, 0].tolist() == [8, 9, 10, 11]
    assert info.size == len(buffer.getvalue()) and list(tmp_path.iterdir()) == []


def test_stdin_npy_through_the_command_line(tmp_path):
    np.save(tmp_path / "x.npy", SEQUENCES)
    out = tmp_path / "o.h5"
    with open(tmp_path / "x.npy", "rb") as stdin:
        process = subprocess.run(
            [sys.executable, "-m", "tbptt_cli", "split", "-", "--format", "npy",
             "--length", "10", "-q", "-o", out],
            stdin=stdin, capture_output=True, text=True, env={"PYTHONPATH": str(REPO)},
            timeout=120,
        )  # fmt: skip
    assert (process.returncode, process.stderr) == (0, "")
    np.testing.assert_array_equal(chunks(out), SEQUENCES.reshape(30, 10, 1))
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".o.h5.lock", "o.h5", "o.manifest.json", "x.npy",
    ]  # fmt: skip
