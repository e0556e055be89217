"""``tbptt validate``: check an output .h5 against its manifest, its own layout rules and,
with ``--against``, the input it was made from.

Index datasets ([samples] integers) are read whole; [samples, window, ...] datasets are
read slab by slab, so memory is bounded by a slab, not by the file. Checks return
one-line problems (the first few of each kind, then a count); only a file that cannot be
read, or is not one of our outputs, raises.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import h5py

from tbptt_cli.shards import sources
from tbptt_cli.validate.against import check_against
from tbptt_cli.validate.common import INDEX, load_manifest, open_output
from tbptt_cli.validate.layout import check_coverage, check_state, read_index
from tbptt_cli.validate.manifest import check_manifest, check_sequence_table, check_shards


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
        if sources(f):  # a sharded output (--engine dask)
            found, missing_shard = check_shards(f, path, doc)
            record("shards", found)
            if missing_shard:
                problems.append(f"{path}: shards missing; other checks skipped")
                return report(path, where, doc, checked, problems)
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
