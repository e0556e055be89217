"""domain segments: each boundary criterion, windows, overflow, padding, errors and the CLI."""

from __future__ import annotations

import csv
import json
from dataclasses import replace
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tbptt_cli.errors import InputDataError, UsageError
from tbptt_cli.params import DomainSegmentsParams
from tbptt_cli.sequences import SequenceSet
from tbptt_cli.strategies.segments import plan_domain_segments, window_length

SENTENCES = Path(__file__).resolve().parent.parent / "sample_data" / "sentences.csv"


def stream(lengths: list[int], **extra: list[float]) -> SequenceSet:
    """Features ``step`` (0, 1, 2... across the input) and ``punct`` (0 unless set)."""
    total = sum(lengths)
    values = np.column_stack([np.arange(total, dtype=np.float64), np.zeros(total)])
    data = SequenceSet.from_offsets(
        values, np.concatenate([[0], np.cumsum(lengths)]), feature_names=["step", "punct"]
    )
    return replace(data, extra={k: np.asarray(v, dtype=np.float64) for k, v in extra.items()})


def rows(plan) -> list[tuple[int, int, int]]:
    return list(
        zip(plan.sequence.tolist(), plan.offset.tolist(), plan.length.tolist(), strict=True)
    )


def test_boundary_col_ends_a_segment_at_its_step():
    eos = [0, 0, 1, 0, 0, 0, 0, 0, 0, 1, 0, 0]  # sequence 0 ends without a boundary
    plan = plan_domain_segments(stream([7, 5], eos=eos), DomainSegmentsParams(boundary_col="eos"))
    assert rows(plan) == [(0, 0, 3), (0, 3, 4), (1, 0, 3), (1, 3, 2)]
    assert plan.window == 4 and not plan.stateful
    assert plan.reset.tolist() == [1, 1, 1, 1] and plan.lead.tolist() == [0, 0, 0, 0]
    assert plan.batch_size == 4 and plan.attrs["pad_side"] == "post"


def test_boundary_feature_value():
    data = stream([6, 4])
    punct = np.zeros(10)
    punct[[1, 4, 5, 8]] = [2, 2, 1, 2]  # 1 (a comma) is not the boundary value
    data = replace(data, values=np.column_stack([data.values[:, 0], punct]))
    params = DomainSegmentsParams(boundary_feature="punct", boundary_value=2)
    assert rows(plan_domain_segments(data, params)) == [
        (0, 0, 2),
        (0, 2, 3),
        (0, 5, 1),
        (1, 0, 3),
        (1, 3, 1),
    ]


def test_max_gap_starts_a_segment_at_the_later_step():
    time = [0, 1, 2, 10, 11, 12, 30, 0.5, 1, 100]  # time restarts in the second sequence
    plan = plan_domain_segments(stream([7, 3], t=time), DomainSegmentsParams(max_gap=5))
    assert rows(plan) == [(0, 0, 3), (0, 3, 3), (0, 6, 1), (1, 0, 2), (1, 2, 1)]
    equal_gap = plan_domain_segments(stream([3], t=[0, 5, 10]), DomainSegmentsParams(max_gap=5))
    assert rows(equal_gap) == [(0, 0, 3)]  # a gap must exceed --max-gap


def test_criteria_combine():
    eos = [0, 1, 0, 0, 0, 0, 0, 0]
    time = [0, 1, 2, 3, 50, 51, 52, 53]
    data = stream([8], eos=eos, t=time)
    data = replace(data, values=np.column_stack([data.values[:, 0], [0, 0, 0, 0, 0, 0, 2, 0]]))
    params = DomainSegmentsParams(
        boundary_col="eos", boundary_feature="punct", boundary_value=2, max_gap=10
    )
    assert rows(plan_domain_segments(data, params)) == [(0, 0, 2), (0, 2, 2), (0, 4, 3), (0, 7, 1)]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(0, 30), min_size=1, max_size=8).filter(sum),
    st.integers(0, 2**32 - 1),
    st.integers(1, 12),
)
def test_rows_cover_every_step_once_and_never_cross_sequences(lengths, seed, pad_to):
    total = sum(lengths)
    rng = np.random.default_rng(seed)
    data = stream(
        lengths,
        eos=(rng.random(total) < 0.2).tolist(),
        t=np.cumsum(rng.exponential(1.0, total)).tolist(),
    )
    params = DomainSegmentsParams(boundary_col="eos", max_gap=2.0, pad_to=str(pad_to))
    plan = plan_domain_segments(data, params)
    real = int(np.count_nonzero(plan.sequence >= 0))
    assert (plan.sequence[real:] == -1).all() and plan.samples % plan.batch_size == 0
    assert plan.filler_rows <= 0.1 * plan.samples  # padded to whole batches, within auto's rule
    seq_lengths = np.array(lengths)[plan.sequence[:real]]
    assert np.all(plan.offset[:real] + plan.length[:real] <= seq_lengths)
    assert np.all((plan.length[:real] >= 1) & (plan.length[:real] <= plan.window))
    covered = np.concatenate([data.starts[s] + o + np.arange(n) for s, o, n in rows(plan)])
    assert np.array_equal(covered, np.arange(total))  # in order, each step exactly once


