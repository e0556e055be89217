"""The command line: parse options, build a Config, call the core, print one line.

Imports numpy and h5py only inside commands, so ``tbptt --help`` stays fast.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import sys
import warnings
from collections.abc import Callable
from typing import Any

import click

from tbptt_cli import __version__
from tbptt_cli.errors import EXIT_CODES, TbpttError, UsageError
from tbptt_cli.options import InputOptions, OutputOptions, own_first
from tbptt_cli.params import SHARED_PARAMS
from tbptt_cli.registry import STRATEGIES

EXIT_TABLE = "\b\nExit codes:\n" + "\n".join(
    f"  {code:>3}  {text}" for code, text in EXIT_CODES.items()
)


class EnvOption(click.Option):
    """An option whose errors name the environment variable when the value came from it."""

    def get_error_hint(self, ctx: click.Context | None) -> str:
        if from_environment(ctx, self.name):
            return f"environment variable {self.envvar}"
        return super().get_error_hint(ctx)  # type: ignore[arg-type]


def from_environment(ctx: click.Context | None, name: str | None) -> bool:
    source = ctx.get_parameter_source(name) if ctx is not None and name else None
    return source is click.core.ParameterSource.ENVIRONMENT


def name_variables(error: UsageError) -> None:
    """The core's error about an option names the option; when its value came from an
    environment variable, name the variable too."""
    ctx = click.get_current_context(silent=True)
    text = str(error)
    if ctx is None or text.startswith("environment variable"):
        return
    named = [
        str(p.envvar)
        for p in ctx.command.params
        if isinstance(p, EnvOption)
        and from_environment(ctx, p.name)
        and re.search(re.escape(p.opts[0]) + r"(?![\w-])", text)
    ]
    if named:
        error.args = (f"environment variable {', '.join(named)}: {text}",)


def envvar_name(section: str, cls: type, name: str) -> str:
    """``TBPTT_<OPTION>`` for a shared option, ``TBPTT_<COMMAND>_<OPTION>`` for one
    command's own, so a variable set for one command never changes another."""
    if section in ("input", "output") or declared_by(cls, name) in SHARED_PARAMS:
        return "TBPTT_" + name.upper()
    command = section.removeprefix("domain-").replace("-", "_").upper()
    return f"TBPTT_{command}_{name.upper()}"


def declared_by(cls: type, name: str) -> type:
    return next(c for c in cls.__mro__ if name in c.__dict__.get("__annotations__", {}))


def field_option(section: str, cls: type, field: dataclasses.Field[Any]) -> click.Option:
    """One dataclass field as ``--field-name`` with its environment variable."""
    flag = "--" + field.name.replace("_", "-")
    dest = f"{section.replace('-', '_')}__{field.name}"
    envvar = envvar_name(section, cls, field.name)
    kind = str(field.type)
    default = "" if field.default is None else f"default: {field.default}; "
    help_text = f"{field.metadata['help']} [{default}env {envvar}]"
    if kind.startswith("bool"):
        # --no-clobber pairs with --clobber, --truncate with --no-truncate.
        name = field.name.replace("_", "-")
        opposite = f"--{name[3:]}" if name.startswith("no-") else f"--no-{name}"
        return EnvOption([f"{flag}/{opposite}", dest], default=None, help=help_text, envvar=envvar)
    choices = field.metadata.get("choices")
    click_type: Any
    if choices:
        click_type = click.Choice(choices)
    elif field.metadata.get("auto_or_int") or not kind.startswith(("int", "float")):
        click_type = click.STRING
    else:
        click_type = click.INT if kind.startswith("int") else click.FLOAT
    return EnvOption(
        [flag, dest],
        type=click_type,
        default=None,
        help=help_text,
        envvar=envvar,
    )


def section_options(section: str, cls: type) -> list[click.Option]:
    """A section's flags, the class's own fields first (``--length`` before the shared ones)."""
    return [field_option(section, cls, f) for f in own_first(cls) if f.metadata.get("cli", True)]


