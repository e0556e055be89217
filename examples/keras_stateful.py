"""Train a stateful Keras 3 LSTM on a tbptt output file, on any backend.

    tbptt split data.npy --target x2 --length 8 --batch-size 32 -o out/train.h5
    KERAS_BACKEND=jax python examples/keras_stateful.py out/train.h5 --epochs 10

`tbptt_cli.keras.BatchSequence` feeds ``fit`` the batches in stored order, with the mask
(or ``loss_mask``) as sample weights; `tbptt_cli.keras.ResetStates` zeroes the state of
the rows whose ``reset`` flag is 1 before each batch (the whole state at a block start,
single rows in a ``lanes`` file) and, on JAX, registers the state variables so that the
compiled train step carries them (Keras 3.15.1 leaves them untracked). The evaluation
runs ``predict`` with the same callback and reports the share of sequences whose last
step is predicted with the right sign (meaningful for +-1 targets).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import keras
import numpy as np

from tbptt_cli.keras import BatchSequence, ResetStates


def build(batches: BatchSequence, hidden: int, lr: float) -> keras.Model:
    model = keras.Sequential(
        [
            keras.Input(batch_shape=(batches.batch_size, None, batches.features)),
            # use_cudnn=False: the torch backend's fused LSTM fails in backward when stateful
            keras.layers.LSTM(hidden, stateful=True, return_sequences=True, use_cudnn=False),
            keras.layers.Dense(batches.targets),
        ]
    )
    model.compile(optimizer=keras.optimizers.Adam(lr), loss="mse")
    return model


def final_step_accuracy(model: keras.Model, batches: BatchSequence) -> float:
    """Share of sequences whose last real step is predicted with the target's sign."""
    pred = model.predict(batches, callbacks=[ResetStates(batches)], verbose=0)
    rows = [batches.batches[k] for k in range(batches.start, batches.stop)]
    sequence = np.concatenate([b.sequence for b in rows])
    offset = np.concatenate([b.offset for b in rows])
    mask = np.concatenate([b.mask for b in rows]).astype(bool)
    y = np.concatenate([b.y for b in rows if b.y is not None])
    real = np.flatnonzero((sequence >= 0) & mask.any(axis=1))
    order = real[np.lexsort((offset[real], sequence[real]))]  # the last row of a sequence wins
    last_rows = order[np.append(np.diff(sequence[order]) != 0, True)]
    last_steps = mask.shape[1] - 1 - np.argmax(mask[last_rows, ::-1], axis=1)
    agree = np.sign(pred[last_rows, last_steps]) == np.sign(y[last_rows, last_steps])
    return float(agree.all(axis=-1).mean())


def train(
    path: str,
    eval_path: str | None = None,
    epochs: int = 10,
    hidden: int = 16,
    seed: int = 0,
    lr: float = 0.01,
    verbose: int = 0,
) -> dict[str, Any]:
    keras.utils.set_random_seed(seed)
    batches = BatchSequence(path)
    model = build(batches, hidden, lr)
    history = model.fit(
        batches, epochs=epochs, shuffle=False, callbacks=[ResetStates(batches)], verbose=verbose
    )
    accuracy = final_step_accuracy(model, BatchSequence(eval_path or path))
    return {"losses": history.history["loss"], "accuracy": accuracy, "model": model}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("path", help="an output .h5 of tbptt split (block or lanes packing)")
    parser.add_argument("--eval", dest="eval_path", help="evaluate on this file (default: PATH)")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--hidden", type=int, default=16, help="LSTM units")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lr", type=float, default=0.01, help="Adam learning rate")
    args = parser.parse_args()
    result = train(args.path, args.eval_path, args.epochs, args.hidden, args.seed, args.lr, 2)
    print(json.dumps({"backend": keras.backend.backend(), "accuracy": result["accuracy"]}))


if __name__ == "__main__":
    main()
