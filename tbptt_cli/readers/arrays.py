"""NPY and NPZ readers.

An NPY file stays memory-mapped: ``values`` is a reshape view of the file, so reading a
file larger than memory costs nothing until a batch is gathered. Every numeric dtype
(int, bool, float16..float64, either byte order) is kept as stored and converted to
``--dtype`` slab by slab on its way out, where a value the output cannot hold is refused.
NPY from stdin is first copied to an unnamed temporary file, then mapped the same way. A
Fortran-order array is copied into row order (held to ``--memory-limit``, then spilled).
Only that, ``--nan`` repairs, ``--features`` subsets and a ``--target NAME`` column copy
data; NPZ members are loaded into memory (a zip member cannot be mapped).
"""

from __future__ import annotations

import hashlib
import mmap
import os
import re
import tempfile
import tokenize
import zipfile
import zlib
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any, BinaryIO, cast

import numpy as np

from tbptt_cli.digest import in_background, sha256_stream
from tbptt_cli.errors import InputDataError, UsageError
from tbptt_cli.materialize import release
from tbptt_cli.options import InputOptions
from tbptt_cli.readers import (
    NAN_FIX,
    all_finite,
    finish,
    hash_file,
    named_columns,
    open_input,
    read_blocks,
)
from tbptt_cli.readers.repairs import reported
from tbptt_cli.readers.spill import Store, spill_file
from tbptt_cli.sequences import FileInfo, SequenceSet, SourceInfo

SCAN_BYTES = 16 << 20  # NaN checks read a memmap in slabs of this size, not all at once
HASH_SCAN_BYTES = 4 << 20  # read, hashed and checked at a time by _hash_and_scan
COPY_BYTES = 16 << 20  # a Fortran-order array is put in row order this much at a time
NPY_MAGIC = b"\x93NUMPY"
MEMBERS = ("values", "lengths", "offsets", "ids")  # an NPZ of ragged sequences
ARRAY_NAME = re.compile(r"arr_\d+")  # numpy.savez(path, *arrays): one array per sequence
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
    checks: list[Future[bool]] | None,
    budget: int,
    spill_dir: str | None,
) -> tuple[SequenceSet, SourceInfo]:
    path = str(opts.path)
    warnings: list[str] = []
    # Under --nan error a mapped NPY file is hashed and checked for NaN/inf in one pass.
    scan_later = checks is not None and opts.nan == "error"
    if path == "-":
        stream, info = _spooled(stdin, fmt, spill_dir)
    else:
        stream = open_input(path)  # the check that the file exists and is readable
        size = os.fstat(stream.fileno()).st_size
        if fmt == "npy" and scan_later:
            info = SourceInfo.of_files(path, fmt, [FileInfo(path, size, "")])  # hashed below
        else:
            info = SourceInfo.of_files(path, fmt, [hash_file(path)])
    try:
        data, values, offsets, start = _load(
            stream, fmt, path, opts, keep, warnings, budget, spill_dir
        )
    except BaseException:
        stream.close()
        raise
    if path != "-" and fmt == "npy" and scan_later:
        assert checks is not None
        if start is not None and _scans_whole_file(data, values):
            # One pass over the file for both the input's sha256 and the NaN/inf check;
            # the caller joins the check before it commits or reports anything.
            digest_future, check = _hash_and_scan(stream, start, data, path, offsets)
            checks.append(check)
            done, _ = finish(data, opts, path, may_have_missing=False)  # --nan error
            return done, _with_digest(info, digest_future, warnings)
        stream.seek(0)
        info = _with_digest(info, in_background(partial(_sha256_closing, stream)), [])
    else:
        stream.close()  # a memory map keeps its own handle on the file
    if scan_later:
        assert checks is not None
        # The caller joins this scan before it commits or reports anything: it raises the
        # same InputDataError, but the planning and writing overlap it on a second core.
        checks.append(
            in_background(partial(_scan_finite, data, path, offsets, True), "tbptt-nan-scan")
        )
        clean = True  # under --nan error nothing is repaired either way
    else:
        clean = _scan_finite(data, path, offsets, nan_error=opts.nan == "error")
    data, repairs = finish(data, opts, path, may_have_missing=not clean)
    return data, reported(replace(info, warnings=tuple(warnings)), repairs, opts.nan)


