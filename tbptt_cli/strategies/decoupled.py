"""decoupled: TBPTT(k1, k2), a forward window of k1 steps whose last k2 steps train.

Without overlap (stride = k1) this is ``split --length k1`` with a loss mask: the state
runs on from window to window and only the last k2 steps of each window train. With
overlap (stride S < k1) every window is independent (stateless, reset = 1): its first
k1 - S steps only warm the state up and its last S steps train, so every target of a
sequence is trained exactly once. Windows end at S, 2S, ...; the part of a window
before step 0 is left padding, the part after the end of the sequence right padding.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from tbptt_cli.errors import UsageError
from tbptt_cli.params import DecoupledParams
from tbptt_cli.plan import Plan, batch_choice, ragged_arange, stateless_plan
from tbptt_cli.sequences import SequenceSet
from tbptt_cli.strategies.stateful import Chunking, chunk_counts, stateful_plan


def plan_decoupled(data: SequenceSet, params: DecoupledParams) -> Plan:
    """Windows of k1 steps every ``stride`` steps, with a loss mask over the trained steps."""
    k1, k2, stride = check_windows(params)
    attrs = {"k1": k1, "k2": k2, "stride": stride, "grad_start": k1 - k2}
    if stride == k1:
        chunking = Chunking(k1, shorter="a shorter --k1")
        plan = stateful_plan(data.lengths, data.ids, chunking, params)
        loss_from = k1 - k2
    else:
        plan = overlapping_plan(data.lengths, data.ids, k1, stride, params)
        loss_from = k1 - stride
    report = {"decoupled": {**attrs, "loss_from": loss_from, "overlap": stride < k1}}
    return replace(plan, loss_from=loss_from, attrs=attrs, report=report)


def check_windows(params: DecoupledParams) -> tuple[int, int, int]:
    """(k1, k2, stride) once they make sense together, else a UsageError (exit 2)."""
    k1, k2 = params.k1, params.k2
    if k1 is None or k2 is None:
        raise UsageError("decoupled needs --k1 K1 (forward window) and --k2 K2 (gradient window)")
    stride = k1 if params.stride is None else params.stride
    for name, value in (("--k1", k1), ("--k2", k2), ("--stride", stride)):
        if value < 1:
            raise UsageError(f"{name} must be at least 1, not {value}")
    if k2 > k1:
        raise UsageError(
            f"--k2 {k2} is longer than --k1 {k1}: the gradient cannot flow through more steps "
            f"than the forward window holds; pass --k2 <= {k1}"
        )
    if stride > k1:
        raise UsageError(
            f"--stride {stride} is longer than --k1 {k1}: the steps between windows would "
            f"never be seen; pass --stride <= {k1}"
        )
    if stride < k1 and stride > k2:
        raise UsageError(
            f"--stride {stride} with overlapping windows trains the last {stride} steps of "
            f"each window, more than --k2 {k2}; pass --stride <= {k2} or --stride {k1}"
        )
    return k1, k2, stride


def overlapping_plan(
    lengths: np.ndarray, ids: list[str], k1: int, stride: int, params: DecoupledParams
) -> Plan:
    """Stateless windows ``[e - k1, e)`` for ``e = stride, 2 stride, ...``; sequences in order."""
    lengths = np.asarray(lengths, dtype=np.int64)
    counts = chunk_counts(lengths, stride, params.remainder, ids, "stride")
    sequence = np.repeat(np.arange(len(lengths), dtype=np.int64), counts)
    end = (ragged_arange(counts) + 1) * stride
    start = end - k1
    offset = np.maximum(start, 0)
    length = np.minimum(end, lengths[sequence]) - offset
    if params.streams != 1:
        raise UsageError(
            "--streams lays parts of a sequence side by side for a stateful layout; "
            "overlapping windows (--stride < --k1) are independent samples: drop --streams"
        )
    warnings = []
    if params.packing != "block" or params.order != "interleaved":
        warnings.append(
            "--packing and --order apply to stateful layouts only; overlapping windows are "
            "independent samples, so they were ignored"
        )
    empty = int(np.count_nonzero(counts == 0))
    if empty:
        warnings.append(f"{empty} sequence(s) shorter than one stride produced no sample")
    return stateless_plan(
        sequence,
        offset,
        length,
        np.maximum(-start, 0),
        k1,
        batch_choice(params),
        "a shorter --k1",
        warnings=tuple(warnings),
    )