def run_options() -> list[click.Parameter]:
    """Options about this run, not about the data: never part of a config file."""
    return [
        click.Option(
            ["-o", "--output", "output_path"],
            metavar="PATH",
            help="output .h5 file (grid: an output directory)",
        ),
        click.Option(
            ["-c", "--config", "config_file"],
            metavar="FILE.yaml",
            help="YAML config; flags override it",
        ),
        click.Option(
            ["-n", "--dry-run"], is_flag=True, help="validate and print the plan; write nothing"
        ),
        click.Option(
            ["--json", "as_json"], is_flag=True, help="print one JSON summary object on stdout"
        ),
        click.Option(["-q", "--quiet"], is_flag=True, help="print nothing on success"),
        click.Option(["-v", "--verbose"], is_flag=True, help="also print the time spent per stage"),
        click.Option(["--debug"], is_flag=True, help="show the traceback of an internal error"),
        click.Option(
            ["--progress/--no-progress"], default=None, help="progress bar (default: on a terminal)"
        ),
        click.Option(
            ["--wait"],
            type=click.FLOAT,
            default=0.0,
            metavar="SECONDS",
            help="seconds to wait for another run's lock",
        ),
        click.Option(
            ["--print-config"], is_flag=True, help="print the resolved config as YAML and exit"
        ),
    ]


def strategy_command(name: str, command_name: str) -> click.Command:
    strategy = STRATEGIES[name]
    params: list[click.Parameter] = [click.Argument(["input_path"], nargs=-1, metavar="[INPUT]...")]
    # What the strategy needs first, then reading, writing and how the run behaves.
    params += section_options(name, strategy.params)
    params += section_options("input", InputOptions) + section_options("output", OutputOptions)
    params += run_options()

    def callback(**kwargs: Any) -> None:
        try:
            run_strategy(name, kwargs)
        except UsageError as e:
            name_variables(e)
            raise

    return click.Command(
        command_name,
        params=params,
        callback=callback,
        epilog=EXIT_TABLE,
        help=f"{strategy.summary[0].upper()}{strategy.summary[1:]}.\n\n{EXAMPLES.get(name, '')}",
        short_help=strategy.summary,
    )


