"""NPY and NPZ readers.

An NPY file stays memory-mapped: ``values`` is a reshape view of the file, so reading a
file larger than memory costs nothing until a batch is gathered. Integer and bool arrays
are converted to float64 (a copy); float arrays keep their dtype. Only ``--nan`` repairs,
``--features`` subsets and a ``--target NAME`` column copy data into memory.
"""

from __future__ import annotations

import hashlib
import io
import mmap
import os
import tokenize
import zipfile
import zlib
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import replace
from functools import partial
from typing import Any, BinaryIO

import numpy as np

from tbptt_cli.digest import in_background, sha256_stream
from tbptt_cli.errors import InputDataError, UsageError
from tbptt_cli.materialize import release
from tbptt_cli.options import InputOptions
from tbptt_cli.readers import (
    NAN_FIX,
    finish,
    hash_file,
    named_columns,
    open_input,
    read_blocks,
)
from tbptt_cli.sequences import FileInfo, SequenceSet, SourceInfo

SCAN_BYTES = 16 << 20  # NaN checks read a memmap in slabs of this size, not all at once
HASH_SCAN_BYTES = 4 << 20  # read, hashed and checked at a time by _hash_and_scan
NPY_MAGIC = b"\x93NUMPY"
SHAPES = "expected 1-D [time], 2-D [sequences, time] or 3-D [sequences, time, features]"
# zipfile raises NotImplementedError (unsupported method or flags) and RuntimeError
# (an encrypted member), numpy's header parser TokenError or SyntaxError, for files
# they cannot read: bad input, not a bug (found by tests/test_fuzz.py).
LOAD_ERRORS = (
    ValueError,
    OSError,
    EOFError,
    zipfile.BadZipFile,
    zlib.error,
    KeyError,
    NotImplementedError,
    RuntimeError,
    tokenize.TokenError,
    SyntaxError,
)


def read_array_file(
    opts: InputOptions,
    fmt: str,
    keep: Sequence[str],
    stdin: BinaryIO,
    checks: list[Future[bool]] | None = None,
) -> tuple[SequenceSet, SourceInfo]:
    path = str(opts.path)
    source: str | io.BytesIO
    warnings: list[str] = []
    unread: BinaryIO | None = None  # a file hashed later, with the NaN/inf check
    if path == "-":
        digest = hashlib.sha256()
        content = b"".join(read_blocks(stdin, path, digest))
        info = SourceInfo.of_files(path, fmt, [FileInfo(path, len(content), digest.hexdigest())])
        source = io.BytesIO(content)
    elif fmt == "npy" and checks is not None and opts.nan == "error":
        unread = open_input(path)  # the check that the file exists and is readable
        size = os.fstat(unread.fileno()).st_size
        info = SourceInfo.of_files(path, fmt, [FileInfo(path, size, "")])
        source = path
    else:
        info = SourceInfo.of_files(path, fmt, [hash_file(path)])  # also checks it is readable
        source = path
    try:
        data, values, offsets = _load(source, fmt, path, opts, keep, warnings)
    except BaseException:
        if unread is not None:
            unread.close()
        raise
    if unread is not None and checks is not None:
        start = _mapped_offset(values)
        if start is not None and _scans_whole_file(data, values):
            # One pass over the file for both the input's sha256 and the NaN/inf check;
            # the caller joins the check before it commits or reports anything.
            digest_future, check = _hash_and_scan(unread, start, data, path, offsets)
            checks.append(check)
            done = finish(data, opts, path, may_have_missing=False)
            return done, _with_digest(info, digest_future, warnings)
        info = _with_digest(info, in_background(partial(_sha256_closing, unread)), [])
    if checks is not None and opts.nan == "error" and isinstance(source, str):
        # The caller joins this scan before it commits or reports anything: it raises the
        # same InputDataError, but the planning and writing overlap it on a second core.
        checks.append(
            in_background(partial(_scan_finite, data, path, offsets, True), "tbptt-nan-scan")
        )
        clean = True  # under --nan error nothing is repaired either way
    else:
        clean = _scan_finite(data, path, offsets, nan_error=opts.nan == "error")
    data = finish(data, opts, path, may_have_missing=not clean)
    return data, replace(info, warnings=tuple(warnings))


