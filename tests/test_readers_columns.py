"""Which columns are features: calendar columns left out (and said), refusals of columns in
two roles, header-less files, decimal commas, excluded labels."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import statsmodels

from tbptt_cli.errors import InputDataError
from tbptt_cli.inspect import inspect_path
from tbptt_cli.options import InputOptions
from tbptt_cli.readers import read_input
from tbptt_cli.sequences import SequenceSet, SourceInfo

DATASETS = Path(statsmodels.__file__).parent / "datasets"


def read(tmp_path: Path, text: str, **opts: Any) -> tuple[SequenceSet, SourceInfo]:
    path = tmp_path / "data.csv"
    path.write_text(text)
    return read_input(InputOptions(path=str(path), **opts))


def panel(columns: str, row: Any, sequences: int = 2, steps: int = 12) -> str:
    """A long file: ``row(i, t)`` gives the values of step t of sequence i."""
    lines = [",".join(map(str, row(i, t))) for i in range(sequences) for t in range(steps)]
    return columns + "\n" + "\n".join(lines) + "\n"


@pytest.mark.parametrize(
    ("columns", "row", "reason"),
    [
        ("id,vintage,x", lambda i, t: (i, 1990 + t // 2, t * 0.5), "integer years"),
        ("id,stamp,x", lambda i, t: (i, 20200101 + t, t * 0.5), "yyyymmdd dates"),
        ("id,Quarter,x", lambda i, t: (i, t % 4 + 1, t * 0.5), "a calendar name"),
    ],
)
def test_calendar_columns_are_left_out_and_said(tmp_path, columns, row, reason):
    data, info = read(tmp_path, panel(columns, row), id_col="id")
    name = columns.split(",")[1]
    assert data.feature_names == ["x"]
    assert info.warnings == (
        f"left out of the features: {name} ({reason}); name a column in --features to use it",
    )
    named, _ = read(tmp_path, panel(columns, row), id_col="id", features=(name, "x"))
    assert named.feature_names == [name, "x"]


def test_unix_times_and_numeric_ids_are_left_out_and_the_id_named(tmp_path):
    # Read as features, an epoch column and a station number swamped the readings.
    text = panel(
        "station_id,logged,value",
        lambda i, t: (101 + i, 1_700_000_000 + 3600 * t, (i * t) % 7),
        sequences=3,
    )
    data, info = read(tmp_path, text)
    assert data.feature_names == ["value"] and data.lengths.tolist() == [36]
    assert info.warnings[:2] == (
        "left out of the features: station_id (an id name), logged (Unix times); name a "
        "column in --features to use it",
        "column 'station_id' holds ids and no --id-col was given, so every row is read as "
        "one sequence; did you mean --id-col station_id? (--exclude station_id to keep one "
        "sequence)",
    )
    data, info = read(tmp_path, text, id_col="station_id")
    assert data.feature_names == ["value"] and data.lengths.tolist() == [12] * 3
    assert info.warnings == (
        "left out of the features: logged (Unix times); name a column in --features to use it",
    )
    millis = panel("ts,x", lambda i, t: (1_700_000_000_000 + 1000 * t, t % 3), sequences=1)
    assert read(tmp_path, millis)[0].feature_names == ["x"]


def test_a_population_in_the_billions_stays_a_feature(tmp_path):
    # About China's population in 1990-2001: in the range of Unix seconds and rising every
    # year, but by a different amount each year, as no clock does.
    population = [
        1135185000,
        1150780000,
        1164970000,
        1178440000,
        1191835000,
        1204855000,
        1217550000,
        1230075000,
        1241935000,
        1252735000,
        1262645000,
        1271850000,
    ]
    text = "country,year,pop\n" + "".join(f"CHN,{1990 + k},{p}\n" for k, p in enumerate(population))
    data, info = read(tmp_path, text, id_col="country")
    assert data.feature_names == ["pop"]
    assert info.warnings == (
        "left out of the features: year (a calendar name); name a column in --features to use it",
    )


@pytest.mark.parametrize(
    ("name", "by_pandas"), [("", True), ("Unnamed: 0", True), ("index", False), ("Obs", False)]
)
def test_a_row_index_is_left_out(tmp_path, name, by_pandas):
    # pandas' df.to_csv() writes the row numbers first, under an empty name (read as
    # pandas reads it, 'Unnamed: 0'); statsmodels' longley.csv numbers its rows 'Obs'.
    text = panel(f"{name},a,b", lambda i, t: (t, t % 3, t % 5), sequences=1)
    data, info = read(tmp_path, text)
    assert data.feature_names == ["a", "b"]
    assert info.warnings == (
        f"left out of the features: {name or 'Unnamed: 0'} (a row index); name a column in "
        "--features to use it",
    )
    name = name or "Unnamed: 0"
    # Rows sorted or sampled before to_csv keep their numbers: under pandas' own names,
    # numbers that are all distinct are its index too.
    shuffled = panel(f"{name},a", lambda i, t: ((7 * t) % 12, t % 3), sequences=1)
    assert read(tmp_path, shuffled)[0].feature_names == (["a"] if by_pandas else [name, "a"])
    repeated = panel(f"{name},a", lambda i, t: ((7 * t) % 6, t % 3), sequences=1)
    assert read(tmp_path, repeated)[0].feature_names == [name, "a"]  # not row numbers


@pytest.mark.parametrize("name", ["humid", "PAID", "idle", "valid"])
def test_words_ending_in_id_are_not_id_names(tmp_path, name):
    text = panel(f"{name},x", lambda i, t: (i, t % 3), sequences=2)
    data, info = read(tmp_path, text)
    assert data.feature_names == [name, "x"] and info.warnings == ()


def test_numbers_that_only_look_like_years_stay_features(tmp_path):
    # hPa readings in 1000..2999 that go up and down are not years; nor is a ramp.
    text = panel("id,pressure,n", lambda i, t: (i, (1013, 1012, 1013, 1015, 1011)[t], t), steps=5)
    data, info = read(tmp_path, text, id_col="id")
    assert data.feature_names == ["pressure", "n"] and info.warnings == ()


def test_unordered_rows_name_the_likely_time_column(tmp_path):
    text = "site,date,x\nn,2020-01-02,2\nn,2020-01-01,1\ns,2020-01-01,5\n"
    data, info = read(tmp_path, text, id_col="site")
    assert data.sequence(0)[:, 0].tolist() == [2, 1]  # file order, as asked
    assert info.warnings == (
        "rows of sequence 'n' are not in order of column 'date' and no --time-col was given; "
        "did you mean --time-col date?",
    )
    _, ordered = read(tmp_path, text, id_col="site", time_col="date")
    assert ordered.warnings == ()
    _, doc = inspect_path(InputOptions(path=str(tmp_path / "data.csv"), id_col="site"))
    assert "--id-col site --time-col date" in doc["suggestion"]["command"]


def test_a_text_column_without_id_col_is_named_as_the_likely_id(tmp_path):
    text = "sensor,x\ngreenhouse,1\ngreenhouse,2\ncellar,5\n"
    data, info = read(tmp_path, text)
    assert data.lengths.tolist() == [3] and data.feature_names == ["x"]
    assert info.warnings == (
        "column 'sensor' holds text and no --id-col was given, so every row is read as one"
        " sequence; did you mean --id-col sensor? (--exclude sensor to keep one sequence)",
    )
    assert read(tmp_path, text, id_col="sensor")[1].warnings == ()
    assert read(tmp_path, text, exclude=("sensor",))[1].warnings == ()
    one_site = "site,x\nnorth,1\nnorth,2\n"  # one value: nothing to split, nothing said
    assert read(tmp_path, one_site)[1].warnings == ()


def test_a_text_column_that_differs_on_every_row_is_not_named_as_the_id(tmp_path):
    # statsmodels' danish_data: 'period' is a time as text; as the id it would cut
    # one-step sequences.
    text = "period,lrm\n1974Q1,11.63\n1974Q2,11.60\n1974Q3,11.58\n"
    data, info = read(tmp_path, text)
    assert data.lengths.tolist() == [3] and data.feature_names == ["lrm"]
    assert info.warnings == (
        "left out of the features: period (text); name a column in --features to use it",
    )


@pytest.mark.parametrize("first", ["n/a", "x"])
def test_a_bad_first_reading_is_named_not_its_column_dropped(tmp_path, first):
    # Read as text by pyarrow, the column was left out and suggested as the --id-col.
    text = f"a,b\n1,{first}\n" + "".join(f"{i},{i}.5\n" for i in range(2, 9))
    with pytest.raises(InputDataError) as caught:
        read(tmp_path, text)
    where = tmp_path / "data.csv"
    assert str(caught.value) == f"{where}:2:2: '{first}' is not a number (column 'b')"


def test_statsmodels_series_leave_their_calendar_out(tmp_path):
    sunspots = str(DATASETS / "sunspots" / "sunspots.csv")
    text, doc = inspect_path(InputOptions(path=sunspots))
    assert doc["features"] == ["SUNACTIVITY"] and doc["steps"] == 309
    assert doc["suggestion"]["strategy"] == "domain-acf"
    assert "left out of the features: YEAR (a calendar name)" in text
    macro, info = read_input(InputOptions(path=str(DATASETS / "macrodata" / "macrodata.csv")))
    assert "year" not in macro.feature_names and "quarter" not in macro.feature_names
    assert info.warnings[0].startswith("left out of the features: year (a calendar name), quarter")
    elnino = str(DATASETS / "elnino" / "elnino.csv")
    wide, info = read_input(InputOptions(path=elnino, layout="wide"))
    assert wide.lengths.tolist() == [12] * 61 and 1950 not in np.asarray(wide.values)
    assert info.warnings[0].startswith("left out of the steps: YEAR (a calendar name)")


def test_inspect_suggests_the_hinted_id_and_time_and_plans_with_them(tmp_path, tbptt):
    # statsmodels' grunfeld: 11 firms x 20 years, the firm as text, no --id-col. The
    # suggestion used --time-col year alone, which exits 65 (years repeat across firms).
    grunfeld = str(DATASETS / "grunfeld" / "grunfeld.csv")
    _, doc = inspect_path(InputOptions(path=grunfeld))
    command = doc["suggestion"]["command"]
    assert f"tbptt asis {grunfeld} --id-col firm --time-col year -o grunfeld.h5" == command
    assert (doc["suggestion"]["layout"]["batch_size"], doc["steps"]) == (11, 220)
    assert tbptt(*command.split()[1:], "-n").code == 0
    # Hints the input does not read with are left out: each 'kind' repeats its 'year'.
    text = "kind,year,x\na,2001,1\nb,2000,2\na,2001,3\nb,2000,4\n"
    (tmp_path / "data.csv").write_text(text)
    _, doc = inspect_path(InputOptions(path=str(tmp_path / "data.csv")))
    assert "--id-col" not in doc["suggestion"]["command"]
    assert "--time-col" not in doc["suggestion"]["command"]


@pytest.mark.parametrize(
    ("args", "role"),
    [
        (["split", "--length", 2, "--features", "id,x"], "a feature; drop it from --features"),
        (["split", "--length", 2, "--target", "id"], "the --target; choose another --target"),
        (["domain", "segments", "--boundary-col", "id"], "the --boundary-col"),
        (["asis", "--time-col", "id"], "the --time-col; choose another --time-col"),
    ],
)
def test_the_id_column_in_another_role_is_a_usage_error(tmp_path, tbptt, args, role):
    (tmp_path / "in.csv").write_text("id,x\na,1\na,2\n")
    result = tbptt(*args, tmp_path / "in.csv", "--id-col", "id", "-n")
    assert result.code == 2, result.stderr
    assert result.stderr.startswith(
        f"tbptt: error: column 'id' is the --id-col; it cannot also be {role}"
    )


def test_empty_id_cells_name_line_and_column(tmp_path):
    with pytest.raises(InputDataError) as caught:
        read(tmp_path, "x,id\n1,a\n2,\n", id_col="id")
    assert str(caught.value).replace(str(tmp_path) + os.sep, "") == (
        "data.csv:3:2: empty id in column 'id'; every row needs a sequence id"
    )


def test_a_t_by_1_npy_warns_and_says_axes_tf(tmp_path, tbptt):
    np.save(tmp_path / "x.npy", np.arange(50.0).reshape(50, 1))
    result = tbptt("asis", tmp_path / "x.npy", "-o", tmp_path / "o.h5", "--json")
    message = (
        f"{tmp_path / 'x.npy'}: a [50, 1] array is read as 50 sequences of one step (--axes "
        "NT); pass --axes TF to read it as one sequence of 50 steps"
    )
    assert result.code == 0 and f"tbptt: warning: {message}\n" in result.stderr
    assert message in json.loads(result.stdout)["warnings"]
    manifest = json.loads((tmp_path / "o.manifest.json").read_text())
    assert message in manifest["warnings"]


def test_a_header_of_numbers_warns_and_no_header_reads_it(tmp_path):
    text = "1.5,2,3\n4,5,6\n"
    data, info = read(tmp_path, text)
    assert data.feature_names == ["1.5", "2", "3"] and data.steps == 1
    assert info.warnings[0].endswith(
        "data.csv: the first line (1.5, 2, 3) was read as the header, but its names are "
        "numbers; pass --no-header if it is data"
    )
    whole, info = read(tmp_path, text, no_header=True)
    assert whole.feature_names == ["c0", "c1", "c2"] and whole.values.tolist()[0] == [1.5, 2, 3]
    assert info.warnings == ()


def test_decimal_comma_and_excluded_labels(tmp_path):
    text = "id;label;x;y\na;7;1,5;2\na;8;-0,25;3,125\n"
    data, _ = read(tmp_path, text, id_col="id", delimiter=";", decimal=",", exclude=("label",))
    assert data.feature_names == ["x", "y"] and data.values.tolist() == [[1.5, 2], [-0.25, 3.125]]
    with pytest.raises(InputDataError) as caught:
        read(tmp_path, "x;y\n1,5;2\n1.5;3\n", delimiter=";", decimal=",")
    assert str(caught.value).endswith("data.csv:3:1: '1.5' is not a number (column 'x')")


def test_an_id_column_that_names_every_row_says_time_col(tmp_path):
    """Sunspots with --id-col YEAR: 309 one-step sequences, read as asked, with a warning."""
    sunspots = str(DATASETS / "sunspots" / "sunspots.csv")
    data, info = read_input(InputOptions(path=sunspots, id_col="YEAR"))
    assert data.count == 309 and data.lengths.max() == 1
    assert info.warnings == (
        "column 'YEAR' (--id-col) starts a new sequence on every row, so every sequence is "
        "one step; if it is the time, pass --time-col YEAR instead",
    )
    _, info = read_input(InputOptions(path=sunspots, time_col="YEAR"))
    assert info.warnings == ()
    _, info = read(tmp_path, "id,x\na,1\na,2\nb,3\n", id_col="id")
    assert info.warnings == ()
