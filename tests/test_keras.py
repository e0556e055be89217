"""tbptt_cli.keras: the PyDataset and the reset callback, checked value by value.

These run in this process on the torch backend (no TensorFlow needed); the proofs that
each backend trains a stateful LSTM with them are in test_keras_backends.py.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from tbptt_cli.batches import BatchFile
from tbptt_cli.cli import run_main

os.environ.setdefault("KERAS_BACKEND", "torch")
if os.environ.get("CI"):
    import keras  # CI installs the test extra, which has keras: missing must fail, not skip
else:
    keras = pytest.importorskip("keras")

from tbptt_cli.keras import (  # noqa: E402
    BatchSequence,
    ResetStates,
    reset_rows,
    stateful_layers,
    track_states,
)

LENGTHS = np.array([20, 6, 12, 6, 18, 6, 9, 14])
BATCH, WINDOW, UNITS = 2, 6, 3


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("keras")
    values = np.arange(2 * LENGTHS.sum(), dtype=float).reshape(-1, 2)
    np.savez(root / "in.npz", values=values, lengths=LENGTHS)

    def write(name: str, *options: object) -> Path:
        out = root / f"{name}.h5"
        args = [*options, "-q", "-o", out]
        assert run_main([str(a) for a in args]) == 0
        return out

    common = ("--target", "x1", "--batch-size", BATCH)
    return {
        "lanes": write(
            "lanes", "split", root / "in.npz", "--length", WINDOW, *common, "--packing", "lanes"
        ),
        "block": write("block", "split", root / "in.npz", "--length", WINDOW, *common),
        "bare": write("bare", "split", root / "in.npz", "--length", WINDOW, "--batch-size", BATCH),
        "decoupled": write(
            "decoupled", "decoupled", root / "in.npz", "--k1", WINDOW, "--k2", 2, *common
        ),
        "stream": write(
            "stream", "split", root / "in.npz", "--length", WINDOW, *common, "--packing", "stream"
        ),
    }


def stateful_model(batch_size: int = BATCH) -> keras.Model:
    model = keras.Sequential(
        [
            keras.Input(batch_shape=(batch_size, None, 1)),
            keras.layers.LSTM(UNITS, stateful=True, return_sequences=True, use_cudnn=False),
            keras.layers.Dense(1),
        ]
    )
    model.compile(optimizer="adam", loss="mse")
    return model


def fill_states(model: keras.Model, value: float = 1.0) -> None:
    for layer in stateful_layers(model):
        for state in layer.states:
            state.assign(np.full(state.shape, value, dtype="float32"))


def states_of(model: keras.Model) -> list[np.ndarray]:
    values = [s.value for s in stateful_layers(model)[0].states]
    # torch tensors directly: keras' own conversion warns under numpy 2.4 (torch backend)
    return [v.detach().cpu().numpy() if hasattr(v, "detach") else np.asarray(v) for v in values]


def test_items_are_the_stored_batches_with_their_weights(files):
    sequence, batches = BatchSequence(files["lanes"]), BatchFile(files["lanes"])
    assert len(sequence) == len(batches) and sequence.batch_size == BATCH
    assert sequence.features == sequence.targets == 1
    for k in range(len(batches)):
        X, y, weights = sequence[k]
        assert np.array_equal(X, batches[k].X) and np.array_equal(y, batches[k].y)
        assert weights.dtype == np.float32 and np.array_equal(weights, batches[k].mask)
        assert np.array_equal(sequence.reset(k), batches[k].reset)
    X, y, weights = BatchSequence(files["decoupled"], start=1)[0]
    assert np.array_equal(weights, BatchFile(files["decoupled"])[1].loss_mask)
    assert not weights[:, : WINDOW - 2].any()  # decoupled: the first k1 - k2 steps untrained
    (bare,) = BatchSequence(files["bare"])[0]  # no target: X alone, for predict
    assert bare.shape == (BATCH, WINDOW, 2)


def test_a_range_of_batches_for_a_resumed_epoch(files):
    batches = BatchFile(files["lanes"])
    late = BatchSequence(files["lanes"], start=3, stop=6)
    assert len(late) == 3
    assert np.array_equal(late[0][0], batches[3].X) and np.array_equal(late[1][0], batches[4].X)
    assert np.array_equal(late.reset(2), batches[5].reset)


def test_a_shuffled_read_is_refused(files):
    sequence = BatchSequence(files["lanes"])
    for step in (0, 1, 0, 1, 1, 2):  # Keras reads batch 0 again to learn the shapes
        sequence[step]
    with pytest.raises(
        ValueError,
        match=r"lanes.h5: batch 7 asked for after batch 2; "
        r"a stateful file must be read in stored order: pass shuffle=False",
    ):
        sequence[7]
    with pytest.raises(ValueError, match=r"batch 4 asked for first; "):
        BatchSequence(files["lanes"])[4]
    threaded = BatchSequence(files["lanes"], workers=2)  # racing threads: not checked
    threaded[7]
    threaded[2]


def test_stream_files_are_refused(files):
    with pytest.raises(ValueError, match=r"packing 'stream' resets the state inside a window"):
        BatchSequence(files["stream"])


def test_the_flagged_rows_and_only_they_are_zeroed(files):
    sequence = BatchSequence(files["lanes"])
    flags = [sequence.reset(k) for k in range(len(sequence))]
    mixed = next(k for k, f in enumerate(flags) if f.any() and not f.all())
    model = stateful_model()
    callback = ResetStates(sequence)
    callback.set_model(model)
    for step, expected in ((mixed, ~flags[mixed]), (0, np.zeros(BATCH, bool))):
        fill_states(model, 2.0)
        callback.on_train_batch_begin(step)
        for state in states_of(model):
            assert np.array_equal(state[:, 0] == 2.0, expected), step
            assert not state[~expected].any()
    quiet = next(k for k, f in enumerate(flags) if not f.any())
    fill_states(model, 2.0)
    callback.on_predict_batch_begin(quiet)
    assert all((s == 2.0).all() for s in states_of(model))


def test_a_block_start_resets_the_whole_state(files, monkeypatch):
    sequence = BatchSequence(files["block"])
    starts = [k for k in range(len(sequence)) if sequence.reset(k).all()]
    assert starts[0] == 0 and len(starts) > 1
    model = stateful_model()
    layer = stateful_layers(model)[0]
    calls = []
    monkeypatch.setattr(layer, "reset_state", lambda: calls.append(True))
    callback = ResetStates(sequence)
    callback.set_model(model)
    for step in range(len(sequence)):
        callback.on_train_batch_begin(step)
    assert len(calls) == len(starts)  # reset_state() once per block, never in between


def test_validation_batches_use_their_own_flags(files):
    train, val = BatchSequence(files["block"]), BatchSequence(files["lanes"])
    model = stateful_model()
    callback = ResetStates(train, validation=val)
    callback.set_model(model)
    callback.on_train_begin()
    step = next(k for k in range(len(val)) if val.reset(k).any() and not val.reset(k).all())
    fill_states(model, 2.0)
    callback.on_test_batch_begin(step)
    assert np.array_equal(states_of(model)[0][:, 0] == 2.0, ~val.reset(step))
    lone = ResetStates(train)
    lone.set_model(model)
    lone.on_train_begin()
    with pytest.raises(ValueError, match=r"pass ResetStates\(train, validation=Batch"):
        lone.on_test_batch_begin(0)
    lone.on_train_end()
    lone.on_test_batch_begin(0)  # evaluate() outside fit: the dataset's own flags


def test_one_callback_per_step_is_required(files):
    model = stateful_model()
    model.compile(optimizer="adam", loss="mse", steps_per_execution=2)
    callback = ResetStates(BatchSequence(files["lanes"]))
    callback.set_model(model)
    with pytest.raises(ValueError, match=r"needs steps_per_execution=1 in compile\(\)"):
        callback.on_train_begin()


def test_state_variables_are_tracked_once(files):
    model = stateful_model()
    before = len(model.non_trainable_variables)
    layer = stateful_layers(model)[0]
    track_states(model)
    assert len(model.non_trainable_variables) == before + 2  # h and c of the LSTM
    assert all(any(v is s for v in model.non_trainable_variables) for s in layer.states)
    track_states(model)
    assert len(model.non_trainable_variables) == before + 2
    assert layer._tracker.locked  # the layer is locked again, as Keras left it


def test_reset_rows_takes_any_flags(files):
    model = stateful_model()
    fill_states(model, 3.0)
    reset_rows(model, np.array([True, False]))
    h, c = states_of(model)
    assert not h[0].any() and not c[0].any() and (h[1] == 3.0).all() and (c[1] == 3.0).all()


def test_a_fused_lstm_on_the_torch_backend_is_warned_about(files):
    model = keras.Sequential(
        [
            keras.Input(batch_shape=(BATCH, None, 1)),
            keras.layers.LSTM(UNITS, stateful=True, return_sequences=True, name="fused"),
        ]
    )
    with pytest.warns(UserWarning, match=r"stateful fused on the torch backend .* use_cudnn=False"):
        ResetStates(BatchSequence(files["lanes"])).set_model(model)
