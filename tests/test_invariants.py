"""What every written file promises, checked from the file and its manifest alone.

Each input step says where it comes from: feature ``a`` is ``1000 * sequence + step`` and
feature ``b`` another function of both. For random ragged inputs (NPZ, or a CSV whose rows
are shuffled) and random combinations of the options that change the layout, every file
written must (1) hold each real step of each sequence where the contract puts it, with its
own values, and nothing else under the mask; (2) when stateful, continue row r of batch k
in row r of batch k+1 (per rank), resetting exactly where a sequence or a part starts;
(3) hold in ``y`` the value ``h`` steps ahead in the same sequence; (4) keep the validation
part apart from (with ``--val-by time``: after) the training part, with ``--scale`` fitted
on the training part only; (5) agree with its manifest.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import re
import tempfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from hypothesis import Phase, event, given, settings
from hypothesis import strategies as st
from test_reference_more import read_h5

from tbptt_cli.cli import run_main

CODE = 1000  # feature a = CODE * sequence + step
SETTINGS = settings(
    max_examples=int(os.environ.get("TBPTT_INVARIANT_EXAMPLES", 120)),  # more to hunt
    deadline=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink],
)
pytestmark = pytest.mark.usefixtures("one_batch_per_chunk_and_slab")


def value(i: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Step t of sequence i, ``[..., 3]``, exact in float32: features a and b, and c, a
    column that can be the target."""
    a = CODE * np.asarray(i, dtype=np.float64) + t
    return np.stack([a, (7 * i + 3 * t) % 11 - 5 + t / 1024, -a - 0.5], axis=-1)


def steps_of(i: int, length: int) -> np.ndarray:
    return value(np.full(length, i), np.arange(length))


@dataclass
class Case:
    """The input and the options of a run, as far as the checks need them."""

    lengths: list[int]
    fmt: str = "npz"
    features: list[int] = field(default_factory=lambda: [0, 1])  # columns of X (CSV: any order)
    target: str = "none"  # none | next (--target next:COLS --horizon H) | column (--target c)
    horizon: int = 0
    target_cols: list[int] = field(default_factory=list)  # the columns y holds
    val_by: str | None = None
    val_fraction: float = 0.0
    scale: str = "none"
    dtype: str = "float32"
    boundaries: list[list[int]] | None = None  # domain segments: the eos column

    @property
    def usable(self) -> list[int]:
        return [max(n - self.horizon, 0) for n in self.lengths]

    def write(self, folder: Path) -> Path:
        data = [steps_of(i, n) for i, n in enumerate(self.lengths)]
        if self.fmt == "npz":
            path = folder / "in.npz"
            values = np.concatenate(data)[:, :2]
            np.savez(path, values=values, lengths=self.lengths, ids=np.arange(len(data)) + 100)
            return path
        eos = self.boundaries or [[0] * n for n in self.lengths]
        rows = [
            ",".join([f"s{i}", str(t), *map(repr, x[t].tolist()), str(eos[i][t])]) + "\n"
            for i, x in enumerate(data)
            for t in range(len(x))
        ]
        order = np.random.default_rng(len(rows)).permutation(len(rows))  # --time-col sorts
        path = folder / "in.csv"
        path.write_text("seq,t,a,b,c,eos\n" + "".join(rows[k] for k in order))
        return path

    def input_index(self, ident: str) -> int:
        return int(ident[1:]) if self.fmt == "csv" else int(ident) - 100

    def argv(self, source: Path) -> list[str]:
        args = [str(source), "--scale", self.scale, "--dtype", self.dtype, "-q", "--json"]
        names = "abc" if self.fmt == "csv" else ["x0", "x1"]
        if self.fmt == "csv":
            features = ",".join(names[j] for j in self.features)
            args += ["--id-col", "seq", "--time-col", "t", "--features", features]
        if self.target == "next":
            cols = ",".join(names[j] for j in self.target_cols)
            args += ["--target", f"next:{cols}", "--horizon", str(self.horizon)]
        elif self.target == "column":
            args += ["--target", "c"]
        if self.val_by:
            args += ["--val-by", self.val_by, "--val-fraction", str(self.val_fraction)]
        return args


def run(case: Case, folder: Path, command: list[str], *args: object) -> tuple[int, str, dict]:
    """Exit code, stderr and the --json summary of one run in-process."""
    argv = [*command, *case.argv(case.write(folder)), *map(str, args)]
    with (
        contextlib.redirect_stderr(io.StringIO()) as err,
        contextlib.redirect_stdout(io.StringIO()) as out,
    ):
        code = run_main(argv)
    return code, err.getvalue(), json.loads(out.getvalue())


