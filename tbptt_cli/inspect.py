"""``tbptt inspect``: describe an input file (and suggest a strategy) or one of our outputs.

Returns the same facts twice: a few aligned lines for people and a JSON-able dict
(plain ints, floats, strings and lists only) for ``--json``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import shlex
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO, cast

import numpy as np

from tbptt_cli.errors import InputDataError, TbpttError
from tbptt_cli.options import InputOptions, own_first, parse_target
from tbptt_cli.plan import Plan, batch_text
from tbptt_cli.readers import next_target, repair_missing
from tbptt_cli.readers.inputs import split_compression
from tbptt_cli.readers.repairs import missing_cells
from tbptt_cli.sequences import SequenceSet, SourceInfo
from tbptt_cli.validate.common import (
    HDF5_SIGNATURE,
    attr,
    default_manifest,
    open_output,
    slabs,
)

OUTPUT_SUFFIXES = (".h5", ".hdf5")
PRACTICAL_WINDOW = 400  # as strategies.basic: past this asis warns and split is the answer
SUGGESTED_CHUNK = 200
MIN_USEFUL_BATCH = 8


def inspect_path(options: InputOptions) -> tuple[str, dict[str, Any]]:
    """Describe ``options.path``: one of our .h5 outputs, or an input read with ``options``."""
    path = options.path
    if isinstance(path, str) and path != "-" and is_output(path):
        return inspect_output(path)
    return inspect_input(options)


def is_output(path: str) -> bool:
    """An HDF5 suffix or signature; the file is then opened only if it is one of ours."""
    if Path(path).suffix.lower() in OUTPUT_SUFFIXES:
        return True
    try:
        with open(path, "rb") as stream:
            return stream.read(len(HDF5_SIGNATURE)) == HDF5_SIGNATURE
    except OSError:
        return False  # the reader names the problem


def lines(rows: list[tuple[str, str]]) -> str:
    width = max(len(key) for key, _ in rows)
    return "\n".join(f"{key:<{width}}  {value}" for key, value in rows)


def human(size: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return ""  # unreachable


# --- inputs ----------------------------------------------------------------------------


def inspect_input(
    options: InputOptions, stdin: BinaryIO | None = None
) -> tuple[str, dict[str, Any]]:
    with reader(options, stdin) as read:
        data, source, repaired, missing = read_described(options, read)
        doc = describe_input(data, source, missing)
        used = repaired[0] if repaired else options.nan
        if repaired:
            doc["nan_error"] = repaired[1]
        doc["nan"] = used
        chosen = dataclasses.replace(options, nan=used)
        # The columns the warnings name (a text id, an order the rows are out of) go into
        # the suggestion only when the input reads with them, and it is planned on that
        # read: the command runs as printed and gives the batch it says.
        hinted = dataclasses.replace(
            chosen,
            id_col=options.id_col or source.id_col_hint,
            time_col=options.time_col or source.time_col_hint,
        )
        if hinted != chosen:
            with contextlib.suppress(InputDataError):
                data, chosen = read(hinted)[0], hinted
    doc["suggestion"] = suggest(data, chosen)
    return input_text(doc), doc


Read = Callable[[InputOptions], tuple[SequenceSet, SourceInfo]]


@contextlib.contextmanager
def reader(options: InputOptions, stdin: BinaryIO | None) -> Iterator[Read]:
    """``read_input``; stdin is read once and replayed, since counting reads it again. The
    copy goes to an unnamed temporary file: stdin is never held in memory."""
    from tbptt_cli.readers import read_blocks, read_input
    from tbptt_cli.readers.spill import spill_file

    if options.path != "-":
        yield read_input
        return
    with spill_file(None) as copy:
        for block in read_blocks(stdin or sys.stdin.buffer, "-"):
            copy.write(block)

        def replay(opts: InputOptions) -> tuple[SequenceSet, SourceInfo]:
            copy.seek(0)
            return read_input(opts, stdin=cast(BinaryIO, copy))

        yield replay


def read_described(
    options: InputOptions, read_input: Read
) -> tuple[SequenceSet, SourceInfo, tuple[str, str] | None, dict[str, int]]:
    """Read as the strategy commands would, plus the raw non-finite counts per column.

    A clean file under ``--nan error`` is read once. Otherwise it is read once more with
    its missing values left in place, to count them; if ``--nan error`` refused the file,
    that raw read is repaired in memory with ``ffill``, else ``drop`` (a sequence that
    starts with a gap, which ffill refuses: dropping its steps invents no value), else
    ``zero``, so the file can still be described. A failure repair does not cure is
    raised as it was.
    """
    refused: InputDataError | None = None
    try:
        data, source = read_input(options)
        if options.nan == "error":
            return data, source, None, dict.fromkeys(columns_of(data, options), 0)
    except InputDataError as error:
        if options.nan != "error":
            raise
        refused = error
    # The raw read has no next-step targets: they are made after the repair, as a run does.
    raw_options = dataclasses.replace(options, nan="keep")
    if ahead(options):
        raw_options = dataclasses.replace(raw_options, target="none", horizon=1)
    try:
        raw, source = read_input(raw_options)
    except InputDataError:
        if refused is not None:
            raise refused from None
        raise
    missing = count_missing(raw, options)
    if refused is None:
        return data, source, None, missing
    for mode in ("ffill", "drop", "zero"):
        try:
            repaired, _ = repair_missing(mode, source.path, raw)
        except InputDataError:
            continue
        return next_target(repaired, options), source, (mode, str(refused)), missing
    raise refused


def ahead(options: InputOptions) -> bool:
    """``--target next`` or ``next:COL``: targets made from the features, not read."""
    return parse_target(options.target, options.horizon).kind == "next"


def columns_of(data: SequenceSet, options: InputOptions) -> list[str]:
    """The raw file's columns behind the features and (named) targets."""
    return [*data.feature_names, *(data.target_names if not ahead(options) else [])]


