"""Hand-written baselines the benchmarks compare `tbptt` against (run as a subprocess).

    python benchmarks/baselines.py npy IN.npy OUT.h5 --length K --batch-size B
    python benchmarks/baselines.py csv IN.csv OUT.h5 --length K --batch-size B \\
        --id-col id --time-col t

Each does the minimum a careful person would write by hand for the same output:
npy: ``np.load(mmap_mode="r")``, the block-packed stateful reordering in numpy, an h5py
chunked write of X (same chunk shape as tbptt) and an fsync. csv (issue 9's baseline):
``pandas.read_csv`` with ``dtype={id: int64, t: int64, features: float32}``,
``sort_values([id, t], kind="stable")``, ``to_numpy``, a reshape to the block layout, an
h5py chunked write of X and an fsync.
"""

from __future__ import annotations

import argparse
import os
import time

import h5py
import numpy as np


def chunk_rows(batch_size: int, row_bytes: int) -> int:
    """Whole batches, about 1 MiB (what tbptt writes)."""
    return batch_size * max(1, (1 << 20) // (batch_size * row_bytes))


def fsync(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)


def npy(args: argparse.Namespace) -> None:
    arr = np.load(args.input, mmap_mode="r")
    n, t, f = arr.shape
    k, b = args.length, args.batch_size
    c = t // k
    assert n % b == 0 and t % k == 0, "the baseline only handles the benchmark's even shapes"
    with h5py.File(args.output, "w") as out:
        chunks = (chunk_rows(b, k * f * 4), k, f)
        X = out.create_dataset("X", (n * c, k, f), arr.dtype, chunks=chunks)
        for block in range(n // b):
            # Block packing: row r of batch j of a block is chunk j of the block's r-th sequence.
            part = np.asarray(arr[block * b : (block + 1) * b]).reshape(b, c, k, f)
            X[block * b * c : (block + 1) * b * c] = part.transpose(1, 0, 2, 3).reshape(-1, k, f)
    fsync(args.output)


def csv(args: argparse.Namespace) -> None:
    """The baseline of issue 9: what a careful person writes with pandas for a long CSV
    whose sequences all have the same length (the benchmark's shape)."""
    import pandas as pd

    head = pd.read_csv(args.input, nrows=1)
    features = [c for c in head.columns if c not in (args.id_col, args.time_col)]
    dtypes = {args.id_col: np.int64, args.time_col: np.int64, **dict.fromkeys(features, np.float32)}
    frame = pd.read_csv(args.input, dtype=dtypes)
    frame = frame.sort_values([args.id_col, args.time_col], kind="stable")
    values = frame[features].to_numpy()
    n = frame[args.id_col].nunique()
    k, b, f = args.length, args.batch_size, len(features)
    steps = len(values) // n
    chunks = steps // k
    assert n % b == 0 and steps % k == 0, "the baseline only handles the benchmark's even shapes"
    # Block packing: row r of batch j of a block is chunk j of the block's r-th sequence.
    blocks = values.reshape(n // b, b, chunks, k, f).transpose(0, 2, 1, 3, 4)
    with h5py.File(args.output, "w") as out:
        rows = chunk_rows(b, k * f * 4)
        out.create_dataset("X", data=blocks.reshape(-1, k, f), chunks=(rows, k, f))
    fsync(args.output)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("kind", choices=["npy", "csv"])
    parser.add_argument("input")
    parser.add_argument("output")
    parser.add_argument("--length", type=int, required=True)
    parser.add_argument("--batch-size", type=int, required=True)
    parser.add_argument("--id-col", default="id")
    parser.add_argument("--time-col", default="t")
    args = parser.parse_args()
    start = time.perf_counter()
    npy(args) if args.kind == "npy" else csv(args)
    print(f"baseline {args.kind}: {time.perf_counter() - start:.2f} s")


if __name__ == "__main__":
    main()