def _with_digest(info: SourceInfo, digest: Future[str], warnings: list[str]) -> SourceInfo:
    """The source hashed later, by a background job."""
    files = [FileInfo(info.path, info.size, digest)]
    return SourceInfo.of_files(info.path, info.format, files, warnings)


def _load(
    source: str | io.BytesIO,
    fmt: str,
    path: str,
    opts: InputOptions,
    keep: Sequence[str],
    warnings: list[str],
) -> tuple[SequenceSet, np.ndarray, np.ndarray]:
    """The SequenceSet, the array as loaded (maybe mapped) and the offsets."""
    with _opened(source) as stream:
        head = stream.read(len(NPY_MAGIC))
    _refuse_other_formats(head, fmt, path)
    if fmt == "npy":
        values, offsets, ids = _load_npy(source, path, opts.axes, warnings)
    else:
        values, offsets, ids = _load_npz(source, path)
    if values.dtype.kind in "iub":
        values = values.astype(np.float64)  # a copy; floats stay as stored (and mapped)
    data = _select_columns(SequenceSet.from_offsets(values, offsets, ids=ids), path, opts, keep)
    return data, values, offsets


def _opened(source: str | io.BytesIO) -> Any:
    if isinstance(source, str):
        return open(source, "rb")
    source.seek(0)
    return io.BytesIO(source.getbuffer())


def _refuse_other_formats(head: bytes, fmt: str, path: str) -> None:
    """Name the common mix-ups (pickle, NPY given as NPZ and back) before numpy sees them."""
    if head.startswith(b"\x80"):
        raise InputDataError(
            f"{path}: pickled data is refused (pickle is unsafe); "
            "save a numeric array with numpy.save or numpy.savez"
        )
    is_zip, is_npy = head.startswith(b"PK"), head.startswith(NPY_MAGIC)
    if fmt == "npy" and is_zip:
        raise InputDataError(f"{path}: this is an NPZ archive, not an NPY file; pass --format npz")
    if fmt == "npz" and is_npy:
        raise InputDataError(f"{path}: this is an NPY file, not an NPZ archive; pass --format npy")
    if fmt == "npy" and not is_npy:
        raise InputDataError(
            f"{path}: not an NPY file (no NPY magic string); save the array with numpy.save"
        )
    if fmt == "npz" and not is_zip:
        raise InputDataError(
            f"{path}: not an NPZ archive (not a zip file); save the arrays with numpy.savez"
        )


def _check_dtype(dtype: np.dtype[Any], where: str) -> None:
    if dtype.hasobject:
        raise InputDataError(
            f"{where}: object arrays are refused (pickle is unsafe); save a numeric array"
        )
    if dtype.names is not None:
        raise InputDataError(
            f"{where}: structured arrays are not supported; save a plain "
            "numeric array with one column per feature"
        )
    problem = {"U": "string", "S": "bytes", "c": "complex", "M": "datetime", "m": "timedelta"}
    if dtype.kind in problem:
        raise InputDataError(
            f"{where}: {problem[dtype.kind]} arrays are not supported "
            f"(dtype {dtype}); save float32 or float64 numbers"
        )
    if dtype.kind not in "fiub":
        raise InputDataError(f"{where}: dtype {dtype} is not supported; save float32 or float64")


