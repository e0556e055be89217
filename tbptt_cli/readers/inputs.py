"""What INPUT names, as a list of parts: one file, stdin, several paths, globs, directories.

A directory is walked (sorted, hidden and ``_``-prefixed entries skipped, as Spark and
pyarrow write ``_SUCCESS`` and ``.crc`` files) for files of the table formats; folders
named ``key=value`` (hive partitions) add a constant column ``key`` to the rows below them.
Names are sorted with their numbers compared as numbers, so ``part-2`` comes before
``part-10``: the order of the parts is the order of the rows, which decides the order of
the sequences (first appearance).
"""

from __future__ import annotations

import glob
import os
import re
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

from tbptt_cli.errors import InputDataError, InputMissingError, UsageError
from tbptt_cli.options import CSV, FORMATS, TABLE, InputOptions

SUFFIXES = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".arrow": "arrow",
    ".feather": "arrow",
    ".npy": "npy",
    ".npz": "npz",
}
COMPRESSIONS = {".gz": "gzip", ".bz2": "bz2", ".xz": "xz", ".zst": "zstd"}
# First bytes of each compression: stdin read as plain text that starts so is refused.
MAGIC = {
    b"\x1f\x8b": "gzip",
    b"BZh": "bz2",
    b"\xfd7zXZ\x00": "xz",
    b"\x28\xb5\x2f\xfd": "zstd",
}
FORMAT_LIST = "|".join(FORMATS)


@dataclass(frozen=True)
class Part:
    """One input file (or stdin, ``path == "-"``) and how to read it."""

    path: str
    format: str
    compression: str | None = None
    partition: tuple[tuple[str, str], ...] = ()  # hive ``key=value`` folders above the file


def given_paths(opts: InputOptions) -> list[str]:
    if not opts.path:
        raise UsageError("no input given; pass a file path, or - to read stdin")
    return [opts.path] if isinstance(opts.path, str) else list(opts.path)


def shown(opts: InputOptions) -> str:
    """INPUT as the user gave it, for messages."""
    return " ".join(given_paths(opts))


def resolve(opts: InputOptions) -> list[Part]:
    """Every file INPUT names, in reading order, with its format and compression."""
    paths = given_paths(opts)
    if opts.format is not None and opts.format not in FORMATS:
        raise UsageError(f"--format {opts.format!r} is not one of {', '.join(FORMATS)}")
    if "-" in paths:
        if len(paths) > 1:
            raise UsageError("- (stdin) cannot be read together with other inputs")
        if opts.format is None:
            raise UsageError(f"reading stdin needs --format {FORMAT_LIST}")
        return [Part("-", opts.format, _stdin_compression(opts))]
    parts: list[Part] = []
    for given in paths:
        parts += _expand(given, opts)
    seen: set[str] = set()
    for part in parts:
        if part.path in seen:
            raise UsageError(f"{part.path} is named twice in INPUT; give each file once")
        seen.add(part.path)
    if len(parts) > 1 and any(p.format not in TABLE for p in parts):
        raise UsageError(
            "several inputs are read as one table; NPY/NPZ input is one file (use NPZ with "
            "lengths for many sequences)"
        )
    return parts


def _expand(given: str, opts: InputOptions) -> list[Part]:
    if os.path.isdir(given):
        found = [part for path in _walk(given) if (part := _member(path, opts, given))]
        if not found:
            raise InputMissingError(
                f"{given}: directory holds no {opts.format or 'CSV, TSV, Parquet or Arrow'} "
                "files; name the files, or pass --format"
            )
        return found
    if not os.path.exists(given) and glob.has_magic(given):
        files = [
            m for m in sorted(glob.glob(given, recursive=True), key=natural) if os.path.isfile(m)
        ]
        if not files:
            raise InputMissingError(f"{given}: no file matches this pattern")
        return [_part(m, opts) for m in files]
    return [_part(given, opts)]


