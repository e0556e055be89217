"""Keras 3: a tbptt output as a `keras.utils.PyDataset`, and the callback that resets state.

    from tbptt_cli.keras import BatchSequence, ResetStates

    train = BatchSequence("out/walks.h5")
    model = keras.Sequential([
        keras.Input(batch_shape=(train.batch_size, None, train.features)),
        keras.layers.LSTM(32, stateful=True, return_sequences=True, use_cudnn=False),
        keras.layers.Dense(train.targets),
    ])
    model.compile(optimizer="adam", loss="mse")
    model.fit(train, epochs=3, shuffle=False, callbacks=[ResetStates(train)])

`BatchSequence` yields ``(X, y, mask)`` batch by batch in stored order (``loss_mask``
instead of ``mask`` in a decoupled file). `ResetStates` zeroes, before each batch, the
state of the rows whose ``reset`` flag is 1: with ``reset_state()`` where every row resets
(each block start of ``--packing block``, regular or not), row by row in ``lanes`` files.

Backends (Keras 3.15.1; tensorflow-cpu 2.21.0, jax 0.10.2, torch 2.13.0): on JAX the
state variables of a stateful RNN are created untracked, so the compiled train step drops
their updates and nothing is carried from batch to batch; `track_states` registers them
(`ResetStates` does it for you). On the torch backend a stateful LSTM needs
``use_cudnn=False`` (the fused path updates the state in place and the backward pass
fails, keras issue 23462; `ResetStates` warns). This module imports keras; `tbptt_cli`
itself does not.
"""

from __future__ import annotations

import os
import threading
import warnings
from typing import Any

import keras
import numpy as np

from tbptt_cli.batches import BatchFile


class BatchSequence(keras.utils.PyDataset):
    """The batches of an output file as a PyDataset: ``(X, y, weights)``, or ``(X,)``
    without a target. ``rank``/``world_size`` pick one stream of a ``--ranks`` file;
    ``start``/``stop`` a range of batches (resume mid-epoch: `BatchFile.carried`).
    Other keywords (``workers``, ``use_multiprocessing``, ``max_queue_size``) go to
    PyDataset. Items are served in order only (keep ``shuffle=False`` in ``fit``); its
    ``batches`` (a `BatchFile`) reads any batch.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        rank: int | None = None,
        world_size: int | None = None,
        start: int = 0,
        stop: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.batches = BatchFile(path, rank=rank, world_size=world_size)
        if self.batches.packing == "stream":
            raise ValueError(
                f"{path}: packing 'stream' resets the state inside a window, which a Keras "
                "RNN layer cannot do; write the file with --packing lanes (or block)"
            )
        self.start, self.stop = self.batches.span(start, stop)
        self._last = -1  # the batch served last: fit must ask for them in order
        self._lock = threading.Lock()

    @property
    def batch_size(self) -> int:
        return self.batches.batch_size

    @property
    def features(self) -> int:
        return len(self.batches.attrs["features"])

    @property
    def targets(self) -> int:
        return len(self.batches.attrs["targets"])

    def __len__(self) -> int:
        return self.stop - self.start

    def __getitem__(self, step: int) -> tuple[np.ndarray, ...]:
        self._check_order(int(step))
        batch = self.batches[self.start + int(step)]
        if batch.y is None:
            return (batch.X,)
        weights = batch.loss_mask if batch.loss_mask is not None else batch.mask
        return batch.X, batch.y, weights.astype(np.float32)

    def reset(self, step: int) -> np.ndarray:
        """bool per row: zero this row's state before step ``step`` of this sequence."""
        return self.batches.resets(self.start + step)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        del state["_lock"]  # use_multiprocessing pickles the dataset
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, _lock=threading.Lock())

    def _check_order(self, step: int) -> None:
        """Refuse a shuffled read (Keras' ``fit`` shuffles a PyDataset by default). Keras
        may read batch 0 again (to learn the shapes) and workers may race each other, so
        only the plain single-threaded read is checked."""
        if self.workers > 1 or self.use_multiprocessing:
            return
        with self._lock:
            if step not in (0, self._last, self._last + 1):
                after = f"after batch {self._last}" if self._last >= 0 else "first"
                raise ValueError(
                    f"{self.batches.path}: batch {step} asked for {after}; a stateful file "
                    "must be read in stored order: pass shuffle=False to fit() (BatchFile "
                    "reads batches in any order)"
                )
            self._last = step


