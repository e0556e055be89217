"""The JSON sidecar: what was read, what was written, and how to train on it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from tbptt_cli import __version__
from tbptt_cli.plan import Plan, stateless_hints
from tbptt_cli.sequences import SequenceSet, SourceInfo

SCHEMA_VERSION = 1


def tool_info() -> dict[str, str]:
    return {
        "name": "tbptt",
        "version": __version__,
        "numpy": np.__version__,
        "h5py": h5py.__version__,
        "hdf5": h5py.version.hdf5_version,
    }


def sequence_table(plan: Plan, data: SequenceSet) -> dict[str, list[Any]]:
    """Columnar: the samples of sequence i are ``first_sample[i] + j * stride[i]`` (with
    ``--streams``, those of each of its ``parts[i]`` parts: see `part_table`)."""
    pieces = plan.pieces(0, plan.samples)
    real = pieces.sequence >= 0
    table = progressions(pieces.sequence[real], pieces.row[real], data.count)
    parts = np.ones(data.count, dtype=np.int64)
    if plan.part is not None:
        live = plan.sequence >= 0
        parts = np.zeros(data.count, dtype=np.int64)
        np.maximum.at(parts, plan.sequence[live], plan.part[live].astype(np.int64) + 1)
    return {"id": list(data.ids), "length": data.lengths.tolist(), **table, "parts": parts.tolist()}


def part_table(plan: Plan) -> dict[str, list[Any]] | None:
    """With ``--streams``: which part of which sequence each row holds. Part p covers
    steps ``offset[p] : offset[p] + steps[p]`` of ``sequence[p]``, in the samples
    ``first_sample[p] + j * stride[p]``, j < ``samples[p]``."""
    if plan.part is None:
        return None
    live = np.flatnonzero(plan.sequence >= 0)
    most = int(plan.part.max(initial=0)) + 1
    found, owner = np.unique(plan.sequence[live] * most + plan.part[live], return_inverse=True)
    start = np.full(len(found), np.iinfo(np.int64).max)
    np.minimum.at(start, owner, plan.offset[live])
    steps = np.bincount(owner, weights=plan.length[live], minlength=len(found))
    return {
        "sequence": (found // most).tolist(),
        "part": (found % most).tolist(),
        "offset": start.tolist(),
        "steps": steps.astype(np.int64).tolist(),
        **progressions(owner, live, len(found)),
    }


def progressions(owner: np.ndarray, rows: np.ndarray, n: int) -> dict[str, list[int]]:
    """For owners 0..n-1 of ``rows`` (ascending): first row, row count and the stride
    between their first two rows (0 with fewer than two, -1 as first with none)."""
    by_owner = rows[np.argsort(owner, kind="stable")]
    samples = np.bincount(owner, minlength=n)
    if not len(by_owner):
        return {"first_sample": [-1] * n, "samples": samples.tolist(), "stride": [0] * n}
    begin = np.cumsum(samples) - samples
    top = len(by_owner) - 1
    first = np.where(samples > 0, by_owner[np.minimum(begin, top)], -1)
    second = by_owner[np.minimum(begin + 1, top)]
    stride = np.where(samples > 1, second - first, 0)
    return {"first_sample": first.tolist(), "samples": samples.tolist(), "stride": stride.tolist()}


def reset_every(plan: Plan) -> int | None:
    """Batches between whole-batch resets of each rank when that is regular (block
    packing), else null."""
    if not plan.stateful:
        return 1
    if plan.packing != "block" or plan.samples == 0:
        return None
    whole = np.all(plan.reset.reshape(-1, plan.ranks, plan.batch_size) != 0, axis=2)
    gaps: set[int] = set()
    for rank in range(plan.ranks):
        starts = np.flatnonzero(whole[:, rank])
        gaps.update(np.diff(np.append(starts, len(whole))).tolist())
    return gaps.pop() if len(gaps) == 1 else None


def layout(plan: Plan) -> dict[str, Any]:
    return {
        "samples": plan.samples,
        "window": plan.window,
        "batch_size": plan.batch_size,
        "batches": plan.batches,
        "stateful": plan.stateful,
        "packing": plan.packing,
        "order": plan.order,
        "reset_every": reset_every(plan),
        "ranks": plan.ranks,
        "batches_per_rank": plan.batches // plan.ranks,
        "streams": plan.streams,
        "filler_rows": plan.filler_rows,
        "filler_share": round(plan.filler_share, 6),
        "padded_share": round(plan.padded_share, 6),
    }


def batch_size_hints(plan: Plan) -> dict[str, Any]:
    if plan.stateful:
        return {"recommended": plan.batch_size, "required": plan.batch_size}
    return {"recommended": plan.batch_size, "valid": stateless_hints(plan.samples)}


def input_section(data: SequenceSet, source: SourceInfo) -> dict[str, Any]:
    return {
        "path": source.path,
        "format": source.format,
        "size": source.size,
        "sha256": source.sha256,
        "files": [{"path": f.path, "size": f.size, "sha256": f.sha256} for f in source.files],
        "sequences": data.count,
        "steps": data.steps,
        "features": list(data.feature_names),
        "target": list(data.target_names),
        **source.details,
    }


def build(
    plan: Plan,
    data: SequenceSet,
    source: SourceInfo,
    strategy: str,
    params: dict[str, Any],
    output: Path,
    output_name: str,
    output_sha256: str,
    datasets: dict[str, Any],
    extra: dict[str, Any],
) -> dict[str, Any]:
    manifest: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "tool": tool_info(),
        "strategy": strategy,
        "params": params,
        "input": input_section(data, source),
        "output": {
            "file": output_name,
            "size": output.stat().st_size,
            "sha256": output_sha256,
            "datasets": datasets,
        },
        "layout": layout(plan),
        "sequences": sequence_table(plan, data),
        **({"parts": parts} if (parts := part_table(plan)) is not None else {}),
        "batch_size_hints": batch_size_hints(plan),
        "warnings": [*source.warnings, *plan.warnings],
    }
    if data.scaling is not None:
        manifest["scale"] = data.scaling.document(data)
    manifest.update(extra)
    return manifest


def dumps(manifest: dict[str, Any]) -> str:
    return json.dumps(manifest, sort_keys=True, indent=2) + "\n"
