"""Inputs and layouts the loader tests write by hand.

- `sign_task`: a task only state carried across batches can solve.
- `sequence_major`: the textbook mistake, the same rows ordered A0 A1 A2 B0 B1 ...
- `stream_file`, `ranked_copy`: the ``--packing stream`` and ``--ranks`` layouts written
  from the shared contract, to check the reading side on its own: root attribute
  ``packing = "stream"``, per-step ``step_reset`` (1 at a sequence's first step) and
  ``step_sequence`` (-1 on padding), a row's ``sequence``/``offset`` naming its first
  piece; attribute ``ranks``, batch k of rank r being rows ``[(k*R + r)*B, ...)``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import numpy as np


def stream_file(
    out: Path,
    values: np.ndarray,
    targets: np.ndarray,
    lengths: np.ndarray,
    window: int,
    batch_size: int,
) -> Path:
    """Each of ``batch_size`` rows a queue of steps: a sequence goes to the row with the
    fewest steps so far and starts right after the previous one ends."""
    starts = np.concatenate([[0], np.cumsum(lengths)])
    queues: list[list[int]] = [[] for _ in range(batch_size)]  # source steps per row
    owners: list[list[int]] = [[] for _ in range(batch_size)]  # their sequence
    for i, length in enumerate(lengths.tolist()):
        row = int(np.argmin([len(q) for q in queues]))
        queues[row] += range(starts[i], starts[i] + length)
        owners[row] += [i] * length
    chunks = -(-max(len(q) for q in queues) // window)
    samples = chunks * batch_size
    step_sequence = np.full((samples, window), -1, dtype=np.int64)
    source = np.zeros((samples, window), dtype=np.int64)
    for row in range(batch_size):
        steps = np.full(chunks * window, -1)
        steps[: len(queues[row])] = owners[row]
        step_sequence[row::batch_size] = steps.reshape(chunks, window)
        where = np.zeros(chunks * window, dtype=np.int64)
        where[: len(queues[row])] = queues[row]
        source[row::batch_size] = where.reshape(chunks, window)
    mask = (step_sequence >= 0).astype(np.uint8)
    position = source - starts[np.maximum(step_sequence, 0)]
    step_reset = (mask == 1) & (position == 0)
    first = np.argmax(mask == 1, axis=1)
    rows = np.arange(samples)
    with h5py.File(out, "w") as f:
        f["X"] = values[source] * mask[..., None]
        f["y"] = targets[source] * mask[..., None]
        f["mask"] = mask
        f["step_reset"] = step_reset.astype(np.uint8)
        f["step_sequence"] = step_sequence
        f["sequence"] = np.where(mask.any(axis=1), step_sequence[rows, first], -1)
        f["offset"] = np.where(mask.any(axis=1), position[rows, first], 0)
        f["length"] = mask.sum(axis=1).astype(np.int32)
        f["reset"] = (step_reset[:, 0] | (rows < batch_size)).astype(np.uint8)
        f.attrs.update(
            format="tbptt",
            format_version=1,
            strategy="split",
            window=window,
            batch_size=batch_size,
            stateful=1,
            packing="stream",
            order="interleaved",
            ranks=1,
            params="{}",
            features=json.dumps([f"x{i}" for i in range(values.shape[1])]),
            targets=json.dumps([f"t{i}" for i in range(targets.shape[1])]),
        )
    return out


def ranked_copy(path: Path, out: Path, ranks: int) -> Path:
    """A file of batch size R*B relabelled as R ranks of B rows: batch k of rank r is then
    rows ``[(k*R + r)*B, (k*R + r + 1)*B)``, each rank's rows state-continuous."""
    shutil.copy(path, out)
    with h5py.File(out, "a") as f:
        batch_size = int(f.attrs["batch_size"])
        assert batch_size % ranks == 0 and len(f["X"]) % batch_size == 0
        f.attrs.update(batch_size=batch_size // ranks, ranks=ranks)
    return out


def sign_task(path: Path, lengths: np.ndarray, seed: int) -> Path:
    """NPZ of ragged sequences: x0 = the sign at step 0 (else 0), x1 = noise, x2 = sign."""
    rng = np.random.default_rng(seed)
    sign = np.repeat(rng.choice([-1.0, 1.0], size=len(lengths)), lengths)
    first = np.zeros(lengths.sum())
    first[np.cumsum(lengths) - lengths] = 1
    values = np.stack([sign * first, rng.normal(size=lengths.sum()), sign], axis=1)
    np.savez(path, values=values, lengths=lengths)
    return path


def sequence_major(path: Path, out: Path) -> Path:
    """The same rows and attributes, reordered A0 A1 A2 B0 B1 ... (the textbook mistake).

    Every row keeps its own reset flag, which is how a naive user sets them: zero the state
    where a sequence starts.
    """
    with h5py.File(path) as f, h5py.File(out, "w") as g:
        sequence = f["sequence"][:]
        order = np.lexsort((f["offset"][:], np.where(sequence < 0, sequence.max() + 1, sequence)))
        for name in f:
            data = f[name][:]
            g[name] = data[order] if len(data) == len(sequence) else data
        g.attrs.update(f.attrs)
    return out
