"""Every strategy's parameters: one field = one flag, one config key, one env variable.

The classes of layout options several commands share come first (``SHARED_PARAMS``).

Kept free of numpy so that ``tbptt --help`` builds its commands without importing it.
"""

from __future__ import annotations

from dataclasses import dataclass

from tbptt_cli.options import opt


@dataclass(frozen=True)
class BatchParams:
    """The batch size every strategy records, and how much filler ``auto`` may add."""

    batch_size: int | str = opt(
        "auto",
        "rows per batch: auto (the largest up to 128 within --max-filler) or an integer",
        auto_or_int=True,
    )
    max_filler: float | None = opt(
        None,
        "with --batch-size auto: the largest share of filler rows (fully masked) allowed "
        "(default 0.1)",
    )


@dataclass(frozen=True)
class LayoutParams(BatchParams):
    """How chunks are laid out for a stateful RNN (split, grid ...)."""

    packing: str = opt(
        "block",
        "block: B sequences side by side; lanes: each row a queue of sequences; stream: "
        "each row one stream of steps, the next sequence starting inside the chunk",
        ("block", "lanes", "stream"),
    )
    streams: int | str = opt(
        1,
        "cut each sequence into this many equal parts laid side by side as rows (auto: "
        "enough for a useful batch)",
        auto_or_int=True,
    )
    ranks: int = opt(
        1, "data-parallel ranks: batch k of rank r is batch k*R + r of the file", positive=True
    )
    order: str = opt(
        "interleaved",
        "interleaved (chunk j+1 in the same row of the next batch); sequential needs batch 1",
        ("interleaved", "sequential"),
    )


@dataclass(frozen=True)
class StatefulParams(LayoutParams):
    remainder: str = opt(
        "pad", "the tail shorter than one chunk: pad+mask, drop, or error", ("pad", "drop", "error")
    )
    seed: int = opt(0, "random seed (jitter, validation split)")
    val_fraction: float = opt(0.0, "fraction held out for validation (0 = none)")
    val_output: str | None = opt(None, "validation output .h5 (default <stem>.val.h5)", path=True)
    val_by: str = opt(
        "sequence", "hold out whole sequences, or the last part of each", ("sequence", "time")
    )


@dataclass(frozen=True)
class JitterParams:
    """Variable-length BPTT (AWD-LSTM): each batch draws its own chunk length."""

    jitter: float = opt(0.0, "variable-length BPTT: SD of each batch's chunk length (0 = off)")
    p_half: float = opt(0.05, "with --jitter: probability a batch draws around K/2")


# Options that mean the same in every command that has them read ``TBPTT_<OPTION>``;
# the others, declared by one strategy's class, read ``TBPTT_<COMMAND>_<OPTION>``.
SHARED_PARAMS: tuple[type, ...] = (BatchParams, LayoutParams, StatefulParams, JitterParams)


@dataclass(frozen=True)
class AsisParams(BatchParams):
    pad_to: int | None = opt(None, "window length (default: the longest sequence)", positive=True)
    truncate: bool = opt(False, "cut sequences longer than --pad-to (keeps the first steps)")
    pad_side: str = opt("post", "where the padding goes", ("post", "pre"))


@dataclass(frozen=True)
class SplitParams(StatefulParams, JitterParams):
    length: int | None = opt(
        None, "chunk length K (steps per sample)", required=True, positive=True
    )


@dataclass(frozen=True)
class StepwiseParams(StatefulParams):
    pass


@dataclass(frozen=True)
class DomainAcfParams(StatefulParams, JitterParams):
    feature: str | None = opt(None, "feature analysed (default: the first)")
    rule: str = opt(
        "pacf",
        "pacf: last significant PACF lag; acf: first lag inside the band; season: ACF peak",
        ("pacf", "acf", "season"),
    )
    max_lag: int | None = opt(
        None,
        "largest lag examined (default 10*log10(steps); with --rule season at least 133, "
        "a weekly series' year x 2.5, up to a third of the longest sequence)",
    )
    difference: str = opt(
        "auto",
        "analyse first differences: auto (when the ACF never crosses zero: a trend), 0 "
        "(never) or 1 (always); the data written stays raw",
        ("auto", "0", "1"),
    )
    alpha: float = opt(0.05, "significance level of the band +-z(1-alpha/2)/sqrt(n)")
    multiple: int = opt(1, "chunk length = chosen lag x this", positive=True)
    min_length: int = opt(2, "smallest chunk length accepted")


@dataclass(frozen=True)
class DomainSegmentsParams(BatchParams):
    boundary_col: str | None = opt(None, "column whose non-zero value ends a segment")
    boundary_feature: str | None = opt(None, "feature whose value --boundary-value ends a segment")
    boundary_value: float | None = opt(None, "with --boundary-feature: the boundary value")
    max_gap: float | None = opt(None, "a gap in --time-col larger than this starts a segment")
    pad_to: str = opt("max", "window: max, mean, median, pNN (percentile) or an integer")
    overflow: str = opt("split", "segments longer than the window", ("split", "truncate", "drop"))
    pad_side: str = opt("post", "where the padding goes", ("post", "pre"))


@dataclass(frozen=True)
class GridParams(LayoutParams):
    lengths: str | None = opt(None, "comma-separated chunk lengths, e.g. 25,50,100")
    factors: bool = opt(False, "every divisor of the (equal) sequence length")
    min_length: int | None = opt(None, "with --factors: smallest length")
    max_length: int | None = opt(None, "with --factors: largest length")


@dataclass(frozen=True)
class DecoupledParams(StatefulParams):
    k1: int | None = opt(None, "forward window: steps per sample", required=True, positive=True)
    k2: int | None = opt(
        None, "gradient window: the last k2 steps of a window train", required=True, positive=True
    )
    stride: int | None = opt(
        None, "steps between window starts (default k1: no overlap)", positive=True
    )
