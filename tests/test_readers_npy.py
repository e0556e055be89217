"""The NPY/NPZ reader: shapes, memory mapping, stdin, --nan, --target and every error."""

from __future__ import annotations

import hashlib
import io
import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from tbptt_cli.errors import InputDataError, InputMissingError, UsageError
from tbptt_cli.options import InputOptions
from tbptt_cli.readers import read_input
from tbptt_cli.sequences import SequenceSet

SAMPLE = Path(__file__).resolve().parent.parent / "sample_data"
NAN_FIX = "clean the data or pass --nan ffill|zero|drop"


def save(tmp_path: Path, array: np.ndarray, name: str = "x.npy") -> str:
    path = tmp_path / name
    np.save(path, array)
    return str(path)


def read(path: str, **opts: object) -> SequenceSet:
    data, _ = read_input(InputOptions(path=path, **opts))  # type: ignore[arg-type]
    return data


def fails(
    tmp_path: Path, path: str, error: type[Exception] = InputDataError, **opts: object
) -> str:
    with pytest.raises(error) as caught:
        read(path, **opts)
    return str(caught.value).replace(str(tmp_path) + os.sep, "")


def test_1d_is_one_univariate_sequence(tmp_path: Path) -> None:
    data = read(save(tmp_path, np.arange(5, dtype=np.float32)))
    assert data.ids == ["0"] and data.lengths.tolist() == [5]
    assert data.values.shape == (5, 1) and data.feature_names == ["x0"]


def test_2d_is_sequences_by_time_and_stays_memory_mapped(tmp_path: Path) -> None:
    array = np.arange(12, dtype=np.float32).reshape(3, 4)
    data, info = read_input(InputOptions(path=save(tmp_path, array)))
    assert data.ids == ["0", "1", "2"] and data.lengths.tolist() == [4, 4, 4]
    assert data.starts.tolist() == [0, 4, 8]
    assert data.values.dtype == np.float32 and data.values.shape == (12, 1)
    assert isinstance(data.values, np.memmap) or isinstance(data.values.base, np.memmap)
    assert data.sequence(2)[:, 0].tolist() == [8, 9, 10, 11]
    raw = (tmp_path / "x.npy").read_bytes()
    assert (info.format, info.size) == ("npy", len(raw))
    assert info.sha256 == hashlib.sha256(raw).hexdigest()


def test_2d_tf_is_one_multivariate_sequence(tmp_path: Path) -> None:
    data = read(save(tmp_path, np.arange(12.0).reshape(4, 3)), axes="TF")
    assert data.lengths.tolist() == [4] and data.feature_names == ["x0", "x1", "x2"]
    assert data.values.tolist() == np.arange(12.0).reshape(4, 3).tolist()


def test_3d_is_a_view_of_the_mapped_file(tmp_path: Path) -> None:
    path = save(tmp_path, np.arange(24.0).reshape(2, 4, 3))
    data = read(path)
    assert data.lengths.tolist() == [4, 4] and data.features == 3
    mapped = np.load(path, mmap_mode="r")
    assert isinstance(data.values, np.memmap)
    assert data.values.filename == mapped.filename
    np.testing.assert_array_equal(data.sequence(1), np.arange(12.0, 24.0).reshape(4, 3))


def test_stdin_npy_and_npz() -> None:
    buffer = io.BytesIO()
    np.save(buffer, np.arange(6.0).reshape(2, 3))
    raw = buffer.getvalue()
    data, info = read_input(InputOptions(path="-", format="npy"), stdin=io.BytesIO(raw))
    assert data.lengths.tolist() == [3, 3] and data.values[:, 0].tolist() == [0, 1, 2, 3, 4, 5]
    assert (info.path, info.size, info.sha256) == ("-", len(raw), hashlib.sha256(raw).hexdigest())
    buffer = io.BytesIO()
    np.savez(buffer, values=np.arange(5.0), lengths=np.array([2, 3]))
    data, _ = read_input(InputOptions(path="-", format="npz"), stdin=io.BytesIO(buffer.getvalue()))
    assert data.lengths.tolist() == [2, 3]


