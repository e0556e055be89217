"""Inputs and layouts the loader tests write by hand.

- `sign_task`: a task only state carried across batches can solve.
- `sequence_major`: the textbook mistake, the same rows ordered A0 A1 A2 B0 B1 ...
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np


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