def _load_npy(
    source: str | io.BytesIO, path: str, axes: str, warnings: list[str]
) -> tuple[np.ndarray, np.ndarray, list[str] | None]:
    with _opened(source) as stream:
        try:
            version = np.lib.format.read_magic(stream)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(stream)
            elif version == (2, 0):
                shape, _, dtype = np.lib.format.read_array_header_2_0(stream)
            else:  # 3.0 only exists for structured dtypes with non-latin-1 field names
                raise ValueError(f"NPY format version {version[0]}.{version[1]} is not supported")
        except Exception as exc:  # a corrupt header can fail in many ways; all mean the same
            raise InputDataError(
                f"{path}: corrupt NPY header ({exc}); re-create the file with numpy.save"
            ) from None
        data_start = stream.tell()
    _check_dtype(dtype, path)
    if len(shape) == 0 or len(shape) > 3:
        raise InputDataError(f"{path}: a {len(shape)}-D array is not a set of sequences; {SHAPES}")
    if 0 in shape:
        raise InputDataError(f"{path}: the array is empty (shape {shape}); nothing to read")
    expected = data_start + int(np.prod(shape)) * dtype.itemsize
    actual = os.path.getsize(source) if isinstance(source, str) else len(source.getbuffer())
    if actual < expected:
        raise InputDataError(
            f"{path}: truncated: the header promises {expected} bytes, the "
            f"file has {actual}; copy or save it again"
        )
    try:
        if isinstance(source, str):
            array = np.load(source, mmap_mode="r", allow_pickle=False)
        else:
            source.seek(0)
            array = np.load(source, allow_pickle=False)
    except LOAD_ERRORS as exc:
        raise InputDataError(
            f"{path}: cannot load the array ({exc}); save it with numpy.save"
        ) from None
    if axes not in ("NT", "TF"):
        raise UsageError(f"--axes {axes!r} is not one of NT, TF")
    if array.ndim == 3 and axes == "TF":
        raise UsageError(
            "--axes TF applies to 2-D arrays; a 3-D array is always [sequences, time, features]"
        )
    if array.ndim == 1 or (array.ndim == 2 and axes == "TF"):
        steps = array.shape[0]
        return array.reshape(steps, -1), np.array([0, steps]), None
    count, steps = array.shape[:2]
    if array.ndim == 2 and steps == 1 and count > 1:
        warnings.append(
            f"{path}: a [{count}, 1] array is read as {count} sequences of one step "
            f"(--axes NT); pass --axes TF to read it as one sequence of {count} steps"
        )
    features = array.shape[2] if array.ndim == 3 else 1
    # A reshape of a C-ordered memmap is a view of the same mapped pages, never a copy.
    return array.reshape(count * steps, features), np.arange(count + 1) * steps, None


