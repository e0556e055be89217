"""One self-contained HTML page: the lengths, the correlogram with each rule's lag, the
padding map and the commands; for a run, also what the run wrote.

Plain HTML with inline CSS and inline SVG: no script, no font, nothing fetched.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tbptt_cli import __version__, atomic
from tbptt_cli.config import Config
from tbptt_cli.errors import UsageError
from tbptt_cli.options import InputOptions
from tbptt_cli.params import DomainAcfParams
from tbptt_cli.plan import Plan
from tbptt_cli.report import facts, plots
from tbptt_cli.report.options import ReportOptions
from tbptt_cli.sequences import SequenceSet
from tbptt_cli.strategies.grid import padded_fraction

CSS = """
body { font: 15px/1.45 sans-serif; color: #222; max-width: 1100px; margin: 0 auto;
       padding: 0 24px 40px; }
h1 { font-size: 24px; margin: 20px 0 4px; }
h2 { font-size: 19px; margin: 28px 0 6px; border-bottom: 1px solid #ddd; }
p.meta { color: #555; margin-top: 0; }
p.chosen { font-size: 18px; background: #fdecea; border-left: 5px solid #d62728;
           padding: 6px 12px; }
p.verdict { font-size: 18px; padding: 6px 12px; border-left: 5px solid #ff7f0e;
            background: #fff4e5; }
figure { margin: 8px 0; }
figure svg { width: 100%; height: auto; display: block; }
table { border-collapse: collapse; margin: 8px 0; }
th, td { padding: 3px 10px; border-bottom: 1px solid #eee; text-align: right; }
th { background: #f5f5f5; }
td.text, th.text { text-align: left; }
pre { background: #f6f8fa; padding: 6px 10px; white-space: pre-wrap; margin: 2px 0 12px; }
pre.command span { white-space: nowrap; }
ul.warnings { background: #fff8e1; border-left: 5px solid #f0b400; padding: 6px 12px;
              list-style: none; }
footer { color: #888; font-size: 12px; margin-top: 32px; }
"""


def escape(text: object) -> str:
    return html.escape(str(text), quote=True)


def document(title: str, body: Sequence[str]) -> str:
    """The whole page: no script, no external resource."""
    footer = f"tbptt {__version__}, plots by matplotlib {plots.version()}"
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            f"<title>{escape(title)}</title>",
            f"<style>{CSS}</style></head><body>",
            *body,
            f"<footer>{escape(footer)}</footer>",
            "</body></html>",
            "",
        ]
    )


def figure(name: str, svg: str) -> str:
    return f'<figure class="plot" id="plot-{name}">{svg}</figure>'


def shell(line: str) -> str:
    """A command line that wraps between words only (copying it gives the line back)."""
    words = " ".join(f"<span>{escape(word)}</span>" for word in line.split(" "))
    return f'<pre class="command">{words}</pre>'


def table(
    header: Sequence[str], rows: Sequence[Sequence[object]], words: Sequence[int] = (0,)
) -> str:
    """A table; the columns numbered in ``words`` are left-aligned text, the rest numbers."""

    def cells(tag: str, values: Sequence[object]) -> str:
        return "".join(
            f"<{tag}{' class=text' if i in words else ''}>{escape(v)}</{tag}>"
            for i, v in enumerate(values)
        )

    lines = [f"<tr>{cells('th', header)}</tr>", *(f"<tr>{cells('td', r)}</tr>" for r in rows)]
    return "<table>" + "".join(lines) + "</table>"


# --- what a run wrote --------------------------------------------------------------------


@dataclass(frozen=True)
class RunInfo:
    """The files of one run: (file name, plan) each; domain acf's chosen rule and lag."""

    strategy: str
    output: str
    files: list[tuple[str, Plan]]
    dtype: str
    features: int
    chosen: facts.RuleChoice | None = None
    grid: bool = False
    marked: list[facts.Layout] = field(default_factory=list)

    @classmethod
    def of(cls, config: Config, files: list[tuple[str, Plan]], features: int) -> RunInfo:
        chosen = None
        first = files[0][1]
        if "analysis" in first.report:
            a = first.report["analysis"]
            chosen = facts.RuleChoice(a["rule"], a["lag"], a["length"], "")
        marked = [
            facts.Layout(p.window, p.batch_size, str(p.packing), padded_fraction(p))
            for _, p in files
            if p.stateful and p.packing in facts.PACKINGS and p.batch_length is None
        ]
        return cls(
            config.strategy,
            str(config.output.path),
            files,
            config.output.dtype,
            features,
            chosen,
            config.strategy == "grid",
            marked,
        )


def run_section(run: RunInfo) -> list[str]:
    rows = []
    for name, plan in run.files:
        layout = "stateful" if plan.stateful else "stateless"
        if plan.packing:
            layout += f", {plan.packing} packing"
        rows.append(
            [
                name,
                layout,
                plan.window,
                plan.samples,
                plan.batch_size,
                plan.batches,
                int(plan.reset.sum()),
                int((plan.sequence < 0).sum()),
                f"{padded_fraction(plan):.1%}",
            ]
        )
    header = ["file", "layout", "window", "samples", "batch", "batches", "resets", "filler rows"]
    what = f"{run.strategy.replace('-', ' ')} wrote {run.output}"
    if not run.grid:
        plan = run.files[0][1]
        what += f": {plan.samples} x {plan.window} x {run.features} {run.dtype}"
    out = ["<h2>This output</h2>", f"<p>{escape(what)}</p>"]
    if run.chosen is not None:
        out.append(
            f'<p class="chosen">Chosen lag: <b>{run.chosen.lag}</b> (rule {escape(run.chosen.rule)}'
            f"), chunk length {run.chosen.length}</p>"
        )
    out.append(table([*header, "padded"], rows, (0, 1)))
    if run.marked:
        whose = "Their layouts are" if len(run.marked) > 1 else "Its layout is"
        out.append(f"<p>{whose} outlined in black in the padding map below.</p>")
    return out


# --- the page ----------------------------------------------------------------------------


def build(
    data: SequenceSet,
    options: InputOptions,
    params: DomainAcfParams,
    gram: facts.Correlogram,
    settings: ReportOptions,
    run: RunInfo | None = None,
    warnings: Sequence[str] = (),
) -> tuple[str, dict[str, Any]]:
    """The page and its facts (what ``--json`` prints); ``warnings`` are the reader's (and
    the run's), shown with the analysis's own under the title as on stderr."""
    rule_lengths = [c.length for c in gram.choices if c.length is not None]
    if run is not None and run.grid:  # one row per length of the grid
        lengths = [plan.window for _, plan in run.files]
    else:
        extra = rule_lengths + [m.length for m in run.marked] if run else rule_lengths
        lengths = facts.candidate_lengths(data.lengths, settings.lengths, extra)
    sizes = facts.candidate_batch_sizes(
        data.count, settings.batch_sizes, [m.batch_size for m in run.marked] if run else []
    )
    padding = facts.padding_map(data, lengths, sizes)
    best = [padding.best_layout(k) for k in padding.lengths]
    title = f"tbptt report: {options.path}"
    said = list(dict.fromkeys([*warnings, *gram.warnings]))
    body = [f"<h1>{escape(title)}</h1>", f"<p class=meta>{escape(describe(data))}</p>"]
    body += warning_list(said)
    if run is not None:
        body += run_section(run)
    marks = [(f"chunk {m.length}", m.length) for m in (run.marked if run else [])][:4]
    body += lengths_section(data, marks)
    body += correlogram_section(gram, run.chosen if run else None)
    one_series = data.count == 1
    body += padding_section(padding, best, run.marked if run else [], one_series)
    found = facts.commands(options, params, gram, padding, one_series)
    body += ["<h2>Commands</h2>"]
    for what, line in found:
        body += [f"<p>{escape(what)}:</p>", shell(line)]
    summary = {
        "feature": gram.analysis.feature if gram.analysis else None,
        "band": gram.analysis.band if gram.analysis else None,
        "max_lag": gram.analysis.max_lag if gram.analysis else None,
        "rules": {
            c.rule: {"lag": c.lag, "length": c.length, "max_lag": c.max_lag, "reason": c.reason}
            for c in gram.choices
        },
        "problem": gram.problem or None,
        "lengths": padding.lengths,
        "batch_sizes": padding.batch_sizes,
        "best": [vars(b) for b in best],
        "commands": [line for _, line in found],
        "warnings": said,
    }
    return document(title, body), summary


def warning_list(warnings: Sequence[str]) -> list[str]:
    """What reading and analysing the input left out or changed, before any number of it."""
    if not warnings:
        return []
    items = "".join(f"<li><b>warning:</b> {escape(w)}</li>" for w in warnings)
    return [f'<ul class="warnings">{items}</ul>']


def describe(data: SequenceSet) -> str:
    from tbptt_cli.inspect import length_stats

    stats = length_stats(data.lengths)
    return (
        f"{data.count} sequence(s), {stats['total']} steps (min {stats['min']}, median "
        f"{stats['median']}, max {stats['max']}); features {', '.join(data.feature_names)}"
    )


def lengths_section(data: SequenceSet, marks: list[tuple[str, int]]) -> list[str]:
    """A histogram of the lengths, or a sentence when they are all one length (a histogram
    of one bar says less than its number)."""
    heading = "<h2>Sequence lengths</h2>"
    if data.count and data.lengths.min() == data.lengths.max():
        length = int(data.lengths[0])
        what = (
            f"One sequence of {length} steps."
            if data.count == 1
            else f"All {data.count} sequences have {length} steps."
        )
        return [heading, f'<p class="lengths">{what}</p>']
    return [heading, figure("lengths", plots.lengths_histogram(data.lengths, marks))]


def correlogram_section(gram: facts.Correlogram, chosen: facts.RuleChoice | None) -> list[str]:
    a = gram.analysis
    if a is None:
        return ["<h2>Autocorrelation</h2>", f"<p>No correlogram: {escape(gram.problem)}</p>"]
    out = [f"<h2>Autocorrelation of {escape(a.series)}</h2>"]
    if chosen is None:
        default = next(c for c in gram.choices if c.rule == "pacf")
        if default.lag is not None:
            out.append(
                f'<p class="chosen">domain acf would choose lag <b>{default.lag}</b> with its '
                f"default rule pacf (chunk length {default.length})</p>"
            )
    lag = chosen.lag if chosen else None
    out.append(figure("acf", plots.correlogram(a, gram.choices, lag)))
    rows = [
        [c.rule, "none" if c.lag is None else c.lag, "" if c.length is None else c.length, c.reason]
        for c in gram.choices
    ]
    out.append(table(["rule", "lag", "chunk length", "why"], rows, (0, 3)))
    out.append(
        "<p>Blue stems lie outside the significance band (shaded), grey ones inside; dotted "
        "lines mark each rule's lag" + (", the red line the chosen lag." if lag else ".") + "</p>"
    )
    return out


def padding_section(
    padding: facts.PaddingMap,
    best: list[facts.Layout],
    marked: list[facts.Layout],
    one_series: bool = False,
) -> list[str]:
    streams = (
        " One series fills one row of any batch, so the commands below cut it into parallel "
        "streams (<code>--streams auto</code>) to make the batch."
        if one_series
        else ""
    )
    return [
        "<h2>Padding by chunk length and batch size</h2>",
        "<p>The share of X that is padding (masked tails and filler rows) in the layout "
        "<code>split --length K --batch-size B</code> writes, for both packings. A star marks "
        "each length's best layout: the largest batch size within "
        f"{facts.SLACK * 100:.0f} percentage points of that length's least padding.{streams}</p>",
        figure("padding", plots.padding_heatmap(padding, best, marked)),
    ]


# --- writing -----------------------------------------------------------------------------


def write_html(path: Path, text: str, no_clobber: bool, wait: float) -> None:
    """Temp file beside ``path``, fsync, rename: a page is whole or absent."""
    atomic.check_writable(path, no_clobber)
    with atomic.output_lock(path, wait), atomic.transaction() as txn:
        try:
            txn.stage(path).write_text(text, encoding="utf-8")
            txn.commit()
        except OSError as e:
            raise atomic.write_error(path, e) from None


def input_report(
    options: InputOptions, settings: ReportOptions, output: str, no_clobber: bool, wait: float
) -> dict[str, Any]:
    """``tbptt report``: read, analyse, draw and write the page; returns the summary."""
    from tbptt_cli.readers import read_input

    plots.require()
    path = Path(output)
    atomic.check_writable(path, no_clobber)
    params = DomainAcfParams(
        feature=settings.feature, max_lag=settings.max_lag, alpha=settings.alpha
    )
    with atomic.signals_raise():
        data, source = read_input(options, spill_dir=path.parent)
        gram = facts.correlogram(data, params)
        page, summary = build(data, options, params, gram, settings, None, source.warnings)
        write_html(path, page, no_clobber, wait)
    return {"output": output, **summary}


def settings_of(config: Config) -> tuple[DomainAcfParams, ReportOptions]:
    """The analysis a run's page shows: domain acf's own settings, else the defaults."""
    params = config.params if isinstance(config.params, DomainAcfParams) else DomainAcfParams()
    return params, ReportOptions(params.feature, params.max_lag, params.alpha)


def run_report(
    config: Config, data: SequenceSet, files: list[tuple[str, Plan]], warnings: Sequence[str]
) -> tuple[Path, str]:
    """``--report PATH.html`` of a run: the input's page with what the run wrote and the
    run's ``warnings``."""
    params, settings = settings_of(config)
    first = files[0][1]
    known = first.report.get("analysis")
    gram = facts.correlogram(data, params, facts.analysis_of(known) if known else None)
    run = RunInfo.of(config, files, data.features)
    page, _ = build(data, config.input, params, gram, settings, run, warnings)
    return Path(str(config.output.report)), page


def check_run_report(config: Config, outputs: list[Path]) -> None:
    """Before any work: matplotlib is there and the page does not overwrite an output."""
    if config.output.report is None:
        return
    plots.require()
    report = Path(config.output.report)
    if any(report.resolve() == p.resolve() for p in outputs):
        raise UsageError(f"--report {report} names an output of the run; choose another file")


def compare_page(
    grid_index: str,
    results: str,
    scores: dict[int, Any],
    result: Any,
    higher_is_better: bool,
    alpha: float,
) -> str:
    """``grid compare``'s page: the verdict, box plots per length and the test table."""
    title = f"tbptt grid compare: {results}"
    runs = sum(len(v) for v in scores.values())
    way = "higher" if higher_is_better else "lower"
    rows = []
    for row in result.rows:
        tested = row["p"] is not None
        rows.append(
            [
                f"{row['length']}{' (best)' if row['length'] == result.best else ''}",
                row["n"],
                f"{row['median']:.4g}",
                f"{row['q1']:.4g} to {row['q3']:.4g}",
                f"{row['mean']:.4g}",
                f"{row['min']:.4g} to {row['max']:.4g}",
                f"{row['u']:g}" if tested else "",
                f"{row['p']:.3g}" if tested else "",
                f"{row['p_holm']:.3g}" if tested else "",
            ]
        )
    header = ["length", "runs", "median", "quartiles", "mean", "range", "U", "p", "p (Holm)"]
    meta = f"{runs} runs over {len(scores)} lengths of {grid_index}; {way} scores are better"
    body = [
        f"<h1>{escape(title)}</h1>",
        f"<p class=meta>{escape(meta)}</p>",
        f'<p class="verdict">{escape(result.verdict)}</p>',
        figure(
            "scores",
            plots.score_boxes(list(scores), list(scores.values()), result.best, higher_is_better),
        ),
        table(header, rows),
        "<p>Boxes span the quartiles around the median; whiskers reach the farthest score "
        "within 1.5 times the box; dots are the runs. Each length is tested against the best "
        "one with a two-sided Mann-Whitney U test, its p-value adjusted by Holm's method for "
        f"the {len(scores) - 1} comparison(s); below {alpha} the difference is significant.</p>",
    ]
    return document(title, body)
