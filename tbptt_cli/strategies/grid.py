"""grid: one ``split --remainder pad`` plan per candidate chunk length.

The core writes each plan to ``OUTDIR/len_<K>.h5`` and lists them in ``grid.json``, so
a training script can loop over the lengths of a systematic search.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tbptt_cli.errors import InputDataError, UsageError
from tbptt_cli.params import GridParams, StatefulParams
from tbptt_cli.plan import Plan
from tbptt_cli.sequences import SequenceSet
from tbptt_cli.strategies.stateful import Chunking, stateful_plan

DEFAULT_MIN_FACTOR = 2  # a chunk of one step is `stepwise`, not a length worth searching


def plan_grid(data: SequenceSet, params: GridParams) -> list[tuple[int, Plan]]:
    """(K, plan) for every candidate length K, shortest first."""
    layout = StatefulParams(
        batch_size=params.batch_size,
        max_filler=params.max_filler,
        remainder="pad",
        packing=params.packing,
        order=params.order,
        streams=params.streams,
        ranks=params.ranks,
    )
    shorter = "a shorter length in --lengths"
    return [
        (length, stateful_plan(data.lengths, data.ids, Chunking(length, shorter=shorter), layout))
        for length in grid_lengths(data, params)
    ]


def grid_lengths(data: SequenceSet, params: GridParams) -> list[int]:
    """The lengths of ``--lengths``, or the divisors that ``--factors`` asks for."""
    lengths = check_grid(params)
    return lengths or factor_lengths(data, params.min_length, params.max_length)


def check_grid(params: GridParams) -> list[int]:
    """The lengths of ``--lengths`` (empty for ``--factors``) once the options make sense
    together, else a UsageError (exit 2), before any input is read."""
    if (params.lengths is None) == (not params.factors):
        raise UsageError(
            "grid needs exactly one of --lengths 25,50,100 or --factors "
            "(pass --no-factors to override a config file's factors: true)"
        )
    if params.lengths is not None:
        if params.min_length is not None or params.max_length is not None:
            raise UsageError(
                "--min-length and --max-length bound --factors only; drop them or use --factors"
            )
        return parse_lengths(params.lengths)
    return []


def parse_lengths(text: str, flag: str = "--lengths") -> list[int]:
    """``"25,50,100"`` as sorted distinct positive integers."""
    items = [item.strip() for item in text.split(",")]
    valid = all(item.isascii() and item.isdigit() and int(item) >= 1 for item in items)
    if not valid:
        raise UsageError(
            f"{flag} must be comma-separated positive integers such as 25,50,100, not {text!r}"
        )
    return sorted({int(item) for item in items})


def factor_lengths(data: SequenceSet, low: int | None, high: int | None) -> list[int]:
    """Every divisor of the common sequence length L within [low, high] (default [2, L])."""
    lengths = np.asarray(data.lengths)
    if len(lengths) == 0:
        raise InputDataError("--factors needs at least one sequence; the input holds none")
    if np.any(lengths != lengths[0]):
        raise InputDataError(
            f"--factors needs sequences of equal length, found lengths {int(lengths.min())} "
            f"to {int(lengths.max())}; use --lengths K1,K2,... instead"
        )
    total = int(lengths[0])
    if low is not None and high is not None and not 1 <= low <= high:
        raise UsageError(f"--min-length {low} and --max-length {high} must satisfy 1 <= min <= max")
    if low is not None and low < 1:
        raise UsageError(f"--min-length must be at least 1, not {low}")
    # A default bound is no contradiction: sequences shorter than 2 steps find no divisor.
    low = DEFAULT_MIN_FACTOR if low is None else low
    high = total if high is None else high
    candidates = np.arange(low, min(high, total) + 1)
    found = candidates[total % candidates == 0]
    if len(found) == 0:
        raise UsageError(
            f"no divisor of the sequence length {total} lies in [{low}, {high}]; widen "
            f"--min-length/--max-length or pass --lengths"
        )
    return [int(k) for k in found]


def padded_fraction(plan: Plan) -> float:
    """The fraction of the X steps that hold padding (filler rows and masked tails)."""
    return plan.padded_share


def divides(length: int, lengths: np.ndarray) -> bool:
    """Whether the chunk length divides every sequence length (no masked tails)."""
    return bool(np.all(np.asarray(lengths) % length == 0))


def grid_table(entries: list[dict[str, Any]]) -> str:
    """The entries for people: one line per length."""
    header = f"{'length':>7} {'samples':>8} {'batch':>6} {'batches':>8} {'padded':>7}"
    lines = [header + "  divides  file"]
    for e in entries:
        lines.append(
            f"{e['length']:>7} {e['samples']:>8} {e['batch_size']:>6} {e['batches']:>8} "
            f"{e['padded_fraction']:>7.1%}  {'yes' if e['divides'] else 'no':<7}  {e['file']}"
        )
    return "\n".join(lines)
