"""Input readers: tables (CSV/TSV, Parquet, Arrow) and NPY/NPZ into a `SequenceSet`.

`read_input` is the one entry point. Every table format goes through the record-batch
core (`table`); NPY/NPZ are memory-mapped arrays (`arrays`). The readers own every input
error message and raise `errors.TbpttError` subclasses only: a raw numpy, pyarrow, csv or
OS exception never escapes. This module also holds what the readers share: hashing, the
``--nan`` repair modes and the last steps every read ends with (`finish`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from typing import BinaryIO

import numpy as np

from tbptt_cli.digest import in_background, sha256_stream
from tbptt_cli.errors import (
    LEADING_FEATURE,
    LEADING_TARGET,
    InputDataError,
    InputMissingError,
    UsageError,
)
from tbptt_cli.options import TABLE, InputOptions, parse_target, target_column
from tbptt_cli.readers.columns import no_such_column
from tbptt_cli.readers.inputs import Part, open_input, resolve, shown
from tbptt_cli.readers.repairs import REPAIRS, Repairs, columns, reported
from tbptt_cli.sequences import FileInfo, SequenceSet, SourceInfo

__all__ = ["read_input"]

BLOCK = 1 << 20  # 1 MiB: the read and hash unit
NAN_FIX = "clean the data or pass --nan ffill|zero|drop"
KINDS = {("csv", "tsv"): "CSV", TABLE: "CSV, TSV, Parquet and Arrow", ("npy",): "NPY"}


def read_input(
    opts: InputOptions,
    keep: Sequence[str] = (),
    stdin: BinaryIO | None = None,
    spill_dir: str | os.PathLike[str] | None = None,
    progress: Callable[[int, int], Callable[[int], None]] | None = None,
    checks: list[Future[bool]] | None = None,
    values_dtype: str = "float64",
    times: bool = True,
) -> tuple[SequenceSet, SourceInfo]:
    """Read INPUT (files, a directory, a glob, or stdin for ``-``) into a `SequenceSet`
    and describe the source.

    ``keep`` names extra columns read as float64 into ``SequenceSet.extra`` (and left out
    of the features); the ``--time-col`` values land there too (seconds since 1970 for
    dates and times) unless ``times`` is False: then they order the rows and are let go.
    Parsed rows beyond ``--memory-limit`` spill to unnamed temporary files in
    ``spill_dir`` (the output's directory; default the system's temporary directory).
    ``progress`` is the CLI's bar factory, called as ``progress(total_bytes, BYTES)``.
    Given ``checks``, a reader may leave slow input checks (the NaN scan of a mapped NPY)
    running in the background and append their futures there; the caller must call
    ``result()`` on each (which raises the check's error) before it commits or reports
    anything. A table's values are kept at ``values_dtype`` (float32 or float16 when they
    are only ever written at that precision: half the memory, no conversion while
    writing), or float64 from the first value that precision cannot hold (which the
    writer then refuses, naming it).
    """
    parts, budget = prepare(opts)
    fmt = parts[0].format
    source = stdin if stdin is not None else sys.stdin.buffer
    directory = os.fspath(spill_dir) if spill_dir is not None else None
    # Imported here, each only for its formats: the submodules import the helpers below
    # from this package.
    if fmt not in TABLE:
        from tbptt_cli.readers import arrays

        return arrays.read_array_file(opts, fmt, keep, source, checks, budget, directory)
    from tbptt_cli.readers import table

    tick = None
    if progress is not None and parts[0].path != "-":
        from tbptt_cli.progress import BYTES

        tick = progress(sum(_size(p.path) for p in parts), BYTES)
    data, files, warnings, (id_hint, time_hint) = table.read_table(
        parts, opts, keep, source, budget, directory, tick, values_dtype, times
    )
    data, repairs = finish(data, opts, shown(opts))
    formats = "+".join(dict.fromkeys(p.format for p in parts))
    info = SourceInfo.of_files(shown(opts), formats, files, warnings)
    info = reported(info, repairs, opts.nan)
    return data, dataclasses.replace(info, id_col_hint=id_hint, time_col_hint=time_hint)


def prepare(opts: InputOptions) -> tuple[list[Part], int]:
    """INPUT's parts and ``--memory-limit`` in bytes, every option checked before any work."""
    parts = resolve(opts)
    refuse_foreign_options(opts, {p.format for p in parts})
    check_options(opts)
    return parts, parse_size(opts.memory_limit)


def _size(path: str) -> int:
    return os.path.getsize(path) if os.path.isfile(path) else 0


