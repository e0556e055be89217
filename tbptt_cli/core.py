"""read -> plan -> materialize -> write: the one function every command calls."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from tbptt_cli import atomic, hdf5, manifest, materialize, scaling
from tbptt_cli.config import Config
from tbptt_cli.digest import in_background, sha256_file
from tbptt_cli.errors import InputDataError, Interrupted, OutputError, UsageError
from tbptt_cli.plan import Plan
from tbptt_cli.registry import STRATEGIES
from tbptt_cli.sequences import SequenceSet, SourceInfo


@dataclass(frozen=True)
class RunOptions:
    dry_run: bool = False
    wait: float = 0.0
    progress: Callable[[int, int], Callable[[int], None]] | None = None  # (total) -> tick


@dataclass
class Target:
    """One output file with its manifest: the plan that fills it and extra manifest keys."""

    path: Path
    manifest: Path
    plan: Plan
    data: SequenceSet
    extra: dict[str, Any] = field(default_factory=dict)


def val_output_path(output: Path, given: str | None) -> Path:
    return Path(given) if given else output.with_name(output.stem + ".val.h5")


def manifest_path(output: Path, given: str | None) -> Path:
    return Path(given) if given else output.with_name(output.stem + ".manifest.json")


def execute(config: Config, run: RunOptions) -> dict[str, Any]:
    """Run one strategy end to end; returns the summary that ``--json`` prints."""
    if config.strategy == "grid":
        return execute_grid(config, run)
    timings: dict[str, float] = {}
    output = Path(config.output.path) if config.output.path else None
    if output is None and not run.dry_run:
        raise UsageError("no output: pass -o/--output PATH.h5 (or -n/--dry-run)")
    strategy = STRATEGIES[config.strategy]
    check_run_report(config, _output_paths(config, output)[:-1] if output else [])
    with atomic.signals_raise(), contextlib.ExitStack() as stack:
        if output is not None and not run.dry_run:
            for path in _output_paths(config, output):
                atomic.check_writable(path, config.output.no_clobber)
            stack.enter_context(atomic.output_lock(output, run.wait))
        with _timed(timings, "read"):
            from tbptt_cli.readers import read_input

            # Input checks left running in the background (the NaN scan of a mapped NPY)
            # are joined before anything is reported or committed; they raise their error.
            checks: list[Future[bool]] = []
            data, source = read_input(
                config.input,
                keep=strategy.keep_columns(config.params),
                spill_dir=output.parent if output else None,
                progress=run.progress,
                checks=checks,
            )

        def join_checks() -> None:
            for check in checks:
                check.result()

        with _timed(timings, "plan"):
            targets = plan_targets(config, data, output or Path("dry-run.h5"))
        _require_samples(targets, config.input.path)
        if run.dry_run:
            join_checks()
            for target in targets:  # what the gather of a real run would refuse
                materialize.check_fits(target.plan, target.data, np.dtype(config.output.dtype))
            plans = [_summary(t, config, False) for t in targets]
            if output is None:  # nothing named: say so rather than show a made-up path
                for summary in plans:
                    summary.update(output=None, manifest=None, outputs=[])
            return {"plan": plans, "timings": timings}
        files = [(t.path.name, t.plan) for t in targets]  # the validation file too
        pages = _report_pages(config, targets[0].data, files)
        with _timed(timings, "write"):
            write_targets(targets, config, source, run, before_commit=join_checks, pages=pages)
        return {**_summary(targets[0], config, True), **_report_key(config), "timings": timings}


def plan_targets(config: Config, data: SequenceSet, output: Path) -> list[Target]:
    """The main output, and the validation output when a fraction is held out."""
    strategy = STRATEGIES[config.strategy]
    params = config.params
    fraction = getattr(params, "val_fraction", 0.0)
    main = manifest_path(output, config.output.manifest)
    if not fraction:
        data, warnings = scaling.fit(data, config.output.scale)
        return [Target(output, main, with_warnings(strategy.plan(data, params), warnings), data)]
    train, held_out = hold_out(data, fraction, params.val_by, params.seed)
    # Scaled with the training part's parameters: nothing of the held-out steps leaks in.
    train, warnings = scaling.fit(train, config.output.scale)
    held_out = replace(held_out, scaling=train.scaling)
    val_path = val_output_path(output, params.val_output)
    val_manifest = manifest_path(val_path, None)
    train_plan = with_warnings(strategy.plan(train, params), warnings)
    train_target = Target(output, main, train_plan, train)
    val_plan = strategy.plan_validation(held_out, params, train_plan)
    val_target = Target(val_path, val_manifest, val_plan, held_out)
    train_target.extra["val"] = {
        "output": str(val_path),
        "manifest": str(val_manifest),
        "by": params.val_by,
        "fraction": fraction,
        "sequences": held_out.count,
        "steps": held_out.steps,
        "samples": val_target.plan.samples,
    }
    val_target.extra["val"] = {"of": str(output), "by": params.val_by, "fraction": fraction}
    return [train_target, val_target]


def with_warnings(plan: Plan, warnings: list[str]) -> Plan:
    return replace(plan, warnings=plan.warnings + tuple(warnings)) if warnings else plan


def _require_samples(targets: list[Target], source: object) -> None:
    """A file without a single sample would only fail later, in training: refuse it."""
    for target in targets:
        if not target.plan.samples:
            reason = "; ".join(target.plan.warnings) or "the input has no timesteps"
            raise InputDataError(
                f"{source}: no sample for {target.path.name} ({reason}); shorten the "
                "window (--length, --k1) or keep short tails (--remainder pad)"
            )


def hold_out(
    data: SequenceSet, fraction: float, by: str, seed: int
) -> tuple[SequenceSet, SequenceSet]:
    """Whole sequences chosen at random from ``seed``, or the last part of every sequence."""
    if not 0 < fraction < 1:
        raise UsageError(f"--val-fraction must be between 0 and 1, not {fraction}")
    if by == "time":
        return data.split_time(fraction)
    count = int(np.ceil(fraction * data.count))
    if data.count < 2 or count >= data.count:
        raise UsageError(
            f"--val-fraction {fraction} of {data.count} sequence(s) leaves none for training; "
            f"use --val-by time or a smaller fraction"
        )
    chosen = np.sort(np.random.default_rng(seed).permutation(data.count)[:count])
    rest = np.setdiff1d(np.arange(data.count), chosen)
    return data.subset(rest), data.subset(chosen)


def write_targets(
    targets: list[Target],
    config: Config,
    source: SourceInfo,
    run: RunOptions,
    before_commit: Callable[[], None] | None = None,
    pages: list[tuple[Path, str]] | None = None,
) -> None:
    """Every data file, then every manifest and ``--report`` page, staged and committed
    together.

    ``before_commit`` may raise to abort the commit (the staged files are removed)."""
    params = config.as_dict()
    with atomic.transaction() as txn:
        staged = [(t, _stage(txn, t.path)) for t in targets]
        manifests: list[tuple[Path, str]] = []
        for target, temp in staged:
            datasets, digest = _write_one(temp, target, config, run)
            doc = manifest.build(
                target.plan,
                target.data,
                source,
                config.strategy,
                params,
                temp,
                target.path.name,
                digest,
                datasets,
                {**target.plan.report, **target.extra},
            )
            manifests.append((target.manifest, manifest.dumps(doc)))
        for path, text in manifests + (pages or []):
            temp = _stage(txn, path)
            try:
                temp.write_text(text, encoding="utf-8")
            except OSError as e:
                raise atomic.write_error(path, e) from None
        if before_commit is not None:
            before_commit()
        try:
            txn.commit()
        except OSError as e:
            raise atomic.write_error(targets[0].path, e) from None


def _write_one(
    temp: Path, target: Target, config: Config, run: RunOptions
) -> tuple[dict[str, Any], str]:
    """Write, fsync and read back one file; returns its dataset table and sha256."""
    # Where the file lives and how much memory made it are not part of it: the same data
    # gives the same bytes anywhere.
    params = config.as_dict()
    placed = ("path", "manifest", "report")
    params["output"] = {k: v for k, v in params["output"].items() if k not in placed}
    params["input"] = {k: v for k, v in params["input"].items() if k != "memory_limit"}
    attrs = hdf5.root_attrs(target.plan, target.data, config.strategy, params)
    tick = run.progress(target.plan.samples, 0) if run.progress else None
    try:
        # An uncompressed file is hashed while it is written (streaming.StreamHash); otherwise
        # the hash runs in the background during the fsync and read-back.
        streamed: list[Callable[[], str]] = []
        datasets = hdf5.write_h5(
            temp,
            target.plan,
            target.data,
            config.output.dtype,
            config.output.compression,
            attrs,
            tick,
            streamed,
        )
        digest = in_background(streamed[0] if streamed else lambda: sha256_file(temp))
        atomic.fsync(temp)
        hdf5.verify(temp, target.plan, datasets, target.data, config.output.dtype)
        return datasets, digest.result()
    except OSError as e:
        raise atomic.write_error(target.path, e) from None


def _stage(txn: atomic.Transaction, path: Path) -> Path:
    try:
        return txn.stage(path)
    except OSError as e:
        raise OutputError(f"{path}: cannot create a file in {path.parent} ({e.strerror})") from None


def _output_paths(config: Config, output: Path) -> list[Path]:
    """Every file the run writes; the ``--report`` page (if any) last."""
    paths = [output, manifest_path(output, config.output.manifest)]
    if getattr(config.params, "val_fraction", 0.0):
        val = val_output_path(output, config.params.val_output)
        paths += [val, manifest_path(val, None)]
    return paths + ([Path(config.output.report)] if config.output.report else [])


def check_run_report(config: Config, outputs: list[Path]) -> None:
    if config.output.report is not None:
        from tbptt_cli.report.page import check_run_report as check

        check(config, outputs)


def _report_pages(
    config: Config, data: SequenceSet, files: list[tuple[str, Plan]]
) -> list[tuple[Path, str]]:
    """The ``--report`` page, drawn before anything is written (a drawing error aborts)."""
    if config.output.report is None:
        return []
    from tbptt_cli.report.page import run_report

    return [run_report(config, data, files)]


def _report_key(config: Config) -> dict[str, str]:
    return {"report": config.output.report} if config.output.report else {}


def _summary(target: Target, config: Config, written: bool) -> dict[str, Any]:
    plan, data = target.plan, target.data
    return {
        "output": str(target.path),
        "manifest": str(target.manifest),
        "samples": plan.samples,
        "window": plan.window,
        "features": data.features,
        "batch_size": plan.batch_size,
        "batches": plan.batches,
        "filler_share": round(plan.filler_share, 6),
        "ranks": plan.ranks,
        "streams": plan.streams,
        "stateful": plan.stateful,
        "resets": int(plan.reset.sum()),
        "dtype": config.output.dtype,
        "bytes": _bytes(target, config, written),
        "warnings": list(plan.warnings),
        "text": "\n".join(t for t in (plan.text, horizon_note(config, data)) if t),
        "outputs": [str(target.path), str(target.manifest)]
        + ([target.extra["val"]["output"]] if "output" in target.extra.get("val", {}) else []),
    }


def horizon_note(config: Config, data: SequenceSet) -> str:
    """Said when --horizon H > 1 shortens every sequence by H steps."""
    horizon = config.input.horizon
    if horizon == 1 or not data.target_names:
        return ""
    return (
        f"target {', '.join(data.target_names)}: y[t] = x[t+{horizon}]; each sequence "
        f"loses its last {horizon} steps"
    )


def _bytes(target: Target, config: Config, written: bool) -> int:
    """The file's size, or before it is written an estimate from the plan."""
    if written:
        return target.path.stat().st_size
    plan, data = target.plan, target.data
    itemsize = np.dtype(config.output.dtype).itemsize
    per_step = data.features * itemsize + 1  # X and mask
    if data.targets is not None:
        per_step += data.targets.shape[1] * itemsize
    if plan.loss_from is not None:
        per_step += 1
    return plan.samples * plan.window * per_step


