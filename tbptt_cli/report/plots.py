"""The report's plots, drawn by matplotlib and returned as inline SVG text.

Figures are made with ``matplotlib.figure.Figure`` directly (no pyplot, no global
figure state), with a fixed ``svg.hashsalt`` and no date, so the same data gives the
same SVG bytes.
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np

from tbptt_cli.errors import UsageError
from tbptt_cli.report.facts import PACKINGS, Layout, PaddingMap, RuleChoice
from tbptt_cli.report.options import EXTRA
from tbptt_cli.strategies.acf import Analysis

STYLE: dict[Any, Any] = {  # matplotlib types the keys as literals
    "svg.hashsalt": "tbptt",
    "svg.fonttype": "path",  # glyphs as paths: the page needs no font to look the same
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.spines.top": False,
    "axes.spines.right": False,
}
# No date (the same bytes every run) and no RDF block: the page footer names the tools.
NO_METADATA = {"Date": None, "Creator": None, "Format": None, "Type": None}
WIDTH = 9.0  # inches; the page scales SVGs to its width
RULE_COLOURS = {"pacf": "tab:purple", "acf": "tab:green", "season": "tab:orange"}
CHOSEN = "tab:red"
LABEL_BOX = {"facecolor": "white", "edgecolor": "none", "alpha": 0.8, "pad": 1}
CELL_TEXT_LIMIT = 160  # cells per panel up to which each cell shows its percentage


def require() -> None:
    """Exit 2 naming the extra when matplotlib is missing, before any work is done."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise UsageError(f"HTML reports need matplotlib, which is not installed; {EXTRA}") from None


def version() -> str:
    import matplotlib

    return str(matplotlib.__version__)


@contextmanager
def figure(height: float, rows: int = 1, columns: int = 1, **kw: Any) -> Iterator[Any]:
    """A constrained-layout figure and its axes, drawn under the report's style."""
    import matplotlib
    from matplotlib.figure import Figure

    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(WIDTH, height), layout="constrained")
        yield fig, fig.subplots(rows, columns, squeeze=False, **kw)


def svg(fig: Any) -> str:
    """The figure as an ``<svg>`` element (no XML prolog), deterministic bytes."""
    import matplotlib

    buffer = io.StringIO()
    with matplotlib.rc_context(STYLE):
        fig.savefig(buffer, format="svg", metadata=NO_METADATA)
    text = buffer.getvalue()
    return text[text.index("<svg") :]


def lengths_histogram(lengths: np.ndarray, marks: Sequence[tuple[str, int]] = ()) -> str:
    """How many sequences have how many steps (of more than one length); ``marks`` are
    chunk lengths drawn as lines."""
    from matplotlib.ticker import MaxNLocator

    lengths = np.asarray(lengths)
    with figure(2.6) as (fig, axes):
        ax = axes[0, 0]
        low, high = int(lengths.min(initial=0)), int(lengths.max(initial=0))
        bins = min(50, high - low + 1)
        ax.hist(lengths, bins=bins, range=(low - 0.5, high + 0.5), color="tab:blue")
        for row, (label, length) in enumerate(marks):
            ax.axvline(length, color=CHOSEN, linestyle="--", linewidth=1.2)
            ax.annotate(
                label,
                (length, 1),
                xycoords=("data", "axes fraction"),
                xytext=(3, -10 - 11 * row),
                textcoords="offset points",
                color=CHOSEN,
            )
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("sequence length (steps)")
        ax.set_ylabel("sequences")
        ax.set_title(f"{len(lengths)} sequence(s), {int(lengths.sum())} steps")
        return svg(fig)


def correlogram(a: Analysis, choices: Sequence[RuleChoice], chosen: int | None) -> str:
    """ACF above PACF with the significance band, each rule's lag and the chosen lag."""
    lags = np.arange(1, a.max_lag + 1)
    with figure(4.6, 2, 1, sharex=True) as (fig, axes):
        for ax, name, values in ((axes[0, 0], "ACF", a.acf), (axes[1, 0], "PACF", a.pacf)):
            inside = np.abs(values[1:]) <= a.band
            colours = np.where(inside, "0.6", "tab:blue")
            ax.axhspan(-a.band, a.band, color="tab:blue", alpha=0.15, linewidth=0)
            ax.axhline(0, color="0.3", linewidth=0.8)
            ax.vlines(lags, 0, values[1:], colors=colours, linewidth=1.5)
            ax.scatter(lags, values[1:], c=colours, s=10, zorder=3)
            ax.set_ylabel(name)
            ax.set_ylim(*value_range(values[1:], a.band))
            for choice in choices:
                if choice.lag is not None:
                    colour = RULE_COLOURS[choice.rule]
                    ax.axvline(choice.lag, color=colour, linestyle=":", linewidth=1.2)
            if chosen is not None:
                ax.axvline(chosen, color=CHOSEN, linewidth=2.2, alpha=0.8)
        top = axes[0, 0]
        for choice in choices:
            if choice.lag is not None:
                top.annotate(
                    f"{choice.rule} {choice.lag}",
                    (choice.lag, 1.0),
                    xycoords=("data", "axes fraction"),
                    xytext=(3, -21 - 11 * list(RULE_COLOURS).index(choice.rule)),
                    textcoords="offset points",
                    color=RULE_COLOURS[choice.rule],
                    bbox=LABEL_BOX,
                )
        if chosen is not None:
            top.annotate(
                f"chosen lag {chosen}",
                (chosen, 1.0),
                xycoords=("data", "axes fraction"),
                xytext=(3, -10),
                textcoords="offset points",
                color=CHOSEN,
                fontweight="bold",
                bbox=LABEL_BOX,
            )
        top.set_title(
            f"{a.series}: {a.steps} steps in {a.sequences} sequence(s), "
            f"band +-{a.band:.4f} (shaded)"
        )
        axes[1, 0].set_xlabel("lag (steps)")
        return svg(fig)


