"""Input readers: CSV/TSV (``delimited``) and NPY/NPZ (``arrays``) into a `SequenceSet`.

`read_input` is the one entry point. The readers own every input error message and raise
`errors.TbpttError` subclasses only: a raw numpy, csv or OS exception never escapes.
This module also holds what both readers share: opening the input with its hash, the
``--nan`` repair modes and the "no such column" message.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import io
import itertools
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from typing import BinaryIO

import numpy as np

from tbptt_cli.digest import in_background, sha256_stream
from tbptt_cli.errors import InputDataError, InputMissingError, UsageError
from tbptt_cli.options import InputOptions, parse_target, target_column
from tbptt_cli.sequences import SequenceSet, SourceInfo

__all__ = ["read_input"]

FORMATS = ("csv", "tsv", "npy", "npz")
BLOCK = 1 << 20  # 1 MiB: the read and hash unit
BOM = b"\xef\xbb\xbf"
MAX_LINE = 256 << 20  # bytes: one CSV line may hold a 10-million-step wide row
NAN_FIX = "clean the data or pass --nan ffill|zero|drop"


def read_input(
    opts: InputOptions,
    keep: Sequence[str] = (),
    stdin: BinaryIO | None = None,
    spill_dir: str | os.PathLike[str] | None = None,
    progress: Callable[[int, int], Callable[[int], None]] | None = None,
    checks: list[Future[bool]] | None = None,
) -> tuple[SequenceSet, SourceInfo]:
    """Read ``opts.path`` (or stdin for ``-``) into a `SequenceSet` and describe the source.

    ``keep`` names extra columns read as float64 into ``SequenceSet.extra`` (and left out
    of the features); the ``--time-col`` values always land there too. A CSV larger than
    ``--memory-limit`` is spilled to an unnamed temporary file in ``spill_dir`` (the
    output's directory; default the system's temporary directory). ``progress`` is the
    CLI's bar factory, called as ``progress(total_bytes, BYTES)``. Given ``checks``, a
    reader may leave slow input checks (the NaN scan of a mapped NPY) running in the
    background and append their futures there; the caller must call ``result()`` on each
    (which raises the check's error) before it commits or reports anything.
    """
    # Imported here: the submodules import the helpers below from this package.
    from tbptt_cli.readers import arrays, delimited

    if not opts.path:
        raise UsageError("no input given; pass a file path, or - to read stdin")
    fmt = input_format(opts)
    refuse_foreign_options(opts, fmt)
    # "keep" (inspect's raw read: NaN left in place, to be counted) is not a user choice.
    if opts.nan not in ("error", "ffill", "zero", "drop", "keep"):
        raise UsageError(f"--nan {opts.nan!r} is not one of error, ffill, zero, drop")
    source = stdin if stdin is not None else sys.stdin.buffer
    parse_size(opts.memory_limit)  # a bad --memory-limit fails before any work
    if fmt in ("csv", "tsv"):
        tick = None
        if progress is not None and opts.path != "-":
            from tbptt_cli.progress import BYTES

            tick = progress(os.path.getsize(opts.path) if os.path.isfile(opts.path) else 0, BYTES)
        directory = os.fspath(spill_dir) if spill_dir is not None else None
        return delimited.read_delimited(opts, fmt, keep, source, directory, tick)
    return arrays.read_array_file(opts, fmt, keep, source, checks)


def refuse_foreign_options(opts: InputOptions, fmt: str) -> None:
    """A CSV option given for an NPY input (or the reverse) is an error, never ignored."""
    for field in dataclasses.fields(opts):
        formats = field.metadata.get("applies_to")
        if formats and fmt not in formats and getattr(opts, field.name) != field.default:
            flag = "--" + field.name.replace("_", "-")
            kinds = "CSV" if formats == ("csv", "tsv") else "/".join(f.upper() for f in formats)
            raise UsageError(f"{flag} applies to {kinds} input only, not {fmt.upper()}; drop it")


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


def input_format(opts: InputOptions) -> str:
    """``--format`` if given, else the format named by the file's suffix."""
    if opts.format is not None:
        if opts.format not in FORMATS:
            raise UsageError(f"--format {opts.format!r} is not one of csv, tsv, npy, npz")
        return opts.format
    if opts.path == "-":
        raise UsageError("reading stdin needs --format csv|tsv|npy|npz")
    suffix = os.path.splitext(str(opts.path))[1].lower().lstrip(".")
    if suffix in FORMATS:
        return suffix
    shown = f"suffix '.{suffix}'" if suffix else "no suffix"
    raise UsageError(
        f"{opts.path}: cannot tell the format ({shown}); pass --format csv|tsv|npy|npz"
    )


def open_input(path: str) -> BinaryIO:
    """Open a file for binary reading, turning OS errors into `InputMissingError`."""
    try:
        return open(path, "rb")  # noqa: SIM115 - the caller closes it
    except FileNotFoundError:
        raise InputMissingError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise InputMissingError(f"{path}: is a directory; expected a file") from None
    except PermissionError:
        raise InputMissingError(f"{path}: permission denied") from None
    except OSError as exc:
        raise InputMissingError(f"{path}: cannot open ({exc.strerror or exc})") from None


def read_blocks(stream: BinaryIO, path: str, digest: hashlib._Hash) -> Iterator[bytes]:
    """The stream's bytes in 1 MiB blocks, hashed on the way through."""
    while True:
        try:
            block = stream.read(BLOCK)
        except OSError as exc:
            raise InputMissingError(f"{path}: read error ({exc.strerror or exc})") from None
        if not block:
            return
        digest.update(block)
        yield block


def text_lines(
    stream: BinaryIO, path: str, digest: hashlib._Hash, size: list[int]
) -> Iterator[str]:
    """Decoded lines with their line ends (``csv`` wants them), hashing every byte read."""
    # chain() hands out the lines in C; Python only runs once per 1 MiB block.
    return itertools.chain.from_iterable(_text_blocks(stream, path, digest, size))


def _text_blocks(
    stream: BinaryIO, path: str, digest: hashlib._Hash, size: list[int]
) -> Iterator[io.StringIO]:
    """Blocks cut after their last newline, which never splits a UTF-8 character, so a
    NUL byte or bad UTF-8 is found per block and its line number counted exactly."""
    # A line's blocks are joined once, at its end: growing one bytes object per block
    # would copy a long line over and over (minutes for a 1 GB line), and a line past
    # MAX_LINE is refused before it can take the memory.
    pending: list[bytes] = []
    held = 0
    lines_before = 0
    for block in read_blocks(stream, path, digest):
        size[0] += len(block)
        if size[0] == len(block) and block.startswith(BOM):
            block = block[len(BOM) :]
        cut = block.rfind(b"\n") + 1
        if not cut:
            pending.append(block)
            held += len(block)
            if held > MAX_LINE:
                raise InputDataError(
                    f"{path}:{lines_before + 1}: line longer than {MAX_LINE >> 20} MiB; "
                    "this is not CSV text with line breaks (for wide data put one "
                    "sequence per line)"
                )
            continue
        data = b"".join([*pending, block[:cut]])
        pending, held = [block[cut:]], len(block) - cut
        yield _decode(data, path, lines_before)
        lines_before += data.count(b"\n")
    if held:
        yield _decode(b"".join(pending), path, lines_before)


def _decode(chunk: bytes, path: str, lines_before: int) -> io.StringIO:
    nul = chunk.find(b"\0")
    if nul >= 0:
        line = lines_before + chunk.count(b"\n", 0, nul) + 1
        raise InputDataError(
            f"{path}:{line}: NUL byte; this looks like a binary file, "
            "not CSV text (for NumPy data pass --format npy|npz)"
        )
    try:
        text = chunk.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = lines_before + chunk.count(b"\n", 0, exc.start) + 1
        raise InputDataError(
            f"{path}:{line}: byte 0x{chunk[exc.start]:02x} is not UTF-8 "
            "text; save the file as UTF-8"
        ) from None
    # newline="" splits lines on \n, \r\n and \r but leaves the ends for csv to handle.
    return io.StringIO(text, newline="")


def hash_file(path: str, fmt: str) -> SourceInfo:
    """Size and sha256 of a file (NPY/NPZ are not read in order), hashed in the background."""
    stream = open_input(path)  # errors (missing, unreadable) surface here, at once
    size = os.fstat(stream.fileno()).st_size

    def digest() -> str:
        with stream:
            return sha256_stream(stream)

    return SourceInfo(path=path, format=fmt, size=size, digest=in_background(digest))


def no_such_column(path: str, flag: str, name: str, available: Sequence[str]) -> InputDataError:
    """``flag`` (empty for columns the caller asked to keep) names a column not in the input."""
    close = difflib.get_close_matches(name, list(available), n=1)
    given = f" (given to {flag})" if flag else ""
    hint = f"did you mean '{close[0]}'? " if close else ""
    listed = ", ".join(available)
    return InputDataError(f"{path}: no column '{name}'{given}; {hint}the columns are {listed}")


def column_index(path: str, names: Sequence[str], flag: str, name: str) -> int:
    if name not in names:
        raise no_such_column(path, flag, name, names)
    return list(names).index(name)


def named_columns(
    path: str, names: Sequence[str], opts: InputOptions, keep: Sequence[str]
) -> tuple[int | None, list[int], list[int] | None]:
    """``--target NAME``, the kept columns and ``--features`` as column indices (features
    None: the reader picks its default)."""
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


def repair_missing(mode: str, path: str, data: SequenceSet) -> SequenceSet:
    """Apply ``--nan ffill|zero|drop`` to the values and targets of a set.

    Readers check ``--nan error`` themselves while the cell's location is still known.
    ``extra`` columns are never repaired, only kept aligned when rows are dropped.
    """
    # Readers lay sequences end to end, so the offsets follow from the lengths.
    offsets = np.concatenate([[0], np.cumsum(data.lengths)])
    arrays = [data.values] + ([data.targets] if data.targets is not None else [])
    bad = [~np.isfinite(a) for a in arrays]
    if not any(b.any() for b in bad):
        return data
    if mode == "zero":
        fixed = [np.where(b, 0, a).astype(a.dtype) for a, b in zip(arrays, bad, strict=True)]
    elif mode == "ffill":
        names = [data.feature_names, data.target_names]
        fixed = [
            _forward_fill(a, b, offsets, path, data.ids, n)
            for a, b, n in zip(arrays, bad, names, strict=False)
        ]
    else:  # drop: a row with any non-finite feature or target goes, its sequence shrinks
        keep_row = ~np.logical_or.reduce([b.any(axis=1) for b in bad])
        lengths = np.bincount(sequence_of_rows(offsets)[keep_row], minlength=data.count)
        return SequenceSet(
            values=np.asarray(data.values[keep_row]),
            starts=np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64),
            lengths=lengths.astype(np.int64),
            ids=data.ids,
            feature_names=data.feature_names,
            targets=data.targets[keep_row] if data.targets is not None else None,
            target_names=data.target_names,
            extra={name: column[keep_row] for name, column in data.extra.items()},
        )
    return SequenceSet(
        values=fixed[0],
        starts=data.starts,
        lengths=data.lengths,
        ids=data.ids,
        feature_names=data.feature_names,
        targets=fixed[1] if data.targets is not None else None,
        target_names=data.target_names,
        extra=data.extra,
    )