@contextlib.contextmanager
def _timed(timings: dict[str, float], name: str) -> Iterator[None]:
    start = time.perf_counter()
    yield
    timings[name] = round(time.perf_counter() - start, 4)


# --- grid: one file per chunk length in an output directory, replaced whole ------------
#
# Everything is built in a staging directory beside OUTDIR (same file system), fsynced,
# then swapped in with two renames: OUTDIR -> .OUTDIR.old, staging -> OUTDIR. A failed
# run leaves the previous OUTDIR as it was; a run killed between the two renames is
# repaired by the next run, which holds the same lock.

GRID_INDEX = "grid.json"


def execute_grid(config: Config, run: RunOptions) -> dict[str, Any]:
    """Write ``OUTDIR/len_<K>.h5`` (+ manifest) per length and ``OUTDIR/grid.json``."""
    from tbptt_cli.readers import read_input
    from tbptt_cli.strategies.grid import grid_table

    if config.output.manifest is not None:
        raise UsageError("grid writes len_<K>.manifest.json beside each file; drop --manifest")
    if config.output.path is None and not run.dry_run:
        raise UsageError("no output: pass -o/--output OUTDIR (a directory) or -n/--dry-run")
    outdir = Path(config.output.path or "dry-run")
    check_run_report(config, [outdir])
    timings: dict[str, float] = {}
    with atomic.signals_raise(), contextlib.ExitStack() as stack:
        if not run.dry_run:
            _check_grid_dir(outdir, config.output.no_clobber)
            report = Path(config.output.report) if config.output.report else None
            if report is not None and report.resolve().parent != outdir.resolve():
                atomic.check_writable(report, config.output.no_clobber)
            stack.enter_context(atomic.output_lock(outdir, run.wait))
            _recover_grid_dir(outdir)
        with _timed(timings, "read"):
            data, source = read_input(config.input, spill_dir=outdir.parent, progress=run.progress)
        with _timed(timings, "plan"):
            data, warnings = scaling.fit(data, config.output.scale)
            plans: list[tuple[int, Plan]] = [
                (k, with_warnings(plan, warnings))
                for k, plan in STRATEGIES["grid"].plan(data, config.params)
            ]
        targets = _grid_targets(outdir, plans, data)
        _require_samples(targets, config.input.path)
        if run.dry_run:
            for target in targets:
                materialize.check_fits(target.plan, target.data, np.dtype(config.output.dtype))
            entries = _grid_entries(targets, config, written=False)
        else:
            files = [(t.path.name, t.plan) for t in targets]
            pages = _report_pages(config, data, files)
            with _timed(timings, "write"):
                entries = _write_grid(outdir, targets, config, source, run, pages)
    warnings = [f"length {k}: {w}" for k, plan in plans for w in plan.warnings]
    body = {"output": config.output.path and str(outdir), "grid": entries, "warnings": warnings}
    body["text"] = grid_table(entries)
    if run.dry_run:
        return {"plan": body, "timings": timings}
    return {**body, **_report_key(config), "timings": timings}


