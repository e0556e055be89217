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
    """Columnar: the samples of sequence i are ``first_sample[i] + j * stride[i]``."""
    n = data.count
    real = np.flatnonzero(plan.sequence >= 0)
    owner = plan.sequence[real]
    by_owner = real[np.argsort(owner, kind="stable")]
    samples = np.bincount(owner, minlength=n)
    begin = np.concatenate([[0], np.cumsum(samples)[:-1]])
    first = np.where(samples > 0, by_owner[np.minimum(begin, max(len(by_owner) - 1, 0))], -1)
    second = by_owner[np.minimum(begin + 1, max(len(by_owner) - 1, 0))] if len(by_owner) else first
    stride = np.where(samples > 1, second - first, 0)
    return {
        "id": list(data.ids),
        "length": data.lengths.tolist(),
        "first_sample": first.tolist() if len(by_owner) else [-1] * n,
        "samples": samples.tolist(),
        "stride": stride.tolist() if len(by_owner) else [0] * n,
    }


def reset_every(plan: Plan) -> int | None:
    """Batches between whole-batch resets when that is regular (block packing), else null."""
    if not plan.stateful:
        return 1
    if plan.packing != "block" or plan.samples == 0:
        return None
    whole = np.flatnonzero(plan.reset.reshape(-1, plan.batch_size).all(axis=1))
    gaps = np.diff(np.append(whole, plan.batches))
    return int(gaps[0]) if len(gaps) and np.all(gaps == gaps[0]) else None


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
    }


def batch_size_hints(plan: Plan) -> dict[str, Any]:
    if plan.stateful:
        return {"recommended": plan.batch_size, "required": plan.batch_size}
    recommended, valid = stateless_hints(plan.samples)
    return {"recommended": recommended, "valid": valid}


def input_section(data: SequenceSet, source: SourceInfo) -> dict[str, Any]:
    return {
        "path": source.path,
        "format": source.format,
        "size": source.size,
        "sha256": source.sha256,
        "sequences": data.count,
        "steps": data.steps,
        "features": list(data.feature_names),
        "target": list(data.target_names),
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
        "batch_size_hints": batch_size_hints(plan),
        "warnings": list(plan.warnings),
    }
    if data.scaling is not None:
        manifest["scale"] = data.scaling.document(data)
    manifest.update(extra)
    return manifest


def dumps(manifest: dict[str, Any]) -> str:
    return json.dumps(manifest, sort_keys=True, indent=2) + "\n"
