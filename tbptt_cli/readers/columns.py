"""Which column plays which role: id, time, features, target, kept columns.

Default features are the numeric columns that are not the id, the time column, the
target, a kept or ``--exclude``d column, nor a column that looks like a calendar. That is
decided on the first rows of the input (the sample a reader parses first); the report
says which columns were left out and why.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from shlex import quote
from typing import Any

import numpy as np

from tbptt_cli.errors import InputDataError, UsageError
from tbptt_cli.options import InputOptions, target_column
from tbptt_cli.readers.buffers import float64, local_codes, numbers, text_type
from tbptt_cli.readers.timecol import NUMBER, NotTime, kind_of, times

CALENDAR_NAMES = {
    "year", "yr", "quarter", "qtr", "month", "week", "day", "weekday", "dayofweek",
    "dayofyear", "doy", "hour", "minute", "second", "date", "time", "t", "timestamp",
    "datetime", "period", "step", "ts", "epoch", "unixtime",
}  # fmt: skip
SEPARATORS = str.maketrans("", "", " _-.\t")
CYCLIC_NAMES = {
    "quarter", "qtr", "month", "week", "day", "weekday", "dayofweek", "dayofyear", "doy",
    "hour", "minute", "second",
}  # fmt: skip
VALUE_CHECKED = 32  # leading numeric columns whose values may make them calendar columns
# Unix times from 2000 to 2100, in seconds or milliseconds, when they also step as a
# clock does (_clock_steps): a population in the billions climbs there too.
UNIX_SPANS = ((946_684_800, 4_102_444_800), (946_684_800_000, 4_102_444_800_000))
# The names pandas gives an index it writes without one: to_csv's empty header (read
# back and written again: "Unnamed: 0"), to_parquet's and to_feather's __index_level_0__.
PANDAS_UNNAMED = re.compile(r"(Unnamed: \d+|__index_level_\d+__)?")
ROW_NUMBER_NAMES = {"index", "idx", "obs"}
DECIMAL_COMMA = re.compile(r"[+-]?\d*,\d+")


@dataclass(frozen=True)
class Roles:
    """Column names by role, as the input names them."""

    id: str | None
    time: str | None
    features: list[str]
    target: str | None = None
    keep: list[str] = field(default_factory=list)
    watch: str | None = None  # without --time-col: the likely time column, checked for order
    id_hint: str | None = None  # without --id-col: the text column that likely names sequences
    layout: str = "long"

    @property
    def floats(self) -> list[str]:
        """The columns read as float64, side by side: features, target, kept columns."""
        return [*self.features, *([self.target] if self.target else []), *self.keep]

    @property
    def read(self) -> list[str]:
        """Every column a reader must deliver."""
        named = [self.id, self.time, self.watch, *self.floats]
        return list(dict.fromkeys(n for n in named if n is not None))


def no_such_column(path: str, flag: str, name: str, available: Sequence[str]) -> InputDataError:
    """``flag`` (empty for columns the caller asked to keep) names a column not in the input."""
    close = difflib.get_close_matches(name, list(available), n=1)
    given = f" (given to {flag})" if flag else ""
    hint = f"did you mean '{close[0]}'? " if close else ""
    listed = ", ".join(available)
    return InputDataError(f"{path}: no column '{name}'{given}; {hint}the columns are {listed}")


def require(path: str, names: Sequence[str], flag: str, name: str | None) -> None:
    if name is not None and name not in names:
        raise no_such_column(path, flag, name, names)


def resolve_roles(
    path: str,
    names: list[str],
    sample: Any,
    numeric: Callable[[str], bool],
    opts: InputOptions,
    keep: Sequence[str],
    warnings: list[str],
    varying: Sequence[str] = (),
) -> Roles:
    """The roles from the options, the header and the first rows (an Arrow table);
    ``numeric`` tells the columns that hold numbers, ``varying`` the hive partition keys
    whose value changes between the parts."""
    target = target_column(opts.target)
    for flag, name in (("--id-col", opts.id_col), ("--time-col", opts.time_col)):
        require(path, names, flag, name)
    require(path, names, "--target", target)
    for name in keep:
        require(path, names, "", name)
    for name in opts.exclude or ():
        require(path, names, "--exclude", name)
    _refuse_id_reuse(opts, target, keep)
    if opts.layout == "wide":
        return _wide_roles(path, names, sample, opts, keep, target, warnings)
    skip = {opts.id_col, opts.time_col, target, *keep, *(opts.exclude or ())}
    id_hint = None if opts.id_col else _likely_id(names, sample, skip, numeric, varying)
    # Without --id-col, the likely id's sequences: a time column is in order within each.
    codes = _sample_codes(sample, opts.id_col or id_hint)
    found = _time_like_columns(names, sample, codes, numeric)
    if opts.features is not None:
        features = _named_features(path, names, opts, target)
    else:
        candidates = [n for n in names if n not in skip and numeric(n)]
        index = pandas_index(sample)
        why = {n: found.get(n) or _label(n, sample.column(n), codes, index) for n in candidates}
        others = [n for n in names if n not in skip and n != id_hint and not numeric(n)]
        why |= {n: _not_numbers(n, sample) for n in others}
        left_out = {n: reason for n in names if (reason := why.get(n))}
        features = [n for n in candidates if n not in left_out]
        listed = ", ".join(f"{n or repr(n)} ({reason})" for n, reason in left_out.items())
        if not features:
            said = f" (left out: {listed})" if listed else ""
            raise InputDataError(
                f"{path}: no numeric feature column found{said}; name the feature columns "
                "with --features"
            )
        if left_out:
            warnings.append(
                f"left out of the features: {listed}; name a column in --features to use it"
            )
    if id_hint is not None:
        held = "ids" if numeric(id_hint) else "text"
        warnings.append(
            f"column '{id_hint}' holds {held} and no --id-col was given, so every row is read"
            f" as one sequence; did you mean --id-col {quote(id_hint)}? (--exclude"
            f" {quote(id_hint)} to keep one sequence)"
        )
    watch = None
    if opts.time_col is None:
        timed = [n for n in names if n != opts.id_col and _timed(sample.column(n))]
        linear = [n for n in found if n != opts.id_col and not cyclic_name(n)]
        watch = next(iter(timed + linear), None)
    return Roles(opts.id_col, opts.time_col, features, target, list(keep), watch, id_hint)


def _likely_id(
    names: list[str],
    sample: Any,
    skip: set[str | None],
    numeric: Callable[[str], bool],
    varying: Sequence[str] = (),
) -> str | None:
    """Without --id-col, the column that most likely names the sequences, whose rows would
    all be read as one: text that changes value (``sensor``: greenhouse, cellar), a hive
    partition key whose value changes between the parts (``varying``: one per part, as
    pandas' ``partition_cols`` writes them), or whole numbers under an id name
    (``station_id``). One whose every row differs (``1974Q1``, ``Jan-1-1995``: a time or
    a label) would cut one-step sequences, so it is not named."""
    for name in names:
        column = sample.column(name)
        if name in skip or _temporal(column):
            continue
        if name in varying:
            return name
        if numeric(name) and not _whole_id(name, column):
            continue
        if 1 < len(local_codes(column.combine_chunks())[1]) < len(column):
            return name
    return None


def id_name(name: str) -> bool:
    """``id``, ``station_id``, ``Sensor ID``, ``userId``: not ``humid`` or ``PAID``."""
    lower = name.lower()
    camel = name.endswith(("Id", "ID")) and len(name) > 2 and name[-3].islower()
    return (
        lower.translate(SEPARATORS) == "id" or lower.endswith(("_id", " id", "-id", ".id")) or camel
    )


def _whole_id(name: str, column: Any) -> bool:
    """A numeric column under an id name holding whole numbers: sequence ids, not readings."""
    return _label(name, column, np.zeros(len(column), dtype=np.int32)) == "an id name"


def _label(
    name: str, column: Any, codes: np.ndarray, index: set[str] | frozenset[str] = frozenset()
) -> str | None:
    """Why a numeric column labels rows rather than measuring anything (None: it does not):
    the columns pandas stored its index in, whole numbers under an id name, or row numbers
    (whole, none missing) under a row-number name: in order (``index``, ``Obs``), or all
    distinct under a name pandas gives an unnamed index (rows sorted or sampled before
    ``to_csv`` keep their old numbers)."""
    if name in index:
        return "the pandas index"
    values = _as_floats(column)
    if values is None:
        return None
    live = np.isfinite(values)
    values, codes = values[live], codes[live]
    if not values.size or np.any(values != np.round(values)):
        return None
    if id_name(name):
        return "an id name"
    if not live.all():  # row numbers are never missing: a column with gaps holds readings
        return None
    unnamed = PANDAS_UNNAMED.fullmatch(name.strip()) is not None
    distinct = unnamed and len(np.unique(values)) == len(values)
    row_number = unnamed or name.strip().lower() in ROW_NUMBER_NAMES
    return "a row index" if row_number and (distinct or _ordered(values, codes)) else None


def pandas_index(sample: Any) -> set[str]:
    """The columns pandas stored its index in (``to_parquet``, ``to_feather``), as its
    metadata in the file's schema names them (a RangeIndex is stored as metadata only)."""
    try:
        stored = json.loads((sample.schema.metadata or {})[b"pandas"])["index_columns"]
    except (KeyError, TypeError, ValueError):
        return set()
    return {name for name in stored if isinstance(name, str)}


def _not_numbers(name: str, sample: Any) -> str | None:
    """Why a column that holds no numbers is left out, for the report; None for dates
    and times, which are never features and need no word."""
    import pyarrow as pa

    column = sample.column(name)
    if pa.types.is_boolean(column.type):
        return "true/false"
    if column.null_count == len(column):
        return "empty"
    if _timed(column):
        return None
    if not text_type(column.type):
        return str(column.type)
    texts = [t for t in column.unique().to_pylist()[:100] if t is not None]
    if len(texts) == 1:  # one label for every row: nothing a feature could learn from
        return None
    if any(DECIMAL_COMMA.fullmatch(t.strip()) for t in texts):
        return "text; numbers with a decimal comma need --decimal ,"
    return "text"


def _refuse_id_reuse(opts: InputOptions, target: str | None, keep: Sequence[str]) -> None:
    """The id names sequences; as a feature, target or boundary it would be read as numbers."""
    id_col = opts.id_col
    if id_col is None:
        return
    roles = [
        ("a feature", id_col in (opts.features or ()), "drop it from --features"),
        ("the --target", id_col == target, "choose another --target"),
        ("the --boundary-col", id_col in keep, "choose another --boundary-col"),
        ("the --time-col", id_col == opts.time_col, "choose another --time-col"),
    ]
    for role, clash, fix in roles:
        if clash:
            raise UsageError(f"column '{id_col}' is the --id-col; it cannot also be {role}; {fix}")


def _named_features(
    path: str, names: list[str], opts: InputOptions, target: str | None
) -> list[str]:
    features = list(opts.features or ())
    if not features:
        raise UsageError("--features is empty; name at least one column")
    for name in features:
        require(path, names, "--features", name)
    if target in features:
        raise UsageError(
            f"column '{target}' is both a feature and the --target; drop it from --features"
        )
    excluded = [n for n in features if n in (opts.exclude or ())]
    if excluded:
        raise UsageError(
            f"column '{excluded[0]}' is in both --features and --exclude; drop it from one"
        )
    return features


def _wide_roles(
    path: str,
    names: list[str],
    sample: Any,
    opts: InputOptions,
    keep: Sequence[str],
    target: str | None,
    warnings: list[str],
) -> Roles:
    """Wide rows: every column but the id and the excluded ones is one step, in order."""
    if target is not None:
        raise UsageError("--target NAME needs --layout long; wide rows hold one feature")
    for flag, given in (
        ("--time-col", opts.time_col),
        ("--features", opts.features),
        ("a boundary column", list(keep)),
        ("--freq", opts.freq),
    ):
        if given:
            raise UsageError(f"{flag} needs --layout long; a wide row is one univariate sequence")
    steps = [n for n in names if n != opts.id_col and n not in (opts.exclude or ())]
    rows = np.zeros(sample.num_rows, dtype=np.int32)  # the rows as one ordered sequence
    leading = set(sample.column_names)
    index = pandas_index(sample)
    left_out = {n: r for n in steps if (r := _wide_label(n, sample, leading, rows, index))}
    if left_out:
        listed = ", ".join(f"{n or repr(n)} ({reason})" for n, reason in left_out.items())
        warnings.append(
            f"left out of the steps: {listed}; pass it as --id-col, or rename it, to change that"
        )
    steps = [n for n in steps if n not in left_out]
    if not steps:
        raise InputDataError(f"{path}: no step column left in this wide file")
    _refuse_text_steps(path, [n for n in steps if n in leading], sample, opts.id_col)
    return Roles(opts.id_col, None, steps, layout="wide")


def _refuse_text_steps(path: str, leading: list[str], sample: Any, id_col: str | None) -> None:
    """Leading columns of text (a country's name and code before its years) are no steps:
    one error names them all, with the --exclude that reads the file."""
    text = [n for n in leading if text_type(sample.column(n).type)]
    if not text:
        return
    also = "" if id_col else ", and name the one that names the rows with --id-col"
    raise InputDataError(
        f"{path}: {', '.join(repr(n) for n in text)} hold{'s' if len(text) == 1 else ''} "
        "text, not the numbers of a step (a wide row's steps are every column but --id-col "
        f"and --exclude); pass --exclude {quote(','.join(text))}{also}"
    )


def numeric_type(arrow_type: Any) -> bool:
    import pyarrow as pa

    return bool(
        pa.types.is_integer(arrow_type)
        or pa.types.is_floating(arrow_type)
        or pa.types.is_decimal(arrow_type)
    )


def _temporal(column: Any) -> bool:
    kind = kind_of(column.type)
    return kind is not None and not numeric_type(column.type)


def _timed(column: Any) -> bool:
    """Dates or times: of a temporal type, or text that reads as ISO 8601 (as pandas
    writes dates kept as text to Parquet)."""
    if _temporal(column):
        return True
    if not text_type(column.type) or column.null_count:
        return False
    try:
        return times(column.combine_chunks()).kind != NUMBER
    except NotTime:
        return False


def _sample_codes(sample: Any, id_col: str | None) -> np.ndarray:
    if id_col is None:
        return np.zeros(sample.num_rows, dtype=np.int32)
    local, _, missing = local_codes(sample.column(id_col).combine_chunks())
    if missing >= 0:  # the read itself refuses the missing id, naming it
        return np.zeros(sample.num_rows, dtype=np.int32)
    return local.astype(np.int32)


def _as_floats(column: Any) -> np.ndarray | None:
    if not numeric_type(column.type):
        return None
    import pyarrow as pa

    column = column.combine_chunks()
    values = float64(column)  # decimals go through pyarrow.compute, imported only then
    return values if values is not None else numbers(column.cast(pa.float64(), safe=False))


def _time_like_columns(
    names: list[str], sample: Any, codes: np.ndarray, numeric: Callable[[str], bool]
) -> dict[str, str]:
    """The columns that look like a calendar or a time index, and why. Values are looked
    at in the first VALUE_CHECKED numeric columns (a file of 100,000 features must not
    take minutes); a calendar name is recognised anywhere."""
    found: dict[str, str] = {}
    checked = 0
    for name in names:
        named = calendar_name(name)
        if not named and (checked >= VALUE_CHECKED or not numeric(name)):
            continue
        checked += not named
        reason = _time_like(name, sample.column(name), codes)
        if reason:
            found[name] = reason
    return found


def _time_like(name: str, column: Any, codes: np.ndarray) -> str | None:
    """Why a numeric column looks like a calendar or a time index (None: it does not)."""
    values = _as_floats(column)
    if values is None:
        return None
    live = np.isfinite(values)
    if not live.any():
        return None
    values, codes = values[live], codes[live]
    integral = bool(np.all(values == np.round(values)))
    ordered = _ordered(values, codes)
    if calendar_name(name) and (integral or ordered):
        return "a calendar name"
    if not integral:
        return None
    if ordered and np.all((values >= 1000) & (values <= 2999)):
        return "integer years"
    if ordered and yyyymmdd(values):
        return "yyyymmdd dates"
    in_span = any(np.all((values >= lo) & (values <= hi)) for lo, hi in UNIX_SPANS)
    if ordered and in_span and _clock_steps(values, codes):
        return "Unix times"
    return None


def _clock_steps(values: np.ndarray, codes: np.ndarray) -> bool:
    """Steps a clock makes: whole minutes, or one step size for at least half the rows
    (a logger's period). A count that grows by a different amount every row, a
    billion-strong population, is not a time."""
    grouped, first = _by_sequence(values, codes)
    steps = np.diff(grouped)[~first[1:]]
    if not len(steps):
        return False
    _, counts = np.unique(steps, return_counts=True)
    return bool(counts.max() * 2 >= len(steps) or np.all(steps % 60 == 0))


def _wide_label(
    name: str, sample: Any, leading: set[str], rows: np.ndarray, index: set[str]
) -> str | None:
    """Why a wide file's column labels its rows rather than holding a step: a calendar
    name, pandas' index; or, if it is among the leading columns the sample holds, a year
    or date per row, an id or row numbers."""
    if calendar_name(name):
        return "a calendar name"
    if name not in leading:
        return "the pandas index" if name in index else None
    reason = _time_like(name, sample.column(name), rows)
    if reason in ("integer years", "yyyymmdd dates"):
        return reason
    return _label(name, sample.column(name), rows, index)


def cyclic_name(name: str) -> bool:
    """A calendar field that wraps around (``quarter``, ``month``): never in order."""
    return name.lower().translate(SEPARATORS) in CYCLIC_NAMES


def calendar_name(name: str) -> bool:
    """``Year``, ``day_of_week``, ``Date Time``: not ``t0`` or ``hour2``."""
    return name.lower().translate(SEPARATORS) in CALENDAR_NAMES


def _by_sequence(values: np.ndarray, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Values grouped by sequence (file order kept within one) and where a group starts."""
    permutation = np.argsort(codes, kind="stable")
    grouped, sorted_codes = values[permutation], codes[permutation]
    return grouped, np.r_[True, sorted_codes[1:] != sorted_codes[:-1]]


def _ordered(values: np.ndarray, codes: np.ndarray) -> bool:
    grouped, first = _by_sequence(values, codes)
    return bool(np.all((np.diff(grouped) >= 0) | first[1:]))


def yyyymmdd(values: np.ndarray) -> bool:
    """Every value reads as a date written as a number (19580329)."""
    year, rest = np.divmod(values, 10_000)
    month, day = np.divmod(rest, 100)
    return bool(
        np.all((year >= 1000) & (year <= 2999) & (month >= 1) & (month <= 12))
        and np.all((day >= 1) & (day <= 31))
    )