def count_missing(raw: SequenceSet, options: InputOptions) -> dict[str, int]:
    """Non-finite cells per column, counted in slabs (the values may be a memory map)."""
    arrays = [raw.values] + ([raw.targets] if raw.targets is not None else [])
    return dict(zip(columns_of(raw, options), missing_cells(arrays).tolist(), strict=True))


def length_stats(lengths: np.ndarray) -> dict[str, Any]:
    median = float(np.median(lengths)) if len(lengths) else 0.0
    return {
        "min": int(lengths.min()) if len(lengths) else 0,
        "median": int(median) if median.is_integer() else median,
        "max": int(lengths.max(initial=0)),
        "total": int(lengths.sum()),
    }


def describe_input(
    data: SequenceSet, source: SourceInfo, missing: dict[str, int]
) -> dict[str, Any]:
    lengths = data.lengths
    stats = length_stats(lengths)
    dense = data.count * stats["max"] * data.features * 4
    return {
        "kind": "input",
        "path": source.path,
        "format": source.format,
        "bytes": source.size,
        "sha256": source.sha256,
        "sequences": data.count,
        "length": stats,
        "steps": stats["total"],
        "equal_lengths": bool(len(lengths) and np.all(lengths == lengths[0])),
        "features": list(data.feature_names),
        "targets": list(data.target_names),
        "missing": missing or dict.fromkeys([*data.feature_names, *data.target_names], 0),
        "warnings": list(source.warnings),
        "memory": {
            "dense_float32_bytes": dense,
            "data_float32_bytes": stats["total"] * data.features * 4,
            "padded_fraction": round(1 - stats["total"] / (data.count * stats["max"]), 4)
            if stats["max"]
            else 0.0,
        },
    }


def suggest(data: SequenceSet, options: InputOptions) -> dict[str, Any]:
    """A strategy, the command line that runs it and the batch it gives, from the length
    profile. The command is planned here as the tool would run it, so it runs as printed
    and its batch size is the one said."""
    from tbptt_cli.params import AsisParams, DomainAcfParams, SplitParams

    stats = length_stats(data.lengths)
    longest, count = stats["max"], data.count
    chosen: tuple[str, Any, Plan] | None = None
    if count == 1 and longest > 1:
        reason = "one long series: let its ACF/PACF choose the chunk length"
        chosen = stateful_layout(data, "domain-acf", DomainAcfParams())
    elif longest > PRACTICAL_WINDOW:
        length = min(SUGGESTED_CHUNK, longest)
        reason = (
            f"sequences up to {longest} steps are past the ~{PRACTICAL_WINDOW} steps "
            f"TBPTT learns through; cut them into chunks of {length} for a stateful RNN"
        )
        chosen = stateful_layout(data, "split", SplitParams(length=length))
    if chosen is None:
        reason = (
            "equal sequences that fit one window: no padding"
            if np.all(data.lengths == longest)
            else f"{count} short sequences of {stats['min']}..{longest} steps: one padded, "
            "masked sample each"
        )
        chosen = ("asis", AsisParams(), plan_of(data, "asis", AsisParams()))
    name, params, plan = chosen
    paths = [options.path] if isinstance(options.path, str) else list(options.path or ())
    stem = "out" if paths == ["-"] else Path(split_compression(paths[0])[0]).stem
    words = [
        "tbptt",
        *name.split("-"),
        *paths,
        *changed_flags(options),
        *changed_flags(params),
        "-o",
        f"{stem}.h5",
    ]
    return {
        "strategy": name,
        "reason": reason,
        "command": " ".join(shlex.quote(w) for w in words),
        "layout": plan.batching(),
    }


