"""Typed, frozen option objects shared by the CLI, config files and the core.

Every field is one command-line flag (``--field-name``), one config key (``field_name``)
and one ``TBPTT_FIELD_NAME`` environment variable. ``opt`` attaches the help text and
the allowed choices that the CLI and the config loader both read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


def opt(default: Any, help: str, choices: tuple[str, ...] | None = None, **extra: Any) -> Any:
    """A dataclass field carrying its help text and choices for the CLI and the config."""
    return field(default=default, metadata={"help": help, "choices": choices, **extra})


CSV = ("csv", "tsv")


@dataclass(frozen=True)
class InputOptions:
    path: str | None = opt(None, "input file, or - for stdin", cli=False, path=True)
    format: str | None = opt(
        None, "input format (default: from the suffix)", ("csv", "tsv", "npy", "npz")
    )
    layout: str = opt(
        "long", "CSV: one row per timestep, or one per sequence", ("long", "wide"), applies_to=CSV
    )
    id_col: str | None = opt(None, "CSV column naming the sequence of each row", applies_to=CSV)
    time_col: str | None = opt(
        None, "CSV column that orders rows within a sequence", applies_to=CSV
    )
    features: tuple[str, ...] | None = opt(None, "comma-separated feature columns")
    delimiter: str | None = opt(
        None, "CSV field delimiter (default , or tab for TSV)", applies_to=CSV
    )
    axes: str = opt(
        "NT",
        "2-D NPY: [sequences, time] or one [time, features]",
        ("NT", "TF"),
        applies_to=("npy",),
    )
    target: str = opt("none", "none, next (y[t] = x[t+1]) or a column name")
    nan: str = opt("error", "what to do with NaN/inf cells", ("error", "ffill", "zero", "drop"))
    memory_limit: str = opt(
        "256M",
        # Not refused for NPY: a budget set once (TBPTT_MEMORY_LIMIT) must not break NPY runs.
        "CSV: parsed data held in memory; beyond it rows spill to a temp file (512M, 2G)",
    )


@dataclass(frozen=True)
class OutputOptions:
    path: str | None = opt(None, "output .h5 file", cli=False, path=True)
    manifest: str | None = opt(None, "manifest path (default <stem>.manifest.json)", path=True)
    dtype: str = opt("float32", "dtype of X and y", ("float16", "float32", "float64"))
    compression: str = opt("none", "none, lzf or gzip[:0-9]")
    no_clobber: bool = opt(False, "fail (exit 73) if the output exists")
    report: str | None = opt(
        None, "also write an HTML report of the output (needs tbptt-cli[report])"
    )
