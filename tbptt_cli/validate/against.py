"""``--against INPUT``: rebuild every row from the input and compare exactly."""

from __future__ import annotations

import json
from dataclasses import replace
from types import SimpleNamespace
from typing import Any

import h5py
import numpy as np

from tbptt_cli.options import InputOptions
from tbptt_cli.plan import Plan, Segments
from tbptt_cli.scaling import Scaling
from tbptt_cli.sequences import SequenceSet
from tbptt_cli.validate.common import SHOWN, Index, attr, listed, slab_ranges
from tbptt_cli.validate.manifest import scale_of


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
    scale = scale_of(f)
    if scale is not None:  # the input as it was scaled on its way into the file
        try:
            data = replace(data, scaling=Scaling.from_document(scale))
        except (KeyError, TypeError, ValueError):
            return [*problems, "the file's scale attribute cannot be read"]
    pieces = index.pieces()
    seq = pieces.sequence
    known = np.append(lengths, -1)[np.where((seq >= 0) & (seq < len(lengths)), seq, len(lengths))]
    fills = (seq == -1) | (pieces.offset + pieces.length <= known)
    problems += listed(
        ~fills,
        lambda p: (
            f"sample {pieces.row[p]}: {index.name(seq[p])} has no steps {pieces.offset[p]}.."
            f"{pieces.offset[p] + pieces.length[p] - 1} in the input"
        ),
        "samples the input cannot fill",
    )
    fits = np.ones(len(index.sequence), dtype=bool)
    fits[pieces.row[~fills]] = False
    has_y = isinstance(f.get("y"), h5py.Dataset)
    if has_y != (data.targets is not None):
        problems.append(
            f"the file {'has' if has_y else 'has no'} y but the input read with the "
            f"manifest's options {'has no' if has_y else 'has a'} target"
        )
    plan = plan_of(index, replace(pieces, length=np.where(fills, pieces.length, 0)))
    names = {"X": json.loads(attr(f, "features", "[]")), "y": json.loads(attr(f, "targets", "[]"))}
    differs = Mismatches(index, len(lengths), names)
    for start, stop in slab_ranges(f["X"]):
        part = gather(plan, data, start, stop, f["X"].dtype)
        differs.compare("X", f["X"][start:stop], part.X, start, fits[start:stop])
        if has_y and part.y is not None:
            differs.compare("y", f["y"][start:stop], part.y, start, fits[start:stop])
    return problems + differs.lines()


def plan_of(index: Index, pieces: Segments) -> Plan:
    """The file's rows as a Plan, so `materialize.gather` rebuilds them from the input."""
    one_per_row = index.segments is None
    return Plan(
        sequence=index.sequence,
        offset=index.offset,
        length=pieces.length.astype(np.int32) if one_per_row else index.length,
        reset=index.reset.astype(np.uint8),
        lead=index.lead.astype(np.int32),
        window=index.window,
        batch_size=index.batch_size,
        stateful=index.stateful,
        segments=None if one_per_row else pieces,
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
        held = index.step_at(sample, t)
        if held is None:
            return (
                f"sample {sample}: {name} holds {got} at padded time {t} (feature {column}); "
                "padding must be 0"
            )
        sequence, step = held
        return (
            f"{index.name(sequence)}: {name} differs from the input at step "
            f"{step} (sample {sample}, time {t}, feature {column}: {got} in the file, "
            f"{want} in the input)"
        )

    def lines(self) -> list[str]:
        more = int(self.seen.sum()) - len(self.shown)
        return self.shown + ([f"... and {more} more sequences that differ"] if more > 0 else [])