def _walk(top: str) -> Iterator[str]:
    for root, dirs, files in os.walk(top, followlinks=True):
        dirs[:] = sorted((d for d in dirs if not d.startswith((".", "_"))), key=natural)
        for name in sorted(files, key=natural):
            if not name.startswith((".", "_")):
                yield os.path.join(root, name)


def natural(name: str) -> list[Any]:
    """Sort key: runs of digits compare as numbers (``part-2`` before ``part-10``)."""
    return [int(run) if run.isdigit() else run for run in re.split(r"(\d+)", name)]


def _member(path: str, opts: InputOptions, root: str) -> Part | None:
    """A file met walking a directory, with its hive partition: a file of any table format
    (with --format: of that format, or with no known suffix, as Spark names its parts);
    None for any other file."""
    fmt = SUFFIXES.get(os.path.splitext(split_compression(path)[0])[1].lower())
    wanted = fmt in TABLE if opts.format is None else fmt in (None, opts.format)
    if not wanted:
        return None
    part = _part(path, opts)
    return Part(part.path, part.format, part.compression, _partition(path, root))


def _part(path: str, opts: InputOptions) -> Part:
    stem, compression = split_compression(path)
    fmt = opts.format or SUFFIXES.get(os.path.splitext(stem)[1].lower())
    if fmt is None:
        suffix = os.path.splitext(path)[1].lower()
        said = f"suffix '{suffix}'" if suffix else "no suffix"
        if suffix in (".h5", ".hdf5"):  # an output given where raw sequences are read
            raise UsageError(
                f"{path}: an HDF5 file is an output, not an input; describe it with "
                "tbptt inspect or tbptt validate, or draw it with --report on the run"
            )
        raise UsageError(f"{path}: cannot tell the format ({said}); pass --format {FORMAT_LIST}")
    if opts.compression_in is not None:
        compression = None if opts.compression_in == "none" else opts.compression_in
    if compression and fmt not in CSV:
        raise UsageError(
            f"{path}: compressed {fmt.upper()} is not read; only CSV/TSV may be .gz .bz2 .xz "
            f".zst ({fmt} compresses inside the file)"
        )
    return Part(path, fmt, compression)


def split_compression(path: str) -> tuple[str, str | None]:
    """``data.csv.gz`` -> (``data.csv``, ``gzip``); no compression suffix -> (path, None)."""
    stem, suffix = os.path.splitext(path)
    codec = COMPRESSIONS.get(suffix.lower())
    return (stem, codec) if codec else (path, None)


def _partition(path: str, root: str) -> tuple[tuple[str, str], ...]:
    folders = os.path.relpath(os.path.dirname(path), root).split(os.sep)
    pairs = [folder.split("=", 1) for folder in folders if "=" in folder]
    return tuple((key, urllib.parse.unquote(value)) for key, value in pairs)


def _stdin_compression(opts: InputOptions) -> str | None:
    if opts.compression_in in (None, "none"):
        return None
    if opts.format not in CSV:
        raise UsageError("--compression-in applies to CSV/TSV input only")
    return opts.compression_in


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


def decompressed(raw: Any, part: Part) -> Any:
    """A readable stream of the part's text: the raw stream, or one that decompresses it."""
    if part.compression is None:
        return raw
    if part.compression == "xz":  # Arrow has no xz codec; the stdlib's runs in C too
        import lzma

        return lzma.open(raw, "rb")
    import pyarrow as pa

    return pa.CompressedInputStream(raw, part.compression)


def refuse_compressed(head: bytes, part: Part) -> None:
    """Compressed bytes read as text give a wall of garbage errors: name the codec instead."""
    if part.compression is not None:
        return
    for magic, codec in MAGIC.items():
        if head.startswith(magic):
            where = "stdin" if part.path == "-" else part.path
            raise InputDataError(
                f"{where}: the data is {codec}-compressed; pass --compression-in {codec}"
                + ("" if part.path == "-" else " (or name the file with its suffix)")
            )