def _spooled(stdin: BinaryIO, fmt: str, spill_dir: str | None) -> tuple[BinaryIO, SourceInfo]:
    """Stdin copied to an unnamed temporary file beside the output (hashed on the way), so
    that it is memory-mapped like a file: never held in memory, whatever its size."""
    digest = hashlib.sha256()
    copy = spill_file(spill_dir)
    try:
        for block in read_blocks(stdin, "-", digest):
            copy.write(block)
        copy.flush()
    except OSError as exc:
        copy.close()
        from tbptt_cli.atomic import write_error

        raise write_error(Path(spill_dir or tempfile.gettempdir()), exc) from None
    except BaseException:
        copy.close()
        raise
    size = copy.tell()
    return cast(BinaryIO, copy), SourceInfo.of_files(
        "-", fmt, [FileInfo("-", size, digest.hexdigest())]
    )


def _with_digest(info: SourceInfo, digest: Future[str], warnings: list[str]) -> SourceInfo:
    """The source hashed later, by a background job."""
    files = [FileInfo(info.path, info.size, digest)]
    return SourceInfo.of_files(info.path, info.format, files, warnings)


def _load(
    stream: BinaryIO,
    fmt: str,
    path: str,
    opts: InputOptions,
    keep: Sequence[str],
    warnings: list[str],
    budget: int,
    spill_dir: str | None,
) -> tuple[SequenceSet, np.ndarray, np.ndarray, int | None]:
    """The SequenceSet, the array as loaded (maybe mapped), the offsets, and where the
    array's data starts in the file when it is the file's bytes in row order (else None).

    Every numeric dtype is kept as stored (int, bool, float16, big-endian ...): the
    writer converts each slab to ``--dtype`` and refuses a value it cannot hold.
    """
    stream.seek(0)
    _refuse_other_formats(stream.read(len(NPY_MAGIC)), fmt, path)
    if fmt == "npy":
        values, offsets, ids, start = _load_npy(
            stream, path, opts.axes, warnings, budget, spill_dir
        )
    else:
        (values, offsets, ids), start = _load_npz(stream, path), None
    data = _select_columns(SequenceSet.from_offsets(values, offsets, ids=ids), path, opts, keep)
    return data, values, offsets, start


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


def _read_header(stream: BinaryIO, where: str) -> tuple[tuple[int, ...], bool, np.dtype[Any]]:
    """Shape, Fortran order and dtype of the NPY data at the stream's position (checked)."""
    try:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(stream)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(stream)
        else:  # 3.0 only exists for structured dtypes with non-latin-1 field names
            raise ValueError(f"NPY format version {version[0]}.{version[1]} is not supported")
    except Exception as exc:  # a corrupt header can fail in many ways; all mean the same
        raise InputDataError(
            f"{where}: corrupt NPY header ({exc}); re-create the file with numpy.save"
        ) from None
    _check_dtype(dtype, where)
    return shape, bool(fortran), dtype


def _load_npy(
    stream: BinaryIO,
    path: str,
    axes: str,
    warnings: list[str],
    budget: int,
    spill_dir: str | None,
) -> tuple[np.ndarray, np.ndarray, list[str] | None, int | None]:
    """Values [rows, F], offsets, no ids, and where the data starts if it is mapped as is."""
    stream.seek(0)
    shape, fortran, dtype = _read_header(stream, path)
    data_start = stream.tell()
    if len(shape) == 0 or len(shape) > 3:
        raise InputDataError(f"{path}: a {len(shape)}-D array is not a set of sequences; {SHAPES}")
    if 0 in shape:
        raise InputDataError(f"{path}: the array is empty (shape {shape}); nothing to read")
    expected = data_start + int(np.prod(shape)) * dtype.itemsize
    actual = os.fstat(stream.fileno()).st_size
    if actual < expected:
        raise InputDataError(
            f"{path}: truncated: the header promises {expected} bytes, the "
            f"file has {actual}; copy or save it again"
        )
    if axes not in ("NT", "TF"):
        raise UsageError(f"--axes {axes!r} is not one of NT, TF")
    if len(shape) == 3 and axes == "TF":
        raise UsageError(
            "--axes TF applies to 2-D arrays; a 3-D array is always [sequences, time, features]"
        )
    try:
        array = np.memmap(
            stream, dtype, "r", offset=data_start, shape=shape, order="F" if fortran else "C"
        )
    except (ValueError, OSError) as exc:
        raise InputDataError(
            f"{path}: cannot map the array ({exc}); save it with numpy.save"
        ) from None
    if array.ndim == 1 or (array.ndim == 2 and axes == "TF"):
        steps = array.shape[0]
        # A Fortran-order [T, F] is still a view: one column after the other in the file.
        values = array.reshape(steps, -1)
        return values, np.array([0, steps]), None, None if fortran else data_start
    count, steps = array.shape[:2]
    if array.ndim == 2 and steps == 1 and count > 1:
        warnings.append(
            f"{path}: a [{count}, 1] array is read as {count} sequences of one step "
            f"(--axes NT); pass --axes TF to read it as one sequence of {count} steps"
        )
    features = array.shape[2] if array.ndim == 3 else 1
    offsets = np.arange(count + 1) * steps
    if fortran:
        return _rows_in_c_order(array, features, budget, spill_dir), offsets, None, None
    # A reshape of a C-ordered memmap is a view of the same mapped pages, never a copy.
    return array.reshape(count * steps, features), offsets, None, data_start


