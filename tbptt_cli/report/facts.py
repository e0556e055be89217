"""What a report shows, as numbers: the lag each rule picks and why, the padding of every
(chunk length, batch size, packing) and the commands for the best candidates.

Everything comes from the strategies themselves: the correlogram from
`strategies.acf`, the padding from real `stateful_plan` layouts. No plotting here.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from tbptt_cli.errors import InputDataError
from tbptt_cli.options import InputOptions
from tbptt_cli.params import DomainAcfParams, StatefulParams
from tbptt_cli.plan import MAX_AUTO_BATCH
from tbptt_cli.sequences import SequenceSet
from tbptt_cli.strategies import acf
from tbptt_cli.strategies.grid import padded_fraction, parse_lengths
from tbptt_cli.strategies.stateful import Chunking, stateful_plan

RULES = ("pacf", "acf", "season")
PACKINGS = ("block", "lanes")
# A layout within this much padding (10 points of the X steps) of the least wasteful one
# for its length counts as good enough, and the largest batch size among those wins:
# larger batches train faster, and a little padding costs only its share of compute.
SLACK = 0.10
# Default candidate lengths: the powers of two in this range. Every cell of the map is a
# real plan, whose cost grows with steps / length: the shortest length costs the most.
LADDER = (16, 1024)
GRID_FALLBACK = (16, 256)  # the grid suggested when no rule finds a lag


@dataclass(frozen=True)
class RuleChoice:
    """What one ``--rule`` makes of its correlogram: a lag and why, or why none."""

    rule: str
    lag: int | None
    length: int | None
    reason: str
    max_lag: int | None = None  # the lags the rule examined


@dataclass(frozen=True)
class Correlogram:
    """The widest analysis of `strategies.acf` (the one drawn) with every rule's choice,
    or why there is none."""

    analysis: acf.Analysis | None
    choices: tuple[RuleChoice, ...]
    problem: str = ""  # why there is no correlogram (a constant feature, NaN ...)
    warnings: tuple[str, ...] = ()  # what the analyses said (a trend: first differences)


@dataclass(frozen=True)
class Layout:
    """One cell of the padding map."""

    length: int
    batch_size: int
    packing: str
    padded: float


@dataclass(frozen=True)
class PaddingMap:
    """``padded[p, i, j]``: the padded share of X for packing p, length i, batch size j."""

    lengths: list[int]
    batch_sizes: list[int]
    padded: np.ndarray

    def best(self, rows: list[int]) -> tuple[int, str, float]:
        """(batch size, packing, padded share) of the largest batch size within SLACK of
        the least padding, averaged over the given length rows; block wins a tie."""
        share = self.padded[:, rows, :].mean(axis=1)
        good = share <= share.min() + SLACK
        column = int(np.flatnonzero(good.any(axis=0)).max())
        packing = 0 if good[0, column] else 1
        return self.batch_sizes[column], PACKINGS[packing], float(share[packing, column])

    def best_layout(self, length: int) -> Layout:
        return Layout(length, *self.best([self.lengths.index(length)]))


def correlogram(
    data: SequenceSet, params: DomainAcfParams, known: acf.Analysis | None = None
) -> Correlogram:
    """Each rule's choice on the correlogram ``domain acf --rule RULE`` computes with these
    settings: without ``--max-lag`` the lags examined depend on the rule (season looks
    further), so a rule may need an analysis of its own. ``known`` is the analysis a run
    already made for its rule (``params.rule``), not redone. A failed analysis becomes text."""
    analyses: dict[int, acf.Analysis] = {}  # by the lags asked for
    said: dict[str, None] = {}  # the analyses' warnings, each once, in order
    if known is not None:
        analyses[acf.resolve_max_lag(params.max_lag, data.lengths, params.rule)[0]] = known
    choices = []
    for rule in RULES:
        wanted = acf.resolve_max_lag(params.max_lag, data.lengths, rule)[0]
        if wanted not in analyses:
            try:
                analyses[wanted], warnings = acf.analyse(data, replace(params, rule=rule))
            except InputDataError as e:
                return Correlogram(None, (), str(e))
            said |= dict.fromkeys(warnings)
        choices.append(rule_choice(rule, analyses[wanted], params))
    widest = max(analyses.values(), key=lambda a: a.max_lag)
    return Correlogram(widest, tuple(choices), warnings=tuple(said))


def analysis_of(section: dict[str, object]) -> acf.Analysis:
    """The analysis a ``domain acf`` plan already made (its manifest section)."""
    values = dict(section)
    return acf.Analysis(
        feature=str(values["feature"]),
        acf=np.asarray(values["acf"], dtype=np.float64),
        pacf=np.asarray(values["pacf"], dtype=np.float64),
        band=float(values["band"]),  # type: ignore[arg-type]
        steps=int(values["n"]),  # type: ignore[call-overload]
        sequences=int(values["sequences"]),  # type: ignore[call-overload]
        max_lag=int(values["max_lag"]),  # type: ignore[call-overload]
        difference=int(values.get("difference", 0)),  # type: ignore[call-overload]
    )


def rule_choice(rule: str, a: acf.Analysis, params: DomainAcfParams) -> RuleChoice:
    try:
        lag = acf.choose_lag(rule, a)
    except InputDataError as e:
        return RuleChoice(rule, None, None, str(e), a.max_lag)
    return RuleChoice(
        rule, lag, acf.chunk_length(lag, params), why(rule, a, lag, params.alpha), a.max_lag
    )


def why(rule: str, a: acf.Analysis, lag: int, alpha: float) -> str:
    """The rule's reason for its lag, in the numbers of this correlogram."""
    band = f"the band +-{a.band:.4f}"
    if rule == "pacf":
        # White noise puts a share alpha of the lags outside the band: the count says
        # whether the lag stands out or is one of those (random walks' differences).
        outside = int(np.count_nonzero(np.abs(a.pacf[1:]) > a.band))
        return (
            f"the largest lag up to {a.max_lag} whose PACF ({a.pacf[lag]:+.3f}) is outside "
            f"{band}; {outside} of the {a.max_lag} lags are (white noise: about "
            f"{alpha * a.max_lag:.1f})"
        )
    if rule == "acf":
        earlier = f"lags 1 to {lag - 1} are all outside it" if lag > 1 else "already at lag 1"
        return f"the first lag whose ACF ({a.acf[lag]:+.3f}) falls inside {band}; {earlier}"
    crossing = int(acf.zero_crossings(a.acf, bool(a.difference))[0])
    # The rule ranks peaks of the smoothed ACF: say that value, since the raw one at the lag
    # may be lower than its neighbours' (weekly CO2: +0.262 at 52, +0.319 at 53).
    return (
        f"the highest significant ACF peak after the ACF first crosses zero at lag "
        f"{crossing}: {acf.smoothed(a.acf)[lag]:+.3f} on the ACF averaged over lags "
        f"k +- k/{acf.SMOOTH} ({a.acf[lag]:+.3f} at lag {lag} alone)"
    )


