"""Loader throughput: batches per second read from a 2 GiB output, against plain h5py.

    python benchmarks/loaders.py --gib 2 --rounds 5
    python benchmarks/loaders.py --gib 2 --compression gzip   # where workers pay off

Writes a [1024, 65536, 8] float32 NPY, splits it with ``--length 256 --batch-size 64``
(4096 batches of 64 x 256 x 8, 512 KiB of X each), reads the file into the page cache,
then times in alternating order, ``--rounds`` times each:

- ``h5py``: slicing X, mask, reset, sequence and offset of batch k, k = 0, 1, ... (what
  a hand-written loop does), in one process, and in two (each half of every batch's rows);
- ``BatchFile``: iterating `tbptt_cli.batches.BatchFile` (numpy batches);
- ``DataLoader W``: iterating ``DataLoader(BatchDataset(path), batch_size=None,
  num_workers=W)`` (torch batches) for W = 0, 1, 2.

Prints batches/s per reader (a batch is 64 rows, whichever process read them) and the
median ratio to the one-process h5py baseline. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import multiprocessing
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import h5py
from torch.utils.data import DataLoader

from tbptt_cli.batches import BatchFile
from tbptt_cli.torch import BatchDataset

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import make_npy  # noqa: E402  (the NPY the split benchmark uses)

BATCH, LENGTH = 64, 256
NAMES = ("X", "mask", "reset", "sequence", "offset")


def h5py_rows(path: str, part: int = 0, parts: int = 1) -> int:
    """Plain h5py slicing of every batch's share of rows, in stored order; rows read."""
    share = BATCH // parts
    rows = 0
    with h5py.File(path, "r") as f:
        data = [f[name] for name in NAMES]
        for start in range(0, len(data[0]), BATCH):
            lo = start + part * share
            for dataset in data:
                dataset[lo : lo + share]
            rows += share
    return rows


def h5py_two_processes(path: str) -> int:
    with multiprocessing.get_context("fork").Pool(2) as pool:
        return sum(pool.starmap(h5py_rows, [(path, 0, 2), (path, 1, 2)]))


def batch_file(path: str) -> int:
    return sum(batch.rows for batch in BatchFile(path))


def data_loader(workers: int) -> Callable[[str], int]:
    def run(path: str) -> int:
        loader = DataLoader(BatchDataset(path), batch_size=None, num_workers=workers)
        return sum(batch.rows for batch in loader)

    return run


READERS: dict[str, Callable[[str], int]] = {
    "h5py": h5py_rows,
    "h5py, 2 processes": h5py_two_processes,
    "BatchFile": batch_file,
    "DataLoader 0 workers": data_loader(0),
    "DataLoader 1 worker": data_loader(1),
    "DataLoader 2 workers": data_loader(2),
}


def timed(reader: Callable[[str], int], path: str) -> float:
    """Batches per second of one full pass."""
    started = time.perf_counter()
    rows = reader(path)
    return rows / BATCH / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gib", type=float, default=2.0, help="size of X in the output")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/tbptt-bench-loaders"))
    parser.add_argument("--keep", action="store_true", help="keep the generated files")
    parser.add_argument("--compression", default="none", help="of the output: none, lzf, gzip")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    source, output = args.workdir / "input.npy", args.workdir / f"{args.compression}.h5"
    try:
        if not output.exists():
            make_npy(source, args.gib)
            split = [
                sys.executable,
                "-m",
                "tbptt_cli",
                "split",
                str(source),
                "--length",
                str(LENGTH),
                "--batch-size",
                str(BATCH),
                "--compression",
                args.compression,
                "-q",
                "-o",
                str(output),
            ]
            subprocess.run(split, check=True)
            source.unlink()  # only the output is read
        subprocess.run(["cat", str(output)], stdout=subprocess.DEVNULL, check=True)  # cache
        print(f"{output}: {output.stat().st_size / 2**30:.2f} GiB, batches of {BATCH} rows")
        rates: dict[str, list[float]] = {name: [] for name in READERS}
        names = list(READERS)
        for round_ in range(args.rounds):
            for name in names if round_ % 2 == 0 else names[::-1]:
                rates[name].append(timed(READERS[name], str(output)))
        baseline = rates["h5py"]
        print(f"{'reader':22} {'batches/s (median)':>19} {'ratio to h5py (rounds)':>24}")
        for name, values in rates.items():
            ratios = [v / b for v, b in zip(values, baseline, strict=True)]
            each = " ".join(f"{r:.2f}" for r in ratios)
            print(
                f"{name:22} {statistics.median(values):19.0f} "
                f"{statistics.median(ratios):8.2f} ({each})"
            )
    finally:
        if not args.keep:
            shutil.rmtree(args.workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
