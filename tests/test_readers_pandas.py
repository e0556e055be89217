"""Files as other tools write them: pandas' Parquet, Feather and CSV (its index stored
as a column), R's write.csv and Excel's CSV; every column left out of the features is
said, and none is read as something it is not."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from tbptt_cli import parts
from tbptt_cli.errors import InputDataError
from tbptt_cli.inspect import inspect_path
from tbptt_cli.options import InputOptions
from tbptt_cli.readers import read_input

STEPS = 8


def frame() -> pd.DataFrame:
    """Two sensors of eight hourly readings, as a pandas user holds them."""
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {
            "sensor": np.repeat(["north", "south"], STEPS),
            "when": np.tile(pd.date_range("2024-03-30 22:00", periods=STEPS, freq="h"), 2),
            "x": rng.normal(size=2 * STEPS).round(3),
        }
    )


def written(df: pd.DataFrame, path: Path) -> str:
    {".parquet": df.to_parquet, ".feather": df.to_feather, ".csv": df.to_csv}[path.suffix](path)
    return str(path)


@pytest.mark.parametrize("suffix", [".parquet", ".feather"])
@pytest.mark.parametrize(("index", "stored"), [(None, "__index_level_0__"), ("row", "row")])
def test_the_pandas_index_is_never_a_feature(tmp_path, suffix, index, stored):
    # A filtered or sorted frame keeps its row numbers; pandas stores them as a column and
    # names it in its metadata. They were read as a feature.
    df = frame().sort_values("when", kind="stable")  # sensors interleaved
    df.index.name = index
    path = written(df, tmp_path / f"in{suffix}")
    data, info = read_input(InputOptions(path=path, id_col="sensor"))
    assert data.feature_names == ["x"]
    assert info.warnings == (
        f"left out of the features: {stored} (the pandas index); name a column in --features "
        "to use it",
    )
    named, _ = read_input(InputOptions(path=path, id_col="sensor", features=("x", stored)))
    assert named.values[:, 1].tolist() == df.sort_values("sensor", kind="stable").index.tolist()
    # A RangeIndex is stored as metadata only: no column, nothing to say.
    plain = written(frame(), tmp_path / f"plain{suffix}")
    assert read_input(InputOptions(path=plain, id_col="sensor"))[1].warnings == ()


def test_a_sorted_frames_csv_index_is_never_a_feature(tmp_path):
    # A frame sorted newest first: to_csv's unnamed first column holds the old row numbers,
    # out of order.
    path = written(frame().sort_values("when", ascending=False), tmp_path / "in.csv")
    data, info = read_input(InputOptions(path=path, id_col="sensor", time_col="when"))
    assert data.feature_names == ["x"]
    assert info.warnings == (
        "left out of the features: Unnamed: 0 (a row index); name a column in --features to use it",
    )
    assert data.sequence(0)[:, 0].tolist() == frame()["x"][:STEPS].tolist()


def test_text_and_true_false_columns_left_out_are_said(tmp_path):
    df = frame().assign(
        flag=[True, False] * STEPS,
        label=["hi", "lo", "lo", "hi"] * (STEPS // 2),
        site="roof",  # one value in every row: nothing to learn from, nothing to say
        empty=pd.array([pd.NA] * 2 * STEPS, dtype="Float64"),
    )
    path = written(df, tmp_path / "in.parquet")
    data, info = read_input(InputOptions(path=path, id_col="sensor", nan="zero"))
    assert data.feature_names == ["x", "empty"]  # numbers, if none is there
    assert info.warnings[0] == (
        "left out of the features: flag (true/false), label (text); name a column in "
        "--features to use it"
    )
    named, _ = read_input(InputOptions(path=path, id_col="sensor", features=("flag",)))
    assert named.values[:, 0].tolist() == [1, 0] * STEPS


def test_text_dates_are_watched_for_order(tmp_path):
    # Dates kept as text reach Parquet as (large) strings: still a time, never "text".
    df = frame().assign(when=lambda d: d["when"].dt.strftime("%Y-%m-%d %H:%M"))
    path = written(df.iloc[::-1], tmp_path / "in.parquet")
    data, info = read_input(InputOptions(path=path, id_col="sensor"))
    assert data.feature_names == ["x"]
    assert info.warnings == (
        "rows of sequence 'south' are not in order of column 'when' and no --time-col was "
        "given; did you mean --time-col when?",
    )


def test_r_write_csv_reads_like_pandas(tmp_path):
    # R's write.csv quotes the header and text, names the row names "" and writes NA.
    df = frame()
    df.loc[3, "x"] = np.nan
    lines = ['"","sensor","when","x"'] + [
        f'"{i + 1}","{r.sensor}","{r.when:%Y-%m-%d %H:%M:%S}",{"NA" if np.isnan(r.x) else r.x}'
        for i, r in enumerate(df.itertuples())
    ]
    (tmp_path / "r.csv").write_text("\n".join(lines) + "\n")
    options = {"id_col": "sensor", "time_col": "when", "nan": "zero"}
    r_data, r_info = read_input(InputOptions(path=str(tmp_path / "r.csv"), **options))
    pandas_csv = written(df, tmp_path / "pandas.csv")
    pd_data, pd_info = read_input(InputOptions(path=pandas_csv, **options))
    assert r_data.feature_names == pd_data.feature_names == ["x"]
    np.testing.assert_array_equal(r_data.values, pd_data.values)
    assert r_data.values[3, 0] == 0 and r_info.warnings == pd_info.warnings


def test_an_excel_decimal_comma_column_is_named_with_the_flag(tmp_path):
    # Excel in a German locale: BOM, CRLF, ';' and a decimal comma. Without --decimal the
    # readings are text, and only the counts were read, silently.
    rows = ["station;date;count;temp", *(f"n;2023-01-0{d};{d};{d},5" for d in range(1, 4))]
    path = tmp_path / "excel.csv"
    path.write_bytes(("\ufeff" + "\r\n".join(rows) + "\r\n").encode())
    data, info = read_input(InputOptions(path=str(path), delimiter=";"))
    assert data.feature_names == ["count"]
    assert info.warnings == (
        "left out of the features: temp (text; numbers with a decimal comma need --decimal ,)"
        "; name a column in --features to use it",
    )
    fixed, _ = read_input(InputOptions(path=str(path), delimiter=";", decimal=","))
    assert fixed.feature_names == ["count", "temp"]
    assert fixed.values[:, 1].tolist() == [1.5, 2.5, 3.5]


def test_names_with_spaces_and_accents_are_quoted_as_a_shell_needs(tmp_path, tbptt):
    df = frame().rename(columns={"sensor": "Sensor ID", "when": "Zeit (UTC)", "x": "T °C"})
    path = written(df.iloc[::-1], tmp_path / "in.parquet")
    result = tbptt("asis", path, "-o", tmp_path / "o.h5", "--json")
    assert result.code == 0, result.stderr
    assert json.loads(result.stdout)["warnings"] == [
        "column 'Sensor ID' holds text and no --id-col was given, so every row is read as one "
        "sequence; did you mean --id-col 'Sensor ID'? (--exclude 'Sensor ID' to keep one "
        "sequence)",
        "rows of sequence '0' are not in order of column 'Zeit (UTC)' and no --time-col was "
        "given; did you mean --time-col 'Zeit (UTC)'?",
    ]
    with h5py.File(tmp_path / "o.h5") as f:
        assert json.loads(f.attrs["features"]) == ["T °C"]


def test_an_empty_first_part_decides_nothing(tmp_path, tbptt):
    # Spark and Dask write empty parts; the first of a folder decided the layout and its
    # lack of rows was the whole input's ("no data rows", exit 65).
    folder = tmp_path / "parts"
    folder.mkdir()
    df = frame()
    written(df.iloc[:0], folder / "part-0.parquet")
    written(df, folder / "part-1.parquet")
    written(df.iloc[:0], folder / "part-2.parquet")
    data, info = read_input(InputOptions(path=str(folder), id_col="sensor", time_col="when"))
    assert data.lengths.tolist() == [STEPS, STEPS]
    assert data.values[:, 0].tolist() == df["x"].tolist()
    assert [f.path for f in info.files] == [str(folder / f"part-{k}.parquet") for k in range(3)]
    options = InputOptions(path=str(folder), id_col="sensor")
    layout = parts.decide(parts.list_parts(options), options, ())  # as --engine dask does
    assert layout is not None and layout.roles.features == ["x"]
    (folder / "part-1.parquet").unlink()
    result = tbptt("asis", folder, "-n")
    assert (result.code, result.stderr) == (
        65,
        f"tbptt: error: {folder / 'part-0.parquet'}: no data rows\n",
    )


NANOSECONDS = pd.DataFrame(
    {
        "stamp": pd.date_range("2024-01-01", periods=4, freq="1ns"),
        "v": np.arange(4.0),
        "flag": [True, False] * 2,
    }
)


@pytest.mark.parametrize(
    ("data", "suffix", "column", "message"),
    [
        (NANOSECONDS, ".parquet", "stamp", " row 2: time value '2024-01-01T00:00:00.000000001' "
         "in column 'stamp' is finer than a microsecond; round the times to whole microseconds"),
        (NANOSECONDS, ".csv", "stamp", ":2:2: time value '2024-01-01 00:00:00.000000000' in "
         "column 'stamp' has more than 6 decimals of a second; write the times to the "
         "microsecond, the finest step read (pandas: to_csv(date_format='%Y-%m-%d %H:%M:%S.%f'))"),
        (NANOSECONDS.assign(stamp=NANOSECONDS["stamp"].where(NANOSECONDS.v != 2)), ".parquet",
         "stamp", " row 3: no time in column 'stamp'; every row needs a time"),
        (NANOSECONDS, ".parquet", "flag", ": column 'flag' holds values of type bool, not "
         "numbers or dates/times; pass another --time-col"),
    ],
    ids=["nanoseconds", "nanoseconds-csv", "NaT", "true/false"],
)  # fmt: skip
def test_time_column_errors_say_what_is_wrong(tmp_path, data, suffix, column, message):
    # Each was "time value missing ... is not an ISO 8601 date/time", or pyarrow's words.
    path = written(data, tmp_path / f"in{suffix}")
    with pytest.raises(InputDataError) as caught:
        read_input(InputOptions(path=path, time_col=column))
    assert str(caught.value) == f"{path}{message}"


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_wide_text_columns_are_named_with_the_exclude_that_reads_them(tmp_path, suffix):
    # World Bank tables (statsmodels' fertility.csv): names and codes before the years.
    df = pd.DataFrame(
        {
            "Country Name": ["Aruba", "Andorra"],
            "Country Code": ["ABW", "AND"],
            "Indicator": ["fertility", "fertility"],
            "1960": [4.82, np.nan],
            "1961": [4.65, 1.24],
        }
    )
    path = written(df, tmp_path / f"in{suffix}")
    with pytest.raises(InputDataError) as caught:
        read_input(InputOptions(path=path, layout="wide", id_col="Country Code"))
    assert str(caught.value) == (
        f"{path}: 'Country Name', 'Indicator' hold text, not the numbers of a step (a wide "
        "row's steps are every column but --id-col and --exclude); pass --exclude "
        "'Country Name,Indicator'"
    )
    exclude = ("Country Name", "Indicator")
    data, _ = read_input(
        InputOptions(path=path, layout="wide", id_col="Country Code", exclude=exclude, nan="zero")
    )
    assert data.ids == ["ABW", "AND"] and data.values[:, 0].tolist() == [4.82, 4.65, 0, 1.24]


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".feather"])
def test_the_pandas_index_of_a_wide_frame_is_no_step(tmp_path, suffix):
    # to_csv writes it first, to_parquet last (__index_level_0__): it was the first or
    # the last step of every row.
    df = pd.DataFrame(np.arange(12.0).reshape(3, 4) + 0.5, columns=["s1", "s2", "s3", "s4"])
    path = written(df.set_axis([5, 2, 9]), tmp_path / f"in{suffix}")
    data, info = read_input(InputOptions(path=path, layout="wide"))
    assert data.values[:, 0].tolist() == df.to_numpy().ravel().tolist()
    reason = (
        "Unnamed: 0 (a row index)" if suffix == ".csv" else "__index_level_0__ (the pandas index)"
    )
    assert info.warnings == (
        f"left out of the steps: {reason}; pass it as --id-col, or rename it, to change that",
    )


@pytest.mark.parametrize("suffix", [".parquet", ".feather"])
def test_a_categorical_id_numbers_its_sequences_in_order_of_appearance(tmp_path, suffix):
    # pandas stores a category as a dictionary listing the categories in their own order;
    # the sequences followed that order, not the rows' (a CSV of the same rows did).
    df = frame().iloc[::-1]  # south first
    plain, _ = read_input(InputOptions(path=written(df, tmp_path / "in.csv"), id_col="sensor"))
    categorical = df.assign(sensor=pd.Categorical(df["sensor"], ["east", "north", "south"]))
    path = written(categorical, tmp_path / f"in{suffix}")
    data, _ = read_input(InputOptions(path=path, id_col="sensor"))
    assert data.ids == plain.ids == ["south", "north"]
    np.testing.assert_array_equal(data.values, plain.values)


def test_r_logicals_are_said_and_read_as_0_and_1_when_named(tmp_path):
    path = tmp_path / "r.csv"
    path.write_text('"id","t","rain","x"\n"a",1,TRUE,0.5\n"a",2,FALSE,0.25\n"a",3,NA,1\n')
    data, info = read_input(InputOptions(path=str(path), id_col="id", time_col="t"))
    assert data.feature_names == ["x"]
    assert info.warnings == (
        "left out of the features: rain (true/false); name a column in --features to use it",
    )
    named = InputOptions(path=str(path), id_col="id", features=("rain",), nan="zero")
    assert read_input(named)[0].values[:, 0].tolist() == [
        1,
        0,
        0,
    ]  # pyarrow: 'TRUE' is not a number
    with pytest.raises(InputDataError) as caught:
        read_input(InputOptions(path=str(path), id_col="id", exclude=("x",)))
    assert str(caught.value) == (
        f"{path}: no numeric feature column found (left out: t (a calendar name), rain "
        "(true/false)); name the feature columns with --features"
    )


def test_a_partition_key_that_changes_between_parts_is_named_as_the_likely_id(tmp_path):
    # to_parquet(partition_cols=["sensor"]): one sensor per folder, so the first part's
    # rows all held one value and inspect suggested the sensors glued into one series.
    frame().to_parquet(tmp_path / "hive", partition_cols=["sensor"])
    data, info = read_input(InputOptions(path=str(tmp_path / "hive")))
    assert data.lengths.tolist() == [2 * STEPS]
    assert info.warnings[0].startswith(
        "column 'sensor' holds text and no --id-col was given, so every row is read as one "
        "sequence; did you mean --id-col sensor?"
    )
    _, doc = inspect_path(InputOptions(path=str(tmp_path / "hive")))
    assert "--id-col sensor --time-col when" in doc["suggestion"]["command"]
