"""domain segments: cut sequences at domain boundaries, pad every segment to one window.

A segment ends at step t of a sequence when any criterion holds at t:

- ``--boundary-col C``: the column C (kept beside the features) is non-zero at t;
- ``--boundary-feature F --boundary-value V``: feature F equals V at t;
- ``--max-gap G``: the ``--time-col`` value of step t+1 exceeds that of step t by more than G.

The boundary step belongs to the segment it ends; after a gap the new segment starts at
the later step. Every sequence's last step ends a segment, so none crosses sequences.
"""

from __future__ import annotations

import math
import re

import numpy as np

from tbptt_cli.errors import InputDataError, UsageError
from tbptt_cli.params import DomainSegmentsParams
from tbptt_cli.plan import Plan, batch_choice, ragged_arange, stateless_plan
from tbptt_cli.sequences import SequenceSet
from tbptt_cli.strategies.basic import PRACTICAL_WINDOW

PERCENTILE = re.compile(r"p(\d+(?:\.\d+)?)")


def check_params(params: DomainSegmentsParams) -> None:
    if (params.boundary_feature is None) != (params.boundary_value is None):
        raise UsageError(
            "--boundary-feature and --boundary-value go together: the feature whose value "
            "ends a segment, and that value"
        )
    if params.boundary_col is None and params.boundary_feature is None and params.max_gap is None:
        raise UsageError(
            "domain segments needs a boundary: --boundary-col C, --boundary-feature F with "
            "--boundary-value V, or --max-gap G with --time-col"
        )
    if params.max_gap is not None and params.max_gap < 0:
        raise UsageError(f"--max-gap must be >= 0, not {params.max_gap}")


def time_column(data: SequenceSet, params: DomainSegmentsParams) -> np.ndarray:
    """The ``--time-col`` values: the reader's extra column that is not the boundary column."""
    names = [name for name in data.extra if name != params.boundary_col]
    if not names:
        raise UsageError("--max-gap measures gaps in the time column; pass --time-col NAME")
    if len(names) > 1:
        raise UsageError(f"--max-gap: cannot tell the time column among {', '.join(names)}")
    return data.extra[names[0]]


def segment_ends(data: SequenceSet, params: DomainSegmentsParams, where: np.ndarray) -> np.ndarray:
    """A flag per step (``where`` holds each step's row in the storage): a segment ends here."""
    ends = np.zeros(len(where), dtype=bool)
    if params.boundary_col is not None:
        if params.boundary_col not in data.extra:
            kept = ", ".join(data.extra) or "none"
            raise InputDataError(
                f"no boundary column {params.boundary_col!r} in the input (columns kept "
                f"beside the features: {kept}); check --boundary-col"
            )
        flags = np.asarray(data.extra[params.boundary_col], dtype=np.float64)[where]
        if not np.all(np.isfinite(flags)):
            step = int(np.flatnonzero(~np.isfinite(flags))[0])
            raise InputDataError(
                f"boundary column {params.boundary_col!r} has no value at step {step} of the "
                f"input; fill it with 0 (no boundary) or 1"
            )
        ends |= flags != 0
    if params.boundary_feature is not None:
        if params.boundary_feature not in data.feature_names:
            raise InputDataError(
                f"--boundary-feature {params.boundary_feature!r} is not a feature; the "
                f"features are {', '.join(data.feature_names)}"
            )
        j = data.feature_names.index(params.boundary_feature)
        ends |= np.asarray(data.values[where, j]) == params.boundary_value
    if params.max_gap is not None:
        time = np.asarray(time_column(data, params), dtype=np.float64)[where]
        # The gap after the last step of a sequence reaches into the next: not a gap.
        ends[:-1] |= np.diff(time) > params.max_gap
    last = np.cumsum(data.lengths)[data.lengths > 0] - 1
    ends[last] = True
    return ends


def find_segments(data: SequenceSet, params: DomainSegmentsParams) -> tuple[np.ndarray, ...]:
    """(sequence, offset, length) of every segment, in input order."""
    where = np.repeat(data.starts, data.lengths) + ragged_arange(data.lengths)
    ends = np.flatnonzero(segment_ends(data, params, where))
    begins = np.concatenate([[0], ends[:-1] + 1]).astype(np.int64)
    first_step = np.concatenate([[0], np.cumsum(data.lengths)[:-1]])
    owner = np.repeat(np.arange(data.count), data.lengths)[begins]
    return owner, begins - first_step[owner], ends - begins + 1