def _grid_targets(
    directory: Path, plans: list[tuple[int, Plan]], data: SequenceSet
) -> list[Target]:
    from tbptt_cli.strategies.grid import divides, padded_fraction

    return [
        Target(
            directory / f"len_{k}.h5",
            directory / f"len_{k}.manifest.json",
            plan,
            data,
            {
                "grid": {
                    "length": k,
                    "index": GRID_INDEX,
                    "padded_fraction": padded_fraction(plan),
                    "divides": divides(k, data.lengths),
                }
            },
        )
        for k, plan in plans
    ]


def _grid_entries(targets: list[Target], config: Config, written: bool) -> list[dict[str, Any]]:
    """grid.json's entries; bytes are the file sizes, or estimates in a dry run."""
    return [
        {
            "file": t.path.name,
            "manifest": t.manifest.name,
            "samples": t.plan.samples,
            "batches": t.plan.batches,
            "batch_size": t.plan.batch_size,
            **{k: v for k, v in t.extra["grid"].items() if k != "index"},
            "bytes": _bytes(t, config, written),
        }
        for t in targets
    ]


def _write_grid(
    outdir: Path,
    targets: list[Target],
    config: Config,
    source: SourceInfo,
    run: RunOptions,
    pages: list[tuple[Path, str]],
) -> list[dict[str, Any]]:
    """Stage every file and grid.json in a fresh directory, then swap it in for OUTDIR;
    returns grid.json's entries. A page inside OUTDIR is staged there too."""
    try:
        staging = Path(tempfile.mkdtemp(prefix=atomic.temp_prefix(outdir), dir=outdir.parent))
    except OSError as e:
        raise OutputError(
            f"{outdir}: cannot create a directory in {outdir.parent} ({e.strerror})"
        ) from None
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(staging, 0o777 & ~umask)  # mkdtemp makes 0700
        staged = [
            replace(t, path=staging / t.path.name, manifest=staging / t.manifest.name)
            for t in targets
        ]
        inside = [
            (staging / path.name if path.resolve().parent == outdir.resolve() else path, text)
            for path, text in pages
        ]
        try:
            write_targets(staged, config, source, run, pages=inside)
        except Interrupted as e:  # committed into staging only: OUTDIR is not replaced yet
            raise Interrupted(e.signum) from None
        index = staging / GRID_INDEX
        entries = _grid_entries(staged, config, written=True)
        document = _grid_index(config, source, staged, entries)
        index.write_text(manifest.dumps(document), encoding="utf-8")
        atomic.fsync(index)
        atomic.fsync(staging)
        _swap_in(staging, outdir)
        return entries
    except OSError as e:
        raise atomic.write_error(outdir, e) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # gone already once swapped in


