"""Benchmarks: tbptt against hand-written baselines, measured side by side in one run.

    python benchmarks/bench.py npy --gib 2          # split of a [512*g, 65536, 8] float32 NPY
    python benchmarks/bench.py csv --keep           # issue 9: 72 and 367 MB long CSV, + Parquet
    python benchmarks/bench.py reads                # then the readers alone, CSV vs Parquet
    python benchmarks/bench.py parquet --rounds 7   # issue 9: Parquet (float64, float32) vs CSV
    python benchmarks/bench.py shuffled --rows 10000000  # a long CSV, rows scattered
    python benchmarks/bench.py scaling              # CSV at 1x, 2x, 4x: time should be linear
    python benchmarks/bench.py help                 # `tbptt --help` start-up time
    python benchmarks/bench.py dask --gib 1         # --engine dask (local:2) vs local, 8 CSV parts

Inputs are generated in --workdir (default /tmp/tbptt-bench) and deleted afterwards
unless --keep. Every run is a fresh process measured by /usr/bin/time -v (wall time and
peak RSS). Not part of the test suite.
"""

from __future__ import annotations

import argparse
import compileall
import filecmp
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
TBPTT = [sys.executable, "-m", "tbptt_cli"]
BASELINE = [sys.executable, str(HERE / "baselines.py")]
STARTUP = "import os; os.environ['OPENBLAS_NUM_THREADS'] = '1'; import numpy, pyarrow.parquet, h5py"


def measure(command: list[str], cwd: Path = HERE.parent) -> tuple[float, float]:
    """(wall seconds, peak RSS in MB) of one process (of the driver, for --engine dask)."""
    wall, rss, _, _ = measure_stages(command, cwd)
    return wall, rss


def measure_stages(
    command: list[str], cwd: Path = HERE.parent
) -> tuple[float, float, float, float]:
    """(wall seconds, peak RSS in MB, CPU seconds, read-stage seconds or 0) of one process;
    the read stage is what ``tbptt -v`` reports, the rest is the same for every input."""
    result = subprocess.run(
        ["/usr/bin/time", "-v", *command], capture_output=True, text=True, cwd=cwd
    )
    if result.returncode:
        sys.exit(f"failed: {' '.join(command)}\n{result.stderr}")
    wall = re.search(r"Elapsed \(wall clock\) time.*: (?:(\d+):)?(\d+):([\d.]+)", result.stderr)
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", result.stderr)
    cpu = re.findall(r"(?:User|System) time \(seconds\): ([\d.]+)", result.stderr)
    read = re.search(r"timings: read ([\d.]+) s", result.stderr)
    assert wall is not None and rss is not None and len(cpu) == 2
    hours, minutes, seconds = (float(g) if g else 0.0 for g in wall.groups())
    return (
        hours * 3600 + minutes * 60 + seconds,
        int(rss.group(1)) / 1024,
        sum(map(float, cpu)),
        float(read.group(1)) if read else 0.0,
    )


