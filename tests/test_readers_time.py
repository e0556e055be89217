"""Time columns: ISO 8601 text, timestamps and dates, numbers; --freq with --gaps; ffill
never from the future."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tbptt_cli.errors import InputDataError, UsageError
from tbptt_cli.options import InputOptions
from tbptt_cli.readers import read_input
from tbptt_cli.sequences import SequenceSet, SourceInfo


def read(tmp_path: Path, text: str, **opts: Any) -> tuple[SequenceSet, SourceInfo]:
    path = tmp_path / "data.csv"
    path.write_text(text)
    return read_input(InputOptions(path=str(path), **opts))


def fails(tmp_path: Path, text: str, **opts: Any) -> str:
    with pytest.raises(InputDataError) as caught:
        read(tmp_path, text, **opts)
    return str(caught.value).replace(str(tmp_path) + os.sep, "")


def test_iso_times_with_offsets_are_ordered_in_utc(tmp_path):
    text = (
        "when,x\n"
        "2024-03-01T10:00:00+02:00,1\n"  # 08:00 UTC
        "2024-03-01T07:30:00Z,2\n"  # 07:30 UTC: first
        "2024-03-01T09:00:00+00:00,3\n"
    )
    data, _ = read(tmp_path, text, time_col="when")
    assert data.values[:, 0].tolist() == [2, 1, 3]
    start = np.datetime64("2024-03-01T07:30", "s").astype(np.int64)
    assert data.extra["when"].tolist() == [start, start + 1800, start + 5400]  # seconds, UTC


def test_dates_and_naive_times_and_numbers(tmp_path):
    dates, _ = read(tmp_path, "d,x\n2020-01-03,3\n2020-01-01,1\n2020-01-02,2\n", time_col="d")
    assert dates.values[:, 0].tolist() == [1, 2, 3]
    assert np.diff(dates.extra["d"]).tolist() == [86400, 86400]
    mixed, _ = read(tmp_path, "d,x\n2020-01-01 06:00,2\n2020-01-01,1\n", time_col="d")
    assert mixed.values[:, 0].tolist() == [1, 2]  # a date is its midnight
    numbers, _ = read(tmp_path, "t,x\n2.5,2\n-1,1\n", time_col="t")
    assert numbers.values[:, 0].tolist() == [1, 2] and numbers.extra["t"].tolist() == [-1, 2.5]


def test_time_errors_name_the_cell(tmp_path):
    assert fails(tmp_path, "d,x\n2020-01-01,1\nsoon,2\n", time_col="d") == (
        "data.csv:3:1: time value 'soon' in column 'd' is not an ISO 8601 date/time; every row "
        "needs a time"
    )
    assert fails(tmp_path, "d,x\n2020-01-01T00:00Z,1\n2020-01-02T00:00,2\n", time_col="d") == (
        "data.csv:3:1: time value '2020-01-02T00:00' in column 'd' has no UTC offset, unlike "
        "the times before it; write every time the same way (all with an offset, or none)"
    )
    # statsmodels' danish_data: quarters as text are neither kind, not "not a number".
    assert fails(tmp_path, "period,x\n1974Q1,1\n1974Q2,2\n", time_col="period") == (
        "data.csv:2:1: time value '1974Q1' in column 'period' is not a number or an ISO 8601 "
        "date/time (2024-03-31, 2024-03-31 14:00); every row needs a time"
    )


DUPLICATED = "t,a\n1,1\n0,2\n1,3\n0,4\n"


@pytest.mark.parametrize(
    ("mode", "values"), [("first", [2, 1]), ("last", [4, 3]), ("mean", [3, 2])]
)
def test_duplicate_times_merged(tmp_path: Path, mode: str, values: list[float]) -> None:
    data, info = read(tmp_path, DUPLICATED, time_col="t", duplicates=mode)
    assert data.ids == ["0"]
    assert data.values[:, 0].tolist() == values
    assert data.extra["t"].tolist() == [0, 1]
    assert info.warnings == (
        f"--duplicates {mode}: 2 row(s) at the same t as the row before them in their "
        "sequence were merged",
    )


def test_duplicate_times_refused_naming_both_rows(tmp_path: Path) -> None:
    assert fails(tmp_path, DUPLICATED, time_col="t") == (
        "data.csv:3 and data.csv:5: two rows of sequence '0' have t 0; keep one, or pass "
        "--duplicates first|last|mean"
    )


def test_parquet_timestamps_and_dates(tmp_path):
    stamps = pa.array([3, 1, 2], pa.timestamp("ms", tz="Europe/Paris"))
    days = pa.array([18264, 18262, 18263], pa.date32())
    pq.write_table(pa.table({"ts": stamps, "day": days, "x": [3.0, 1.0, 2.0]}), tmp_path / "t.pq")
    seconds = {"ts": [0.001, 0.002, 0.003], "day": [d * 86400 for d in (18262, 18263, 18264)]}
    for column, want in seconds.items():
        data, _ = read_input(InputOptions(path=str(tmp_path / "t.pq"), time_col=column))
        assert data.values[:, 0].tolist() == [1, 2, 3] and data.feature_names == ["x"]
        assert data.extra[column].tolist() == want
    default, info = read_input(InputOptions(path=str(tmp_path / "t.pq")))
    assert default.feature_names == ["x"]  # timestamps and dates are never features


def test_parquet_text_times_are_parsed(tmp_path):
    table = pa.table({"t": ["2021-05-02", "2021-05-01", "bad"], "x": [2.0, 1.0, 0.0]})
    pq.write_table(table.slice(0, 2), tmp_path / "ok.parquet")
    data, _ = read_input(InputOptions(path=str(tmp_path / "ok.parquet"), time_col="t"))
    assert data.values[:, 0].tolist() == [1, 2]
    pq.write_table(table, tmp_path / "bad.parquet")
    with pytest.raises(InputDataError, match=r"bad\.parquet row 3: time value 'bad' in column"):
        read_input(InputOptions(path=str(tmp_path / "bad.parquet"), time_col="t"))


HOURLY = "id,t,x\n" + "".join(
    f"{i},2024-01-01T{h:02d}:00,{h}\n"
    for i, hours in (("a", (0, 1, 2, 5, 6)), ("b", (0, 1)))
    for h in hours
)


def test_gaps_are_refused_naming_both_rows(tmp_path):
    assert fails(tmp_path, HOURLY, id_col="id", time_col="t", freq="1h") == (
        "data.csv:4 and data.csv:5: sequence 'a' skips 2 step(s) of --freq 1h between t "
        "2024-01-01T02:00:00 and 2024-01-01T05:00:00; pass --gaps split or --gaps fill (or "
        "check --freq)"
    )
    assert fails(tmp_path, HOURLY, id_col="id", time_col="t", freq="2h") == (
        "data.csv:2 and data.csv:3: sequence 'a' goes from t 2024-01-01 to 2024-01-01T01:00:00, "
        "not a whole number of --freq 2h steps; check --freq"
    )


def test_gaps_split_starts_new_sequences(tmp_path):
    data, info = read(tmp_path, HOURLY, id_col="id", time_col="t", freq="1h", gaps="split")
    assert data.ids == ["a#1", "a#2", "b"] and data.lengths.tolist() == [3, 2, 2]
    assert data.sequence(1)[:, 0].tolist() == [5, 6]
    assert info.warnings == (
        "--gaps split: 1 gap(s) at --freq 1h started new sequences (ids name#1, name#2, ...)",
    )


def test_gaps_fill_inserts_steps_for_nan(tmp_path):
    data, info = read(
        tmp_path, HOURLY, id_col="id", time_col="t", freq="60min", gaps="fill", nan="ffill"
    )
    assert data.lengths.tolist() == [7, 2]
    assert data.sequence(0)[:, 0].tolist() == [0, 1, 2, 2, 2, 5, 6]  # filled from the past
    assert np.diff(data.extra["t"][:7]).tolist() == [3600] * 6
    assert "--gaps fill: 1 gap(s) at --freq 60min: 2 missing step(s) inserted" in info.warnings[0]
    numeric, _ = read(tmp_path, "t,x\n0,1\n3,4\n", time_col="t", freq="1", gaps="fill", nan="zero")
    assert numeric.values[:, 0].tolist() == [1, 0, 0, 4]


@pytest.mark.parametrize(
    ("opts", "message"),
    [
        ({"freq": "1h"}, "--freq needs --time-col; pass --time-col or drop --freq"),
        ({"time_col": "t", "gaps": "split"}, "--gaps needs --freq; pass --freq or drop --gaps"),
        ({"duplicates": "first"}, "--duplicates needs --time-col"),
        ({"time_col": "t", "freq": "1h"}, "--freq 1h is a duration, but the time column holds"),
        ({"time_col": "t", "freq": "1 fortnight"}, "--freq '1 fortnight' is not a step"),
        ({"time_col": "t", "freq": "1", "gaps": "fill"}, "--gaps fill inserts the missing steps"),
    ],
)
def test_time_option_errors(tmp_path, opts, message):
    with pytest.raises(UsageError, match=f"^{message.replace('(', '.').replace(')', '.')}"):
        read(tmp_path, "t,x\n0,1\n1,2\n", **opts)


def test_ffill_never_fills_a_leading_gap_from_the_future(tmp_path):
    text = "id,x,y\na,,1\na,,2\na,3,\na,4,5\nb,1,1\n"
    assert fails(tmp_path, text, id_col="id", nan="ffill") == (
        "data.csv: sequence 'a' starts with 2 step(s) without a value in column 'x', and "
        "--nan ffill fills only from earlier steps (a later value would leak the future); "
        "drop those steps, or pass --nan zero or --nan drop"
    )
    data, _ = read(tmp_path, "id,x,y\na,3,1\na,,2\na,4,\nb,1,1\n", id_col="id", nan="ffill")
    assert data.values.tolist() == [[3, 1], [3, 2], [4, 2], [1, 1]]  # from the step before


def test_numeric_times_are_named_with_every_digit(tmp_path):
    """Weekly dates written as numbers (statsmodels' CO2): named as written, not 1.95803e+07,
    and the error says how to check them at a duration."""
    text = "date,co2\n19580329,316.1\n19580405,317.3\n19580412,317.6\n"
    assert fails(tmp_path, text, time_col="date", freq="7") == (
        "data.csv:2 and data.csv:3: sequence '0' goes from date 19580329 to 19580405, not a "
        "whole number of --freq 7 steps; check --freq (yyyymmdd numbers are not evenly "
        "spaced: write the dates as ISO 8601 text, 2024-03-31, and give --freq a duration "
        "such as 7D)"
    )
    repeated = "year,quarter,gdp\n1959,1,2710.349\n1959,2,2778.801\n"
    assert fails(tmp_path, repeated, time_col="year") == (
        "data.csv:2 and data.csv:3: two rows of sequence '0' have year 1959; keep one, or pass "
        "--duplicates first|last|mean"
    )
    assert fails(tmp_path, "t,x\n0.25,1\n0.5,2\n0.5,3\n", time_col="t") == (
        "data.csv:3 and data.csv:4: two rows of sequence '0' have t 0.5; keep one, or pass "
        "--duplicates first|last|mean"
    )
