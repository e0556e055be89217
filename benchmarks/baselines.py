"""Hand-written baselines the benchmarks compare `tbptt` against (run as a subprocess).

    python benchmarks/baselines.py npy IN.npy OUT.h5 --length K --batch-size B
    python benchmarks/baselines.py csv IN.csv OUT.h5 --length K --batch-size B --id-col id

Each does the minimum a careful person would write by hand for the same output:
npy: ``np.load(mmap_mode="r")``, the block-packed stateful reordering in numpy, an h5py
chunked write of X (same chunk shape as tbptt) and an fsync. csv: ``pandas.read_csv``
(C engine, float64 dtypes), group rows by id in numpy, the same reordering, h5py writes of
X, mask and the index arrays, fsync.
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
            part = np.asarray(arr[block * b:(block + 1) * b]).reshape(b, c, k, f)
            X[block * b * c:(block + 1) * b * c] = part.transpose(1, 0, 2, 3).reshape(-1, k, f)
    fsync(args.output)


def csv(args: argparse.Namespace) -> None:
    import pandas as pd

    head = pd.read_csv(args.input, nrows=1)
    features = [c for c in head.columns if c != args.id_col]
    dtypes = {args.id_col: str, **dict.fromkeys(features, np.float64)}
    frame = pd.read_csv(args.input, engine="c", dtype=dtypes)
    codes, ids = pd.factorize(frame[args.id_col], sort=False)
    order = np.argsort(codes, kind="stable")
    values = frame[features].to_numpy()[order].astype(np.float32)
    lengths = np.bincount(codes)
    k, b = args.length, args.batch_size
    counts = -(-lengths // k)
    # Block packing of the sequences, as tbptt lays it out.
    padded = np.zeros(-(-len(counts) // b) * b, dtype=np.int64)
    padded[:len(counts)] = counts
    block_batches = padded.reshape(-1, b).max(axis=1)
    first = np.concatenate([[0], np.cumsum(block_batches)[:-1]])[np.arange(len(counts)) // b]
    row = np.arange(len(counts)) % b
    seq = np.repeat(np.arange(len(counts)), counts)
    chunk = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    samples = int(block_batches.sum()) * b
    sample = (first[seq] + chunk) * b + row[seq]
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    step = starts[seq][:, None] + chunk[:, None] * k + np.arange(k)
    valid = chunk[:, None] * k + np.arange(k) < lengths[seq][:, None]
    X = np.zeros((samples, k, len(features)), np.float32)
    mask = np.zeros((samples, k), np.uint8)
    X[sample] = np.where(valid[..., None], values[np.minimum(step, len(values) - 1)], 0)
    mask[sample] = valid
    with h5py.File(args.output, "w") as out:
        rows = chunk_rows(b, k * len(features) * 4)
        out.create_dataset("X", data=X, chunks=(rows, k, len(features)))
        out.create_dataset("mask", data=mask, chunks=(rows, k))
        sequence = np.full(samples, -1)
        sequence[sample] = seq
        out.create_dataset("sequence", data=sequence)
        out.create_dataset("length", data=valid.sum(axis=1).astype(np.int32))
    fsync(args.output)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("kind", choices=["npy", "csv"])
    parser.add_argument("input")
    parser.add_argument("output")
    parser.add_argument("--length", type=int, required=True)
    parser.add_argument("--batch-size", type=int, required=True)
    parser.add_argument("--id-col", default="id")
    args = parser.parse_args()
    start = time.perf_counter()
    npy(args) if args.kind == "npy" else csv(args)
    print(f"baseline {args.kind}: {time.perf_counter() - start:.2f} s")


if __name__ == "__main__":
    main()