# Tried in this order (each a change to the defaults) until one gives a useful batch.
LAYOUTS: tuple[dict[str, str], ...] = ({}, {"packing": "lanes"}, {"streams": "auto"})


def stateful_layout(data: SequenceSet, name: str, base: Any) -> tuple[str, Any, Plan] | None:
    """The first layout of `LAYOUTS` whose ``--batch-size auto`` reaches 8, else the one
    with the largest batch (the simpler on a tie); None when the strategy refuses the data
    (a series too short for its ACF)."""
    best: tuple[str, Any, Plan] | None = None
    for change in LAYOUTS:
        params = dataclasses.replace(base, **change)
        try:
            plan = plan_of(data, name, params)
        except TbpttError:
            return best
        if best is None or plan.batch_size > best[2].batch_size:
            best = (name, params, plan)
        if plan.batch_size >= MIN_USEFUL_BATCH:
            break
    return best


def plan_of(data: SequenceSet, name: str, params: Any) -> Plan:
    from tbptt_cli.registry import STRATEGIES

    return STRATEGIES[name].plan(data, params)  # type: ignore[no-any-return]


def changed_flags(options: Any) -> list[str]:
    """The options (reading options, or a strategy's) that differ from the defaults, as
    flags."""
    flags: list[str] = []
    for field in own_first(type(options)):
        value = getattr(options, field.name)
        if field.name == "path" or value == field.default:
            continue
        shown = ",".join(value) if isinstance(value, tuple) else str(value)
        flags += ["--" + field.name.replace("_", "-"), shown]
    return flags


def input_text(doc: dict[str, Any]) -> str:
    stats, memory = doc["length"], doc["memory"]
    missing = {k: v for k, v in doc["missing"].items() if v}
    shape = f"[{doc['sequences']}, {stats['max']}, {len(doc['features'])}]"
    rows = [
        ("file", f"{doc['path']} ({doc['format']}, {human(doc['bytes'])})"),
        ("sequences", str(doc["sequences"])),
        (
            "length",
            f"min {stats['min']}, median {stats['median']}, max {stats['max']} "
            f"({stats['total']} steps)",
        ),
        ("features", ", ".join(doc["features"])),
        ("targets", ", ".join(doc["targets"]) or "none"),
        ("missing", ", ".join(f"{k} {v}" for k, v in missing.items()) or "none"),
        (
            "memory",
            f"dense float32 {shape}: {human(memory['dense_float32_bytes'])} "
            f"({memory['padded_fraction']:.0%} padding); data alone "
            f"{human(memory['data_float32_bytes'])}",
        ),
    ]
    rows += [("warning", warning) for warning in doc["warnings"]]
    if "nan_error" in doc:
        rows.append(
            ("note", f"--nan error refuses this file; described as read with --nan {doc['nan']}")
        )
    rows += [
        ("suggestion", f"{doc['suggestion']['strategy']}: {doc['suggestion']['reason']}"),
        ("", doc["suggestion"]["command"]),
        ("", f"gives batch {batch_text(doc['suggestion']['layout'])}"),
    ]
    return lines(rows)


# --- our outputs -----------------------------------------------------------------------


def inspect_output(path: str) -> tuple[str, dict[str, Any]]:
    from tbptt_cli.digest import sha256_file

    with open_output(path) as f:
        doc = describe_output(f, path)
    manifest = default_manifest(path)
    doc["manifest"] = {"path": str(manifest), "present": manifest.exists(), "hash_matches": None}
    if manifest.exists():
        try:
            recorded = json.loads(manifest.read_text(encoding="utf-8"))["output"]["sha256"]
        except (OSError, ValueError, KeyError, TypeError):
            recorded = None
        doc["manifest"]["hash_matches"] = recorded == sha256_file(Path(path))
    return output_text(doc), doc


