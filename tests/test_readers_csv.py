"""The CSV/TSV reader: layouts, ids, sorting, encodings, --nan, --target and every error."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tbptt_cli.errors import InputDataError, InputMissingError, UsageError
from tbptt_cli.options import InputOptions
from tbptt_cli.readers import read_input
from tbptt_cli.sequences import SequenceSet

NAN_FIX = "clean the data or pass --nan ffill|zero|drop"
SAMPLE = Path(__file__).resolve().parent.parent / "sample_data"
LONG = "id,t,a,b\nx,2,1,10\ny,1,2,20\nx,1,3,30\ny,0,4,40\nx,0,5,50\n"


def write(tmp_path: Path, text: str | bytes, name: str = "data.csv") -> str:
    path = tmp_path / name
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return str(path)


def read(tmp_path: Path, text: str | bytes, name: str = "data.csv", **opts: Any) -> SequenceSet:
    data, _ = read_input(InputOptions(path=write(tmp_path, text, name), **opts))
    return data


def fails(tmp_path: Path, text: str | bytes, **opts: Any) -> str:
    """The `InputDataError` message with the tmp directory removed."""
    with pytest.raises(InputDataError) as caught:
        read(tmp_path, text, **opts)
    return str(caught.value).replace(str(tmp_path) + os.sep, "")


def test_long_groups_non_contiguous_ids_in_order_of_first_appearance(tmp_path: Path) -> None:
    data, info = read_input(InputOptions(path=write(tmp_path, LONG), id_col="id"))
    assert data.ids == ["x", "y"]
    assert data.lengths.tolist() == [3, 2]
    assert data.feature_names == ["a", "b"]  # t is a time column, out of order: not a feature
    assert data.sequence(0)[:, 0].tolist() == [1, 3, 5]
    assert data.values.dtype == np.float64
    assert info.warnings == (
        "left out of the features: t (a calendar name); name a column in --features to use it",
        "rows of sequence 'x' are not in order of column 't' and no --time-col was given; did "
        "you mean --time-col t?",
    )


def test_time_column_sorts_within_each_sequence_and_lands_in_extra(tmp_path: Path) -> None:
    data = read(tmp_path, LONG, id_col="id", time_col="t")
    assert data.feature_names == ["a", "b"]
    assert data.sequence(0).tolist() == [[5, 50], [3, 30], [1, 10]]
    assert data.sequence(1).tolist() == [[4, 40], [2, 20]]
    assert data.extra["t"].tolist() == [0, 1, 2, 0, 1]


def test_features_order_and_ignored_columns(tmp_path: Path) -> None:
    data = read(tmp_path, "name,a,b,c\nfoo,1,2,3\nbar,4,5,6\n", features=("c", "a"))
    assert data.feature_names == ["c", "a"]
    assert data.values.tolist() == [[3, 1], [6, 4]]


def test_default_features_skip_text_columns_and_keep_columns(tmp_path: Path) -> None:
    data, _ = read_input(
        InputOptions(path=write(tmp_path, "note,a,,b,end\nhi,1,,2,0\nyo,3,4,5,1\n"), nan="zero"),
        keep=("end",),
    )
    # The unnamed column is numeric (first cell 4), named by its place as pandas names it.
    assert data.feature_names == ["a", "Unnamed: 2", "b"]
    assert data.values.tolist() == [[1, 0, 2], [3, 4, 5]]
    assert data.extra["end"].tolist() == [0, 1]


def test_bom_crlf_and_quotes_read_like_plain_text(tmp_path: Path) -> None:
    plain = read(tmp_path, LONG, id_col="id", time_col="t")
    quoted = '\ufeff"id","t","a","b"\r\n' + "".join(
        f'"{row.split(",")[0]}",{",".join(row.split(",")[1:])}\r\n' for row in LONG.split()[1:]
    )
    fancy = read(tmp_path, quoted, name="fancy.csv", id_col="id", time_col="t")
    assert fancy.ids == plain.ids
    np.testing.assert_array_equal(fancy.values, plain.values)
    np.testing.assert_array_equal(fancy.lengths, plain.lengths)


def test_quoted_field_with_delimiter_and_newline(tmp_path: Path) -> None:
    data = read(tmp_path, 'id,a\n"x, the\nfirst",1\ny,2\n', id_col="id")
    assert data.ids == ["x, the\nfirst", "y"]


def test_tsv_and_delimiter_override(tmp_path: Path) -> None:
    assert read(tmp_path, "a\tb\n1\t2\n", name="d.tsv").values.tolist() == [[1, 2]]
    assert read(tmp_path, "a;b\n1;2\n", delimiter=";").values.tolist() == [[1, 2]]


def test_wide_layout_is_ragged_by_trailing_empty_cells(tmp_path: Path) -> None:
    data = read(tmp_path, "name,s0,s1,s2\nu,1,2,3\nv,4,,\nw,5,6\n", layout="wide", id_col="name")
    assert data.ids == ["u", "v", "w"]
    assert data.lengths.tolist() == [3, 1, 2]
    assert data.feature_names == ["value"]
    assert data.values[:, 0].tolist() == [1, 2, 3, 4, 5, 6]


def test_wide_without_id_numbers_the_rows_and_nan_fills_inner_cells(tmp_path: Path) -> None:
    data = read(tmp_path, "s0,s1,s2\n1,,2\n3,NA\n", layout="wide", nan="zero")
    assert data.ids == ["0", "1"]
    assert data.lengths.tolist() == [3, 1]  # trailing missing cells (empty or NA) end a row
    assert data.values[:, 0].tolist() == [1, 0, 2, 3]


def test_stdin_reads_the_same_and_hashes_the_bytes() -> None:
    raw = LONG.encode()
    opts = InputOptions(path="-", format="csv", id_col="id")
    data, info = read_input(opts, stdin=io.BytesIO(raw))
    assert data.lengths.tolist() == [3, 2]
    assert info.path == "-" and info.format == "csv" and info.size == len(raw)
    assert info.sha256 == hashlib.sha256(raw).hexdigest()


def test_sample_sensors_file() -> None:
    data, info = read_input(
        InputOptions(path=str(SAMPLE / "sensors.csv"), id_col="sensor", time_col="t")
    )
    assert data.count == 6 and data.feature_names == ["temp", "humidity"]
    assert all(800 <= n <= 1500 for n in data.lengths)
    assert info.size == (SAMPLE / "sensors.csv").stat().st_size


NAN_CSV = "id,a,b\nx,5,1\nx,2,\nx,NA,3\ny,4,7\ny,-Infinity,1e999\ny,6,inf\n"


@pytest.mark.parametrize(
    ("mode", "values", "lengths"),
    [
        ("zero", [[5, 1], [2, 0], [0, 3], [4, 7], [0, 0], [6, 0]], [3, 3]),
        ("ffill", [[5, 1], [2, 1], [2, 3], [4, 7], [4, 7], [6, 7]], [3, 3]),
        ("drop", [[5, 1], [4, 7]], [1, 1]),
    ],
)
def test_nan_modes(
    tmp_path: Path, mode: str, values: list[list[float]], lengths: list[int]
) -> None:
    data = read(tmp_path, NAN_CSV, id_col="id", nan=mode)
    assert data.values.tolist() == values
    assert data.lengths.tolist() == lengths
    assert data.starts.tolist() == np.concatenate([[0], np.cumsum(lengths)[:-1]]).tolist()


def test_nan_drop_keeps_extra_and_targets_aligned(tmp_path: Path) -> None:
    data = read(tmp_path, "t,a,y\n0,1,nan\n1,nan,2\n2,3,4\n", time_col="t", target="y", nan="drop")
    assert data.values.tolist() == [[3]] and data.targets is not None
    assert data.targets.tolist() == [[4]] and data.extra["t"].tolist() == [2]


def test_ffill_never_fills_from_a_later_step(tmp_path: Path) -> None:
    assert fails(tmp_path, "id,a,b\nx,1,1\ny,,1\ny,nan,2\ny,3,3\n", id_col="id", nan="ffill") == (
        "data.csv: sequence 'y' starts with 2 step(s) without a value in column 'a', and "
        "--nan ffill fills only from earlier steps (a later value would leak the future); "
        "drop those steps, or pass --nan zero or --nan drop"
    )


def test_target_column_is_removed_from_the_features(tmp_path: Path) -> None:
    data = read(tmp_path, "a,y,b\n1,2,3\n4,5,6\n", target="y")
    assert data.feature_names == ["a", "b"] and data.target_names == ["y"]
    assert data.targets is not None and data.targets.tolist() == [[2], [5]]


def test_target_next_shifts_by_one(tmp_path: Path) -> None:
    data = read(tmp_path, LONG, id_col="id", time_col="t", features=("a",), target="next")
    assert data.lengths.tolist() == [2, 1]
    assert data.sequence(0)[:, 0].tolist() == [5, 3]
    assert data.target(0)[:, 0].tolist() == [3, 1]


@pytest.mark.parametrize(
    ("text", "opts", "message"),
    [
        ("", {}, "data.csv: empty file; expected a header line"),
        ("\n\n", {}, "data.csv: empty file; expected a header line"),
        ("a,b\n", {}, "data.csv:1: header but no data rows"),
        (
            "a,b,c,d\n" + "1,2,3,4\n" * 5 + "1,2,3,4,5\n",
            {},
            "data.csv:7:1: row has 5 fields, the header has 4",
        ),
        ("id,temp\nx,1\nx,abc\n", {}, "data.csv:3:2: 'abc' is not a number (column 'temp')"),
        (
            "'OBS' 'GPA'\n1 2.66\n",  # statsmodels' spector.csv
            {},
            "data.csv:1: the header has no ',' but 2 columns split by ' '; pass --delimiter ' '",
        ),
        (
            "a;b\r\n1,5;2,3\r\n",
            {},
            "data.csv:1: the header has no ',' but 2 columns split by ';'; pass --delimiter ';'",
        ),
        (
            "a\tb\tc\n1\t2\t3\n",
            {},
            "data.csv:1: the header has no ',' but 3 columns split by '\\t'; "
            "pass --delimiter '\\t'",
        ),
        (
            "id,temp\nx,1\nx,nan\n",
            {},
            "data.csv:3:2: non-finite value 'nan' in column 'temp'; clean the data or pass "
            "--nan ffill|zero|drop",
        ),
        (
            "a,b\r\n1,2\r\n\r\n3,\r\n",
            {},
            "data.csv:4:2: empty cell in column 'b'; clean the data or pass --nan ffill|zero|drop",
        ),
        (
            "t,a\n0,1\nNA,2\n",
            {"time_col": "t", "nan": "zero"},
            "data.csv:3:1: time value 'NA' in column 't' is not a finite number; every row needs "
            "a time",
        ),
        (
            "temp,b\n1,2\n",
            {"features": ("tmp",)},
            "data.csv: no column 'tmp' (given to --features); did you mean 'temp'? the columns "
            "are temp, b",
        ),
        (
            "a,b\n1,2\n",
            {"target": "zzz"},
            "data.csv: no column 'zzz' (given to --target); the columns are a, b",
        ),
        (
            "a,b\n1,2\n",
            {"id_col": "ID"},
            "data.csv: no column 'ID' (given to --id-col); the columns are a, b",
        ),
        (
            "a,b\n1,2\n",
            {"time_col": "time"},
            "data.csv: no column 'time' (given to --time-col); the columns are a, b",
        ),
        (
            "a,a\n1,2\n",
            {},
            "data.csv:1: column 'a' appears twice in the header; give every column its own name",
        ),
        (
            "name\nfoo\n",
            {},
            "data.csv: no numeric feature column found; name the feature columns with --features",
        ),
        (
            "s0,s1,s2\n1,,3\n",
            {"layout": "wide"},
            f"data.csv:2:2: empty cell in column 's1'; {NAN_FIX}",
        ),
        (
            b"a,b\n1,2\n3\x00,4\n",
            {},
            "data.csv:3: NUL byte; this looks like a binary file, "
            "not CSV text (for NumPy data pass --format npy|npz)",
        ),
        (
            b"a,b\n1,2\n\n3,\xff\n",
            {},
            "data.csv:4: byte 0xff is not UTF-8 text; save the file as UTF-8",
        ),
    ],
)
def test_data_errors(tmp_path: Path, text: str | bytes, opts: dict[str, Any], message: str) -> None:
    assert fails(tmp_path, text, **opts) == message


def test_unterminated_quote_swallows_the_rest(tmp_path: Path) -> None:
    assert fails(tmp_path, 'a,b\n1,2\n"3,4\n5,6\n') == (
        "data.csv:3:1: row has 1 field, the header has 2"
    )


def test_chunk_boundaries_change_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("tbptt_cli.readers.delimited.CHUNK_ROWS", 2)
    blank_start = "a,b\n1,\n2,\n3,4\n"  # b is numeric: its first value is a number
    assert fails(tmp_path, blank_start) == f"data.csv:2:2: empty cell in column 'b'; {NAN_FIX}"
    assert fails(tmp_path, LONG + "z,9,nan,1\n", id_col="id") == (
        f"data.csv:7:3: non-finite value 'nan' in column 'a'; {NAN_FIX}"
    )


def test_a_column_cannot_be_feature_and_target(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="^column 'a' is both a feature and the --target; "):
        read(tmp_path, LONG, features=("a", "b"), target="a")


def test_missing_input_errors(tmp_path: Path) -> None:
    with pytest.raises(InputMissingError, match=r"nope\.csv: no such file$"):
        read_input(InputOptions(path=str(tmp_path / "nope.csv")))
    (tmp_path / "dir.csv").mkdir()
    with pytest.raises(InputMissingError, match=r"dir\.csv: directory holds no CSV, TSV, "):
        read_input(InputOptions(path=str(tmp_path / "dir.csv")))


def test_permission_denied(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied")

    # chmod 000 does not stop root, so fake the refusal where the reader opens the file.
    monkeypatch.setattr("tbptt_cli.readers.inputs.open", refuse, raising=False)
    with pytest.raises(InputMissingError, match="data.csv: permission denied$"):
        read_input(InputOptions(path=write(tmp_path, LONG)))


@pytest.mark.parametrize(
    ("opts", "message"),
    [
        ({"path": "-"}, "reading stdin needs --format csv|tsv|parquet|arrow|npy|npz"),
        (
            {"path": "data.txt"},
            "data.txt: cannot tell the format (suffix '.txt'); pass --format "
            "csv|tsv|parquet|arrow|npy|npz",
        ),
        (
            {"path": "out/x.h5"},
            "out/x.h5: an HDF5 file is an output, not an input; describe it with tbptt "
            "inspect or tbptt validate, or draw it with --report on the run",
        ),
        (
            {"path": "x.csv", "delimiter": ";;"},
            "--delimiter ';;' must be one character (or \\t for tab)",
        ),
    ],
)
def test_usage_errors(tmp_path: Path, opts: dict[str, str], message: str) -> None:
    if opts["path"] == "x.csv":
        opts = {**opts, "path": write(tmp_path, LONG, "x.csv")}
    with pytest.raises(UsageError) as caught:
        read_input(InputOptions(**opts), stdin=io.BytesIO(b""))  # type: ignore[arg-type]
    assert str(caught.value) == message


@pytest.mark.parametrize("layout", ["long", "wide"])
def test_empty_header_cells_are_named_by_their_place(tmp_path: Path, layout: str) -> None:
    # A spreadsheet's export ends every line with empty columns (`;;`): they used to be
    # two columns named '' ("appears twice"); now they are named as pandas names them.
    text = "a;b;;\r\n1;2;;\r\n3;4;;\r\n"
    data, info = read_input(InputOptions(path=write(tmp_path, text), delimiter=";", layout=layout))
    if layout == "long":
        assert data.feature_names == ["a", "b"]
        assert data.values.tolist() == [[1, 2], [3, 4]]
        assert (
            "left out of the features: Unnamed: 2 (empty), Unnamed: 3 (empty)" in (info.warnings[0])
        )
    else:  # empty trailing cells end a wide row
        assert data.lengths.tolist() == [2, 2]
        assert data.values.ravel().tolist() == [1, 2, 3, 4]
    # Named by place, an empty column can be asked for, and its cells are located.
    features = ("a", "Unnamed: 2")
    assert fails(tmp_path, "a;;;d\n1;;5;2\n3;;;4\n", delimiter=";", features=features) == (
        "data.csv:3:3: empty cell in column 'Unnamed: 2'; clean the data or pass --nan "
        "ffill|zero|drop"
    )
    data = read(tmp_path, "a;;;d\n1;;5;2\n3;;6;4\n", delimiter=";", features=features)
    assert data.values.tolist() == [[1, 5], [3, 6]]


@pytest.mark.parametrize("rows", [2, 40_000])  # the bad cell inside the sample, and past it
def test_a_bad_cell_in_a_true_false_column_is_named(tmp_path: Path, rows: int) -> None:
    # R writes logicals as TRUE/FALSE; a column of them named in --features reads as 1 and
    # 0, and a cell that is neither was reported as the first TRUE "is not a number".
    cells = "".join(f"{i},{'TRUE' if i % 2 else 'FALSE'}\n" for i in range(rows))
    text = "a,flag\n" + cells + f"{rows},maybe\n"
    assert fails(tmp_path, text, features=("a", "flag")) == (
        f"data.csv:{rows + 2}:2: 'maybe' is not true or false (column 'flag', read as 1 and 0)"
    )
    data = read(tmp_path, "a,flag\n" + cells, features=("a", "flag"))
    assert data.values[:, 1].tolist() == [i % 2 for i in range(rows)]