def window_length(pad_to: str, lengths: np.ndarray) -> int:
    """``max``, ``mean``, ``median``, ``pNN`` (NN-th percentile) or an integer, rounded up."""
    text = pad_to.strip().lower()
    percentile = PERCENTILE.fullmatch(text)
    if text == "max":
        value = float(lengths.max())
    elif text == "mean":
        value = float(lengths.mean())
    elif text == "median":
        value = float(np.median(lengths))
    elif percentile and 0 < float(percentile.group(1)) <= 100:
        value = float(np.percentile(lengths, float(percentile.group(1))))
    elif text.isdigit() and int(text) > 0:
        value = float(text)
    else:
        raise UsageError(
            f"--pad-to must be max, mean, median, pNN (a percentile, 1-100) or a positive "
            f"integer, not {pad_to!r}"
        )
    # Rounding noise (a mean of 7.000000001) must not add a step to every row.
    return max(1, math.ceil(round(value, 9)))


def shorter_window(lengths: np.ndarray, window: int) -> str:
    """What cuts the padding of (or shortens) a window: the first of p90 and median that is
    shorter than it, not the --pad-to the run already has."""
    for pad_to in ("p90", "median"):
        shorter = window_length(pad_to, lengths)
        if shorter < window:
            return f"--pad-to {pad_to} ({shorter} steps) with --overflow split"
    return f"a --pad-to below {window} with --overflow split"


def fit_rows(
    owner: np.ndarray, offset: np.ndarray, length: np.ndarray, window: int, overflow: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Output rows (sequence, offset, length): longer segments split, truncated or dropped."""
    if overflow == "drop":
        keep = length <= window
        return owner[keep], offset[keep], length[keep]
    if overflow == "truncate":
        return owner, offset, np.minimum(length, window)
    pieces = -(-length // window)
    piece = ragged_arange(pieces)
    row_length = np.repeat(length, pieces) - piece * window
    return (
        np.repeat(owner, pieces),
        np.repeat(offset, pieces) + piece * window,
        np.minimum(row_length, window),
    )


def length_stats(lengths: np.ndarray) -> dict[str, float]:
    if not len(lengths):
        return {"min": 0, "mean": 0.0, "median": 0.0, "max": 0, "p90": 0.0}
    return {
        "min": int(lengths.min()),
        "mean": round(float(lengths.mean()), 6),
        "median": float(np.median(lengths)),
        "max": int(lengths.max()),
        "p90": round(float(np.percentile(lengths, 90)), 6),
    }


def plan_domain_segments(data: SequenceSet, params: DomainSegmentsParams) -> Plan:
    """One stateless row per segment (or per piece of a long one), padded to one window."""
    check_params(params)
    if data.steps == 0:
        raise InputDataError("the input has no steps to cut into segments")
    owner, offset, length = find_segments(data, params)
    window = window_length(params.pad_to, length)
    sequence, row_offset, row_length = fit_rows(owner, offset, length, window, params.overflow)
    longer = length > window
    warnings: list[str] = []
    dropped = int(longer.sum()) if params.overflow == "drop" else 0
    if dropped:
        warnings.append(
            f"--overflow drop dropped {dropped} of {len(length)} segment(s) longer than "
            f"{window} steps; use --overflow split or a larger --pad-to to keep them"
        )
    if not len(sequence):
        raise UsageError(
            f"every segment is longer than the window of {window} steps, so none is left; "
            f"use a larger --pad-to or --overflow split|truncate"
        )
    cure = shorter_window(length, window)
    if window > PRACTICAL_WINDOW:
        warnings.append(
            f"window {window} is longer than {PRACTICAL_WINDOW} steps, beyond which TBPTT "
            f"rarely learns; consider {cure}"
        )
    rows = len(sequence)
    # Rows that come from segments longer than the window, when those are split.
    split_rows = int((-(-length[longer] // window)).sum()) if params.overflow == "split" else 0
    lead = window - row_length if params.pad_side == "pre" else np.zeros(rows, dtype=np.int64)
    report = {
        "count": len(length),
        "dropped": dropped,
        "truncated": int(longer.sum()) if params.overflow == "truncate" else 0,
        "split_rows": split_rows,
        "rows": rows,
        "window": window,
        "padded_fraction": round(1.0 - float(row_length.sum()) / (rows * window), 6),
        "length_before": length_stats(length),
        "length_after": length_stats(row_length),
    }
    return stateless_plan(
        sequence,
        row_offset,
        row_length,
        lead,
        window,
        batch_choice(params),
        cure,
        attrs={"pad_side": params.pad_side, "overflow": params.overflow},
        report={"segments": report},
        warnings=tuple(warnings),
    )