def candidate_lengths(lengths: np.ndarray, given: str | None, extra: list[int]) -> list[int]:
    """``--lengths``, or powers of two up to the longest sequence (and it, if short
    enough), plus ``extra`` (each rule's length, the run's own)."""
    if given:
        return sorted(set(parse_lengths(given)) | set(extra))
    longest = int(lengths.max(initial=1))
    ladder = [1 << k for k in range(32) if LADDER[0] <= 1 << k <= min(LADDER[1], longest - 1)]
    whole = [longest] if longest <= LADDER[1] else []
    return sorted({int(k) for k in ladder} | set(whole) | set(extra))


def candidate_batch_sizes(sequences: int, given: str | None, extra: list[int]) -> list[int]:
    """``--batch-sizes``, or powers of two up to 128 and the sequence count (and ``extra``)."""
    if given:
        return sorted(set(parse_lengths(given, "--batch-sizes")) | set(extra))
    limit = max(1, min(MAX_AUTO_BATCH, sequences))
    sizes = {1 << k for k in range(8) if 1 << k <= limit} | {limit}
    return sorted(sizes | set(extra))


def padding_map(data: SequenceSet, lengths: list[int], batch_sizes: list[int]) -> PaddingMap:
    """The padded share of X of the real ``split --remainder pad`` plan of every cell."""
    padded = np.zeros((len(PACKINGS), len(lengths), len(batch_sizes)))
    for p, packing in enumerate(PACKINGS):
        for j, size in enumerate(batch_sizes):
            layout = StatefulParams(batch_size=size, packing=packing, remainder="pad")
            for i, length in enumerate(lengths):
                plan = stateful_plan(data.lengths, data.ids, Chunking(length), layout)
                padded[p, i, j] = padded_fraction(plan)
    return PaddingMap(lengths, batch_sizes, padded)