def _load_npz(source: str | io.BytesIO, path: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    try:
        archive = np.load(source, allow_pickle=False)
    except LOAD_ERRORS as exc:
        raise InputDataError(
            f"{path}: cannot open the NPZ archive ({exc}); save it with numpy.savez"
        ) from None
    with archive:
        names = list(archive.files)
        members: dict[str, np.ndarray] = {}
        for key in ("values", "lengths", "offsets", "ids"):
            if key not in names:
                continue
            try:
                members[key] = archive[key]
            except LOAD_ERRORS as exc:
                reason = str(exc)
                if "allow_pickle" in reason:
                    reason = "object arrays are refused (pickle is unsafe); save a numeric array"
                raise InputDataError(f"{path}: member '{key}': {reason}") from None
            if not isinstance(members[key], np.ndarray):  # numpy hands back non-NPY bytes
                raise InputDataError(
                    f"{path}: member '{key}' is not an NPY array; save the archive with numpy.savez"
                )
    if "values" not in members:
        held = ", ".join(names) or "nothing"
        raise InputDataError(
            f"{path}: no 'values' array (the archive has {held}); save it "
            "with numpy.savez(path, values=..., lengths=...)"
        )
    values = members["values"]
    _check_dtype(values.dtype, f"{path}: member 'values'")
    if values.ndim not in (1, 2) or values.size == 0:
        raise InputDataError(
            f"{path}: 'values' must be a non-empty [total] or [total, features] "
            f"array, got shape {values.shape}"
        )
    total = len(values)
    offsets = _npz_offsets(members, total, path)
    count = len(offsets) - 1
    ids = [str(i) for i in range(count)]
    if "ids" in members:
        raw = members["ids"]
        if raw.ndim != 1 or len(raw) != count or raw.dtype.kind not in "USiu":
            raise InputDataError(
                f"{path}: 'ids' must be {count} strings or integers, one per "
                f"sequence, got {raw.dtype} shape {raw.shape}"
            )
        ids = [i.decode() if isinstance(i, bytes) else str(i) for i in raw.tolist()]
    return values.reshape(total, -1), offsets, ids


def _npz_offsets(members: dict[str, np.ndarray], total: int, path: str) -> np.ndarray:
    """Offsets [N+1] from either ``lengths`` or ``offsets``, checked against ``values``."""
    if ("lengths" in members) == ("offsets" in members):
        found = "both" if "lengths" in members else "neither"
        raise InputDataError(
            f"{path}: found {found} of 'lengths' and 'offsets'; save exactly "
            "one: lengths [sequences] or offsets [sequences + 1]"
        )
    key = "lengths" if "lengths" in members else "offsets"
    given = members[key]
    shortest = 1 if key == "lengths" else 2
    if given.ndim != 1 or given.dtype.kind not in "iu" or len(given) < shortest:
        raise InputDataError(
            f"{path}: '{key}' must be a non-empty 1-D integer array, got "
            f"{given.dtype} shape {given.shape}"
        )
    given = given.astype(np.int64)
    if key == "lengths":
        if (given < 0).any():
            i = int(np.argmax(given < 0))
            raise InputDataError(f"{path}: lengths[{i}] is {given[i]}; a length must be >= 0")
        if given.sum() != total:
            raise InputDataError(
                f"{path}: lengths add up to {given.sum()} but 'values' has "
                f"{total} rows; they must match"
            )
        return np.concatenate([[0], np.cumsum(given)])
    if given[0] != 0 or given[-1] != total:
        raise InputDataError(
            f"{path}: offsets must start at 0 and end at {total} (the rows of "
            f"'values'), got {given[0]} .. {given[-1]}"
        )
    if (np.diff(given) < 0).any():
        i = int(np.argmax(np.diff(given) < 0))
        raise InputDataError(
            f"{path}: offsets[{i + 1}] = {given[i + 1]} is below offsets[{i}] "
            f"= {given[i]}; offsets must not decrease"
        )
    return given


def _select_columns(
    data: SequenceSet, path: str, opts: InputOptions, keep: Sequence[str]
) -> SequenceSet:
    """Apply ``--features``, ``--target NAME`` and ``keep`` to the columns x0..x{F-1}."""
    names = data.feature_names
    target, kept, features = named_columns(path, names, opts, keep)
    if features is None:
        features = [j for j in range(len(names)) if j != target and j not in kept]
    if not features:
        raise UsageError(f"{path}: no feature column left after --target and the kept columns")
    values = data.values
    if features != list(range(len(names))):
        values = np.ascontiguousarray(values[:, features])
    return replace(
        data,
        values=values,
        feature_names=[names[j] for j in features],
        targets=np.array(data.values[:, [target]]) if target is not None else None,
        target_names=[names[target]] if target is not None else [],
        extra={names[j]: np.array(data.values[:, j], dtype=np.float64) for j in kept},
    )


def _sha256_closing(stream: BinaryIO) -> str:
    with stream:
        return sha256_stream(stream)


def _mapped_offset(values: np.ndarray) -> int | None:
    """Where a memory-mapped NPY's data starts in the file; None if not mapped."""
    base: object = values
    while isinstance(base, np.ndarray):
        if isinstance(base, np.memmap) and not isinstance(base.base, np.memmap):
            return int(base.offset)
        base = base.base
    return None


def _scans_whole_file(data: SequenceSet, values: np.ndarray) -> bool:
    """True if `_scan_finite` would check exactly the file's data region, in file order:
    every column kept as a feature, in order, no target or kept column copied out."""
    return (
        data.values is values
        and data.targets is None
        and not data.extra
        and values.dtype.kind == "f"
    )


def _hash_and_scan(
    stream: BinaryIO, start: int, data: SequenceSet, path: str, offsets: np.ndarray
) -> tuple[Future[str], Future[bool]]:
    """The file's sha256 and the `_scan_finite` check of its data region in one read.

    Both futures are settled by one thread; a bad value fails both with the message
    `_scan_finite` gives (the first bad cell in file order is the first in row order).
    The file is read through its own memory map, page by page let go once hashed: no
    copy out of the page cache, and it never counts towards our resident memory.
    """
    digest_future: Future[str] = Future()
    dtype, features, total = data.values.dtype, data.values.shape[1], data.values.size
    block = HASH_SCAN_BYTES // dtype.itemsize * dtype.itemsize

    def run() -> bool:
        digest = hashlib.sha256()
        with stream:
            # No close: views of the map may live on in an error's traceback. It is
            # unmapped when the last of them goes.
            mapped = mmap.mmap(stream.fileno(), 0, access=mmap.ACCESS_READ)
        whole = memoryview(mapped)
        values = np.frombuffer(mapped, dtype, count=total, offset=start)
        digest.update(whole[:start])
        dropped = 0  # pages before this are let go
        for begin in range(start, len(mapped), block):
            digest.update(whole[begin : begin + block])
            first = (begin - start) // dtype.itemsize
            piece = values[first : first + block // dtype.itemsize]
            if not _all_finite(piece):
                row, col = divmod(first + int(np.argmax(~np.isfinite(piece))), features)
                raise _not_finite(path, data, offsets, row, data.feature_names[col])
            done = min(begin + block, len(mapped)) // mmap.PAGESIZE * mmap.PAGESIZE
            mapped.madvise(mmap.MADV_DONTNEED, dropped, done - dropped)
            dropped = done
        digest_future.set_result(digest.hexdigest())
        return True

    check = in_background(run, "tbptt-sha256-scan")
    check.add_done_callback(
        lambda done: (
            None
            if digest_future.done() or done.exception() is None
            else digest_future.set_exception(done.exception())
        )
    )  # type: ignore[arg-type]
    return digest_future, check


def _all_finite(values: np.ndarray) -> bool:
    """No NaN or infinity: a finite sum proves it (NaN and inf propagate through a sum)
    without the boolean temporary; only a sum that overflows needs the exact check."""
    return bool(np.isfinite(np.add.reduce(values)) or np.isfinite(values).all())


def _not_finite(
    path: str, data: SequenceSet, offsets: np.ndarray, row: int, name: str
) -> InputDataError:
    seq = int(np.searchsorted(offsets, row, side="right")) - 1
    step = row - int(offsets[seq])
    return InputDataError(
        f"{path}: non-finite value at sequence {data.ids[seq]}, "
        f"step {step}, feature {name}; {NAN_FIX}"
    )


def _scan_finite(data: SequenceSet, path: str, offsets: np.ndarray, nan_error: bool) -> bool:
    """True if every value and target is finite; reads slab by slab so a memmap stays cheap.

    Under ``--nan error`` the first bad cell (in row order) is reported by sequence,
    step and feature instead.
    """
    columns = [(data.values, data.feature_names)]
    if data.targets is not None:
        columns.append((data.targets, data.target_names))
    if all(array.dtype.kind != "f" for array, _ in columns):
        return True
    row_bytes = sum(array.shape[1] * array.dtype.itemsize for array, _ in columns)
    slab = max(1, SCAN_BYTES // row_bytes)
    for start in range(0, len(data.values), slab):
        release(*(array for array, _ in columns))  # keep a scanned memmap out of our RSS
        for array, names in columns:
            piece = array[start : start + slab]
            if np.isfinite(piece).all():  # no temporary mask to scan twice: the common case
                continue
            bad = ~np.isfinite(piece)
            if not nan_error:
                return False
            row, col = divmod(int(np.argmax(bad)), array.shape[1])
            raise _not_finite(path, data, offsets, row + start, names[col])
    return True