class ResetStates(keras.callbacks.Callback):
    """Zero the state of the rows whose ``reset`` flag is 1, before every batch.

    ``dataset`` drives ``fit`` (and ``evaluate``/``predict`` called with this callback);
    ``validation`` the validation batches of ``fit(validation_data=...)``.
    """

    def __init__(self, dataset: BatchSequence, validation: BatchSequence | None = None) -> None:
        super().__init__()
        self.dataset, self.validation = dataset, validation
        self._fitting = False

    def set_model(self, model: keras.Model) -> None:
        super().set_model(model)
        track_states(model)
        fused = [layer.name for layer in stateful_layers(model) if _fused_on_torch(layer)]
        if fused:
            warnings.warn(
                f"stateful {', '.join(fused)} on the torch backend with use_cudnn other than "
                "False: the backward pass fails (keras issue 23462); pass use_cudnn=False",
                stacklevel=2,
            )

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        if getattr(self.model, "steps_per_execution", 1) != 1:
            raise ValueError(
                "ResetStates needs steps_per_execution=1 in compile(): it resets the state "
                "between batches, and Keras runs its callbacks once per execution"
            )
        self._fitting = True

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        self._fitting = False

    def on_train_batch_begin(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        reset_rows(self.model, self.dataset.reset(batch))

    def on_test_batch_begin(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        dataset = self.validation if self._fitting else self.dataset
        if dataset is None:
            raise ValueError(
                "validation during fit() needs its own reset flags: "
                "pass ResetStates(train, validation=BatchSequence(VAL.h5))"
            )
        reset_rows(self.model, dataset.reset(batch))

    def on_predict_batch_begin(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        reset_rows(self.model, self.dataset.reset(batch))


def stateful_layers(model: keras.Model) -> list[keras.layers.RNN]:
    """The stateful RNN layers of ``model``, nested ones included."""
    return [
        layer
        for layer in model._flatten_layers(include_self=False)
        if isinstance(layer, keras.layers.RNN) and layer.stateful and layer.states is not None
    ]


def _fused_on_torch(layer: keras.layers.RNN) -> bool:
    return keras.backend.backend() == "torch" and getattr(layer, "use_cudnn", False) is not False


def reset_rows(model: keras.Model, rows: np.ndarray) -> None:
    """Zero the rows flagged in ``rows`` (bool) of every stateful RNN layer's state:
    ``reset_state()`` when all are flagged, nothing when none is."""
    rows = np.asarray(rows, dtype=bool)
    if not rows.any():
        return
    # JAX's fit keeps the variables outside the model between steps: bring them back
    # first, so the next step starts from the state written here.
    sync = getattr(model, "jax_state_sync", None)
    if sync is not None:
        sync()
    for layer in stateful_layers(model):
        if rows.all():
            layer.reset_state()
            continue
        for state in layer.states:
            shape = (len(rows),) + (1,) * (len(state.shape) - 1)
            keep = keras.ops.convert_to_tensor((~rows).reshape(shape), dtype=state.dtype)
            state.assign(keras.ops.multiply(state.value, keep))


def track_states(model: keras.Model) -> None:
    """Register the state variables of stateful RNN layers with their layer (idempotent).

    Keras 3 (up to 3.15.1 at least) creates them untracked: they are not in
    ``model.non_trainable_variables``, so the JAX backend's compiled steps never return
    their new values and every batch starts from the reset state. Tracked, they are
    carried on every backend, and saved with the weights (track before ``load_weights``).
    """
    for layer in stateful_layers(model):
        known = {id(v) for v in layer.non_trainable_variables}
        missing = [v for v in layer.states if id(v) not in known]
        if not missing:
            continue
        locked = layer._tracker.locked  # a built layer refuses new variables unless unlocked
        layer._tracker.unlock()
        try:
            for variable in missing:
                layer._track_variable(variable)
        finally:
            if locked:
                layer._tracker.lock()
