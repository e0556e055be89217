"""``tbptt validate``: check an output .h5 against its manifest, its own layout rules and,
with ``--against``, the input it was made from.

Index datasets ([samples] integers) are read whole; [samples, window, ...] datasets are
read slab by slab, so memory is bounded by a slab, not by the file. Checks return
one-line problems (the first few of each kind, then a count); only a file that cannot be
read, or is not one of our outputs, raises.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import h5py
import numpy as np

from tbptt_cli.digest import sha256_file
from tbptt_cli.errors import InputDataError, InputMissingError
from tbptt_cli.hdf5 import FORMAT_VERSION, describe
from tbptt_cli.options import InputOptions
from tbptt_cli.plan import Plan, ragged_arange
from tbptt_cli.sequences import SequenceSet

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
INDEX = ("X", "sequence", "offset", "length", "reset", "mask")
SLAB_BYTES = 32 << 20  # bytes of one [rows, window, ...] slab read at a time
SHOWN = 10  # problems listed per kind of failure; the rest are counted
LAYOUT_KEYS = ("samples", "window", "batch_size", "batches", "stateful", "packing", "order")


def open_output(path: str) -> h5py.File:
    """Open one of our outputs read-only; anything else is refused before it is read."""
    file = Path(path)
    if not file.exists():
        raise InputMissingError(f"{path}: no such file")
    if file.is_dir():
        raise InputMissingError(f"{path}: is a directory; expected an .h5 file written by tbptt")
    try:
        with open(file, "rb") as stream:
            head = stream.read(len(HDF5_SIGNATURE))
    except OSError as e:
        raise InputMissingError(f"{path}: cannot read ({e.strerror or e})") from None
    if head != HDF5_SIGNATURE:
        raise InputDataError(f"{path}: not an HDF5 file; give an .h5 output written by tbptt")
    try:
        f = h5py.File(file, "r")
    except OSError as e:
        raise InputDataError(f"{path}: cannot open as HDF5 ({e}); is the file complete?") from None
    if attr(f, "format") != "tbptt":
        f.close()
        raise InputDataError(
            f"{path}: not a tbptt output (no format='tbptt' attribute); only files written by "
            "tbptt can be checked"
        )
    version = attr(f, "format_version")
    if version != FORMAT_VERSION:
        f.close()
        raise InputDataError(
            f"{path}: format version {version}; this tbptt reads version {FORMAT_VERSION}, "
            "upgrade tbptt"
        )
    return f


def attr(f: h5py.File, name: str, default: Any = None) -> Any:
    """A root attribute as a plain Python value (numpy scalars unwrapped, bytes decoded)."""
    value = f.attrs.get(name, default)
    if isinstance(value, bytes):
        return value.decode()
    return value.item() if isinstance(value, np.generic) else value


def default_manifest(path: str) -> Path:
    output = Path(path)
    return output.with_name(output.stem + ".manifest.json")


def load_manifest(path: str, given: str | None) -> tuple[Path, dict[str, Any] | None, str | None]:
    """(manifest path, document or None, problem or None). A named but missing one is 66."""
    where = Path(given) if given else default_manifest(path)
    if not where.exists():
        if given:
            raise InputMissingError(f"{given}: no such manifest file")
        return where, None, f"{where}: no manifest beside the file; pass --manifest PATH"
    try:
        doc = json.loads(where.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        return where, None, f"{where}: cannot read the manifest ({e})"
    if not isinstance(doc, dict):
        return where, None, f"{where}: the manifest is not a JSON object"
    return where, doc, None


@dataclass
class Index:
    """The per-row index datasets, plus ``lead`` (the first real step) taken from ``mask``."""

    sequence: np.ndarray
    offset: np.ndarray
    length: np.ndarray
    reset: np.ndarray
    lead: np.ndarray
    window: int
    batch_size: int
    stateful: bool
    ids: list[str] | None = None  # from the manifest
    lengths: np.ndarray | None = None  # real steps of every sequence, from the manifest

    def name(self, i: int) -> str:
        if i < 0:
            return "a filler row"
        return f"sequence {self.ids[i]!r}" if self.ids and i < len(self.ids) else f"sequence {i}"


def listed(bad: np.ndarray, line: Callable[[int], str], kind: str) -> list[str]:
    """One line for each of the first SHOWN true positions of ``bad``, then a count."""
    where = np.flatnonzero(bad)
    lines = [line(i) for i in where[:SHOWN].tolist()]
    more = len(where) - len(lines)
    return lines + ([f"... and {more} more {kind}"] if more else [])


def slabs(ds: h5py.Dataset) -> Iterator[tuple[int, np.ndarray]]:
    """(first row, rows) of a [samples, ...] dataset, about SLAB_BYTES at a time."""
    for start, stop in slab_ranges(ds):
        yield start, ds[start:stop]


def slab_ranges(ds: h5py.Dataset) -> Iterator[tuple[int, int]]:
    row_bytes = max(1, int(np.prod(ds.shape[1:], dtype=np.int64)) * ds.dtype.itemsize)
    step = max(1, SLAB_BYTES // row_bytes)
    for start in range(0, ds.shape[0], step):
        yield start, min(ds.shape[0], start + step)


def validate_output(path: str, manifest: str | None, against: str | None) -> dict[str, Any]:
    """Run every check that applies; ``ok`` is true when none found a problem."""
    checked: list[str] = []
    problems: list[str] = []

    def record(name: str, found: list[str]) -> None:
        checked.append(name)
        problems.extend(found)

    with open_output(path) as f:
        where, doc, missing = load_manifest(path, manifest)
        if missing:
            problems.append(missing)
        if doc is not None:
            record("manifest", check_manifest(f, path, doc))
        unusable = malformed(f)
        if unusable:
            problems.append(f"{path}: {unusable}; not a whole output, other checks skipped")
            return report(path, where, doc, checked, problems)
        index, found = read_index(f, doc)
        record("layout", found)
        if index.stateful:
            record("state", check_state(index))
        record("coverage", check_coverage(f, index, doc))
        if doc is not None:
            record("sequences", check_sequence_table(index, doc))
        if against is not None:
            if doc is None:
                problems.append("--against needs the manifest: it records how the input was read")
            else:
                record("against", check_against(f, index, doc, against))
    return report(path, where, doc, checked, problems)


def malformed(f: h5py.File) -> str | None:
    """Why the datasets every check reads cannot be read as rows, or None."""
    absent = [name for name in INDEX if not isinstance(f.get(name), h5py.Dataset)]
    if absent:
        return f"dataset(s) {', '.join(absent)} missing"
    ranks = {"X": 3, "mask": 2, "sequence": 1, "offset": 1, "length": 1, "reset": 1}
    wrong = [f"{name} is {f[name].ndim}-D" for name, rank in ranks.items() if f[name].ndim != rank]
    samples = {len(f[name]) for name in ranks}
    if not wrong and len(samples) > 1:
        wrong.append(f"datasets disagree on the sample count ({sorted(samples)})")
    if not wrong and f["mask"].shape[1] != f["X"].shape[1]:
        wrong.append("mask and X disagree on the window")
    return ", ".join(wrong) or None


def report(
    path: str, where: Path, doc: dict[str, Any] | None, checked: list[str], problems: list[str]
) -> dict[str, Any]:
    return {
        "file": path,
        "manifest": str(where) if doc is not None else None,
        "ok": not problems,
        "checked": checked,
        "problems": problems,
    }


# --- manifest -------------------------------------------------------------------------


def check_manifest(f: h5py.File, path: str, doc: dict[str, Any]) -> list[str]:
    """Hash and size of the file, the dataset table, the layout and the recorded params."""
    problems: list[str] = []
    output = doc.get("output") or {}
    size = os.path.getsize(path)
    if output.get("size") != size:
        problems.append(f"{path}: {size} bytes, the manifest says {output.get('size')}")
    if output.get("sha256") != sha256_file(Path(path)):
        problems.append(f"{path}: sha256 differs from the manifest's; the file changed since")
    problems += check_datasets(f, output.get("datasets") or {})
    problems += check_layout_keys(f, doc.get("layout") or {})
    if doc.get("strategy") != attr(f, "strategy"):
        problems.append(
            f"strategy {attr(f, 'strategy')!r} in the file, {doc.get('strategy')!r} in the manifest"
        )
    try:
        params = json.loads(attr(f, "params", "null"))
    except (TypeError, json.JSONDecodeError):
        params = None
    if not contained(params, doc.get("params")):
        problems.append("the parameters recorded in the file differ from the manifest's params")
    return problems


def contained(part: Any, whole: Any) -> bool:
    """Every key of ``part`` is in ``whole`` with the same value (the file may record fewer
    keys than the manifest: output paths are left out so a file does not depend on them)."""
    if isinstance(part, dict):
        return isinstance(whole, dict) and all(
            key in whole and contained(value, whole[key]) for key, value in part.items()
        )
    return bool(part == whole)


def check_datasets(f: h5py.File, expected: dict[str, Any]) -> list[str]:
    found = {name: describe(ds) for name, ds in f.items() if isinstance(ds, h5py.Dataset)}
    problems = [
        f"dataset {name} is in the manifest, not in the file"
        for name in sorted(set(expected) - set(found))
    ]
    problems += [
        f"dataset {name} is in the file, not in the manifest"
        for name in sorted(set(found) - set(expected))
    ]
    for name in sorted(set(found) & set(expected)):
        want = expected[name] if isinstance(expected[name], dict) else {}
        problems += [
            f"dataset {name}: {key} {value} in the file, {want.get(key)} in the manifest"
            for key, value in found[name].items()
            if want.get(key) != value
        ]
    return problems


def check_layout_keys(f: h5py.File, layout: dict[str, Any]) -> list[str]:
    samples = int(f["X"].shape[0]) if isinstance(f.get("X"), h5py.Dataset) else None
    batch_size = attr(f, "batch_size")
    found: dict[str, Any] = {
        "samples": samples,
        "window": attr(f, "window"),
        "batch_size": batch_size,
        "batches": -(-samples // batch_size) if samples is not None and batch_size else None,
        "stateful": bool(attr(f, "stateful")),
        "packing": attr(f, "packing") or None,
        "order": attr(f, "order") or None,
    }
    problems = [
        f"layout {key}: {found[key]} in the file, {layout.get(key)} in the manifest"
        for key in LAYOUT_KEYS
        if layout.get(key) != found[key]
    ]
    if samples is not None and f["X"].ndim == 3 and f["X"].shape[1] != found["window"]:
        steps = f["X"].shape[1]
        problems.append(f"X has {steps} steps per sample, the window is {found['window']}")
    return problems


# --- layout: bounds, masks, fillers, first resets --------------------------------------


def row_runs(ds: h5py.Dataset) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per row of a [samples, window] mask: (count of 1s, first 1, one run, only 0 and 1)."""
    samples, window = ds.shape
    count = np.zeros(samples, dtype=np.int64)
    first = np.zeros(samples, dtype=np.int64)
    one_run = np.ones(samples, dtype=bool)
    binary = np.ones(samples, dtype=bool)
    for start, block in slabs(ds):
        rows = slice(start, start + len(block))
        on = block != 0
        binary[rows] = (block <= 1).all(axis=1)
        count[rows] = on.sum(axis=1)
        first[rows] = np.where(count[rows] > 0, on.argmax(axis=1), 0)
        last = window - 1 - on[:, ::-1].argmax(axis=1)
        one_run[rows] = (count[rows] == 0) | (last - first[rows] + 1 == count[rows])
    return count, first, one_run, binary