def _forward_fill(
    values: np.ndarray,
    bad: np.ndarray,
    offsets: np.ndarray,
    path: str,
    ids: Sequence[str],
    names: Sequence[str],
) -> np.ndarray:
    """Each missing cell takes the last finite value before it in its sequence and column;
    a leading gap takes the first finite value after it (there is nothing before)."""
    total = len(values)
    row = np.arange(total)[:, None]
    seq = sequence_of_rows(offsets)
    seq_start = offsets[:-1][seq][:, None]
    seq_end = offsets[1:][seq][:, None]
    # Last finite row at or before each row; one in an earlier sequence does not count.
    before = np.maximum.accumulate(np.where(bad, -1, row), axis=0)
    # First finite row at or after each row, for the leading gap of a sequence.
    after = np.minimum.accumulate(np.where(bad, total, row)[::-1], axis=0)[::-1]
    use_before = before >= seq_start
    empty = ~use_before & (after >= seq_end)
    if empty.any():
        r, c = np.argwhere(empty)[0]
        raise InputDataError(
            f"{path}: sequence '{ids[seq[r]]}' has no finite value in column '{names[c]}', "
            "so --nan ffill has nothing to fill from; use --nan zero or drop, or clean the data"
        )
    source = np.where(use_before, before, after)
    return np.take_along_axis(np.asarray(values), source, axis=0)


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
) -> SequenceSet:
    """The steps every reader ends with: repair missing values, then ``--target next``."""
    target = parse_target(opts.target, opts.horizon)
    if opts.nan not in ("error", "keep") and may_have_missing and data.count:
        data = repair_missing(opts.nan, path, data)
    if target.kind == "next":
        columns = None
        if target.columns is not None:
            columns = [feature_index(data.feature_names, name) for name in target.columns]
        data = data.with_next_target(columns, target.horizon)
    return data
