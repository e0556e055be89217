"""Checks of the manifest against the file: hashes, datasets, layout keys and the
columnar sequence table."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from tbptt_cli.digest import sha256_file
from tbptt_cli.hdf5 import describe
from tbptt_cli.plan import ragged_arange
from tbptt_cli.validate.common import LAYOUT_KEYS, Index, attr, listed


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
    if scale_of(f) != doc.get("scale"):
        problems.append("the scale parameters in the file differ from the manifest's scale")
    return problems


def scale_of(f: h5py.File) -> dict[str, Any] | None:
    """The file's ``scale`` attribute (``--scale``), None when it was not scaled."""
    try:
        found = json.loads(attr(f, "scale", "null"))
    except (TypeError, json.JSONDecodeError):
        return {"unreadable": True}
    return found if isinstance(found, dict) else None


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
        "ranks": attr(f, "ranks"),  # None in both: a file from before --ranks and --streams
        "streams": attr(f, "streams"),
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


TABLE = ("id", "length", "first_sample", "samples", "stride")
PARTS = ("sequence", "part", "offset", "steps", "first_sample", "samples", "stride")


def columns(table: Any, names: tuple[str, ...], what: str) -> list[str]:
    """Why ``table`` is not columnar with ``names`` of one length, or nothing."""
    if not isinstance(table, dict):
        return [f"the manifest has no {what} table"]
    lacking = [c for c in names if not isinstance(table.get(c), list)]
    if lacking:
        return [f"the manifest's {what} table lacks " + ", ".join(lacking)]
    if len({len(table[c]) for c in names}) > 1:
        return [
            f"the manifest's {what} columns differ in length: "
            f"{', '.join(f'{c} {len(table[c])}' for c in names)}"
        ]
    return []


def check_sequence_table(index: Index, doc: dict[str, Any]) -> list[str]:
    """The samples of sequence i are ``first_sample[i] + j * stride[i]``, j < samples[i]
    (with --streams, those of each of its parts: see `check_part_table`)."""
    table = doc.get("sequences") or {}
    wrong_shape = columns(table, TABLE, "sequences")
    if wrong_shape:
        return wrong_shape
    n = len(table["id"])
    first, samples, stride = (np.asarray(table[c], dtype=np.int64) for c in TABLE[2:])
    parts = np.asarray(table.get("parts") or [1] * n, dtype=np.int64)
    declared = (doc.get("input") or {}).get("sequences")
    problems = [] if declared == n else [f"the manifest lists {n} sequences, its input {declared}"]
    pieces = index.pieces()
    real = (pieces.sequence >= 0) & (pieces.sequence < n)
    owner = pieces.sequence[real]
    found = np.bincount(owner, minlength=n)
    problems += listed(
        found != samples,
        lambda i: f"{index.name(i)}: {found[i]} samples in the file, {samples[i]} in the manifest",
        "sequences with another sample count",
    )
    if problems or len(parts) != n:
        return problems or ["the manifest's sequences parts column has another length"]
    rows = pieces.row[real][np.argsort(owner, kind="stable")]  # ascending per sequence
    expected = np.repeat(first, samples) + ragged_arange(samples) * np.repeat(stride, samples)
    wrong = np.zeros(n, dtype=bool)
    wrong[np.repeat(np.arange(n), samples)[rows != expected]] = True
    problems = listed(
        wrong & (parts == 1),
        lambda i: (
            f"{index.name(i)}: its samples are not first_sample {first[i]} + j * stride "
            f"{stride[i]} as the manifest says"
        ),
        "sequences placed otherwise",
    )
    return problems + check_part_table(index, doc, parts)


def check_part_table(index: Index, doc: dict[str, Any], parts: np.ndarray) -> list[str]:
    """With --streams: part p of a sequence is in the rows ``first_sample[p] + j *
    stride[p]`` (``part`` names it there) and covers ``steps[p]`` steps from ``offset[p]``."""
    table = doc.get("parts")
    if index.part is None:
        if table is None and (parts == 1).all():
            return []
        return ["the manifest lists parts of sequences but the file has no part dataset"]
    wrong_shape = columns(table, PARTS, "parts")
    if wrong_shape:
        return wrong_shape
    assert isinstance(table, dict)
    sequence, part, offset, steps, first, samples, stride = (
        np.asarray(table[c], dtype=np.int64) for c in PARTS
    )
    live = np.flatnonzero(index.sequence >= 0)
    if int(samples.sum()) != len(live) or np.any(samples < 1):
        return [f"the parts table covers {int(samples.sum())} samples, the file has {len(live)}"]
    owner = np.repeat(np.arange(len(sequence)), samples)
    rows = np.repeat(first, samples) + ragged_arange(samples) * np.repeat(stride, samples)
    inside = (rows >= 0) & (rows < len(index.sequence))
    rows = np.where(inside, rows, 0)
    holds = inside & (index.sequence[rows] == sequence[owner]) & (index.part[rows] == part[owner])
    held = np.where(holds, index.length[rows], 0)
    covered = np.bincount(owner, weights=held, minlength=len(part))
    misplaced = np.zeros(len(part), dtype=bool)
    misplaced[owner[~holds]] = True
    misplaced |= (covered != steps) | (index.offset[rows[np.cumsum(samples) - samples]] != offset)
    count = np.bincount(sequence[(sequence >= 0) & (sequence < len(parts))], minlength=len(parts))
    problems = listed(
        misplaced,
        lambda p: (
            f"{index.name(int(sequence[p]))}, part {part[p]}: not in samples first_sample "
            f"{first[p]} + j * stride {stride[p]} with {steps[p]} steps from {offset[p]}"
        ),
        "parts placed otherwise",
    )
    return problems + listed(
        count[: len(parts)] != parts,
        lambda i: f"{index.name(i)}: {count[i]} parts in the table, {parts[i]} in sequences",
        "sequences with another part count",
    )