def read_index(f: h5py.File, doc: dict[str, Any] | None) -> tuple[Index, list[str]]:
    """Load the index datasets and check the invariants that hold for every file."""
    count, lead, one_run, binary = row_runs(f["mask"])
    table = (doc or {}).get("sequences") or {}
    ids, lengths = table.get("id"), table.get("length")
    index = Index(
        sequence=f["sequence"][()].astype(np.int64),
        offset=f["offset"][()].astype(np.int64),
        length=f["length"][()].astype(np.int64),
        reset=f["reset"][()].astype(np.int64),
        lead=lead,
        window=int(attr(f, "window", f["mask"].shape[1])),
        batch_size=max(1, int(attr(f, "batch_size", 1))),
        stateful=bool(attr(f, "stateful", 0)),
        ids=[str(i) for i in ids] if isinstance(ids, list) else None,
        lengths=np.asarray(lengths, dtype=np.int64) if isinstance(lengths, list) else None,
    )
    problems = bounds_problems(index)
    problems += listed(
        ~binary,
        lambda r: f"sample {r}: mask holds values other than 0 and 1",
        "samples with such a mask",
    )
    problems += listed(
        count != index.length,
        lambda r: f"sample {r}: mask has {count[r]} real steps but length says {index.length[r]}",
        "samples whose mask disagrees with length",
    )
    problems += listed(
        ~one_run,
        lambda r: f"sample {r}: mask is not one contiguous run",
        "samples with a broken mask",
    )
    first_batch = slice(0, index.batch_size)
    no_reset = (index.sequence[first_batch] >= 0) & (index.reset[first_batch] == 0)
    problems += listed(
        no_reset,
        lambda r: f"sample {r}: in the first batch but reset is 0",
        "first-batch rows without reset",
    )
    if isinstance(f.get("batch_length"), h5py.Dataset):
        problems += batch_length_problems(index, f["batch_length"][()].astype(np.int64))
    return index, problems