def dd_bandwidth(directory: Path, size: int) -> float:
    """MB/s of an fsync'd sequential write of ``size`` bytes, as dd measures it."""
    target = directory / "dd.bin"
    count = max(1, size // (16 << 20))
    result = subprocess.run(
        ["dd", "if=/dev/zero", f"of={target}", "bs=16M", f"count={count}", "conv=fsync"],
        capture_output=True,
        text=True,
    )
    target.unlink(missing_ok=True)
    seconds = float(re.search(r"copied, ([\d.]+) s", result.stderr).group(1))  # type: ignore[union-attr]
    return count * (16 << 20) / seconds / 1e6


def make_npy(path: Path, gib: float) -> None:
    """Written as numpy.save writes (a header, then the data with write()), not through a
    memory map: pages stored through a map stay in the page cache as 4 KiB pages, which
    made every later mapped read of the file slower than for a file written or read
    the usual way."""
    sequences = max(64, int(512 * gib) // 64 * 64)
    header = {"descr": "<f4", "fortran_order": False, "shape": (sequences, 65536, 8)}
    block = np.random.default_rng(0).standard_normal((64, 65536, 8), dtype=np.float32)
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, header)
        for start in range(0, sequences, 64):
            f.write((block + start).tobytes())


def make_csv(path: Path, rows: int, shuffled: bool = False) -> None:
    """A long CSV: id, t, a, b, c; 1000 steps per sequence (rows interleaved if shuffled)."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    rng = np.random.default_rng(0)
    with pacsv.CSVWriter(
        path,
        pa.schema(
            [
                ("id", pa.string()),
                ("t", pa.int64()),
                ("a", pa.float64()),
                ("b", pa.float64()),
                ("c", pa.float64()),
            ]
        ),
        write_options=pacsv.WriteOptions(quoting_style="none"),
    ) as writer:
        for start in range(0, rows, 1_000_000):
            index = np.arange(start, min(rows, start + 1_000_000))
            if shuffled:  # rows of a sequence spread over the whole file
                seq, t = index % (rows // 1000), index // (rows // 1000)
            else:
                seq, t = index // 1000, index % 1000
            names = pa.array(np.char.add("s", seq.astype(str)))
            cols = [np.round(rng.standard_normal(len(index)), 6) for _ in range(3)]
            writer.write_table(
                pa.table({"id": names, "t": t, "a": cols[0], "b": cols[1], "c": cols[2]})
            )


def row(name: str, seconds: float, rss: float, size: int) -> None:
    print(f"{name:<28} {seconds:8.2f} s  {size / seconds / 1e6:9.1f} MB/s  {rss:8.0f} MB peak")


def bench_npy(work: Path, gib: float, rounds: int) -> None:
    """A warm-up pair, then ``rounds`` pairs of runs, the order alternating; the median
    ratio is the figure (on a shared VM single runs vary by 30% and more)."""
    source = work / "in.npy"
    make_npy(source, gib)
    os.sync()  # the input's writeback would otherwise slow whichever command runs first
    size = source.stat().st_size
    subprocess.run(["cat", str(source)], stdout=subprocess.DEVNULL, check=True)  # warm cache
    args = ["--length", "256", "--batch-size", "64"]
    commands = {
        "tool": [*TBPTT, "split", str(source), *args, "-o", str(work / "out.h5")],
        "base": [*BASELINE, "npy", str(source), str(work / "base.h5"), *args],
    }
    runs: dict[str, list[tuple[float, float]]] = {"tool": [], "base": []}
    out_size = 0
    # Round 0 is a warm-up, not counted: the first run after writing gigabytes of input
    # was sometimes twice as slow, whichever command it was.
    for number in range(rounds + 1):
        for name in ("tool", "base") if number % 2 else ("base", "tool"):
            result = measure(commands[name])
            if number:
                runs[name].append(result)
            output = work / ("out.h5" if name == "tool" else "base.h5")
            out_size = output.stat().st_size if name == "tool" else out_size
            output.unlink()
            os.sync()  # no writeback of this run left to slow the next one
    dd = dd_bandwidth(work, size)
    print(
        f"NPY split: input {size / 2**30:.2f} GiB, output {out_size / 1e9:.2f} GB, {rounds} rounds"
    )
    ratios = []
    for number, (tool, base) in enumerate(zip(runs["tool"], runs["base"], strict=True), 1):
        ratios.append(tool[0] / base[0])
        row(f"tbptt split, round {number}", *tool, size)
        row(f"baseline, round {number}", *base, size)
    tool_time = sorted(t for t, _ in runs["tool"])[rounds // 2]
    peak = max(rss for _, rss in runs["tool"])
    print(f"{'dd conv=fsync':<28} {dd:20.1f} MB/s")
    print(
        f"ratio tbptt/baseline: median {sorted(ratios)[rounds // 2]:.2f} (target <= 1.25), "
        f"rounds {' '.join(f'{r:.2f}' for r in ratios)}; tbptt output (median run) "
        f"{out_size / tool_time / 1e6:.0f} MB/s = {out_size / tool_time / 1e6 / dd:.0%} of dd "
        f"(target >= 70%); peak {peak:.0f} MB"
    )


def make_long(path: Path, ids: int, steps: int) -> None:
    """Issue 9's long CSV: integer id and t, three features written with %.6g."""
    rng = np.random.default_rng(0)
    with open(path, "w") as f:
        f.write("id,t,a,b,c\n")
        for i in range(ids):
            block = np.column_stack(
                [np.full(steps, i), np.arange(steps), rng.standard_normal((steps, 3))]
            )
            np.savetxt(f, block, fmt=["%d", "%d", "%.6g", "%.6g", "%.6g"], delimiter=",")


def bench_long(work: Path, rounds: int, sizes: tuple[int, ...] = (200, 1000)) -> None:
    """Issue 9's CSV benchmark: tbptt against the pandas baseline, alternating order, a
    warm-up round, the median ratio; then the same data as Parquet against the CSV."""
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    args = ["--length", "100", "--batch-size", "200"]
    for ids in sizes:
        source, parquet = work / f"long{ids}.csv", work / f"long{ids}.parquet"
        if not source.exists():
            make_long(source, ids, 10_000)
        if not parquet.exists():
            pq.write_table(pacsv.read_csv(source), parquet)
        os.sync()
        subprocess.run(["cat", str(source), str(parquet)], stdout=subprocess.DEVNULL, check=True)
        size = source.stat().st_size
        tool = [*TBPTT, "split", "-v", "--id-col", "id", "--time-col", "t", *args]
        commands = {
            "tool": [*tool, str(source), "-o", str(work / "out.h5")],
            "base": [*BASELINE, "csv", str(source), str(work / "base.h5"), *args],
            "parquet": [*tool, str(parquet), "-o", str(work / "out.h5")],
        }
        runs: dict[str, list[tuple[float, float, float, float]]] = {n: [] for n in commands}
        for number in range(rounds + 1):  # round 0 is a warm-up, not counted
            order = ["base", "tool", "parquet"] if number % 2 else ["parquet", "tool", "base"]
            for name in order:
                result = measure_stages(commands[name])
                if number:
                    runs[name].append(result)
                for output in ("out.h5", "out.manifest.json", "base.h5"):
                    (work / output).unlink(missing_ok=True)
        print(
            f"long CSV, {ids} ids x 10000 steps: {size / 1e6:.0f} MB, parquet "
            f"{parquet.stat().st_size / 1e6:.0f} MB, {rounds} rounds"
        )
        for name, label in (
            ("base", "baseline (pandas)"),
            ("tool", "tbptt split, CSV"),
            ("parquet", "tbptt split, Parquet"),
        ):
            for number, (wall, rss, cpu, read) in enumerate(runs[name], 1):
                stage = f", read stage {read:.2f} s" if read else ""
                print(
                    f"{label + ', round ' + str(number):<32} {wall:6.2f} s  cpu {cpu:5.2f} s"
                    f"  {rss:5.0f} MB peak{stage}"
                )
        print(f"ratio tbptt/baseline (wall): {ratios(runs, 'tool', 'base')} (target <= 1.0)")
        print(
            f"Parquet speed-up over CSV, whole run: {ratios(runs, 'tool', 'parquet')}; "
            f"read stage: {ratios(runs, 'tool', 'parquet', 3)} (target >= 3)"
        )
        print(
            f"peak RSS: tbptt CSV {max(r[1] for r in runs['tool']):.0f} MB, Parquet "
            f"{max(r[1] for r in runs['parquet']):.0f} MB, baseline "
            f"{max(r[1] for r in runs['base']):.0f} MB (target for tbptt < 500 MB)"
        )


def ratios(
    runs: dict[str, list[tuple[float, float, float, float]]], top: str, bottom: str, column: int = 0
) -> str:
    """The median and every round of ``top / bottom`` in one measured column."""
    pairs = [a[column] / b[column] for a, b in zip(runs[top], runs[bottom], strict=True)]
    shown = " ".join(f"{r:.2f}" for r in pairs)
    return f"median {sorted(pairs)[len(pairs) // 2]:.2f}, rounds {shown}"


def bench_parquet(work: Path, rounds: int, sizes: tuple[int, ...] = (200, 1000)) -> None:
    """Issue 9's Parquet target: whole runs of tbptt on the long CSV of `bench_long` and on
    the same table as Parquet, float64 columns (as pyarrow writes the parsed CSV) and
    float32 ones (as pandas writes a float32 frame), rounds in alternating order after an
    uncounted warm-up; the figure is the median of the per-round CSV / Parquet ratios."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    words = "split -v --id-col id --time-col t --length 100 --batch-size 200 -o"
    tool = [*TBPTT, *words.split(), str(work / "out.h5")]
    for ids in sizes:
        inputs = {
            "csv": work / f"long{ids}.csv",
            "parquet": work / f"long{ids}.parquet",
            "float32": work / f"long{ids}.f32.parquet",
        }
        if not inputs["csv"].exists():
            make_long(inputs["csv"], ids, 10_000)
        if not inputs["parquet"].exists() or not inputs["float32"].exists():
            table = pacsv.read_csv(inputs["csv"])
            pq.write_table(table, inputs["parquet"])
            narrow = [
                pa.field(f.name, pa.float32()) if pa.types.is_floating(f.type) else f
                for f in table.schema
            ]
            pq.write_table(table.cast(pa.schema(narrow)), inputs["float32"])
        os.sync()
        runs: dict[str, list[tuple[float, float, float, float]]] = {n: [] for n in inputs}
        floors: list[float] = []
        load = os.getloadavg()[0]
        for number in range(rounds + 1):  # round 0 is a warm-up, not counted
            # Every round from the page cache: this VM's DAMON pages out what was not read
            # for a minute, and a run that found its input gone read it from the disk.
            subprocess.run(
                ["cat", *map(str, inputs.values())], stdout=subprocess.DEVNULL, check=True
            )
            order = list(inputs) if number % 2 else list(inputs)[::-1]
            for name in order:
                result = measure_stages([*tool, str(inputs[name])])
                if number:
                    runs[name].append(result)
                for output in ("out.h5", "out.manifest.json"):
                    (work / output).unlink(missing_ok=True)
            # What any Parquet run pays before reading a byte: Python and its imports (with
            # one OpenBLAS thread, as the CLI sets it).
            floor = measure([sys.executable, "-c", STARTUP])[0]
            if number:
                floors.append(floor)
        sizes_mb = ", ".join(f"{n} {p.stat().st_size / 1e6:.0f} MB" for n, p in inputs.items())
        print(
            f"long table, {ids} ids x 10000 steps ({sizes_mb}), {rounds} rounds, load "
            f"average {load:.1f} before, {os.getloadavg()[0]:.1f} after"
        )
        for name, label in (
            ("csv", "CSV"),
            ("parquet", "Parquet float64"),
            ("float32", "Parquet float32"),
        ):
            for number, (wall, rss, cpu, read) in enumerate(runs[name], 1):
                print(
                    f"{label + ', round ' + str(number):<28} {wall:6.2f} s  cpu {cpu:5.2f} s"
                    f"  {rss:5.0f} MB peak, read stage {read:.2f} s"
                )
            walls = sorted(r[0] for r in runs[name])
            print(
                f"{label} median {walls[rounds // 2]:.2f} s, fastest {walls[0]:.2f} s, peak "
                f"{max(r[1] for r in runs[name]):.0f} MB"
            )
        floor, csv = sorted(floors)[rounds // 2], sorted(r[0] for r in runs["csv"])[rounds // 2]
        print(
            f"start-up floor (python and the imports of numpy, pyarrow.parquet, h5py): median "
            f"{floor:.2f} s, {floor / csv:.0%} of the CSV run's median; 3x needs a Parquet "
            f"run of {csv / 3:.2f} s"
        )
        for name in ("parquet", "float32"):
            # The fastest rounds: the runs this VM's memory and neighbours disturbed least.
            fastest = min(r[0] for r in runs["csv"]) / min(r[0] for r in runs[name])
            print(
                f"CSV / {name}: whole run {ratios(runs, 'csv', name)}; CPU "
                f"{ratios(runs, 'csv', name, 2)}; read stage {ratios(runs, 'csv', name, 3)}; "
                f"fastest rounds {fastest:.2f} (target >= 3)"
            )


def bench_reads(work: Path, rounds: int, sizes: tuple[int, ...] = (200, 1000)) -> None:
    """The readers alone, in this process (imports done): the long CSV of `bench_long`
    against the same table as Parquet, alternating, the median of ``rounds``; read as
    `tbptt split` reads them (values at float32, the time column let go once used)."""
    import time

    from tbptt_cli.options import InputOptions
    from tbptt_cli.readers import read_input

    for ids in sizes:
        paths = [work / f"long{ids}.csv", work / f"long{ids}.parquet"]
        if not all(p.exists() for p in paths):
            sys.exit(f"run `bench.py csv --keep --workdir {work}` first: it writes {paths}")
        times: dict[Path, list[float]] = {p: [] for p in paths}
        for number in range(rounds + 1):
            for path in paths if number % 2 else paths[::-1]:
                start = time.perf_counter()
                data, source = read_input(
                    InputOptions(path=str(path), id_col="id", time_col="t"),
                    spill_dir=work,
                    values_dtype="float32",
                    times=False,
                )
                assert source.sha256  # the hash is part of reading
                if number:
                    times[path].append(time.perf_counter() - start)
                del data
        csv_time, parquet_time = (sorted(times[p])[rounds // 2] for p in paths)
        print(
            f"read_input, {ids} ids: CSV {csv_time:.2f} s, Parquet {parquet_time:.2f} s, "
            f"Parquet {csv_time / parquet_time:.1f}x faster (medians of {rounds})"
        )


def bench_csv(work: Path, rows: int, shuffled: bool = False) -> tuple[float, float]:
    """tbptt alone on the older generated CSV (string ids, 1000 steps per sequence)."""
    source = work / "in.csv"
    make_csv(source, rows, shuffled)
    os.sync()
    size = source.stat().st_size
    args = ["--length", "100", "--batch-size", "64"]
    tool = measure(
        [*TBPTT, "split", str(source), "--id-col", "id", *args, "-o", str(work / "out.h5")]
    )
    (work / "out.h5").unlink()
    kind = "shuffled " if shuffled else ""
    print(f"CSV {kind}split: input {size / 1e6:.0f} MB, {rows} rows")
    row("tbptt split", *tool, size)
    source.unlink()
    return tool[0], size


def make_parts(work: Path, gib: float, parts: int = 8, ids: int = 2000) -> int:
    """``work/dask/data/part-K.csv``: a long CSV (id, t, a, b, c) of about ``gib`` GiB in
    ``parts`` files, part K holding the K-th slice of every id's time range (as daily
    partitions do); ``work/local/data`` links to the same folder and ``work/one/data`` holds
    the same rows as one file. Returns the size of the rows."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    steps = int(gib * 2**30 / 40 / ids / parts)  # about 40 bytes a row
    rng = np.random.default_rng(0)
    folder, whole = work / "dask" / "data", work / "one" / "data"
    folder.mkdir(parents=True)
    whole.parent.mkdir(parents=True)
    (work / "local").mkdir()
    (work / "local" / "data").symlink_to(folder, target_is_directory=True)
    seq, t = np.repeat(np.arange(ids), steps), np.tile(np.arange(steps), ids)
    names = pa.array(np.char.add("s", seq.astype(str)))
    options = pacsv.WriteOptions(quoting_style="none")
    with open(whole, "wb") as out:
        for k in range(parts):
            cols = [np.round(rng.standard_normal(len(seq)), 6) for _ in range(3)]
            table = pa.table(
                {"id": names, "t": t + k * steps, "a": cols[0], "b": cols[1], "c": cols[2]}
            )
            part = folder / f"part-{k}.csv"
            pacsv.write_csv(table, part, options)
            with open(part, "rb") as f:
                if k:
                    f.readline()  # one header for the whole file
                shutil.copyfileobj(f, out)
    return whole.stat().st_size


