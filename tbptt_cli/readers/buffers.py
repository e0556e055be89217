"""Arrow arrays to numpy and back through their buffers.

pyarrow's own conversions (``to_numpy``, ``np.asarray(array)``, ``pa.array``) first ask
whether pandas is installed, and where it is, importing it to find out costs half a
second of every run (a third of reading a 72 MB CSV). Reading and writing the buffers
asks nothing and copies nothing it need not.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def text_type(arrow_type: Any) -> bool:
    """Whether an Arrow type holds text: strings, large strings, or a dictionary of them."""
    import pyarrow as pa

    if pa.types.is_dictionary(arrow_type):
        arrow_type = arrow_type.value_type
    return bool(pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type))


def numbers(array: Any, dtype: Any = np.float64, missing: float = np.nan) -> np.ndarray:
    """A fixed-width numeric array (no booleans) as numpy; missing cells hold ``missing``."""
    dtype = np.dtype(dtype)
    data = array.buffers()[1]
    if data is None or not len(array):
        return np.full(len(array), missing, dtype=dtype)
    values = np.frombuffer(
        data, dtype=dtype, count=len(array), offset=array.offset * dtype.itemsize
    )
    if array.null_count:
        return np.where(valid(array), values, np.array(missing, dtype=dtype))
    return values


def indices(array: Any) -> np.ndarray:
    """The integer indices of a dictionary array (any width) as int64."""
    import pyarrow as pa

    kind = "int" if pa.types.is_signed_integer(array.type) else "uint"
    return numbers(array, np.dtype(f"{kind}{array.type.bit_width}"), 0).astype(np.int64)


def valid(array: Any) -> np.ndarray:
    """True where the array has a value (not null)."""
    bitmap = array.buffers()[0]
    if bitmap is None or not array.null_count:
        return np.ones(len(array), dtype=bool)
    bits = np.unpackbits(
        np.frombuffer(bitmap, dtype=np.uint8), count=array.offset + len(array), bitorder="little"
    )
    return bits[array.offset :].astype(bool)


def float_array(values: np.ndarray, present: np.ndarray | None = None) -> Any:
    """float64 values as an Arrow array, null where ``present`` is False."""
    import pyarrow as pa

    values = np.ascontiguousarray(values, dtype=np.float64)
    bitmap = None
    if present is not None and not present.all():
        bitmap = pa.py_buffer(np.packbits(present, bitorder="little"))
    nulls = -1 if bitmap is not None else 0
    return pa.Array.from_buffers(
        pa.float64(), len(values), [bitmap, pa.py_buffer(values)], null_count=nulls
    )


def string_array(texts: list[str]) -> Any:
    """Python strings as an Arrow string array."""
    import pyarrow as pa

    encoded = [text.encode("utf-8") for text in texts]
    offsets = np.zeros(len(encoded) + 1, dtype=np.int32)
    np.cumsum([len(e) for e in encoded], out=offsets[1:])
    data = pa.py_buffer(b"".join(encoded))
    return pa.Array.from_buffers(pa.string(), len(texts), [None, pa.py_buffer(offsets), data])


def constant(text: str, rows: int) -> Any:
    """A dictionary array holding ``text`` in every row (a hive partition's value)."""
    import pyarrow as pa

    zeros = pa.py_buffer(np.zeros(rows, dtype=np.int32))
    codes = pa.Array.from_buffers(pa.int32(), rows, [None, zeros])
    return pa.DictionaryArray.from_arrays(codes, string_array([text]))


def float64(array: Any) -> np.ndarray | None:
    """float64 of an integer or floating array (missing cells NaN); None for other types.
    A float64 array without missing cells is Arrow's buffer itself (read-only)."""
    values = numeric(array)
    return None if values is None else values.astype(np.float64, copy=False)


def numeric(array: Any) -> np.ndarray | None:
    """An integer or floating array as numpy in its own dtype, Arrow's buffer itself
    (read-only), or float64 with NaN where cells are missing; None for other types."""
    import pyarrow as pa

    kind = array.type
    if pa.types.is_floating(kind):
        dtype = np.dtype(f"float{kind.bit_width}")
    elif pa.types.is_integer(kind):
        dtype = np.dtype(f"{'int' if pa.types.is_signed_integer(kind) else 'uint'}{kind.bit_width}")
    else:
        return None
    values = numbers(array, dtype, 0)
    if array.null_count:
        values = values.astype(np.float64)
        values[~valid(array)] = np.nan
    return values


MICROSECONDS = {"s": 1_000_000, "ms": 1_000, "us": 1}


def microseconds(array: Any) -> np.ndarray | None:
    """int64 microseconds since 1970 of a timestamp or date array (no nulls); None when a
    value is finer than a microsecond or the type is another."""
    import pyarrow as pa

    kind = array.type
    if pa.types.is_date32(kind):
        return numbers(array, np.int32, 0).astype(np.int64) * 86_400_000_000
    if pa.types.is_date64(kind):
        return numbers(array, np.int64, 0) * 1_000
    if not pa.types.is_timestamp(kind):
        return None
    raw = numbers(array, np.int64, 0)
    if kind.unit == "ns":
        whole, rest = np.divmod(raw, 1_000)
        return None if rest.any() else whole
    return raw * MICROSECONDS[kind.unit]


def local_codes(column: Any) -> tuple[np.ndarray, list[str], int]:
    """Each row's index into the column's distinct ids (as text, in order of appearance),
    and the first row without an id (-1: none)."""
    runs, lengths, keys, missing = local_runs(column)
    return np.repeat(runs, lengths), keys, missing


def local_runs(column: Any) -> tuple[np.ndarray, np.ndarray, list[str], int]:
    """The rows as runs of one id: each run's index into the column's distinct ids (as
    text, in order of appearance) and its length; and the first row without an id (-1:
    none). A grouped file has one run per id and batch, so what follows costs per run."""
    import pyarrow as pa

    if column.null_count:
        none = np.zeros(0, dtype=np.int64)
        return none, none, [], int(np.argmax(~valid(column)))
    if pa.types.is_integer(column.type):
        kind = column.type
        sign = "int" if pa.types.is_signed_integer(kind) else "uint"
        values = numbers(column, np.dtype(f"{sign}{kind.bit_width}"), 0)
        starts = run_starts(values)
        if len(starts) * 8 <= len(values):  # few runs: a Python step per run, no sort
            seen: dict[int, int] = {}
            runs = np.array([seen.setdefault(int(v), len(seen)) for v in values[starts]], np.int64)
            return runs, np.diff(np.r_[starts, len(values)]), [str(v) for v in seen], -1
        local, keys = _integer_codes(values)
    else:
        encoded = column if pa.types.is_dictionary(column.type) else column.dictionary_encode()
        keys = [str(v) for v in encoded.dictionary.to_pylist()]
        local = indices(encoded.indices)
        starts = run_starts(local)
    return local[starts], np.diff(np.r_[starts, len(local)]), keys, -1


def run_starts(values: np.ndarray) -> np.ndarray:
    """The rows where a run of equal values begins."""
    if not len(values):
        return np.zeros(0, dtype=np.int64)
    return np.flatnonzero(np.r_[True, values[1:] != values[:-1]])


def _integer_codes(values: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Scattered integer ids numbered by first appearance with one sort."""
    distinct, first, inverse = np.unique(values, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return rank[inverse.ravel()], [str(int(v)) for v in distinct[order]]