@pytest.mark.parametrize(
    ("pad_to", "window"),
    [
        ("max", 10),
        ("mean", 5),
        ("median", 4),
        ("p50", 4),
        ("p90", 9),
        ("P100", 10),
        ("6", 6),
    ],
)
def test_pad_to_forms_round_up(pad_to, window):
    # Segment lengths 2, 3, 4, 10: mean 4.75, median 3.5, 90th percentile 8.2.
    eos = np.zeros(19)
    eos[[1, 4, 8, 18]] = 1
    plan = plan_domain_segments(
        stream([19], eos=eos.tolist()), DomainSegmentsParams(boundary_col="eos", pad_to=pad_to)
    )
    assert plan.window == window
    assert plan.report["segments"]["window"] == window


@pytest.mark.parametrize("bad", ["p0", "p101", "0", "-3", "longest", "p", "4.5"])
def test_pad_to_rejects_other_forms(bad):
    with pytest.raises(UsageError, match=r"--pad-to must be max, mean, median, pNN"):
        window_length(bad, np.array([2, 3]))


def long_and_short() -> SequenceSet:
    eos = np.zeros(12)
    eos[[1, 11]] = 1  # segments of 2 and 10 steps
    return stream([12], eos=eos.tolist())


def test_overflow_split_truncate_drop():
    base = DomainSegmentsParams(boundary_col="eos", pad_to="4")
    split = plan_domain_segments(long_and_short(), base)
    assert rows(split) == [(0, 0, 2), (0, 2, 4), (0, 6, 4), (0, 10, 2)]
    assert split.report["segments"]["split_rows"] == 3
    truncate = plan_domain_segments(long_and_short(), replace(base, overflow="truncate"))
    assert rows(truncate) == [(0, 0, 2), (0, 2, 4)]
    assert truncate.report["segments"]["truncated"] == 1
    drop = plan_domain_segments(long_and_short(), replace(base, overflow="drop"))
    assert rows(drop) == [(0, 0, 2)]
    assert drop.warnings == (
        "--overflow drop dropped 1 of 2 segment(s) longer than 4 steps; "
        "use --overflow split or a larger --pad-to to keep them",
    )
    with pytest.raises(UsageError, match=r"every segment is longer than the window of 1"):
        plan_domain_segments(long_and_short(), replace(base, overflow="drop", pad_to="1"))


def test_pre_padding_and_report():
    params = DomainSegmentsParams(boundary_col="eos", pad_to="4", pad_side="pre")
    plan = plan_domain_segments(long_and_short(), params)
    assert plan.lead.tolist() == [2, 0, 0, 2] and plan.attrs["pad_side"] == "pre"
    report = plan.report["segments"]
    assert (report["count"], report["dropped"], report["rows"]) == (2, 0, 4)
    assert report["length_before"] == {"min": 2, "mean": 6.0, "median": 6.0, "max": 10, "p90": 9.2}
    assert report["length_after"] == {"min": 2, "mean": 3.0, "median": 3.0, "max": 4, "p90": 4.0}
    assert report["padded_fraction"] == 0.25