def bounds_problems(index: Index) -> list[str]:
    seq, offset, length, reset = index.sequence, index.offset, index.length, index.reset
    count = len(index.lengths) if index.lengths is not None else None
    outside = (seq < -1) | (seq >= count if count is not None else False)
    checks: list[tuple[np.ndarray, Callable[[int], str]]] = [
        (outside, lambda r: f"sample {r}: sequence {seq[r]} is not a sequence of the input"),
        (offset < 0, lambda r: f"sample {r}: offset {offset[r]} is negative"),
        (
            (length < 0) | (length > index.window),
            lambda r: f"sample {r}: length {length[r]} is outside the window of {index.window}",
        ),
        (
            (seq == -1) & (length != 0),
            lambda r: f"sample {r}: a filler row (sequence -1) with length {length[r]}",
        ),
        ((reset != 0) & (reset != 1), lambda r: f"sample {r}: reset is {reset[r]}, not 0 or 1"),
    ]
    return [line for bad, say in checks for line in listed(bad, say, "samples like this")]


def batch_length_problems(index: Index, batch_length: np.ndarray) -> list[str]:
    batches = -(-len(index.sequence) // index.batch_size)
    if len(batch_length) != batches:
        return [f"batch_length has {len(batch_length)} entries for {batches} batches"]
    limit = np.repeat(batch_length, index.batch_size)[: len(index.length)]
    return listed(
        index.length > limit,
        lambda r: f"sample {r}: length {index.length[r]} exceeds its batch's length {limit[r]}",
        "samples longer than their batch",
    )


# --- state continuity ------------------------------------------------------------------


def check_state(index: Index) -> list[str]:
    """Row r of batch k carries row r of batch k-1's state unless its reset is 1."""
    size = index.batch_size
    if len(index.sequence) % size:
        return [f"a stateful file holds whole batches: {len(index.sequence)} samples, batch {size}"]
    seq, offset, length, reset = (
        a.reshape(-1, size) for a in (index.sequence, index.offset, index.length, index.reset)
    )
    carried = (seq[1:] >= 0) & (reset[1:] == 0)
    foreign = (carried & (seq[1:] != seq[:-1])).ravel()
    expected = (offset[:-1] + length[:-1]).ravel()
    jump = (carried & (seq[1:] == seq[:-1])).ravel() & (offset[1:].ravel() != expected)
    row_of = np.arange(len(foreign)) + size  # flat position in batches 1.. -> sample index

    def takes_over(i: int) -> str:
        s = row_of[i]
        return (
            f"sample {s} (batch {s // size}, row {s % size}): {index.name(index.sequence[s])} "
            f"starts without a reset but the row held {index.name(index.sequence[s - size])}"
        )

    def skips(i: int) -> str:
        s = row_of[i]
        return (
            f"sample {s} (batch {s // size}, row {s % size}): {index.name(index.sequence[s])} "
            f"continues at step {index.offset[s]}, expected {expected[i]}"
        )

    return listed(foreign, takes_over, "rows that take over another row's state") + listed(
        jump, skips, "rows that skip or repeat steps"
    )


# --- coverage: nothing overlaps, nothing is lost ---------------------------------------


def coverage_mode(doc: dict[str, Any] | None) -> str:
    """exact: every step once; prefix: the first steps of each, once; partial: any, once."""
    params = (doc or {}).get("params") or {}
    strategy = params.get("strategy")
    own = params.get(strategy) if isinstance(strategy, str) else None
    if not isinstance(own, dict):
        return "exact"
    if strategy == "domain-segments" and own.get("overflow") in ("truncate", "drop"):
        return "partial"
    if own.get("remainder") == "drop" or (strategy == "asis" and own.get("truncate")):
        return "prefix"
    return "exact"


def check_coverage(f: h5py.File, index: Index, doc: dict[str, Any] | None) -> list[str]:
    """Real steps (or, for overlapping windows, trained targets) cover each sequence once."""
    mode = coverage_mode(doc)
    k1, stride = attr(f, "k1"), attr(f, "stride")
    if k1 is None or stride is None or int(stride) >= int(k1):
        return interval_problems(index, index.offset, index.length, mode, "steps")
    # Overlapping windows repeat steps by design; each target must be trained once.
    if not isinstance(f.get("loss_mask"), h5py.Dataset):
        return ["the windows overlap (stride < k1) but the file has no loss_mask"]
    count, first, one_run, binary = row_runs(f["loss_mask"])
    problems = listed(
        ~binary | ~one_run,
        lambda r: f"sample {r}: loss_mask is not one contiguous run of 1s",
        "samples with a broken loss_mask",
    )
    outside = (count > 0) & ((first < index.lead) | (first + count > index.lead + index.length))
    problems += listed(
        outside,
        lambda r: f"sample {r}: loss_mask marks padded steps",
        "samples whose loss_mask marks padding",
    )
    start = index.offset + first - index.lead
    return problems + interval_problems(index, start, count, mode, "targets")


def interval_problems(
    index: Index, start: np.ndarray, count: np.ndarray, mode: str, what: str
) -> list[str]:
    """Row r covers ``[start[r], start[r] + count[r])`` of its sequence: no overlap, and
    (by ``mode``) no gap, nothing before step 0 is lost, nothing past the end."""
    rows = np.flatnonzero((index.sequence >= 0) & (count > 0))
    order = rows[np.lexsort((start[rows], index.sequence[rows]))]
    seq, lo, hi = index.sequence[order], start[order], start[order] + count[order]
    same = seq[1:] == seq[:-1]
    problems = listed(
        same & (lo[1:] < hi[:-1]),
        lambda i: (
            f"{index.name(seq[i])}: {what} {lo[i + 1]}..{min(hi[i], hi[i + 1]) - 1} are "
            f"in both sample {order[i]} and sample {order[i + 1]}"
        ),
        "overlaps",
    )
    lengths = index.lengths
    if lengths is None:
        return problems
    total = np.append(lengths, 0)[np.minimum(seq, len(lengths))]
    problems += listed(
        hi > total,
        lambda i: (
            f"{index.name(seq[i])}: sample {order[i]} covers {what} up to {hi[i] - 1}, "
            f"past its {total[i]} steps"
        ),
        "samples past their sequence's end",
    )
    if mode == "partial":
        return problems
    heads = np.r_[True, ~same] if len(seq) else np.zeros(0, dtype=bool)
    tails = np.r_[~same, True] if len(seq) else np.zeros(0, dtype=bool)
    problems += listed(
        np.r_[False, same & (lo[1:] > hi[:-1])] if len(seq) else heads,
        lambda i: f"{index.name(seq[i])}: {what} {hi[i - 1]}..{lo[i] - 1} are in no sample",
        "gaps",
    )
    problems += listed(
        heads & (lo > 0),
        lambda i: f"{index.name(seq[i])}: {what} 0..{lo[i] - 1} are in no sample",
        "sequences that lose their first steps",
    )
    if mode == "exact":
        problems += listed(
            tails & (hi < total),
            lambda i: f"{index.name(seq[i])}: {what} {hi[i]}..{total[i] - 1} are in no sample",
            "sequences that lose their last steps",
        )
        covered = np.zeros(len(lengths), dtype=bool)
        covered[seq[seq < len(lengths)]] = True
        problems += listed(
            ~covered & (lengths > 0),
            lambda i: f"{index.name(i)}: none of its {lengths[i]} {what} is in any sample",
            "sequences in no sample",
        )
    return problems


# --- the manifest's columnar sequence table --------------------------------------------

TABLE = ("id", "length", "first_sample", "samples", "stride")


def check_sequence_table(index: Index, doc: dict[str, Any]) -> list[str]:
    """The samples of sequence i are ``first_sample[i] + j * stride[i]``, j < samples[i]."""
    table = doc.get("sequences") or {}
    lacking = [c for c in TABLE if not isinstance(table.get(c), list)]
    if lacking:
        return ["the manifest's sequences table lacks " + ", ".join(lacking)]
    n = len(table["id"])
    if any(len(table[c]) != n for c in TABLE):
        return [
            f"the manifest's sequences columns differ in length: "
            f"{', '.join(f'{c} {len(table[c])}' for c in TABLE)}"
        ]
    first, samples, stride = (np.asarray(table[c], dtype=np.int64) for c in TABLE[2:])
    declared = (doc.get("input") or {}).get("sequences")
    problems = [] if declared == n else [f"the manifest lists {n} sequences, its input {declared}"]
    real = np.flatnonzero((index.sequence >= 0) & (index.sequence < n))
    owner = index.sequence[real]
    found = np.bincount(owner, minlength=n)
    problems += listed(
        found != samples,
        lambda i: f"{index.name(i)}: {found[i]} samples in the file, {samples[i]} in the manifest",
        "sequences with another sample count",
    )
    if problems:
        return problems
    rows = real[np.argsort(owner, kind="stable")]  # ascending sample index within a sequence
    expected = np.repeat(first, samples) + ragged_arange(samples) * np.repeat(stride, samples)
    wrong = np.zeros(n, dtype=bool)
    wrong[np.repeat(np.arange(n), samples)[rows != expected]] = True
    return listed(
        wrong,
        lambda i: (
            f"{index.name(i)}: its samples are not first_sample {first[i]} + j * stride "
            f"{stride[i]} as the manifest says"
        ),
        "sequences placed otherwise",
    )


# --- --against: rebuild every row from the input ---------------------------------------


def input_options(doc: dict[str, Any], path: str) -> InputOptions:
    """The manifest's ``params.input`` (how the input was read), with another path."""
    given = (doc.get("params") or {}).get("input") or {}
    known = set(InputOptions.__dataclass_fields__)
    values: dict[str, Any] = {
        k: tuple(v) if isinstance(v, list) else v for k, v in given.items() if k in known
    }
    values["path"] = path
    return InputOptions(**values)


def keep_columns(doc: dict[str, Any]) -> tuple[str, ...]:
    """Columns the strategy kept beside the features (they change the default features)."""
    from tbptt_cli.registry import STRATEGIES

    params = doc.get("params") or {}
    name = str(params.get("strategy"))
    own = params.get(name)
    if name not in STRATEGIES or not isinstance(own, dict):
        return ()
    try:
        return tuple(STRATEGIES[name].keep_columns(SimpleNamespace(**own)))
    except AttributeError:
        return ()


def part_written(data: SequenceSet, doc: dict[str, Any]) -> SequenceSet:
    """A --val-by time split writes the head of each sequence to one file, the rest to the
    other; sequence ids alone cannot tell which, the manifest's ``val`` key can."""
    val = doc.get("val")
    if not isinstance(val, dict) or val.get("by") != "time":
        return data
    fraction = val.get("fraction")
    if not isinstance(fraction, int | float):
        return data
    head, rest = data.split_time(float(fraction))
    return rest if "of" in val else head


def match_sequences(data: SequenceSet, index: Index) -> tuple[SequenceSet, np.ndarray, list[str]]:
    """The input's sequences in the manifest's order (by id), their lengths (-1: not found)."""
    names = index.ids if index.ids is not None else list(data.ids)
    position = {name: i for i, name in reversed(list(enumerate(data.ids)))}
    found = np.array([position.get(name, -1) for name in names], dtype=np.int64)
    matched = data.subset(np.maximum(found, 0)) if len(data.ids) else data
    lengths = np.where(found >= 0, matched.lengths, -1)
    problems = listed(
        found < 0,
        lambda i: f"{index.name(i)} is not in the input",
        "sequences missing from the input",
    )
    recorded = index.lengths
    if recorded is not None and len(recorded) == len(lengths):
        problems += listed(
            (found >= 0) & (lengths != recorded),
            lambda i: (
                f"{index.name(i)}: {lengths[i]} steps in the input, {recorded[i]} in the manifest"
            ),
            "sequences of another length",
        )
    return matched, lengths, problems


def check_against(f: h5py.File, index: Index, doc: dict[str, Any], against: str) -> list[str]:
    """Gather every row again from the input and compare X (and y) exactly, padding included."""
    from tbptt_cli.materialize import gather
    from tbptt_cli.readers import read_input

    data, _ = read_input(input_options(doc, against), keep=keep_columns(doc))
    data, lengths, problems = match_sequences(part_written(data, doc), index)
    seq = index.sequence
    known = np.append(lengths, -1)[np.where((seq >= 0) & (seq < len(lengths)), seq, len(lengths))]
    fits = (seq == -1) | (index.offset + index.length <= known)
    problems += listed(
        ~fits,
        lambda r: (
            f"sample {r}: {index.name(seq[r])} has no steps {index.offset[r]}.."
            f"{index.offset[r] + index.length[r] - 1} in the input"
        ),
        "samples the input cannot fill",
    )
    has_y = isinstance(f.get("y"), h5py.Dataset)
    if has_y != (data.targets is not None):
        problems.append(
            f"the file {'has' if has_y else 'has no'} y but the input read with the "
            f"manifest's options {'has no' if has_y else 'has a'} target"
        )
    plan = plan_of(index, np.where(fits, index.length, 0))
    names = {"X": json.loads(attr(f, "features", "[]")), "y": json.loads(attr(f, "targets", "[]"))}
    differs = Mismatches(index, len(lengths), names)
    for start, stop in slab_ranges(f["X"]):
        part = gather(plan, data, start, stop, f["X"].dtype)
        differs.compare("X", f["X"][start:stop], part.X, start, fits[start:stop])
        if has_y and part.y is not None:
            differs.compare("y", f["y"][start:stop], part.y, start, fits[start:stop])
    return problems + differs.lines()


def plan_of(index: Index, length: np.ndarray) -> Plan:
    """The file's rows as a Plan, so `materialize.gather` rebuilds them from the input."""
    return Plan(
        sequence=index.sequence,
        offset=index.offset,
        length=length.astype(np.int32),
        reset=index.reset.astype(np.uint8),
        lead=index.lead.astype(np.int32),
        window=index.window,
        batch_size=index.batch_size,
        stateful=index.stateful,
    )


class Mismatches:
    """The first differing step of each sequence, in file order (fillers count as one)."""

    def __init__(self, index: Index, sequences: int, names: dict[str, list[str]]) -> None:
        self.index, self.names = index, names
        self.seen = np.zeros(sequences + 1, dtype=bool)  # last slot: filler rows
        self.shown: list[str] = []

    def compare(
        self, name: str, got: np.ndarray, want: np.ndarray, start: int, fits: np.ndarray
    ) -> None:
        diff = got != want
        if got.dtype.kind == "f":
            diff &= ~(np.isnan(got) & np.isnan(want))
        at_step = diff.reshape(len(diff), diff.shape[1], -1).any(axis=2)
        rows = np.flatnonzero(at_step.any(axis=1) & fits)
        seq = self.index.sequence[start + rows]
        slot = np.where(seq >= 0, seq, len(self.seen) - 1)
        _, first = np.unique(slot, return_index=True)  # the first row of each sequence
        new = first[~self.seen[slot[first]]]
        self.seen[slot] = True
        for row in rows[np.sort(new)][: SHOWN - len(self.shown)].tolist():
            t = int(at_step[row].argmax())
            feature = int(diff[row, t].reshape(-1).argmax())
            self.shown.append(
                self.line(
                    name,
                    start + row,
                    t,
                    feature,
                    got[row, t].reshape(-1)[feature],
                    want[row, t].reshape(-1)[feature],
                )
            )

    def line(self, name: str, sample: int, t: int, feature: int, got: Any, want: Any) -> str:
        index = self.index
        column = self.names[name][feature] if feature < len(self.names[name]) else feature
        lead, length = index.lead[sample], index.length[sample]
        if not lead <= t < lead + length:
            return (
                f"sample {sample}: {name} holds {got} at padded time {t} (feature {column}); "
                "padding must be 0"
            )
        step = index.offset[sample] + t - lead
        return (
            f"{index.name(index.sequence[sample])}: {name} differs from the input at step "
            f"{step} (sample {sample}, time {t}, feature {column}: {got} in the file, "
            f"{want} in the input)"
        )

    def lines(self) -> list[str]:
        more = int(self.seen.sum()) - len(self.shown)
        return self.shown + ([f"... and {more} more sequences that differ"] if more > 0 else [])