def command(words: list[str]) -> str:
    return " ".join(shlex.quote(w) for w in words)


def commands(
    options: InputOptions,
    params: DomainAcfParams,
    gram: Correlogram,
    padding: PaddingMap,
    one_series: bool = False,
) -> list[tuple[str, str]]:
    """(what it gives, command line): each rule's ``domain acf`` laid out with the best
    layout for its length, then a ``grid`` of those lengths to train and compare. One
    series fills one row of any batch: its commands cut it into parallel streams
    (``--streams auto``, as inspect suggests) rather than train with batch 1."""
    from tbptt_cli.inspect import changed_flags

    def layout(rows: list[int]) -> list[str]:
        return ["--streams", "auto"] if one_series else layout_flags(padding.best(rows))

    path = str(options.path)
    stem = "out" if path == "-" else Path(path).stem
    reading = [path, *changed_flags(options)]
    found: list[tuple[str, str]] = []
    chosen = []
    for choice in gram.choices:
        if choice.length is None:
            continue
        words = ["tbptt", "domain", "acf", *reading, *acf_flags(params), "--rule", choice.rule]
        if choice.length in padding.lengths:
            words += layout([padding.lengths.index(choice.length)])
        words += ["-o", f"{stem}_{choice.rule}.h5"]
        found.append(
            (f"rule {choice.rule}: lag {choice.lag}, chunk length {choice.length}", command(words))
        )
        chosen.append(choice.length)
    rows = [padding.lengths.index(k) for k in sorted(set(chosen)) if k in padding.lengths]
    if not rows:  # no rule found a lag: the middle of the ladder
        rows = [
            i for i, k in enumerate(padding.lengths) if GRID_FALLBACK[0] <= k <= GRID_FALLBACK[1]
        ]
        rows = rows or list(range(len(padding.lengths)))
    if len(rows) == 1 and len(padding.lengths) > 1:  # grid compare needs two lengths:
        one = rows[0]  # add the next candidate, longer if there is one
        rows = sorted([one, one + 1 if one + 1 < len(padding.lengths) else one - 1])
    lengths = ",".join(str(padding.lengths[i]) for i in rows)
    words = ["tbptt", "grid", *reading, "--lengths", lengths, *layout(rows)]
    found.append(
        (
            f"a grid of lengths {lengths}, to train and compare (tbptt grid compare)",
            command(words + ["-o", f"{stem}_grid"]),
        )
    )
    return found


def layout_flags(best: tuple[int, str, float]) -> list[str]:
    batch_size, packing, _ = best
    return ["--batch-size", str(batch_size)] + (
        ["--packing", packing] if packing != "block" else []
    )


def acf_flags(params: DomainAcfParams) -> list[str]:
    """The analysis options that differ from domain acf's defaults, as flags."""
    default = DomainAcfParams()
    flags: list[str] = []
    for name in ("feature", "max_lag", "alpha", "multiple", "min_length"):
        value = getattr(params, name)
        if value != getattr(default, name):
            flags += ["--" + name.replace("_", "-"), str(value)]
    return flags