def flag_values(section: str, cls: type, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The section's options given as flags or environment variables, converted."""
    from tbptt_cli.config import convert

    ctx = click.get_current_context(silent=True)
    values = {}
    for field in dataclasses.fields(cls):
        dest = f"{section.replace('-', '_')}__{field.name}"
        value = kwargs.get(dest)
        if value is not None:
            try:
                values[field.name] = convert(field, value)
            except UsageError as e:
                where = (
                    f"environment variable {envvar_name(section, cls, field.name)}"
                    if from_environment(ctx, dest)
                    else "--" + field.name.replace("_", "-")
                )
                raise UsageError(f"{where}: {e}") from None
    return values


def run_strategy(name: str, kwargs: dict[str, Any]) -> None:
    """Merge file, environment and flags into a Config, run it and report."""
    from tbptt_cli import config as cfg
    from tbptt_cli import core, progress

    raw = cfg.load_file(kwargs["config_file"]) if kwargs["config_file"] else {}
    source = kwargs["config_file"] or "command line"
    classes = {"input": InputOptions, "output": OutputOptions, name: STRATEGIES[name].params}
    overrides = {section: flag_values(section, cls, kwargs) for section, cls in classes.items()}
    if kwargs["input_path"]:
        overrides["input"]["path"] = one_or_many(kwargs["input_path"])
    if kwargs["output_path"] is not None:
        overrides["output"]["path"] = kwargs["output_path"]
    base = os.path.dirname(kwargs["config_file"] or "")
    config = cfg.resolve(name, raw, overrides, source, base)
    cfg.check_outputs(config)
    if kwargs["print_config"]:
        import yaml

        emit(yaml.safe_dump(config.as_dict(), sort_keys=False).rstrip("\n"), wrote=False)
        return
    cfg.check_required(config)
    if config.input.path is None:
        raise UsageError(
            "no input: give INPUT (a path, or - for stdin) or input.path in the config"
        )
    show_progress = progress.wanted(kwargs["progress"]) and not kwargs["quiet"]
    run = core.RunOptions(kwargs["dry_run"], kwargs["wait"], progress.factory(show_progress))
    summary = core.execute(config, run)
    report(summary, kwargs)


def one_or_many(paths: tuple[str, ...]) -> str | tuple[str, ...]:
    """INPUT: one path as a string, several (a shell glob) as a tuple read as one input."""
    return paths[0] if len(paths) == 1 else paths


def report(summary: dict[str, Any], kwargs: dict[str, Any]) -> None:
    """A few lines for people on stderr; with --json one object on stdout."""
    timings = summary.pop("timings", {})
    dry = "plan" in summary
    body: Any = summary["plan"] if dry else summary
    grid = isinstance(body, dict) and "grid" in body
    targets: list[dict[str, Any]] = [body] if grid or not dry else body
    texts = [t.pop("text", "") for t in targets]
    if not kwargs["quiet"]:
        if not kwargs["as_json"]:
            for text in dict.fromkeys(texts):
                if text:
                    click.echo(text, err=True)
        for warning in sorted({w for t in targets for w in t["warnings"]}):
            click.echo(f"{label('warning')} {warning}", err=True)
        for line in grid_lines(body, dry) if grid else target_lines(targets, dry):
            click.echo(line, err=True)
        if kwargs["verbose"]:
            spent = ", ".join(f"{k} {v:.3f} s" for k, v in timings.items())
            click.echo(f"timings: {spent}", err=True)
    if kwargs["as_json"]:
        plain = [without_outputs(t) for t in targets]
        emit_json({"plan": plain[0] if grid else plain} if dry else plain[0], wrote=not dry)


def target_lines(targets: list[dict[str, Any]], dry: bool) -> list[str]:
    """``wrote out.h5: 90 x 100 x 2 float32, batch 6 (15 batches, 18.9% filler),
    6 resets, 0.2 MB (+ manifest)``."""
    from tbptt_cli.plan import batch_text

    lines = []
    for t in targets:
        shape = f"{t['samples']} x {t['window']} x {t['features']} {t['dtype']}"
        layout = f"batch {batch_text(t)}, {t['resets']} resets"
        size = f"{t['bytes'] / 1e6:.1f} MB"
        if dry:
            where = f" for {t['output']}" if t["output"] else ""
            lines.append(f"plan{where}: {shape}, {layout}, ~{size}; nothing written")
        else:
            if "shards" in t:
                size += f", {t['shards']} shard(s) in {t['output']}.d"
            lines.append(f"wrote {t['output']}: {shape}, {layout}, {size} (+ {t['manifest']})")
            lines += [f"wrote {extra} (validation, + its manifest)" for extra in t["outputs"][2:]]
            lines += [f"wrote {t['report']} (report)"] if "report" in t else []
    return lines


def grid_lines(body: dict[str, Any], dry: bool) -> list[str]:
    count = len(body["grid"])
    if dry:
        where = f" for {body['output']}" if body["output"] else ""
        return [f"plan{where}: {count} length(s); nothing written"]
    lines = [f"wrote {body['output']}: {count} file(s) + manifests, grid.json"]
    return lines + ([f"wrote {body['report']} (report)"] if "report" in body else [])


def without_outputs(summary: dict[str, Any]) -> dict[str, Any]:
    """``outputs`` serves the lines for people; the JSON names its files in output/manifest."""
    return {k: v for k, v in summary.items() if k != "outputs"}


def emit_json(document: dict[str, Any], wrote: bool = True) -> None:
    """The document as one line of JSON on stdout (see `emit`)."""
    emit(json.dumps(document, sort_keys=True), wrote)


def emit(line: str, wrote: bool) -> None:
    """One line of data on stdout. After a run that ``wrote`` its outputs, a closed pipe or
    a full device is exit 74 (the outputs stay committed); a command that wrote nothing
    (inspect, validate, a dry run) ends quietly on a closed pipe: the reader has what it
    wanted.

    Click turns EPIPE into a silent exit 1 and other OS errors escape it, so both are
    caught here.
    """
    from tbptt_cli.errors import WriteError

    written = "; the outputs were written" if wrote else ""
    try:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()
    except BrokenPipeError:
        _silence_stdout()
        if wrote:
            raise WriteError(f"stdout: broken pipe (the reader went away){written}") from None
    except OSError as e:
        _silence_stdout()
        raise WriteError(f"stdout: {e.strerror or e}{written}") from None


EXAMPLES = {
    "asis": "\b\nExample:\n  tbptt asis sample_data/short.npy -o out/short.h5",
    "split": (
        "\b\nExample:\n  tbptt split sample_data/sensors.csv --id-col sensor --time-col t \\\n"
        "      --target next --length 100 --batch-size 6 -o out/sensors.h5"
    ),
    "stepwise": "\b\nExample:\n  tbptt stepwise sample_data/short.npy -o out/steps.h5",
    "domain-acf": (
        "\b\nExample:\n  tbptt domain acf sample_data/load.csv --id-col site --time-col hour \\\n"
        "      --rule season -o out/load.h5"
    ),
    "domain-segments": (
        "\b\nExample:\n  tbptt domain segments sample_data/sentences.csv --id-col doc \\\n"
        "      --time-col t --boundary-col eos -o out/sentences.h5"
    ),
    "grid": (
        "\b\nExample:\n  tbptt grid sample_data/sensors.csv --id-col sensor --time-col t \\\n"
        "      --target next --lengths 50,100,200 --batch-size 6 -o out/sensors_grid\n\n"
        "\b\nAfter training on the grid, compare the scores per length:\n"
        "  tbptt grid compare out/sensors_grid/grid.json results.csv -o compare.html"
    ),
    "decoupled": (
        "\b\nExample:\n  tbptt decoupled sample_data/sensors.csv --id-col sensor --time-col t \\\n"
        "      --target next --k1 100 --k2 50 --stride 25 -o out/dec.h5"
    ),
}


class Group(click.Group):
    """Lists commands in the design's order instead of alphabetically."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        # `tbptt grid compare ...` is a command of its own beside `tbptt grid INPUT ...`
        # (an input file named compare is ./compare).
        if args[:2] == ["grid", "compare"] and self is cli:
            return "grid compare", grid_compare, args[2:]
        return super().resolve_command(ctx, args)


def print_version(ctx: click.Context, _: Any, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    import h5py
    import numpy

    click.echo(
        f"tbptt {__version__} (numpy {numpy.__version__}, h5py {h5py.__version__}, "
        f"HDF5 {h5py.version.hdf5_version})"
    )
    ctx.exit(0)


@click.group(cls=Group, epilog=EXIT_TABLE)
@click.option(
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=print_version,
    help="print the tool, numpy, h5py and HDF5 versions",
)
def cli() -> None:
    """Prepare sequence data for RNNs trained with truncated backpropagation through time.

    Reads CSV/TSV, Parquet, Arrow, NPY or NPZ, cuts sequences with one of six strategies and
    writes HDF5 tensors [samples, timesteps, features] plus a JSON manifest of boundaries,
    resets and batch sizes.
    """


@click.group(cls=Group)
def domain() -> None:
    """Domain-specific splits: from ACF/PACF, or at segment boundaries."""


def add_strategy_commands() -> None:
    order = ["asis", "split", "stepwise", "domain-acf", "domain-segments", "grid", "decoupled"]
    for name in order:
        target = domain if name.startswith("domain-") else cli
        command_name = name.removeprefix("domain-")
        target.add_command(strategy_command(name, command_name))
        if name == "stepwise":
            cli.add_command(domain)


add_strategy_commands()


@cli.command(
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True}, epilog=EXIT_TABLE
)
@click.argument("config_file", metavar="CONFIG.yaml")
@click.pass_context
def run(ctx: click.Context, config_file: str) -> None:
    """Run whatever strategy a config file names; flags override the file.

    It takes every option of that strategy, listed with its environment variable by
    `tbptt STRATEGY --help` (`tbptt split --help`, `tbptt domain acf --help`, ...).

    \b
    Example:
      tbptt run configs/split.yaml --length 200 -o out/split200.h5
      tbptt run configs/split.yaml --print-config
    """
    from tbptt_cli import config as cfg

    if any(arg in ("-c", "--config") or arg.startswith("--config=") for arg in ctx.args):
        raise UsageError(f"`tbptt run {config_file}` already names the config; drop -c/--config")
    name = cfg.strategy_of(cfg.load_file(config_file), config_file)
    command = strategy_command(name, name)
    # No parent: usage errors then point at `tbptt split --help`, where the options are.
    with command.make_context(
        f"tbptt {name.replace('-', ' ')}", [*ctx.args, "--config", config_file]
    ) as sub:
        command.invoke(sub)


@cli.command(name="inspect", epilog=EXIT_TABLE)
@click.argument("path", metavar="INPUT...", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="print one JSON object on stdout")
@click.option("--debug", is_flag=True, help="show the traceback of an internal error")
def inspect_command(path: tuple[str, ...], as_json: bool, debug: bool, **reader: Any) -> None:
    """Describe an input file (or an output .h5) in words or --json.

    \b
    Example:
      tbptt inspect sample_data/sensors.csv --id-col sensor --time-col t
      tbptt inspect out/sensors.h5 --json | python -m json.tool
    """
    from tbptt_cli.inspect import inspect_path

    options = InputOptions(path=one_or_many(path), **flag_values("input", InputOptions, reader))
    text, document = inspect_path(options)
    if as_json:
        emit_json(document, wrote=False)
    else:
        click.echo(text, err=True)


inspect_command.params.extend(section_options("input", InputOptions))


@cli.command(epilog=EXIT_TABLE)
@click.argument("path", metavar="OUT.h5")
@click.option("--manifest", help="manifest path (default <stem>.manifest.json)")
@click.option("--against", help="the input file: rebuild every sequence and compare exactly")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object on stdout")
@click.option("--debug", is_flag=True, help="show the traceback of an internal error")
def validate(
    path: str, manifest: str | None, against: str | None, as_json: bool, debug: bool
) -> None:
    """Check an output .h5 against its manifest (and, with --against, the input).

    Exit 0 when every check passes, 65 when any fails (each failure printed).

    \b
    Example:
      tbptt validate out/sensors.h5 --against sample_data/sensors.csv
    """
    from tbptt_cli.errors import InputDataError
    from tbptt_cli.validate import validate_output

    report_doc = validate_output(path, manifest, against)
    failed = InputDataError(f"{path}: {len(report_doc['problems'])} problem(s) found")
    if as_json:
        # One object on stdout: the report, which carries the error when a check failed.
        failure = {"error": str(failed), "exit": failed.exit_code}
        emit_json({**report_doc, **failure} if report_doc["problems"] else report_doc, False)
        failed.json_sent = True
    for problem in report_doc["problems"]:
        click.echo(f"tbptt: {problem}", err=True)
    if report_doc["problems"]:
        raise failed
    click.echo(f"{path}: ok ({', '.join(report_doc['checked'])})", err=True)


def page_options(command: Callable[..., None]) -> Callable[..., None]:
    """--no-clobber, --wait, --json and --debug of the commands that write one file (an
    HTML page, a merged output) outside a strategy run."""
    options = [
        click.option(  # the variable of the strategies' --no-clobber: one meaning everywhere
            "--no-clobber",
            is_flag=True,
            cls=EnvOption,
            envvar="TBPTT_NO_CLOBBER",
            help="fail (exit 73) if the output exists [env TBPTT_NO_CLOBBER]",
        ),
        click.option(
            "--wait",
            type=click.FLOAT,
            default=0.0,
            metavar="SECONDS",
            help="seconds to wait for another run's lock",
        ),
        click.option("--json", "as_json", is_flag=True, help="print one JSON object on stdout"),
        click.option("--debug", is_flag=True, help="show the traceback of an internal error"),
    ]
    for option in reversed(options):
        command = option(command)
    return command


@cli.command(name="report", epilog=EXIT_TABLE)
@click.argument("path", metavar="INPUT")
@click.option(
    "-o",
    "--output",
    "output_path",
    required=True,
    metavar="PATH.html",
    help="the HTML page to write",
)
@click.option("-q", "--quiet", is_flag=True, help="print nothing on success")
@page_options
def report_command(
    path: str,
    output_path: str,
    no_clobber: bool,
    wait: float,
    as_json: bool,
    quiet: bool,
    debug: bool,
    **options: Any,
) -> None:
    """Draw what decides the chunk length, as one HTML page: the lengths, the ACF/PACF
    with the lag each --rule picks, the padding of every length x batch size, commands.

    Needs matplotlib: pip install 'tbptt-cli[report]'.

    \b
    Example:
      tbptt report sample_data/load.csv --id-col site --time-col hour -o out/load.html
    """
    from tbptt_cli.report.options import ReportOptions
    from tbptt_cli.report.page import input_report

    reading = InputOptions(path=path, **flag_values("input", InputOptions, options))
    settings = ReportOptions(**flag_values("report", ReportOptions, options))
    summary = input_report(reading, settings, output_path, no_clobber, wait)
    if not quiet:
        for warning in summary["warnings"]:
            click.echo(f"{label('warning')} {warning}", err=True)
        lags = ", ".join(f"{r} {v['lag'] or 'none'}" for r, v in summary["rules"].items())
        click.echo(f"wrote {output_path} (lags by rule: {lags or 'no correlogram'})", err=True)
    if as_json:
        emit_json(summary)


def _report_options() -> list[click.Option]:
    from tbptt_cli.report.options import ReportOptions

    return section_options("report", ReportOptions) + section_options("input", InputOptions)


report_command.params.extend(_report_options())


@click.command(name="compare", epilog=EXIT_TABLE)
@click.argument("grid_index", metavar="GRID.json")
@click.argument("results", metavar="RESULTS.csv")
@click.option(
    "-o",
    "--output",
    "output_path",
    metavar="PATH.html",
    help="also write an HTML page with box plots (needs tbptt-cli[report])",
)
@click.option(
    "--higher-is-better/--lower-is-better",
    default=False,
    help="how scores rank: accuracy, or a loss (the default)",
)
@click.option(
    "--alpha",
    type=click.FLOAT,
    default=0.05,
    show_default=True,
    help="significance level of the tests (Holm-adjusted)",
)
@page_options
def grid_compare(
    grid_index: str,
    results: str,
    output_path: str | None,
    higher_is_better: bool,
    alpha: float,
    no_clobber: bool,
    wait: float,
    as_json: bool,
    debug: bool,
) -> None:
    """Compare training scores per chunk length of a grid: box plots, medians and a
    Mann-Whitney U test of the best length against each other one.

    GRID.json is the grid.json of a grid run (or the folder that holds it). RESULTS.csv
    has the columns length,repeat,score (one line per training run). The one-line
    verdict goes to stdout (or one JSON object with --json).

    \b
    Example:
      tbptt grid compare out/sensors_grid/grid.json results.csv -o out/compare.html
    """
    from tbptt_cli.report.compare import compare_grid

    summary = compare_grid(
        grid_index, results, output_path, higher_is_better, alpha, no_clobber, wait
    )
    for warning in summary["warnings"]:
        click.echo(f"{label('warning')} {warning}", err=True)
    wrote = output_path is not None
    emit(json.dumps(summary, sort_keys=True) if as_json else summary["verdict"], wrote)
    if output_path:
        click.echo(f"wrote {output_path}", err=True)


@cli.command(epilog=EXIT_TABLE)
@click.argument("path", metavar="OUT.h5")
@click.option("-o", "--output", required=True, metavar="PATH", help="the regular .h5 to write")
@click.option("--manifest", help="its manifest path (default <stem>.manifest.json)")
@click.option("-q", "--quiet", is_flag=True, help="print nothing on success")
@page_options
def merge(
    path: str,
    output: str,
    manifest: str | None,
    no_clobber: bool,
    wait: float,
    as_json: bool,
    quiet: bool,
    debug: bool,
) -> None:
    """Merge a sharded output (written with --engine dask) into one regular .h5.

    The file is byte for byte what the same command writes with --engine local; its
    manifest is that run's too, apart from the input section, which names the engine.
    Every shard is checked against the manifest's sha256 first.

    \b
    Example:
      tbptt merge out/sensors.h5 -o out/sensors_one.h5
    """
    from tbptt_cli.merge import merge as merge_output

    summary = merge_output(path, output, manifest, no_clobber, wait)
    if not quiet:
        click.echo(
            f"merged {path} ({summary['shards']} shard(s)) into {summary['output']}: "
            f"{summary['samples']} samples, {summary['bytes'] / 1e6:.1f} MB "
            f"(+ {summary['manifest']})",
            err=True,
        )
    if as_json:
        emit_json(summary)


def label(kind: str) -> str:
    """``tbptt: error:``, in colour only on a terminal without NO_COLOR or TERM=dumb."""
    from tbptt_cli.progress import use_color

    text = f"tbptt: {kind}:"
    return (
        click.style(text, fg="red" if kind == "error" else "yellow", bold=True)
        if use_color()
        else text
    )


def main(argv: list[str] | None = None) -> None:
    """Map every outcome to its exit code; tracebacks only with --debug."""
    if getattr(sys.modules.get("__mp_main__"), "__name__", "") == "__mp_main__":
        # A worker process of --scheduler local:N importing the script that started the
        # run, under the name __mp_main__ (multiprocessing's spawn): without
        # `if __name__ == "__main__":` in that script, each worker would start it again.
        return
    args = sys.argv[1:] if argv is None else argv
    # No command does linear algebra worth a thread, and the threads OpenBLAS starts when
    # numpy is imported spin for about 0.1 s of CPU, which the run's own threads (the
    # parse, the hashes) then lack on a small machine. Set only here, before numpy is
    # imported, and only where the user has not chosen.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    code = run_main(args)
    from tbptt_cli import atomic

    if atomic.hdf5_broken():
        # HDF5's own teardown would crash on the file a full disk broke: skip it.
        sys.stderr.flush()
        with contextlib.suppress(OSError):
            sys.stdout.flush()
        os._exit(code)
    sys.exit(code)


def run_main(args: list[str]) -> int:
    """Run the command; an error is one line on stderr and, with --json, one
    ``{"error": ..., "exit": N}`` object on stdout (so ``| jq`` never reads nothing)."""
    try:
        with warnings.catch_warnings():
            # A numpy RuntimeWarning (overflow, invalid value) means a numeric path that
            # is not guarded: it fails as an internal error, never as raw text plus inf.
            warnings.simplefilter("error", RuntimeWarning)
            cli.main(args=args, prog_name="tbptt", standalone_mode=False)
        return 0
    except click.exceptions.Exit as e:
        return e.exit_code
    except click.exceptions.NoArgsIsHelpError as e:  # `tbptt`, `tbptt domain`: the help, whole
        click.echo(e.format_message(), err=True)
        return 2
    except (Exception, KeyboardInterrupt) as e:  # every outcome becomes an exit code here
        error: BaseException = e
    code, message = describe_error(error, "--debug" in args)
    if isinstance(error, KeyboardInterrupt | click.exceptions.Abort):
        click.echo("tbptt: interrupted", err=True)
    elif code == 70 and not isinstance(error, TbpttError):
        click.echo(f"tbptt: internal error: {message}", err=True)
    else:
        click.echo(f"{label('error')} {message}", err=True)
    if "--json" in args and not getattr(error, "json_sent", False):
        _json_error(message, code)
    return code


def describe_error(e: BaseException, debug: bool) -> tuple[int, str]:
    """The exit code and the one-line message for people."""
    if isinstance(e, KeyboardInterrupt | click.exceptions.Abort):
        return 130, "interrupted"
    if isinstance(e, click.UsageError):
        where = e.ctx.command_path if e.ctx else "tbptt"
        message = " ".join(e.format_message().split()).rstrip(".")
        return 2, f"{message} (see '{where} --help')"
    if isinstance(e, click.ClickException):
        return e.exit_code, e.format_message()
    if isinstance(e, BrokenPipeError):
        _silence_stdout()
        return 74, "stdout: broken pipe (the reader went away)"
    if debug:
        import traceback

        traceback.print_exception(e)
    if isinstance(e, TbpttError):
        return e.exit_code, str(e)
    # The one place a bug becomes exit 70, not a traceback.
    return 70, f"{type(e).__name__}: {e}; re-run with --debug and report it"


def _json_error(message: str, code: int) -> None:
    try:
        sys.stdout.write(json.dumps({"error": message, "exit": code}, sort_keys=True) + "\n")
        sys.stdout.flush()
    except OSError:  # stdout is closed or full: the stderr line has said it all
        _silence_stdout()


def _silence_stdout() -> None:
    """Python flushes stdout at exit; a closed pipe must not raise there again."""
    import os

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