def test_errors():
    data = stream([4], eos=[0, 1, 0, 0])
    with pytest.raises(UsageError, match=r"needs a boundary: --boundary-col"):
        plan_domain_segments(data, DomainSegmentsParams())
    with pytest.raises(UsageError, match=r"--boundary-feature and --boundary-value go together"):
        plan_domain_segments(data, DomainSegmentsParams(boundary_value=2))
    with pytest.raises(UsageError, match=r"go together"):
        plan_domain_segments(data, DomainSegmentsParams(boundary_feature="punct"))
    with pytest.raises(UsageError, match=r"--max-gap .* pass --time-col"):
        plan_domain_segments(stream([4]), DomainSegmentsParams(max_gap=1))
    with pytest.raises(InputDataError, match=r"--boundary-feature 'pun' .* are step, punct"):
        plan_domain_segments(data, DomainSegmentsParams(boundary_feature="pun", boundary_value=1))
    with pytest.raises(InputDataError, match=r"no boundary column 'end'"):
        plan_domain_segments(data, DomainSegmentsParams(boundary_col="end"))
    with pytest.raises(InputDataError, match=r"'eos' has no value at step 2"):
        plan_domain_segments(
            stream([4], eos=[0, 1, np.nan, 0]), DomainSegmentsParams(boundary_col="eos")
        )


def sentence_tokens() -> list[dict[str, str]]:
    with open(SENTENCES, newline="") as f:
        return list(csv.DictReader(f))


def test_cli_sentences_end_to_end(tmp_path, tbptt):
    out = tmp_path / "sent.h5"
    result = tbptt(
        "domain",
        "segments",
        SENTENCES,
        "--id-col",
        "doc",
        "--time-col",
        "t",
        "--features",
        "word_len,log_freq,is_cap,punct",
        "--boundary-col",
        "eos",
        "-o",
        out,
    )
    assert result.code == 0, result.stderr
    tokens = sentence_tokens()
    manifest = json.loads((tmp_path / "sent.manifest.json").read_text())
    segments = manifest["segments"]
    assert segments["count"] == sum(row["eos"] == "1" for row in tokens)
    assert manifest["layout"]["stateful"] is False
    with h5py.File(out) as f:
        mask, length, X = f["mask"][:], f["length"][:], f["X"][:]
        assert int(mask.sum()) == len(tokens) and f["reset"][:].all()
        assert X.shape[1] == segments["window"] == length.max()
        last = X[np.arange(len(X)), length - 1]  # every row ends on a full stop
        assert np.all(last[:, 3] == 2)


def test_cli_max_gap_and_usage_errors(tmp_path, tbptt):
    base = ["domain", "segments", SENTENCES, "--id-col", "doc"]
    result = tbptt(
        *base,
        "--time-col",
        "t",
        "--max-gap",
        30,
        "--pad-to",
        "median",
        "--overflow",
        "drop",
        "-o",
        tmp_path / "par.h5",
    )
    assert result.code == 0, result.stderr
    assert "tbptt: warning: --overflow drop dropped" in result.stderr
    report = json.loads((tmp_path / "par.manifest.json").read_text())["segments"]
    assert report["dropped"] > 0 and report["rows"] == report["count"] - report["dropped"]
    no_time = tbptt(*base, "--max-gap", 30, "-n")
    assert no_time.code == 2 and "pass --time-col" in no_time.stderr
    nothing = tbptt(*base, "-n")
    assert nothing.code == 2 and "needs a boundary" in nothing.stderr


@pytest.mark.parametrize(
    ("pad_to", "cure"),
    [
        ("max", "--pad-to p90 (13 steps) with --overflow split cuts it"),
        ("p90", "--pad-to median (2 steps) with --overflow split cuts it"),
        ("13", "--pad-to median (2 steps) with --overflow split cuts it"),
    ],
)
def test_the_padding_cure_is_a_shorter_window_than_the_one_given(pad_to, cure):
    """Eight 2-step sentences, one of 10 and one of 40: the cure named is never the
    --pad-to the run already has."""
    lengths = [2] * 8 + [10, 40]
    eos = np.zeros(sum(lengths))
    eos[np.cumsum(lengths) - 1] = 1
    plan = plan_domain_segments(
        stream([sum(lengths)], eos=eos.tolist()),
        DomainSegmentsParams(boundary_col="eos", pad_to=pad_to),
    )
    padding = [w for w in plan.warnings if "of the steps written are padding" in w]
    assert len(padding) == 1 and padding[0].endswith(cure), plan.warnings
    median = plan_domain_segments(
        stream([sum(lengths)], eos=eos.tolist()),
        DomainSegmentsParams(boundary_col="eos", pad_to="median"),
    )
    assert median.padded_share == 0 and median.warnings == ()