def describe_output(f: Any, path: str) -> dict[str, Any]:
    datasets = {
        name: {"shape": [int(n) for n in ds.shape], "dtype": str(ds.dtype)}
        for name, ds in f.items()
        if hasattr(ds, "shape")
    }
    samples, window = (int(n) for n in f["X"].shape[:2]) if "X" in datasets else (0, 0)
    sequence = f["sequence"][()] if "sequence" in f else np.zeros(0, dtype=np.int64)
    real = int(f["length"][()].astype(np.int64).sum()) if "length" in f else 0
    batch_size = int(attr(f, "batch_size", 1) or 1)
    extra = {
        key: attr(f, key)
        for key in ("k1", "k2", "stride", "grad_start", "pad_side", "ranks", "streams")
        if key in f.attrs and (key not in ("ranks", "streams") or attr(f, key) != 1)
    }
    return {
        "kind": "output",
        "path": path,
        "bytes": Path(path).stat().st_size,
        "strategy": attr(f, "strategy"),
        "datasets": datasets,
        "samples": samples,
        "window": int(attr(f, "window", window)),
        "batch_size": batch_size,
        "batches": -(-samples // batch_size),
        "stateful": bool(attr(f, "stateful", 0)),
        "packing": attr(f, "packing") or None,
        "order": attr(f, "order") or None,
        "features": json.loads(attr(f, "features", "[]")),
        "targets": json.loads(attr(f, "targets", "[]")),
        "sequences": sequences_in(f),
        "filler_rows": int((sequence < 0).sum()),
        "resets": int(f["reset"][()].astype(np.int64).sum()) if "reset" in f else 0,
        "padded_fraction": round(1 - real / (samples * window), 4) if samples * window else 0.0,
        "attributes": extra,
        "shards": _shards(f, path),
    }


def sequences_in(f: Any) -> int:
    """The sequences with a real step in the file. With --packing stream a row's
    ``sequence`` names its first piece only: the steps' own (``step_sequence``) count."""
    name = "step_sequence" if "step_sequence" in f else "sequence"
    if name not in f:
        return 0
    found = [np.unique(ds) for _, ds in slabs(f[name])]
    return int(np.count_nonzero(np.unique(np.concatenate([[-1], *found])) >= 0))


def _shards(f: Any, path: str) -> dict[str, Any] | None:
    """A sharded output's shard files (``--engine dask``), and those that are missing."""
    from tbptt_cli.shards import missing_sources, sources

    files = sources(f)
    return {"files": files, "missing": missing_sources(f, path)} if files else None


def output_text(doc: dict[str, Any]) -> str:
    manifest = doc["manifest"]
    hashed = {True: "hash matches", False: "HASH DIFFERS (run tbptt validate)", None: "unreadable"}
    shapes = ", ".join(
        f"{name} {'x'.join(map(str, d['shape']))} {d['dtype']}"
        for name, d in doc["datasets"].items()
        if name in ("X", "y", "loss_mask")
    )
    layout = "stateful" if doc["stateful"] else "stateless"
    if doc["packing"]:
        layout += f", {doc['packing']} packing, {doc['order']} order"
    rows = [
        ("file", f"{doc['path']} ({human(doc['bytes'])}), strategy {doc['strategy']}"),
        ("shapes", shapes),
        ("window", str(doc["window"])),
        ("batch size", f"{doc['batch_size']} ({doc['batches']} batches)"),
        ("layout", layout),
        (
            "samples",
            f"{doc['samples']} from {doc['sequences']} sequences, {doc['filler_rows']} filler rows",
        ),
        ("resets", str(doc["resets"])),
        ("padded", f"{doc['padded_fraction']:.1%} of steps"),
        ("features", ", ".join(doc["features"])),
        ("targets", ", ".join(doc["targets"]) or "none"),
    ]
    if doc["attributes"]:
        rows.append(("attributes", ", ".join(f"{k} {v}" for k, v in doc["attributes"].items())))
    if doc["shards"]:
        files, missing = doc["shards"]["files"], doc["shards"]["missing"]
        where = str(Path(files[0]).parent)
        found = f"{len(missing)} MISSING (run tbptt validate)" if missing else "all present"
        rows.append(("shards", f"{len(files)} in {where}, {found}"))
    state = hashed[manifest["hash_matches"]] if manifest["present"] else "missing"
    rows.append(("manifest", f"{manifest['path']}, {state}"))
    return lines(rows)
