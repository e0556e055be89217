"""Sharded outputs: a plan's rows cut into shard files that are written apart (by Dask
workers), and one file of HDF5 virtual datasets (VDS) that reads them as one output.

``OUT.h5`` holds the root attributes and the index datasets exactly as a regular output
does; its X, y, mask and loss_mask are virtual datasets over the shards
``OUT.h5.d/<token>/part-NNNNN.h5``, named relative to OUT.h5's folder, so the two move
together. The token names the command and its input: a run commits a new token folder
beside the old one, then OUT.h5, and removes the old folder last, so a run killed at any
point leaves the old OUT.h5 reading its own shards.

A virtual dataset whose source file is missing reads fill values without any error
(h5py issue 1546, HDFGroup/hdf5 issue 5088), and HDF5 even falls back to a file of that
relative name under the current directory: `missing_sources` finds them first.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from tbptt_cli.plan import Plan

SHARD_BYTES = 64 << 20  # bytes of X a shard aims at; cut where a block of batches starts
# The [samples, window, ...] datasets: the shards hold their rows.
VIRTUAL = ("X", "y", "mask", "loss_mask", "step_reset", "step_sequence")
TOKEN = re.compile(r"[0-9a-f]{16}")  # a shard folder's name (see `token`)


@dataclass(frozen=True)
class Shard:
    """Rows ``start:stop`` of an output, in ``file`` (relative to the output's folder)."""

    file: str
    start: int
    stop: int
    size: int = 0
    sha256: str = ""

    def listed(self) -> dict[str, Any]:
        """The manifest's entry."""
        return {
            "file": self.file,
            "rows": [self.start, self.stop],
            "size": self.size,
            "sha256": self.sha256,
        }


def folder(output: Path) -> Path:
    """``OUT.h5.d``: where the shards of ``OUT.h5`` live."""
    return output.with_name(output.name + ".d")


def ours(path: Path) -> bool:
    """Whether ``path`` is a shard folder of ours: token folders (and hidden temp ones)."""
    return path.is_dir() and all(
        entry.is_dir() and (entry.name.startswith(".") or TOKEN.fullmatch(entry.name))
        for entry in path.iterdir()
    )


def token(recorded: dict[str, Any], input_sha256: str) -> str:
    """The shard folder's name: the same command on the same input gives the same name
    (and the same bytes), anything else another folder."""
    key = json.dumps({"params": recorded, "input": input_sha256}, sort_keys=True)
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def ranges(plan: Plan, row_bytes: int) -> list[tuple[int, int]]:
    """Contiguous row ranges of at least ``SHARD_BYTES`` of X each (but the last), cut
    between batches: at the next block start (every row resets) if one comes within
    another ``SHARD_BYTES``, else at once; and only between groups of ``ranks`` batches
    (one batch of every rank)."""
    batch = plan.batch_size * plan.ranks
    groups = -(-plan.samples // batch)
    per = max(1, SHARD_BYTES // max(batch * row_bytes, 1))  # groups per shard, at least
    whole = np.zeros(groups, dtype=bool)
    reset = plan.reset[: groups * batch if plan.samples % batch == 0 else (groups - 1) * batch]
    whole[: len(reset) // batch] = reset.reshape(-1, batch).all(axis=1)
    blocks = np.flatnonzero(whole)
    cuts = [0]
    while cuts[-1] + per < groups:
        low = cuts[-1] + per
        i = int(np.searchsorted(blocks, low))
        cuts.append(int(blocks[i]) if i < len(blocks) and blocks[i] < low + per else low)
    cuts = [c for c in cuts if c < groups] + [groups]
    return [(a * batch, min(b * batch, plan.samples)) for a, b in zip(cuts, cuts[1:], strict=False)]


def sub_plan(plan: Plan, start: int, stop: int) -> Plan:
    """Rows ``start:stop`` of ``plan`` (whole batches) as a plan of their own."""
    rows = slice(start, stop)
    batch_length = plan.batch_length
    if batch_length is not None:
        batch_length = batch_length[start // plan.batch_size : -(-stop // plan.batch_size)]
    return replace(
        plan,
        sequence=plan.sequence[rows],
        offset=plan.offset[rows],
        length=plan.length[rows],
        reset=plan.reset[rows],
        lead=plan.lead[rows],
        batch_length=batch_length,
        part=None if plan.part is None else plan.part[rows],
        segments=None if plan.segments is None else plan.segments.rows(start, stop),
    )


def write_virtual(
    f: h5py.File, shards: list[Shard], shapes: dict[str, tuple[tuple[int, ...], np.dtype]]
) -> None:
    """One virtual dataset per entry of ``shapes`` (name: full shape and dtype), row
    ranges mapped to the shards. X and y read NaN where a shard cannot be opened."""
    for name, (shape, dtype) in shapes.items():
        dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        dcpl.set_layout(h5py.h5d.VIRTUAL)
        dcpl.set_obj_track_times(False)  # no timestamps: the same shards, the same bytes
        if dtype.kind == "f":
            dcpl.set_fill_value(np.array([np.nan], dtype=dtype))
        for shard in shards:
            rows = (shard.stop - shard.start, *shape[1:])
            where = h5py.h5s.create_simple(shape)
            where.select_hyperslab((shard.start,) + (0,) * (len(shape) - 1), rows)
            source = h5py.h5s.create_simple(rows)
            dcpl.set_virtual(where, shard.file.encode(), name.encode(), source)
        h5py.h5d.create(
            f.id,
            name.encode(),
            h5py.h5t.py_create(dtype, logical=True),
            h5py.h5s.create_simple(shape),
            dcpl=dcpl,
        )


def sources(f: h5py.File) -> list[str]:
    """The source files of the file's virtual datasets, as recorded (relative), sorted."""
    found: set[str] = set()
    for name in VIRTUAL:
        ds = f.get(name)
        if isinstance(ds, h5py.Dataset) and ds.is_virtual:
            found.update(m.file_name for m in ds.virtual_sources())
    return sorted(found)


def missing_sources(f: h5py.File, path: str | os.PathLike[str]) -> list[str]:
    """The source files that do not exist beside ``path`` (where HDF5 looks first)."""
    here = Path(path).parent
    return [name for name in sources(f) if not (here / name).is_file()]