def test_npz_lengths_offsets_and_ids(tmp_path: Path) -> None:
    path = tmp_path / "r.npz"
    np.savez(
        path,
        values=np.arange(12.0).reshape(6, 2),
        lengths=np.array([1, 0, 5]),
        ids=np.array(["a", "b", "c"]),
    )
    data = read(str(path))
    assert data.ids == ["a", "b", "c"] and data.lengths.tolist() == [1, 0, 5]
    assert data.sequence(2)[:, 1].tolist() == [3, 5, 7, 9, 11]
    np.savez(path, values=np.arange(6.0), offsets=np.array([0, 4, 6]))
    data = read(str(path))
    assert data.ids == ["0", "1"] and data.lengths.tolist() == [4, 2]


def test_sample_files() -> None:
    short = read(str(SAMPLE / "short.npy"))
    assert short.count == 100 and short.lengths.tolist() == [25] * 100
    assert short.values.dtype == np.float32
    walks = read(str(SAMPLE / "walks.npz"))
    assert walks.count == 40 and walks.ids[0] == "walk00" and walks.features == 2
    assert walks.lengths.min() >= 50 and walks.lengths.max() <= 400


def test_target_name_and_next(tmp_path: Path) -> None:
    path = save(tmp_path, np.arange(12.0).reshape(2, 2, 3))
    data = read(path, target="x1")
    assert data.feature_names == ["x0", "x2"] and data.target_names == ["x1"]
    assert data.targets is not None and data.targets[:, 0].tolist() == [1, 4, 7, 10]
    kept, _ = read_input(InputOptions(path=path), keep=("x0",))
    assert kept.feature_names == ["x1", "x2"] and kept.extra["x0"].tolist() == [0, 3, 6, 9]
    data = read(path, target="next", features=("x2",))
    assert data.lengths.tolist() == [1, 1]
    assert data.sequence(1).tolist() == [[8]] and data.target(1).tolist() == [[11]]


NAN_ARRAY = np.array([[1.0, np.nan, 2.0], [3.0, np.inf, 5.0]], dtype=np.float32)


@pytest.mark.parametrize(
    ("mode", "values", "lengths"),
    [
        ("zero", [1, 0, 2, 3, 0, 5], [3, 3]),
        ("ffill", [1, 1, 2, 3, 3, 5], [3, 3]),
        ("drop", [1, 2, 3, 5], [2, 2]),
    ],
)
def test_nan_modes(tmp_path: Path, mode: str, values: list[float], lengths: list[int]) -> None:
    data = read(save(tmp_path, NAN_ARRAY), nan=mode)
    assert data.values[:, 0].tolist() == values and data.lengths.tolist() == lengths
    assert data.values.dtype == np.float32


def test_nan_error_names_sequence_step_and_feature(tmp_path: Path) -> None:
    array = np.zeros((5, 20, 2))
    array[3, 17, 0] = np.nan
    array[4, 0, 1] = np.inf
    message = fails(tmp_path, save(tmp_path, array))
    assert message == f"x.npy: non-finite value at sequence 3, step 17, feature x0; {NAN_FIX}"


def test_nan_scan_reads_slab_by_slab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("tbptt_cli.readers.arrays.SCAN_BYTES", 64)  # 2 rows of 4 float64
    array = np.zeros((3, 5, 4))
    array[2, 1, 3] = -np.inf
    message = fails(tmp_path, save(tmp_path, array))
    assert message == f"x.npy: non-finite value at sequence 2, step 1, feature x3; {NAN_FIX}"
    data = read(save(tmp_path, np.zeros((3, 5, 4)), "clean.npy"), nan="drop")
    assert isinstance(data.values, np.memmap)  # clean data is not copied, whatever --nan says


def test_nan_error_in_npz_uses_the_ids(tmp_path: Path) -> None:
    path = tmp_path / "r.npz"
    np.savez(
        path,
        values=np.array([1.0, 2.0, np.nan]),
        lengths=np.array([2, 0, 1]),
        ids=np.array(["a", "b", "c"]),
    )
    message = fails(tmp_path, str(path))
    assert message == f"r.npz: non-finite value at sequence c, step 0, feature x0; {NAN_FIX}"


