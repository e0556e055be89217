"""Typed, frozen option objects shared by the CLI, config files and the core.

Every field is one command-line flag (``--field-name``), one config key (``field_name``)
and one environment variable (``TBPTT_FIELD_NAME`` for these shared options). ``opt``
attaches the help text and the allowed choices that the CLI and the config loader both
read; ``path=True`` marks a path that a config file gives relative to its own folder.
"""

from __future__ import annotations

from dataclasses import Field, dataclass, field, fields
from typing import Any


def opt(default: Any, help: str, choices: tuple[str, ...] | None = None, **extra: Any) -> Any:
    """A dataclass field carrying its help text and choices for the CLI and the config."""
    return field(default=default, metadata={"help": help, "choices": choices, **extra})


def own_first(cls: type) -> list[Field[Any]]:
    """A class's fields, its own before the inherited ones (``--length`` before the
    shared layout options)."""
    own = cls.__dict__.get("__annotations__", {})
    return sorted(fields(cls), key=lambda f: f.name not in own)


CSV = ("csv", "tsv")
TABLE = ("csv", "tsv", "parquet", "arrow")  # the formats read through the record-batch core
FORMATS = (*TABLE, "npy", "npz")


@dataclass(frozen=True)
class InputOptions:
    path: str | tuple[str, ...] | None = opt(
        None,
        "input file, directory or glob (several allowed), or - for stdin",
        cli=False,
        paths=True,
        path=True,
    )
    format: str | None = opt(None, "input format (default: from the suffix)", FORMATS)
    compression_in: str | None = opt(
        None,
        "CSV: compression of the input (default: from the suffix .gz .bz2 .xz .zst; stdin: none)",
        ("none", "gzip", "bz2", "xz", "zstd"),
        applies_to=CSV,
    )
    layout: str = opt(
        "long",
        "tables: one row per timestep, or one per sequence",
        ("long", "wide"),
        applies_to=TABLE,
    )
    id_col: str | None = opt(None, "column naming the sequence of each row", applies_to=TABLE)
    time_col: str | None = opt(
        None,
        "column that orders rows within a sequence: numbers, ISO 8601 dates/times or timestamps",
        applies_to=TABLE,
    )
    features: tuple[str, ...] | None = opt(None, "comma-separated feature columns")
    exclude: tuple[str, ...] | None = opt(
        None, "comma-separated columns never used as features (labels)", applies_to=TABLE
    )
    delimiter: str | None = opt(
        None, "CSV field delimiter (default , or tab for TSV)", applies_to=CSV
    )
    no_header: bool = opt(
        False, "CSV: the first line is data; columns are named c0, c1, ...", applies_to=CSV
    )
    decimal: str = opt(".", "CSV: decimal separator of numbers", (".", ","), applies_to=CSV)
    axes: str = opt(
        "NT",
        "2-D NPY: [sequences, time] or one [time, features]",
        ("NT", "TF"),
        applies_to=("npy",),
    )
    target: str = opt(
        "none",
        "none; next (y[t] = x[t+H], every feature); next:COL[,COL] (those features, kept "
        "as inputs); or a column name (per-step targets, not a feature)",
    )
    horizon: int = opt(1, "with --target next[:COL]: predict H steps ahead (y[t] = x[t+H])")
    nan: str = opt("error", "what to do with NaN/inf cells", ("error", "ffill", "zero", "drop"))
    duplicates: str = opt(
        "error",
        "rows of one sequence with the same --time-col value: refuse, keep the first or "
        "last, or average them",
        ("error", "first", "last", "mean"),
        applies_to=TABLE,
    )
    freq: str | None = opt(
        None,
        "the regular step of --time-col: 1h, 15min, 1D, 7D ... or a NUMBER; checked for gaps",
        applies_to=TABLE,
    )
    gaps: str = opt(
        "error",
        "with --freq, a missing step: refuse, start a new sequence, or insert NaN steps for --nan",
        ("error", "split", "fill"),
        applies_to=TABLE,
    )
    memory_limit: str = opt(
        "256M",
        # Not refused for NPY: a budget set once (TBPTT_MEMORY_LIMIT) must not break NPY runs.
        "tables (and a Fortran-order NPY put in row order): parsed data held in memory; "
        "beyond it rows spill to a temp file (512M, 2G)",
    )


@dataclass(frozen=True)
class OutputOptions:
    path: str | None = opt(None, "output .h5 file", cli=False, path=True)
    manifest: str | None = opt(None, "manifest path (default <stem>.manifest.json)", path=True)
    dtype: str = opt("float32", "dtype of X and y", ("float16", "float32", "float64"))
    compression: str = opt("none", "none, lzf or gzip[:0-9]")
    no_clobber: bool = opt(False, "fail (exit 73) if the output exists")
    report: str | None = opt(
        None,
        "also write an HTML report of the output (needs tbptt-cli[report])",
        path=True,
    )
    scale: str = opt(
        "none",
        "scale each feature with parameters fitted on the training part only",
        ("none", "standard", "minmax"),
    )
    engine: str = opt(
        "local",
        "local: this process; dask: a Dask cluster writes shards and a virtual .h5 over them "
        "(needs tbptt-cli[dask])",
        ("local", "dask"),
    )
    scheduler: str | None = opt(
        None, "--engine dask: tcp://HOST:8786, or local:N worker processes (default local:<cores>)"
    )


ENGINE_OPTIONS = ("engine", "scheduler")  # how a run is done: never part of a data file


@dataclass(frozen=True)
class Target:
    """``--target`` parsed: ``kind`` none, next or column; ``columns`` the next:COL names
    (None: every feature) or the one column name."""

    kind: str
    columns: tuple[str, ...] | None = None
    horizon: int = 1


def parse_target(target: str, horizon: int = 1) -> Target:
    """``none``, ``next``, ``next:COL[,COL]`` or a column name, checked with ``--horizon``."""
    from tbptt_cli.errors import UsageError

    if isinstance(horizon, bool) or not isinstance(horizon, int) or horizon < 1:
        raise UsageError(f"--horizon must be a positive integer, not {horizon!r}")
    if target == "next":
        return Target("next", None, horizon)
    if target.startswith("next:"):
        names = [name.strip() for name in target[len("next:") :].split(",") if name.strip()]
        if not names:
            raise UsageError("--target next: names no column; write next:COL[,COL] or next")
        return Target("next", tuple(dict.fromkeys(names)), horizon)
    if horizon != 1:
        raise UsageError(
            f"--horizon applies to --target next or next:COL, not --target {target}; to "
            "predict a column ahead while feeding it in, use --target next:COL"
        )
    return Target("none") if target == "none" else Target("column", (target,))


def target_column(target: str) -> str | None:
    """The column ``--target NAME`` takes out of the features, or None (none, next...)."""
    return (
        target if target != "none" and target != "next" and not target.startswith("next:") else None
    )