def bench_dask(work: Path, gib: float, rounds: int) -> None:
    """The same split with ``--engine dask --scheduler local:2`` (the cluster's start-up
    counted) and ``--engine local`` on the same 8 parts, and with the local engine on the
    rows as one file; rounds rotate the order, the median ratio is the figure. The merged
    Dask output must equal the local one byte for byte."""
    size = make_parts(work, gib)
    os.sync()
    words = "data --format csv --id-col id --time-col t --length 100 --batch-size 64 -v -o out.h5"
    args = words.split()
    commands = {
        "dask": (
            [*TBPTT, "split", *args, "--engine", "dask", "--scheduler", "local:2"],
            work / "dask",
        ),
        "local": ([*TBPTT, "split", *args], work / "local"),
        "one file": ([*TBPTT, "split", *args], work / "one"),
    }
    names = list(commands)
    runs: dict[str, list[tuple[float, float, float, float]]] = {name: [] for name in names}
    for number in range(rounds):
        for name in names[number % 3 :] + names[: number % 3]:
            runs[name].append(measure_stages(*commands[name]))
            os.sync()
    merged = subprocess.run([*TBPTT, "merge", "out.h5", "-o", "one.h5"], cwd=work / "dask")
    same = merged.returncode == 0 and filecmp.cmp(
        work / "dask" / "one.h5", work / "local" / "out.h5", shallow=False
    )
    print(
        f"split of a {size / 2**30:.2f} GiB long CSV in 8 parts, {rounds} rounds "
        f"(load average {os.getloadavg()[0]:.1f} at the end)"
    )
    for number in range(rounds):
        for name in names:
            wall, rss, cpu, read = runs[name][number]
            print(
                f"round {number + 1} {name:<9} {wall:7.2f} s  read {read:6.2f} s  "
                f"CPU {cpu:6.2f} s  {size / wall / 1e6:6.1f} MB/s  {rss:6.0f} MB peak"
            )
    for other in names[1:]:
        ratios = [d[0] / o[0] for d, o in zip(runs["dask"], runs[other], strict=True)]
        print(
            f"ratio dask/{other}: median {sorted(ratios)[rounds // 2]:.2f}, rounds "
            f"{' '.join(f'{r:.2f}' for r in ratios)}"
        )
    print(f"merged Dask output identical to the local one: {same}")