def _rows_in_c_order(
    array: np.ndarray, features: int, budget: int, spill_dir: str | None
) -> np.ndarray:
    """A Fortran-order [N, T(, F)] array as rows [N*T, F] of its sequences end to end.

    Its sequences are not contiguous in the file, so this is a copy, made a slab at a
    time: held in memory up to ``--memory-limit``, beyond it in a temporary file.
    """
    count, steps = array.shape[:2]
    store = Store(features, budget, spill_dir, array.dtype, expected=count * steps)
    rows = max(1, COPY_BYTES // (features * array.dtype.itemsize))  # rows copied at a time
    per = max(1, rows // steps)  # whole sequences at a time, or one in pieces of time
    try:
        for first in range(0, count, per):
            for step in range(0, steps, rows):
                store.add(array[first : first + per, step : step + rows].reshape(-1, features))
                release(array)
        return store.array()
    except BaseException:
        store.close()
        raise


def _load_npz(stream: BinaryIO, path: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    stream.seek(0)
    try:
        archive = np.load(stream, allow_pickle=False)
    except LOAD_ERRORS as exc:
        raise InputDataError(
            f"{path}: cannot open the NPZ archive ({exc}); save it with numpy.savez"
        ) from None
    with archive:
        names = list(archive.files)
        if "values" not in names and names and all(ARRAY_NAME.fullmatch(n) for n in names):
            return _npz_sequences(archive, names, path)
        members = {key: _member(archive, key, path) for key in MEMBERS if key in names}
    if "values" not in members:
        held = ", ".join(names) or "nothing"
        raise InputDataError(
            f"{path}: no 'values' array (the archive has {held}); save it with "
            "numpy.savez(path, values=..., lengths=...), or one array per sequence "
            "with numpy.savez(path, *sequences)"
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


def _member(archive: Any, key: str, path: str) -> np.ndarray:
    """One array of an NPZ archive, loaded; a member numpy cannot load is named."""
    try:
        member = archive[key]
    except LOAD_ERRORS as exc:
        reason = str(exc)
        if "allow_pickle" in reason:
            reason = "object arrays are refused (pickle is unsafe); save a numeric array"
        raise InputDataError(f"{path}: member '{key}': {reason}") from None
    if not isinstance(member, np.ndarray):  # numpy hands back non-NPY bytes
        raise InputDataError(
            f"{path}: member '{key}' is not an NPY array; save the archive with numpy.savez"
        )
    return member


def _npz_sequences(
    archive: Any, names: list[str], path: str
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """``numpy.savez(path, *sequences)``: member arr_k is sequence k, [T_k] or [T_k, F].

    The shapes come from the members' headers first, so the sequences are copied straight
    into one array: memory holds the result and one member, not every member twice.
    """
    keys = sorted(names, key=lambda name: int(name[len("arr_") :]))
    shapes, dtypes = [], []
    for key in keys:
        where = f"{path}: member '{key}'"
        try:
            with archive.zip.open(f"{key}.npy") as member:
                shape, _, dtype = _read_header(member, where)  # type: ignore[arg-type]
        except LOAD_ERRORS as exc:
            raise InputDataError(f"{where}: {exc}") from None
        if len(shape) not in (1, 2):
            raise InputDataError(
                f"{where}: shape {shape}; with one array per sequence each must be "
                "[time] or [time, features]"
            )
        shapes.append(shape)
        dtypes.append(dtype)
    features = [shape[1] if len(shape) == 2 else 1 for shape in shapes]
    if len(set(features)) > 1:
        k = next(i for i, f in enumerate(features) if f != features[0])
        raise InputDataError(
            f"{path}: '{keys[0]}' has {features[0]} feature(s) but '{keys[k]}' has "
            f"{features[k]}; every sequence needs the same features"
        )
    lengths = np.array([shape[0] for shape in shapes], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    if not offsets[-1]:
        raise InputDataError(f"{path}: every array is empty; nothing to read")
    values = np.empty((int(offsets[-1]), features[0]), dtype=np.result_type(*dtypes))
    for key, begin, end in zip(keys, offsets[:-1], offsets[1:], strict=True):
        values[begin:end] = _member(archive, key, path).reshape(end - begin, -1)
    return values, offsets, [key[len("arr_") :] for key in keys]


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
            if not all_finite(piece):
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
