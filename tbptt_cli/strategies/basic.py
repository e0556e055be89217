"""asis, split and stepwise: the strategies that need nothing but the lengths."""

from __future__ import annotations

import numpy as np

from tbptt_cli.errors import InputDataError, UsageError
from tbptt_cli.params import AsisParams, SplitParams, StepwiseParams
from tbptt_cli.plan import Plan, batch_choice, stateless_plan
from tbptt_cli.sequences import SequenceSet
from tbptt_cli.strategies.stateful import Chunking, stateful_plan

# Beyond a few hundred steps TBPTT stops learning long dependencies in practice.
PRACTICAL_WINDOW = 400


def plan_asis(data: SequenceSet, params: AsisParams) -> Plan:
    """One sample per sequence, padded and masked to one window."""
    lengths = data.lengths
    cut = f" once --target next takes {data.target_shift} off each" if data.target_shift else ""
    if data.steps == 0:  # rows of padding alone would say nothing about the input
        raise InputDataError(f"the input has no steps to write: every sequence is empty{cut}")
    longest = int(lengths.max(initial=0))
    window = longest if params.pad_to is None else params.pad_to
    if window < 1:
        raise UsageError(f"--pad-to must be at least 1, not {window}")
    too_long = np.flatnonzero(lengths > window)
    if len(too_long) and not params.truncate:
        i = int(too_long[0])
        raise InputDataError(
            f"sequence {data.ids[i]!r} has {int(lengths[i])} steps, more than --pad-to "
            f"{window}; pass --truncate or a larger --pad-to"
        )
    kept = np.minimum(lengths, window)
    lead = (window - kept) if params.pad_side == "pre" else np.zeros_like(kept)
    warnings = []
    empty = int(np.count_nonzero(lengths == 0))
    if empty:  # kept, so that sample i stays sequence i, but a row of padding says nothing
        warnings.append(
            f"{empty} sequence(s) have no steps{cut}: each is a row of padding alone (mask 0)"
        )
    if window > PRACTICAL_WINDOW:
        warnings.append(
            f"window {window} is longer than {PRACTICAL_WINDOW} steps, beyond which TBPTT "
            f"rarely learns; consider `tbptt split --length K`"
        )
    n = len(lengths)
    return stateless_plan(
        np.arange(n),
        np.zeros(n),
        kept,
        lead,
        window,
        batch_choice(params),
        "split --length K (chunks of the long sequences, not padding of the short ones)",
        attrs={"pad_side": params.pad_side},
        warnings=tuple(warnings),
    )


def plan_split(data: SequenceSet, params: SplitParams) -> Plan:
    """Chunks of K steps laid out for a stateful RNN."""
    if params.length is None:
        raise UsageError("split needs --length K (the chunk length)")
    if params.length < 1:
        raise UsageError(f"--length must be at least 1, not {params.length}")
    chunking = Chunking(params.length, params.jitter, params.p_half, params.seed)
    return stateful_plan(data.lengths, data.ids, chunking, params)


def plan_stepwise(data: SequenceSet, params: StepwiseParams) -> Plan:
    """TBPTT(1,1): one timestep per sample, state carried across every step."""
    return stateful_plan(data.lengths, data.ids, Chunking(1), params)