def bench_scaling(work: Path, rows: int) -> None:
    results = [(scale, *bench_csv(work, rows * scale)) for scale in (1, 2, 4)]
    base_time = results[0][1]
    for scale, seconds, size in results:
        print(
            f"scaling {scale}x: {size / 1e6:.0f} MB in {seconds:.2f} s "
            f"({seconds / base_time:.2f}x the 1x time)"
        )


def bench_help() -> None:
    python = min(measure([sys.executable, "-c", "pass"])[0] for _ in range(5))
    tool = min(measure([*TBPTT, "--help"])[0] for _ in range(5))
    print(f"tbptt --help {tool * 1000:.0f} ms (python -c pass alone {python * 1000:.0f} ms)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "what", choices=["npy", "csv", "reads", "parquet", "shuffled", "scaling", "help", "dask"]
    )
    parser.add_argument("--gib", type=float, default=2.0)
    parser.add_argument(
        "--rounds", type=int, default=5, help="npy, csv, parquet, dask: rounds of runs"
    )
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--ids", default="200,1000", help="parquet: sizes, in ids of 10000 steps")
    parser.add_argument("--workdir", default="/tmp/tbptt-bench")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    print(f"machine: {os.cpu_count()} cores, {os.uname().release}, numpy {np.__version__}")
    # Bytecode as an installed tool has it: with PYTHONDONTWRITEBYTECODE set (as on the CI
    # machines) every run would compile tbptt's modules again, 20 to 30 ms of each run.
    compileall.compile_dir(HERE.parent / "tbptt_cli", quiet=1)
    try:
        if args.what == "npy":
            bench_npy(work, args.gib, args.rounds)
        elif args.what == "csv":
            bench_long(work, args.rounds)
        elif args.what == "reads":
            bench_reads(work, args.rounds)
        elif args.what == "parquet":
            bench_parquet(work, args.rounds, tuple(int(n) for n in args.ids.split(",")))
        elif args.what == "shuffled":
            bench_csv(work, args.rows, shuffled=True)
        elif args.what == "scaling":
            bench_scaling(work, args.rows // 4)
        elif args.what == "dask":
            bench_dask(work, args.gib, args.rounds)
        else:
            bench_help()
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