def refuse_foreign_options(opts: InputOptions, formats: set[str]) -> None:
    """A CSV option given for an NPY input (or the reverse) is an error, never ignored."""
    for field in dataclasses.fields(opts):
        applies = field.metadata.get("applies_to")
        if not applies or getattr(opts, field.name) == field.default:
            continue
        foreign = sorted(formats - set(applies))
        if foreign:
            flag = "--" + field.name.replace("_", "-")
            kinds = KINDS.get(applies, "/".join(f.upper() for f in applies))
            raise UsageError(
                f"{flag} applies to {kinds} input only, not {foreign[0].upper()}; drop it"
            )


def check_options(opts: InputOptions) -> None:
    """Options that need another option, checked before anything is read."""
    # "keep" (inspect's raw read: NaN left in place, to be counted) is not a user choice.
    if opts.nan not in ("error", "ffill", "zero", "drop", "keep"):
        raise UsageError(f"--nan {opts.nan!r} is not one of error, ffill, zero, drop")
    needs = [
        ("--freq", opts.freq is not None, opts.time_col, "--time-col"),
        ("--duplicates", opts.duplicates != "error", opts.time_col, "--time-col"),
        ("--gaps", opts.gaps != "error", opts.freq, "--freq"),
    ]
    for flag, given, other, name in needs:
        if given and other is None:
            raise UsageError(f"{flag} needs {name}; pass {name} or drop {flag}")
    if opts.gaps == "fill" and opts.nan in ("error", "drop"):
        raise UsageError(
            f"--gaps fill inserts the missing steps as NaN, which --nan {opts.nan} would "
            "refuse or remove again; pass --nan ffill or --nan zero"
        )


SIZE_UNITS = {"": 1, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(text: str) -> int:
    """``--memory-limit``: bytes, or a number with K, M, G or T (powers of 1024)."""
    given = str(text).strip().upper().removesuffix("IB").removesuffix("B")
    number, unit = given.rstrip("KMGT"), given[len(given.rstrip("KMGT")) :]
    try:
        size = float(number) * SIZE_UNITS[unit]
    except (ValueError, KeyError):
        size = -1
    if size < 0 or number == "":
        raise UsageError(f"--memory-limit {text!r} is not a size; write it like 512M or 2G")
    return int(size)


def read_blocks(
    stream: BinaryIO, path: str, digest: hashlib._Hash | None = None
) -> Iterator[bytes]:
    """The stream's bytes in 1 MiB blocks (hashed on the way through, given a digest)."""
    while True:
        try:
            block = stream.read(BLOCK)
        except OSError as exc:
            raise InputMissingError(f"{path}: read error ({exc.strerror or exc})") from None
        except EOFError:
            raise InputDataError(f"{path}: the compressed data ends early (truncated)") from None
        if not block:
            return
        if digest is not None:
            digest.update(block)
        yield block


def hash_file(path: str) -> FileInfo:
    """Size and sha256 of a file read out of order (NPY, Parquet), hashed in the background."""
    stream = open_input(path)  # errors (missing, unreadable) surface here, at once
    size = os.fstat(stream.fileno()).st_size

    def digest() -> str:
        with stream:
            return sha256_stream(stream)

    return FileInfo(path, size, in_background(digest))


def column_index(path: str, names: Sequence[str], flag: str, name: str) -> int:
    if name not in names:
        raise no_such_column(path, flag, name, names)
    return list(names).index(name)


def named_columns(
    path: str, names: Sequence[str], opts: InputOptions, keep: Sequence[str]
) -> tuple[int | None, list[int], list[int] | None]:
    """NPY: ``--target NAME``, the kept columns and ``--features`` as column indices
    (features None: every other column)."""
    target = None
    if target_column(opts.target):
        target = column_index(path, names, "--target", opts.target)
    kept = [column_index(path, names, "", name) for name in keep]
    if opts.features is None:
        return target, kept, None
    if not opts.features:
        raise UsageError("--features is empty; name at least one column")
    features = [column_index(path, names, "--features", name) for name in opts.features]
    if target in features:
        raise UsageError(
            f"column '{opts.target}' is both a feature and the --target; drop it from --features"
        )
    return target, kept, features


def sequence_of_rows(offsets: np.ndarray) -> np.ndarray:
    """For every row, the index of the sequence it belongs to."""
    return np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))


def all_finite(values: np.ndarray) -> bool:
    """No NaN or infinity in a 1-D array: a finite sum proves it (NaN and inf propagate
    through a sum) without the boolean temporary; only a sum that overflows needs the
    exact check."""
    return bool(np.isfinite(np.add.reduce(values)) or np.isfinite(values).all())