def test_ffill_of_a_leading_nan_is_an_error(tmp_path: Path) -> None:
    array = np.array([[1.0, np.nan], [np.nan, np.nan]])
    assert fails(tmp_path, save(tmp_path, array), nan="ffill") == (
        "x.npy: sequence '1' starts with 2 step(s) without a value in column 'x0', and "
        "--nan ffill fills only from earlier steps (a later value would leak the future); "
        "drop those steps, or pass --nan zero or --nan drop"
    )


def npz(tmp_path: Path, **arrays: np.ndarray) -> str:
    path = tmp_path / "r.npz"
    np.savez(path, **arrays)  # type: ignore[arg-type]
    return str(path)


V = np.arange(6.0)


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        (
            {"lengths": np.array([6])},
            "r.npz: no 'values' array (the archive has lengths); save it with numpy.savez(path, "
            "values=..., lengths=...), or one array per sequence with numpy.savez(path, "
            "*sequences)",
        ),
        (
            {"values": V},
            "r.npz: found neither of 'lengths' and 'offsets'; save exactly one: "
            "lengths [sequences] or offsets [sequences + 1]",
        ),
        (
            {"values": V, "lengths": np.array([6]), "offsets": np.array([0, 6])},
            "r.npz: found both of 'lengths' and 'offsets'; save exactly one: lengths [sequences] "
            "or offsets [sequences + 1]",
        ),
        (
            {"values": V, "lengths": np.array([2, 3])},
            "r.npz: lengths add up to 5 but 'values' has 6 rows; they must match",
        ),
        (
            {"values": V, "lengths": np.array([8, -2])},
            "r.npz: lengths[1] is -2; a length must be >= 0",
        ),
        (
            {"values": V, "offsets": np.array([0, 4, 3, 6])},
            "r.npz: offsets[2] = 3 is below offsets[1] = 4; offsets must not decrease",
        ),
        (
            {"values": V, "offsets": np.array([1, 6])},
            "r.npz: offsets must start at 0 and end at 6 (the rows of 'values'), got 1 .. 6",
        ),
        (
            {"values": V, "lengths": np.array([3.0, 3.0])},
            "r.npz: 'lengths' must be a non-empty 1-D integer array, got float64 shape (2,)",
        ),
        (
            {"values": V, "lengths": np.array([6]), "ids": np.array(["a", "b"])},
            "r.npz: 'ids' must be 1 strings or integers, one per sequence, got <U1 shape (2,)",
        ),
        (
            {"values": np.array(["a"]), "lengths": np.array([1])},
            "r.npz: member 'values': string arrays are not supported (dtype <U1); save float32 "
            "or float64 numbers",
        ),
    ],
)
def test_npz_errors(tmp_path: Path, arrays: dict[str, np.ndarray], message: str) -> None:
    assert fails(tmp_path, npz(tmp_path, **arrays)) == message


def test_npz_object_member_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "r.npz"
    np.savez(path, values=np.array([[1.0], "x"], dtype=object), lengths=np.array([2]))
    assert fails(tmp_path, str(path)).startswith(
        "r.npz: member 'values': object arrays are refused (pickle is unsafe)"
    )