def validates(path: Path, case: Case, folder: Path) -> bool:
    """``tbptt validate --against`` the input agrees that the file is whole."""
    with contextlib.redirect_stderr(io.StringIO()):
        return run_main(["validate", str(path), "--against", str(case.write(folder))]) == 0


def parts(case: Case, val_ids: set[int] | None = None, val: bool = False) -> dict:
    """Input sequence -> (first step, steps) of the part of it a file holds: the whole
    usable sequence, its first or last steps (--val-by time), or none of it."""
    found = {}
    for i, n in enumerate(case.usable):
        if case.val_by == "time":
            head = math.floor(n * (1 - case.val_fraction))
            found[i] = (head, n - head) if val else (0, head)
        elif val_ids is None or (i in val_ids) == val:
            found[i] = (0, n)
    return found


# One output file, decoded ---------------------------------------------------------------------


class Written:
    """An output file and its manifest, every masked-in step decoded back to the input
    (``seq``, ``step``: -1 on padding) once X and y are known to hold exactly its values."""

    def __init__(self, path: Path, case: Case, part: dict[int, tuple[int, int]]) -> None:
        self.path, self.case, self.part = path, case, part
        self.f = read_h5(path)  # which checks that the manifest's sha256 is the file's
        self.doc = json.loads(path.with_name(path.stem + ".manifest.json").read_text())
        self.attrs = self.f["attrs"]
        self.ids = [case.input_index(i) for i in self.doc["sequences"]["id"]]
        self.mask = self.f["mask"].astype(bool)
        self.seq, self.step = self.decode()
        self.rel = self.step - np.vectorize(lambda s: part[s][0] if s >= 0 else 0)(self.seq)

    def scaling(self) -> tuple[np.ndarray, ...]:
        """(center, scale, target_center, target_scale); 0 and 1 without --scale."""
        if "scale" not in self.attrs:
            assert self.case.scale == "none" and "scale" not in self.doc
            targets = len(self.case.target_cols)
            return np.zeros(2), np.ones(2), np.zeros(targets), np.ones(targets)
        doc = json.loads(self.attrs["scale"])
        assert doc == self.doc["scale"] and doc["method"] == self.case.scale
        return tuple(np.array(doc[k]) for k in ("center", "scale", "target_center", "target_scale"))

    def decode(self) -> tuple[np.ndarray, np.ndarray]:
        case, mask, X = self.case, self.mask, self.f["X"]
        center, scale, target_center, target_scale = self.scaling()
        a = case.features.index(0)
        code = np.where(mask, np.rint(X[..., a] * scale[a] + center[a]), -1).astype(int)
        seq, step = np.where(mask, code // CODE, -1), np.where(mask, code % CODE, -1)
        assert set(seq[mask].tolist()) <= set(self.part), "a step of a sequence not in this part"
        assert (step[mask] < np.array(case.lengths)[seq[mask]]).all()
        assert X.dtype == np.dtype(case.dtype) and X.shape[2] == 2

        def expect(shift: int, cols: list[int], center: np.ndarray, scale: np.ndarray):
            assert (step[mask] + shift < np.array(case.lengths)[seq[mask]]).all(), "beyond the end"
            scaled = (value(seq, step + shift)[..., cols] - center) / scale
            return np.where(mask[..., None], scaled, 0).astype(case.dtype)

        assert np.array_equal(X, expect(0, case.features, center, scale))
        if case.target == "none":
            assert "y" not in self.f
        else:
            y = expect(case.horizon, case.target_cols, target_center, target_scale)
            assert np.array_equal(self.f["y"], y)
        return seq, step

    def file_index(self, seq: np.ndarray) -> np.ndarray:
        index = {s: i for i, s in enumerate(self.ids)} | {-1: -1}
        return np.vectorize(index.__getitem__, otypes=[np.int64])(seq)


# The checks -----------------------------------------------------------------------------------


def check_rows(w: Written, lead: Callable[[int, int, int, int], bool]) -> None:
    """Each row holds one run of consecutive steps of one sequence, which ``sequence``,
    ``offset`` and ``length`` name; ``lead(first, last, offset, steps)`` says whether the
    run sits where the layout puts it (``steps``: of the part). Filler rows hold nothing."""
    f = w.f
    assert (f["length"] == w.mask.sum(axis=1)).all()
    for n in range(len(w.mask)):
        t = np.flatnonzero(w.mask[n])
        if f["sequence"][n] == -1 or not len(t):  # filler, or (asis) an empty sequence
            assert f["sequence"][n] == -1 or w.part[w.ids[f["sequence"][n]]][1] == 0, n
            continue
        assert len(t) and (np.diff(t) == 1).all(), n
        assert (w.seq[n, t] == w.ids[f["sequence"][n]]).all(), n
        assert (np.diff(w.step[n, t]) == 1).all(), n
        assert f["offset"][n] == w.rel[n, t[0]], n
        assert lead(t[0], t[-1], f["offset"][n], w.part[w.seq[n, t[0]]][1]), n


def check_stream_rows(w: Written) -> None:
    """--packing stream: real steps first in every row, ``step_sequence`` and
    ``step_reset`` per step, ``sequence``/``offset`` those of the row's first step."""
    f, mask = w.f, w.mask
    assert (f["length"] == mask.sum(axis=1)).all()
    assert (np.diff(mask.astype(int), axis=1) <= 0).all(), "padding before a real step"
    assert np.array_equal(f["step_sequence"], w.file_index(w.seq))
    assert np.array_equal(f["step_reset"], (mask & (w.rel == 0)).astype(np.uint8))
    assert np.array_equal(f["sequence"], f["step_sequence"][:, 0])
    assert (f["offset"][mask[:, 0]] == w.rel[mask[:, 0], 0]).all()


def check_state(w: Written, starts: dict[int, set[int]]) -> None:
    """Follow every row of every rank from batch to batch: a step either starts its
    sequence (or part: ``starts``) with a reset, or carries on from the step before it in
    the same row, with no padding between them."""
    f, attrs, mask = w.f, w.attrs, w.mask
    size, ranks = int(attrs["batch_size"]), int(attrs["ranks"])
    batches = len(mask) // (size * ranks)
    assert len(mask) == batches * size * ranks, "not whole batches for every rank"
    lengths = f.get("batch_length", np.full(batches * ranks, mask.shape[1]))
    assert len(lengths) == batches * ranks
    for g, length in enumerate(lengths):
        assert not mask[g * size : (g + 1) * size, length:].any(), "beyond the batch length"
        if attrs["packing"] == "block":  # whole-batch resets
            assert len(set(f["reset"][g * size : (g + 1) * size])) == 1, g
    stream = "step_reset" in f
    for r in range(ranks):
        for j in range(size):
            prev, gap = None, False
            for k in range(batches):
                n = (k * ranks + r) * size + j
                if k == 0 and f["sequence"][n] >= 0:
                    assert f["reset"][n] == 1, n
                real = np.flatnonzero(mask[n])
                for t in range(lengths[k * ranks + r]):
                    if not mask[n, t]:
                        gap = prev is not None
                        continue
                    here = (w.seq[n, t], w.rel[n, t])
                    new = f["step_reset"][n, t] if stream else f["reset"][n] and t == real[0]
                    assert bool(new) == (here[1] in starts[here[0]]), (n, t)
                    if not new:
                        assert not gap and prev == (here[0], here[1] - 1), (n, t)
                    prev, gap = here, False
    every = w.doc["layout"]["reset_every"]
    if every is not None:
        for r in range(ranks):
            resets = [k for k in range(batches) if f["reset"][(k * ranks + r) * size]]
            assert resets == list(range(0, batches, every))


def prefixes(w: Written, kept: Callable[[int], int]) -> set[tuple[int, int]]:
    """(sequence, step) of the first ``kept(steps)`` steps of every part the file holds."""
    return {(i, b + t) for i, (b, n) in w.part.items() for t in range(kept(n))}


def check_coverage(w: Written, expected: set, where: np.ndarray | None = None) -> None:
    """Every ``expected`` (sequence, step) once, nothing else (counted in ``where``, by
    default the mask)."""
    where = w.mask if where is None else where
    found = Counter(zip(w.seq[where].tolist(), w.step[where].tolist(), strict=True))
    assert max(found.values(), default=1) == 1, "a step written twice"
    assert set(found) == expected


DTYPES = {"mask": "uint8", "sequence": "int64", "offset": "int64", "length": "int32"}
DTYPES |= {"reset": "uint8", "loss_mask": "uint8", "batch_length": "int32", "part": "int32"}
DTYPES |= {"step_reset": "uint8", "step_sequence": "int64"}


def divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def check_manifest(w: Written, stateful: bool) -> None:
    """The manifest's and the attributes' counts, layout and hints are the arrays'."""
    f, attrs, doc, mask = w.f, w.attrs, w.doc, w.mask
    rows, window = mask.shape
    size, ranks = int(attrs["batch_size"]), int(attrs["ranks"])
    filler = int((f["sequence"] == -1).sum())
    layout = doc["layout"]
    assert {k: layout[k] for k in ("samples", "window", "batch_size", "ranks", "stateful")} == {
        "samples": rows,
        "window": window,
        "batch_size": size,
        "ranks": ranks,
        "stateful": stateful,
    }
    assert layout["batches"] * size == rows and layout["batches_per_rank"] * size * ranks == rows
    assert layout["filler_rows"] == filler and layout["filler_share"] == round(filler / rows, 6)
    assert layout["padded_share"] == round(1 - mask.sum() / mask.size, 6)
    for key in ("window", "stateful", "streams", "packing", "order"):
        value = bool(attrs[key]) if key == "stateful" else attrs[key] or None  # null: ""
        assert value == layout[key], key
    hints = {"recommended": size} | ({"required": size} if stateful else {"valid": divisors(rows)})
    assert doc["batch_size_hints"] == hints
    if not stateful:
        assert (f["reset"] == 1).all()
    listed = doc["output"]["datasets"]
    assert set(listed) == set(f) - {"attrs"}
    for name, entry in listed.items():
        assert (entry["shape"], entry["dtype"]) == (list(f[name].shape), str(f[name].dtype))
        assert entry["chunks"] is None or entry["chunks"][0] % size == 0, "a chunk splits a batch"
        assert entry["dtype"] == DTYPES.get(name, w.case.dtype), name
    table = doc["sequences"]
    assert sorted(w.ids) == sorted(w.part)
    assert table["length"] == [w.part[i][1] for i in w.ids]
    assert doc["input"]["sequences"] == len(w.ids)
    assert doc["input"]["steps"] == sum(table["length"])
    assert json.loads(attrs["targets"]) == doc["input"]["target"]
    for i, (first, samples, stride) in enumerate(
        zip(table["first_sample"], table["samples"], table["stride"], strict=True)
    ):
        where = f["step_sequence"] if "step_sequence" in f else f["sequence"][:, None]
        held = np.flatnonzero((where == i).any(axis=1))
        assert samples == len(held), i
        if table["parts"][i] <= 1 and samples:
            assert held.tolist() == [first + j * stride for j in range(samples)], i


def check_summary(summary: dict, main: Written, max_filler: float | None) -> None:
    """The --json summary of the run is the main file's; with --batch-size auto the
    filler share stays within --max-filler unless the batch is 1."""
    f, layout = main.f, main.doc["layout"]
    keys = ("samples", "window", "batch_size", "batches", "filler_share", "ranks", "streams")
    assert {k: summary[k] for k in keys} == {k: layout[k] for k in keys}
    assert summary["resets"] == f["reset"].sum() and summary["stateful"] == layout["stateful"]
    assert summary["features"] == 2 and summary["dtype"] == main.case.dtype
    if max_filler is not None:
        assert layout["batch_size"] == 1 or layout["filler_share"] <= max_filler + 1e-9


def check_fit(main: Written) -> None:
    """--scale: the parameters are those of the training part's steps, all of them; a
    target that repeats a feature has its parameters, a target column none."""
    case = main.case
    if case.scale == "none":
        return
    train = np.concatenate(
        [steps_of(i, b + n)[b:, case.features] for i, (b, n) in main.part.items()]
    )
    if case.scale == "standard":
        center, spread = train.mean(axis=0), train.std(axis=0)
    else:
        center, spread = train.min(axis=0), np.ptp(train, axis=0)
    doc = main.doc["scale"]
    np.testing.assert_allclose(doc["center"], center, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(doc["scale"], np.where(spread > 0, spread, 1), rtol=1e-12)
    assert doc["fitted_on"] == {"sequences": len(main.part), "steps": len(train)}
    repeats = [case.features.index(c) for c in case.target_cols if c in case.features]
    if case.target == "column":
        assert (doc["target_center"], doc["target_scale"]) == ([0.0], [1.0])
    else:
        assert doc["target_center"] == [doc["center"][j] for j in repeats]
        assert doc["target_scale"] == [doc["scale"][j] for j in repeats]


def check_split(case: Case, main: Written, val: Written) -> None:
    """The validation part: whole sequences the main file lacks, or the later steps of
    every sequence; its targets never among the main file's steps or targets."""
    n = len(case.lengths)
    if case.val_by == "sequence":
        assert not set(main.part) & set(val.part) and len(main.part) + len(val.part) == n
        assert len(val.part) == math.ceil(case.val_fraction * n)
    seen = set(zip(main.seq[main.mask].tolist(), main.step[main.mask].tolist(), strict=True))
    seen |= {(s, t + case.horizon) for s, t in seen}
    ahead = zip(
        val.seq[val.mask].tolist(), (val.step[val.mask] + case.horizon).tolist(), strict=True
    )
    assert not seen & set(ahead), "a validation target the training part holds"
    summary = main.doc["val"]
    assert summary["samples"] == len(val.mask) and summary["sequences"] == len(val.part)
    assert summary["steps"] == sum(n for _, n in val.part.values())


def check_refusal(
    case: Case, code: int, stderr: str, folder: Path, args: list, kept: Callable, command: str
) -> None:
    """A run may refuse only for a documented reason that holds for its input, and
    then writes nothing."""
    message = stderr.splitlines()[-1]
    remainder = args[args.index("--remainder") + 1] if "--remainder" in args else "pad"
    event(f"refused {code}: {re.sub(r'[0-9]+', 'N', message)[:60]}")
    assert not list(folder.glob("o*")), "a refused run left files"
    lengths = {n for part in (parts(case), parts(case, val=True)) for _, n in part.values()}
    if m := re.search(
        r"has (\d+) steps, not a multiple of the (?:chunk length|stride) (\d+)", message
    ):
        steps, chunk = int(m[1]), int(m[2])
        assert code == 65 and remainder == "error" and steps % chunk and steps in lengths
    elif m := re.search(r"--ranks (\d+) needs at least \1 sequences .*, not (\d+);", message):
        assert code == 2 and int(m[2]) < int(m[1])
    elif "leaves none for training" in message:
        n = len(case.lengths)
        assert code == 2 and case.val_by == "sequence" and math.ceil(case.val_fraction * n) >= n
    elif m := re.search(r"no sample for (o|o\.val|len_\d+)\.h5", message):
        held = parts(case, val=m[1] == "o.val") if case.val_by != "sequence" else {}
        assert code == 65 and all(kept(n) == 0 for _, n in held.values())
    elif m := re.search(r"has (\d+) steps, more than --pad-to (\d+); pass --truncate", message):
        assert code == 65 and "--truncate" not in args and int(m[1]) > int(m[2])
    elif "the input has no steps" in message or "must be a non-empty" in message:
        assert code == 65 and not sum(case.usable)
    elif "every segment is longer than the window" in message:
        assert code == 2 and "drop" in args
    elif "no divisor of the sequence length" in message:
        assert code == 2 and "--factors" in args and case.usable[0] < 2
    elif "ACF" in message or "PACF" in message or "domain acf needs" in message:
        assert code == 65 and command == "acf"
    else:
        raise AssertionError(f"refused ({code}): {message}")


# The runs -------------------------------------------------------------------------------------


@st.composite
def cases(draw: st.DrawFn, val: bool = True) -> Case:
    fmt = draw(st.sampled_from(["npz", "csv"]))
    shortest = 0 if fmt == "npz" else 1  # a CSV has no empty sequence
    case = Case(draw(st.lists(st.integers(shortest, 30), min_size=1, max_size=7)), fmt)
    if case.fmt == "csv":
        case.features = draw(st.permutations([0, 1]))
    case.target = draw(st.sampled_from(["none", "next", "column"][: 3 if case.fmt == "csv" else 2]))
    if case.target == "next":
        case.horizon = draw(st.integers(1, 3))
        case.target_cols = draw(st.sampled_from([[0], [1], [0, 1], [1, 0]]))
    elif case.target == "column":
        case.target_cols = [2]
    if val and draw(st.booleans()):
        case.val_by = draw(st.sampled_from(["sequence", "time"]))
        case.val_fraction = draw(st.sampled_from([0.2, 0.34, 0.5]))
    case.scale = draw(st.sampled_from(["none", "standard", "minmax"]))
    case.dtype = draw(st.sampled_from(["float32", "float64"]))
    return case


def outputs(case: Case, folder: Path) -> tuple[Written, Written | None]:
    """The main file and the validation file, each with the part it must hold."""
    if not case.val_by:
        return Written(folder / "o.h5", case, parts(case)), None
    doc = json.loads((folder / "o.val.manifest.json").read_text())
    val_ids = {case.input_index(i) for i in doc["sequences"]["id"]}
    main = Written(folder / "o.h5", case, parts(case, val_ids))
    val = Written(folder / "o.val.h5", case, parts(case, val_ids, val=True))
    check_split(case, main, val)
    return main, val


def part_starts(w: Written, chunk: int | None, kept: dict[int, int]) -> dict[int, set[int]]:
    """The steps a stateful row resets at: each part's first (0 without --streams). The
    parts of a sequence are contiguous runs of whole chunks (``chunk``; None: lengths
    drawn per batch), the last with the tail, and the ``part`` rows hold them."""
    starts = {i: {0} for i in w.part}
    table = w.doc.get("parts")
    for i in w.part if table else ():
        mine = [p for p, s in enumerate(table["sequence"]) if w.ids[s] == i]
        offsets, steps = ([table[k][p] for p in mine] for k in ("offset", "steps"))
        assert [table["part"][p] for p in mine] == list(range(len(mine)))
        assert offsets == [sum(steps[:p]) for p in range(len(mine))] and sum(steps) == kept[i]
        for p in mine:
            s, part, first, stride = (
                table[k][p] for k in ("sequence", "part", "first_sample", "stride")
            )
            held = np.flatnonzero((w.f["sequence"] == s) & (w.f["part"] == part))
            assert held.tolist() == [first + j * stride for j in range(table["samples"][p])]
            inside = w.f["offset"][held] - table["offset"][p]
            assert ((inside >= 0) & (inside < table["steps"][p])).all()
        chunks = [-(-n // chunk) for n in steps] if chunk else [0]
        assert not chunk or all(n % chunk == 0 for n in steps[:-1])
        assert max(chunks, default=0) - min(chunks, default=0) <= 1
        starts[i] = set(offsets)
    return starts


def check_stateful(
    w: Written, chunk: int, kept: Callable[[int], int] | None, loss_from: int | None
):
    """Every check of a stateful file: rows, state, coverage, manifest, loss mask.
    ``kept(steps)``: the steps of a part written (None: some prefix, as --remainder drop
    leaves with the lengths --jitter draws)."""
    jitter = "batch_length" in w.f
    assert jitter or w.mask.shape[1] == chunk
    if "step_reset" in w.f:
        check_stream_rows(w)
    else:
        check_rows(w, lambda first, *_: first == 0)
    if kept is None:
        found = Counter(w.seq[w.mask].tolist())
        kept_steps = {i: found[i] for i in w.part}
        assert all(kept_steps[i] <= n for i, (_, n) in w.part.items())
    else:
        kept_steps = {i: kept(n) for i, (_, n) in w.part.items()}
    check_state(w, part_starts(w, None if jitter else chunk, kept_steps))
    check_coverage(w, {(i, b + t) for i, (b, _) in w.part.items() for t in range(kept_steps[i])})
    check_manifest(w, stateful=True)
    if loss_from is not None:
        check_loss_mask(w, loss_from)


def check_loss_mask(w: Written, loss_from: int) -> None:
    """decoupled: the loss mask trains from ``loss_from`` on, as attributes and manifest say."""
    k1, k2, stride = (int(w.attrs[k]) for k in ("k1", "k2", "stride"))
    assert w.attrs["grad_start"] == k1 - k2 and w.mask.shape[1] == k1
    decoupled = {"k1": k1, "k2": k2, "stride": stride, "grad_start": k1 - k2}
    overlap = {"loss_from": loss_from, "overlap": stride < k1}
    assert w.doc["decoupled"] == decoupled | overlap
    assert np.array_equal(w.f["loss_mask"], w.mask & (np.arange(k1) >= loss_from))


def finish(case: Case, folder: Path, summary: dict, files: list[Written], max_filler) -> None:
    """What every run's files share: the --json summary of the first, the --scale fit,
    and ``tbptt validate --against`` the input agreeing with every check above."""
    check_summary(summary, files[0], max_filler)
    check_fit(files[0])
    for w in files:
        assert validates(w.path, case, folder)


@SETTINGS
@given(cases(), st.data())
def test_stateful_layouts(case, data):
    """split, stepwise, decoupled without overlap and domain acf over the layout options."""
    draw = data.draw
    command = draw(st.sampled_from(["split", "stepwise", "decoupled", "acf"]))
    packing = draw(st.sampled_from(["block", "lanes", "stream"]))
    batch = draw(st.sampled_from(["auto", "1", "2", "3", "5"]))
    streams = "1" if packing == "stream" else draw(st.sampled_from(["1", "2", "3", "auto"]))
    remainder = "pad" if packing == "stream" else draw(st.sampled_from(["pad", "drop", "error"]))
    args = ["--packing", packing, "--batch-size", batch, "--remainder", remainder]
    args += ["--streams", streams, "--ranks", draw(st.integers(1, min(3, len(case.lengths))))]
    args += ["--seed", draw(st.integers(0, 3))]
    max_filler = draw(st.sampled_from([None, 0.0, 0.3])) if batch == "auto" else None
    args += ["--max-filler", max_filler] if max_filler is not None else []
    if batch == "1" and streams == "1" and draw(st.booleans()):
        args += ["--order", "sequential"]
    chunk = 1 if command == "stepwise" else draw(st.integers(1, 6))
    jitter = command in ("split", "acf") and remainder != "error" and draw(st.booleans())
    if jitter:
        chunk = draw(st.integers(5, 9))
        args += ["--jitter", draw(st.sampled_from([0.5, 2.0])), "--p-half", 0.2]
    k2 = draw(st.integers(1, chunk))
    feature = "b" if case.fmt == "csv" else "x1"
    if command == "acf":  # long enough for a correlogram; the length is read from the manifest
        case.lengths = [n + 12 for n in case.lengths]
    command_args = {
        "split": ["split", "--length", chunk],
        "stepwise": ["stepwise"],
        "decoupled": ["decoupled", "--k1", chunk, "--k2", k2],
        "acf": ["domain", "acf", "--feature", feature, "--rule", "acf", "--difference", "0"],
    }[command]
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        code, stderr, summary = run(case, folder, command_args, *args, "-o", folder / "o.h5")
        if code:
            kept = (lambda n: n) if remainder == "pad" else (lambda n: n // chunk * chunk)
            check_refusal(case, code, stderr, folder, args, kept, command)
            return
        main, val = outputs(case, folder)
        if command == "acf":
            analysis = main.doc["analysis"]
            chunk = analysis["length"]
            assert main.attrs["chosen_lag"] == analysis["lag"]
            assert analysis["n"] == sum(n for _, n in main.part.values())  # the training part
        kept = (lambda n: n) if remainder == "pad" else (lambda n: n // chunk * chunk)
        loss_from = chunk - k2 if command == "decoupled" else None
        files = [main, val] if val else [main]
        for w in files:
            check_stateful(w, chunk, None if jitter and remainder == "drop" else kept, loss_from)
        finish(case, folder, summary, files, max_filler or (0.1 if batch == "auto" else None))


def segments_of(case: Case) -> list[tuple[int, int, int]]:
    """(sequence, first step, steps) of every segment: each ends where eos is 1 or at the
    sequence's last (usable) step."""
    found = []
    for i, n in enumerate(case.usable):
        ends = [t for t in range(n) if case.boundaries[i][t] or t == n - 1]
        starts = [0, *(e + 1 for e in ends)][: len(ends)]
        found += [(i, a, e + 1 - a) for a, e in zip(starts, ends, strict=True)]
    return found


def pad_to(text: str, lengths: np.ndarray) -> int:
    statistic = {"max": np.max, "mean": np.mean, "median": np.median}.get(text)
    if statistic is None and text.startswith("p"):
        return math.ceil(np.percentile(lengths, int(text[1:])))
    return int(text) if statistic is None else math.ceil(round(float(statistic(lengths)), 9))


def segment_rows(case: Case, window: int, overflow: str) -> Counter:
    """(sequence, offset, steps) of every row of domain segments."""
    rows = Counter()
    for i, first, n in segments_of(case):
        if overflow == "split":
            rows.update((i, a, min(window, first + n - a)) for a in range(first, first + n, window))
        elif overflow == "truncate" or n <= window:
            rows[(i, first, min(n, window))] += 1
    return rows


@SETTINGS
@given(cases(val=False), st.data())
def test_stateless_layouts(case, data):
    """asis, decoupled with overlap and domain segments: one independent row each."""
    draw = data.draw
    command = draw(st.sampled_from(["asis", "decoupled", "segments"]))
    batch = draw(st.sampled_from(["auto", "1", "3", "4"]))
    args: list[object] = ["--batch-size", batch]
    side = draw(st.sampled_from(["post", "pre"]))
    remainder = draw(st.sampled_from(["pad", "drop", "error"]))
    loss_from, kept = None, (lambda n: n)
    if command == "asis":
        window = draw(st.none() | st.integers(1, 32))
        args += ["--pad-side", side, *(["--pad-to", window] if window else [])]
        args += ["--truncate"] if draw(st.booleans()) else []
        window = window or max(case.usable)
        command_args, kept = ["asis"], (lambda n: min(n, window))
    elif command == "decoupled":
        window = draw(st.integers(2, 8))
        stride = draw(st.integers(1, window - 1))
        k2 = draw(st.integers(stride, window))
        command_args = ["decoupled", "--k1", window, "--k2", k2, "--stride", stride]
        args += ["--remainder", remainder, "--ranks", draw(st.integers(1, 2))]
        kept = (lambda n: n) if remainder == "pad" else (lambda n: n // stride * stride)
        loss_from, side = window - stride, "window"
    else:
        case.fmt, case.lengths = "csv", [max(n, 1) for n in case.lengths]  # no empty rows
        rng = np.random.default_rng(draw(st.integers(0, 2**16)))
        case.boundaries = [(rng.random(n) < 0.3).astype(int).tolist() for n in case.lengths]
        segments = np.array([n for *_, n in segments_of(case)])
        text = draw(st.sampled_from(["max", "mean", "median", "p75", "3", "6"]))
        overflow = draw(st.sampled_from(["split", "truncate", "drop"]))
        window = pad_to(text, segments) if len(segments) else 1
        command_args = ["domain", "segments", "--boundary-col", "eos", "--pad-to", text]
        args += ["--overflow", overflow, "--pad-side", side]
        rows = segment_rows(case, window, overflow)
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        code, stderr, summary = run(case, folder, command_args, *args, "-o", folder / "o.h5")
        if code:
            check_refusal(case, code, stderr, folder, args, kept, command)
            return
        w = Written(folder / "o.h5", case, parts(case))
        assert w.mask.shape[1] == window
        leads = {
            "post": lambda first, *_: first == 0,
            "pre": lambda first, last, *_: last == window - 1,
            # windows end at stride, 2 stride, ...: padded before step 0 or after the last
            "window": lambda first, last, offset, n: (
                (offset - first + window) % stride == 0
                and (first == 0 or offset == 0)
                and (last == window - 1 or offset + last - first + 1 == n)
            ),
        }
        check_rows(w, leads[side])
        check_manifest(w, stateful=False)
        if command == "segments":
            real = w.f["sequence"] >= 0
            ids = np.array(w.ids)[w.f["sequence"][real]]
            found = zip(
                ids.tolist(), *(w.f[k][real].tolist() for k in ("offset", "length")), strict=True
            )
            assert Counter(found) == rows
            expected = {(i, a + t) for (i, a, n) in rows for t in range(n)}
            check_coverage(w, expected)
            report = w.doc["segments"]
            assert (report["count"], report["rows"], report["window"]) == (
                len(segments),
                real.sum(),
                window,
            )
        elif loss_from is not None:
            check_loss_mask(w, loss_from)
            check_coverage(w, prefixes(w, kept), w.f["loss_mask"].astype(bool))
        else:
            check_coverage(w, prefixes(w, kept))
        finish(case, folder, summary, [w], max_filler=0.1 if batch == "auto" else None)


@SETTINGS
@given(cases(val=False), st.data())
def test_grid(case, data):
    """grid: every length exactly split --remainder pad, and grid.json the files' summary."""
    draw = data.draw
    if draw(st.booleans()):  # --factors: every divisor from 2 of one (equal) length
        case.lengths = [case.lengths[0]] * len(case.lengths)
        lengths = [k for k in divisors(case.usable[0]) if k >= 2]
        args: list[object] = ["--factors"]
    else:
        lengths = sorted(set(draw(st.lists(st.integers(1, 6), min_size=1, max_size=3))))
        args = ["--lengths", ",".join(map(str, lengths))]
    packing = draw(st.sampled_from(["block", "lanes", "stream"]))
    streams = "1" if packing == "stream" else draw(st.sampled_from(["1", "2", "auto"]))
    args += ["--packing", packing, "--streams", streams]
    args += ["--batch-size", draw(st.sampled_from(["auto", "1", "2", "3"]))]
    args += ["--ranks", draw(st.integers(1, min(2, len(case.lengths))))]
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        code, stderr, summary = run(case, folder, ["grid"], *args, "-o", folder / "o")
        if code:
            check_refusal(case, code, stderr, folder, args, lambda n: n, "grid")
            return
        index = json.loads((folder / "o" / "grid.json").read_text())
        assert [entry["length"] for entry in index["grid"]] == lengths
        for entry in index["grid"]:
            w = Written(folder / "o" / entry["file"], case, parts(case))
            check_stateful(w, entry["length"], lambda n: n, None)
            check_fit(w)
            assert validates(w.path, case, folder)
            layout = w.doc["layout"]
            for key in ("samples", "batches", "batch_size"):
                assert entry[key] == layout[key], key
            divides = all(n % entry["length"] == 0 for n in case.usable)
            padded = pytest.approx(layout["padded_share"], abs=1e-6)
            summary = {"padded_fraction": padded, "divides": divides}
            assert {k: entry[k] for k in summary} == summary
            assert w.doc["grid"] == summary | {"length": entry["length"], "index": "grid.json"}