def value_range(values: np.ndarray, band: float) -> tuple[float, float]:
    """The values and the band, with room above for the lag labels, up to 1: a fixed
    -0.25..1 squashed a white-noise correlogram (all within +-0.03) into a flat line."""
    low = min(float(values.min(initial=0)), -band)
    high = max(float(values.max(initial=0)), band)
    span = high - low
    return low - 0.08 * span, min(high + 0.3 * span, 1.05)


def padding_heatmap(
    padding: PaddingMap, best: Sequence[Layout], marked: Sequence[Layout] = ()
) -> str:
    """Padded share of X over lengths x batch sizes, one panel per packing; a star on
    each length's best layout, a black box around ``marked`` (this output's layouts)."""
    from matplotlib.ticker import PercentFormatter

    rows, columns = len(padding.lengths), len(padding.batch_sizes)
    height = min(9.0, 1.3 + 0.28 * rows)
    top = max(float(padding.padded.max(initial=0)), 0.05)
    with figure(height, 1, 2, sharey=True) as (fig, axes):
        image = None
        for p, packing in enumerate(PACKINGS):
            ax = axes[0, p]
            share = padding.padded[p]
            edges = np.arange(columns + 1) - 0.5, np.arange(rows + 1) - 0.5
            image = ax.pcolormesh(*edges, share, cmap="Reds", vmin=0, vmax=top)
            ax.set_xticks(range(columns), [str(b) for b in padding.batch_sizes])
            ax.set_yticks(range(rows), [str(k) for k in padding.lengths])
            ax.set_xlabel("batch size")
            ax.set_title(f"--packing {packing}")
            if rows * columns <= CELL_TEXT_LIMIT:
                for (i, j), value in np.ndenumerate(share):
                    dark = value > 0.6 * top
                    ax.text(
                        j,
                        i,
                        f"{value:.0%}",
                        ha="center",
                        va="center",
                        fontsize=7,
                        color="white" if dark else "0.15",
                    )
            _outline(ax, padding, [m for m in marked if m.packing == packing], "black")
            for b in best:
                if b.packing == packing:
                    i, j = padding.lengths.index(b.length), padding.batch_sizes.index(b.batch_size)
                    ax.plot(j + 0.32, i - 0.22, marker="*", color="tab:blue", markersize=7)
        axes[0, 0].invert_yaxis()  # the shortest length on top, as in a table
        axes[0, 0].set_ylabel("chunk length")
        # Percent labels with as many decimals as the ticks need: "{x:.0%}" showed the
        # ticks 0.025 and 0.075 as 2% and 8%.
        colorbar = fig.colorbar(image, ax=list(axes[0]), shrink=0.9, format=PercentFormatter(1))
        colorbar.set_label("padded share of X")
        return svg(fig)


def _outline(ax: Any, padding: PaddingMap, cells: Sequence[Layout], colour: str) -> None:
    from matplotlib.patches import Rectangle

    for cell in cells:
        i, j = padding.lengths.index(cell.length), padding.batch_sizes.index(cell.batch_size)
        ax.add_patch(
            Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor=colour, linewidth=2.2)
        )


def score_boxes(
    lengths: Sequence[int], scores: Sequence[np.ndarray], best: int, higher_is_better: bool
) -> str:
    """One box per length (median, quartiles, 1.5 IQR whiskers) with every score as a dot."""
    with figure(3.4) as (fig, axes):
        ax = axes[0, 0]
        positions = np.arange(1, len(lengths) + 1)
        boxes = ax.boxplot(
            list(scores),
            positions=positions,
            widths=0.5,
            patch_artist=True,
            showfliers=False,
            medianprops={"color": "black"},  # the default orange vanishes in the best's box
        )
        for length, patch in zip(lengths, boxes["boxes"], strict=True):
            patch.set_facecolor("tab:orange" if length == best else "0.85")
        spread = np.random.default_rng(0)  # fixed jitter: the same page every time
        for x, values in zip(positions, scores, strict=True):
            jitter = spread.uniform(-0.12, 0.12, len(values))
            ax.scatter(x + jitter, values, s=9, color="0.25", alpha=0.6, zorder=3)
        ax.set_xticks(positions, [str(k) for k in lengths])
        ax.set_xlabel("chunk length")
        better = "higher" if higher_is_better else "lower"
        ax.set_ylabel(f"score ({better} is better)")
        ax.set_title(f"scores per length over repeats; best median: length {best}")
        return svg(fig)