def raw_file(tmp_path: Path, name: str, content: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(content)
    return str(path)


def test_npy_file_errors(tmp_path: Path) -> None:
    objects = save(tmp_path, np.array([1, "a", None], dtype=object), "o.npy")
    assert fails(tmp_path, objects) == (
        "o.npy: object arrays are refused (pickle is unsafe); save a numeric array"
    )
    pickled = raw_file(tmp_path, "p.npy", pickle.dumps([1, 2, 3]))
    assert fails(tmp_path, pickled).startswith("p.npy: pickled data is refused (pickle is unsafe)")
    full = (tmp_path / "x.npy").read_bytes() if save(tmp_path, np.zeros((4, 4))) else b""
    truncated = raw_file(tmp_path, "t.npy", full[:-10])
    assert fails(tmp_path, truncated) == (
        f"t.npy: truncated: the header promises {len(full)} bytes, the file has "
        f"{len(full) - 10}; copy or save it again"
    )
    corrupt = raw_file(tmp_path, "c.npy", full[:8] + b"\x20\x00{'descr': <junk>}\n" + full[60:])
    assert fails(tmp_path, corrupt).startswith("c.npy: corrupt NPY header (")
    assert fails(tmp_path, raw_file(tmp_path, "n.npy", b"hello")) == (
        "n.npy: not an NPY file (no NPY magic string); save the array with numpy.save"
    )
    assert fails(tmp_path, save(tmp_path, np.zeros((1, 2, 3, 4)), "f.npy")) == (
        "f.npy: a 4-D array is not a set of sequences; expected 1-D [time], 2-D "
        "[sequences, time] or 3-D [sequences, time, features]"
    )
    assert fails(tmp_path, save(tmp_path, np.array(3.0), "s.npy")).startswith(
        "s.npy: a 0-D array is not a set of sequences"
    )
    assert fails(tmp_path, save(tmp_path, np.zeros((3, 0)), "e.npy")) == (
        "e.npy: the array is empty (shape (3, 0)); nothing to read"
    )
    assert fails(tmp_path, save(tmp_path, np.array(["a", "b"]), "u.npy")) == (
        "u.npy: string arrays are not supported (dtype <U1); save float32 or float64 numbers"
    )
    assert fails(tmp_path, save(tmp_path, np.zeros(3, dtype=complex), "z.npy")).startswith(
        "z.npy: complex arrays are not supported"
    )
    structured = np.zeros(3, dtype=[("a", "f4"), ("b", "f4")])
    assert fails(tmp_path, save(tmp_path, structured, "r.npy")).startswith(
        "r.npy: structured arrays are not supported"
    )
    assert fails(tmp_path, npz(tmp_path, values=V, lengths=np.array([6])), format="npy") == (
        "r.npz: this is an NPZ archive, not an NPY file; pass --format npz"
    )


def test_column_and_option_errors(tmp_path: Path) -> None:
    path = save(tmp_path, np.zeros((2, 3, 2)))
    assert fails(tmp_path, path, target="xx1") == (
        "x.npy: no column 'xx1' (given to --target); did you mean 'x1'? the columns are x0, x1"
    )
    assert fails(tmp_path, path, features=("x5",)).startswith(
        "x.npy: no column 'x5' (given to --features)"
    )
    with pytest.raises(UsageError, match="^--id-col applies to CSV, TSV, Parquet and Arrow input"):
        read(path, id_col="sensor")
    with pytest.raises(UsageError, match="^--axes TF applies to 2-D arrays"):
        read(path, axes="TF")
    with pytest.raises(InputMissingError, match=r"gone\.npy: no such file$"):
        read(str(tmp_path / "gone.npy"))


@pytest.mark.parametrize(
    ("flag", "value", "kinds"),
    [
        ("--layout", "wide", "CSV, TSV, Parquet and Arrow"),
        ("--delimiter", ";", "CSV"),
        ("--time-col", "t", "CSV, TSV, Parquet and Arrow"),
        ("--no-header", None, "CSV"),
        ("--freq", "1h", "CSV, TSV, Parquet and Arrow"),
    ],
)
def test_table_options_are_refused_for_npy(tmp_path, tbptt, flag, value, kinds):
    np.save(tmp_path / "x.npy", np.zeros((2, 3)))
    result = tbptt("asis", tmp_path / "x.npy", flag, *([value] if value else []), "-n")
    assert result.code == 2
    assert result.stderr == (
        f"tbptt: error: {flag} applies to {kinds} input only, not NPY; drop it\n"
    )


def test_axes_is_refused_for_csv(tmp_path, tbptt):
    (tmp_path / "x.csv").write_text("a\n1\n2\n")
    result = tbptt("asis", tmp_path / "x.csv", "--axes", "TF", "-n")
    assert result.code == 2 and "--axes applies to NPY input only, not CSV" in result.stderr