def repair_missing(mode: str, path: str, data: SequenceSet) -> tuple[SequenceSet, Repairs]:
    """Apply ``--nan ffill|zero|drop`` to the values and targets of a set; what it repaired.

    Readers check ``--nan error`` themselves while the cell's location is still known.
    ``extra`` columns are never repaired, only kept aligned when rows are dropped.
    ``ffill`` never fills from the future: a sequence that starts with a missing value
    (nothing before it to fill from) is refused, so every sequence keeps its length.
    """
    # Readers lay sequences end to end, so the offsets follow from the lengths.
    offsets = np.concatenate([[0], np.cumsum(data.lengths)])
    arrays = [data.values] + ([data.targets] if data.targets is not None else [])
    bad = [~np.isfinite(a) for a in arrays]
    cells = np.concatenate([np.count_nonzero(b, axis=0) for b in bad])
    repairs = Repairs.counted(columns(data), cells, len(data.values))
    if not cells.any():
        return data, repairs
    if mode == "zero":
        fixed = [np.where(b, 0, a).astype(a.dtype) for a, b in zip(arrays, bad, strict=True)]
    elif mode == "ffill":
        names = [data.feature_names, data.target_names]
        checks = [LEADING_FEATURE, LEADING_TARGET]
        fixed = [
            _forward_fill(a, b, offsets, path, data.ids, n, check)
            for a, b, n, check in zip(arrays, bad, names, checks, strict=False)
        ]
    else:  # drop: a row with any non-finite feature or target goes, its sequence shrinks
        keep_row = ~np.logical_or.reduce([b.any(axis=1) for b in bad])
        lengths = np.bincount(sequence_of_rows(offsets)[keep_row], minlength=data.count)
        dropped = len(keep_row) - int(np.count_nonzero(keep_row))
        shortened = int(np.count_nonzero(lengths < data.lengths))
        repairs = dataclasses.replace(repairs, dropped=dropped, shortened=shortened)
        return SequenceSet(
            values=np.asarray(data.values[keep_row]),
            starts=np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64),
            lengths=lengths.astype(np.int64),
            ids=data.ids,
            feature_names=data.feature_names,
            targets=data.targets[keep_row] if data.targets is not None else None,
            target_names=data.target_names,
            extra={name: column[keep_row] for name, column in data.extra.items()},
        ), repairs
    fixed_targets = fixed[1] if data.targets is not None else None
    return dataclasses.replace(data, values=fixed[0], targets=fixed_targets), repairs


def _forward_fill(
    values: np.ndarray,
    bad: np.ndarray,
    offsets: np.ndarray,
    path: str,
    ids: Sequence[str],
    names: Sequence[str],
    check: int,
) -> np.ndarray:
    """Each missing cell takes the last finite value before it in its sequence and column.
    A missing cell with nothing before it is refused: filling it from a later step would
    leak the future into the past."""
    total = len(values)
    row = np.arange(total)[:, None]
    seq = sequence_of_rows(offsets)
    seq_start = offsets[:-1][seq][:, None]
    # Last finite row at or before each row; one in an earlier sequence does not count.
    before = np.maximum.accumulate(np.where(bad, -1, row), axis=0)
    leading = before < seq_start
    if leading.any():
        r, c = np.argwhere(leading)[0]
        steps = int(np.count_nonzero(leading[offsets[seq[r]] : offsets[seq[r] + 1], c]))
        raise InputDataError(
            f"{path}: sequence '{ids[seq[r]]}' starts with {steps} step(s) without a value in "
            f"column '{names[c]}', and --nan ffill fills only from earlier steps (a later "
            "value would leak the future); drop those steps, or pass --nan zero or --nan drop",
            check,
        )
    return np.take_along_axis(np.asarray(values), before, axis=0)


def feature_index(features: Sequence[str], name: str) -> int:
    if name not in features:
        raise InputDataError(
            f"--target next:{name}: '{name}' is not a feature (the features are "
            f"{', '.join(features)}); next:COL predicts features: name one, or add the "
            "column to --features"
        )
    return list(features).index(name)


def finish(
    data: SequenceSet, opts: InputOptions, path: str, may_have_missing: bool = True
) -> tuple[SequenceSet, Repairs]:
    """The steps every reader ends with: repair missing values, then ``--target next``;
    what was repaired."""
    parse_target(opts.target, opts.horizon)  # a bad --target fails before any repair
    repairs = Repairs.clean(data)
    if opts.nan in REPAIRS and may_have_missing and data.count:
        data, repairs = repair_missing(opts.nan, path, data)
    return next_target(data, opts), repairs


def next_target(data: SequenceSet, opts: InputOptions) -> SequenceSet:
    """``--target next[:COL]`` with ``--horizon H``: ``y[t] = x[t+H]`` of the chosen
    features (as they are after any repair); any other ``--target`` leaves ``data`` be."""
    target = parse_target(opts.target, opts.horizon)
    if target.kind != "next":
        return data
    columns = None
    if target.columns is not None:
        columns = [feature_index(data.feature_names, name) for name in target.columns]
    return data.with_next_target(columns, target.horizon)
