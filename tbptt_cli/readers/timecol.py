"""The ``--time-col``: its values as numbers, ``--freq`` and what breaks a regular step.

A time column holds numbers (any numeric type, kept as float64) or points in time:
Arrow/Parquet timestamps and dates, or ISO 8601 text, with or without a UTC offset (an
offset is converted to UTC; values without one are taken as they are). Points in time are
int64 microseconds since 1970-01-01 here, exact, and seconds (float64) in
``SequenceSet.extra``, which is what ``--max-gap`` measures.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from tbptt_cli.errors import InputDataError, UsageError
from tbptt_cli.readers.buffers import float64, microseconds, numbers, text_type, valid

NUMBER = "number"
NAIVE = "timestamp"  # without an offset
UTC = "timestamp (UTC)"
MICROSECONDS = {
    "us": 1,
    "ms": 1_000,
    "s": 1_000_000,
    "min": 60_000_000,
    "h": 3_600_000_000,
    "D": 86_400_000_000,
    "W": 7 * 86_400_000_000,
}
FREQ = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*$")


class NotTime(Exception):
    """An array that holds no time values; ``row`` is the first offending row (or -1: the
    array's type), ``value`` its text (None: missing) and ``fault`` what is wrong with it
    and how to fix it, when that is not "not a time"."""

    def __init__(
        self, what: str, row: int = -1, value: str | None = None, fault: str | None = None
    ) -> None:
        super().__init__(what)
        self.row, self.value, self.fault = row, value, fault


@dataclass(frozen=True)
class Times:
    """One batch of a time column: ``values`` int64 microseconds or float64 numbers."""

    kind: str
    values: np.ndarray


def kind_of(arrow_type: Any) -> str | None:
    """The time kind an Arrow type holds, or None (text: decided by parsing)."""
    import pyarrow as pa

    if pa.types.is_timestamp(arrow_type):
        return UTC if arrow_type.tz else NAIVE
    if pa.types.is_date(arrow_type):
        return NAIVE
    if pa.types.is_integer(arrow_type) or pa.types.is_floating(arrow_type):
        return NUMBER
    if pa.types.is_decimal(arrow_type):
        return NUMBER
    return None


def times(array: Any) -> Times:
    """Numbers or microseconds of an Arrow array; raises `NotTime` for nulls and text that
    is neither a number nor ISO 8601."""
    import pyarrow as pa

    if array.null_count:
        raise NotTime("missing time", int(np.argmax(~valid(array))))
    if pa.types.is_dictionary(array.type):
        array = array.cast(array.type.value_type)
    kind = kind_of(array.type)
    if kind is None and text_type(array.type):
        return _parse_text(array)
    if kind is None:
        raise NotTime(f"values of type {array.type}")
    if kind == NUMBER:
        values = float64(array)
        if values is None:  # decimal: pyarrow.compute, imported only then
            values = numbers(array.cast(pa.float64(), safe=False))
        return Times(NUMBER, values)
    micros = microseconds(array)
    if micros is None:  # nanoseconds that are not whole microseconds
        raw = numbers(array, np.int64, 0)
        row = int(np.argmax(raw % 1000 != 0))
        value = str(np.datetime64(int(raw[row]), "ns"))
        fault = "is finer than a microsecond; round the times to whole microseconds"
        raise NotTime("times finer than a microsecond", row, value, fault)
    return Times(kind, micros)


def _parse_text(array: Any) -> Times:
    import pyarrow as pa
    import pyarrow.compute as pc

    for kind, target in ((NUMBER, pa.float64()), (NAIVE, pa.timestamp("us"))):
        try:
            values = pc.cast(array, target)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            continue
        if kind == NUMBER:
            return Times(kind, numbers(values))
        return Times(kind, numbers(values.cast(pa.int64()), np.int64))
    try:
        micros = pc.cast(array, pa.timestamp("us", "UTC")).cast(pa.int64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        row = _bad_row(array)
        raise NotTime("text that is not a number or an ISO 8601 date/time", row,
                      str(array[row]) if row >= 0 else None) from None  # fmt: skip
    return Times(UTC, numbers(micros, np.int64))


def _bad_row(array: Any) -> int:
    """The first value that is neither a number nor ISO 8601 (only on the error path)."""
    from datetime import datetime

    kinds: set[bool] = set()
    for row, text in enumerate(array.to_pylist()):
        try:
            float(text)
            continue
        except ValueError:
            pass
        try:
            kinds.add(datetime.fromisoformat(text).tzinfo is not None)
        except ValueError:
            return row
        if len(kinds) > 1:  # with and without an offset: which is meant is unknown
            return row
    return -1


def seconds(values: np.ndarray, kind: str) -> np.ndarray:
    """float64 for ``SequenceSet.extra``: numbers as they are (no copy of a spilled
    column), points in time in seconds."""
    if kind == NUMBER:
        return values
    return np.asarray(values, dtype=np.float64) / 1e6


def shown(value: float | int, kind: str) -> str:
    """A time value as people write it: a number, or ISO 8601."""
    if kind == NUMBER:
        number = float(value)
        # Every digit: a yyyymmdd date or a large count shown as 1.95803e+07 names no row.
        return f"{number:.0f}" if number.is_integer() and abs(number) < 1e16 else repr(number)
    stamp = np.datetime64(int(value), "us")
    text = str(stamp)
    text = text.removesuffix(".000000").removesuffix("T00:00:00")
    return text + ("Z" if kind == UTC and "T" in text else "")


def parse_freq(text: str, kind: str) -> float | int:
    """``--freq``: a NUMBER for a numeric time column, a duration (1h, 15min, 1D, 7D, 1W,
    30s, 500ms) for points in time; microseconds for those."""
    match = FREQ.match(text)
    unit = match.group(2) if match else ""
    if match is None or (unit and unit not in MICROSECONDS):
        raise UsageError(
            f"--freq {text!r} is not a step; write a NUMBER, or a duration such as 1h, "
            "15min, 1D, 7D (units us, ms, s, min, h, D, W)"
        )
    number = float(match.group(1))
    if kind == NUMBER and unit:
        raise UsageError(
            f"--freq {text} is a duration, but the time column holds numbers; give the step "
            f"as a NUMBER (dates written as numbers, 20240331, need ISO 8601 text, "
            f"2024-03-31, for a duration)"
        )
    if kind != NUMBER and not unit:
        raise UsageError(
            f"--freq {text} is a number, but the time column holds dates/times; give a "
            "duration such as 1h or 1D"
        )
    step = number * MICROSECONDS[unit] if unit else number
    if step <= 0 or (unit and step != int(step)):
        raise UsageError(f"--freq {text} must be a positive step of at least 1us")
    return int(step) if unit else step


def check_kind(kind: str, first: str, where: str, column: str) -> None:
    """Every part and batch of a time column holds the same kind of time."""
    if kind != first:
        raise InputDataError(
            f"{where}: column '{column}' holds {kind} values here but {first} values before; "
            "write every time the same way (all with a UTC offset, or none)"
        )