def _grid_index(
    config: Config, source: SourceInfo, targets: list[Target], entries: list[dict[str, Any]]
) -> dict[str, Any]:
    """grid.json: the input, the resolved params and one entry per length (no timestamps)."""
    data = targets[0].data
    return {
        "schema_version": manifest.SCHEMA_VERSION,
        "tool": manifest.tool_info(),
        "strategy": "grid",
        "params": config.as_dict(),
        "input": manifest.input_section(data, source),
        "grid": entries,
        "warnings": [f"length {t.plan.window}: {w}" for t in targets for w in t.plan.warnings],
    }


def _aside(outdir: Path) -> Path:
    return outdir.with_name(f".{outdir.name}.old")


def _check_grid_dir(outdir: Path, no_clobber: bool) -> None:
    """Fail early (exit 73); never replace a directory that is not a previous grid output."""
    if outdir.name in ("", ".", ".."):
        raise OutputError(f"{outdir}: give the output directory a name, such as out/grid")
    parent = outdir.parent
    if not parent.is_dir():
        raise OutputError(f"{outdir}: directory {parent} does not exist; create it first")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"{outdir}: cannot write to directory {parent} (permission denied)")
    if outdir.exists() and not outdir.is_dir():
        raise OutputError(f"{outdir}: exists and is not a directory; grid writes a directory")
    if outdir.exists() and no_clobber:
        raise OutputError(
            f"{outdir}: exists and --no-clobber was given; remove it or drop the flag"
        )
    if outdir.is_dir() and any(outdir.iterdir()) and not (outdir / GRID_INDEX).is_file():
        raise OutputError(
            f"{outdir}: exists and holds no {GRID_INDEX}, so it is not a grid output this run "
            f"may replace; choose a new directory"
        )


def _recover_grid_dir(outdir: Path) -> None:
    """Under the lock: put back an OUTDIR left aside by a killed run, drop stale staging."""
    aside = _aside(outdir)
    if aside.is_dir():
        if outdir.exists():
            shutil.rmtree(aside, ignore_errors=True)
        else:
            os.rename(aside, outdir)
    for orphan in outdir.parent.glob(atomic.temp_prefix(outdir) + "*"):
        if orphan.is_dir():
            shutil.rmtree(orphan, ignore_errors=True)


def _swap_in(staging: Path, outdir: Path) -> None:
    """Two renames with SIGINT/SIGTERM held back, so no signal lands between them."""
    aside = _aside(outdir)
    try:
        with atomic.signals_held():
            if outdir.exists():
                os.rename(outdir, aside)
            try:
                os.rename(staging, outdir)
            except OSError:
                if aside.exists():
                    os.rename(aside, outdir)
                raise
            atomic.fsync(outdir.parent)
    finally:
        shutil.rmtree(aside, ignore_errors=True)
