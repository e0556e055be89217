"""--scale: fitted on the training part only, applied to X (and y where it repeats a
feature), recorded so predictions can be inverted, padded steps left at 0."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from tbptt_cli import scaling
from tbptt_cli.sequences import SequenceSet


def ragged(path: Path, seed: int = 0) -> tuple[Path, list[np.ndarray]]:
    """An NPZ of 5 ragged 3-feature sequences on very different scales."""
    rng = np.random.default_rng(seed)
    lengths = [37, 50, 23, 44, 31]
    series = [rng.normal(size=(n, 3)) * [1, 50, 0.01] + [0, 1000, -3] for n in lengths]
    np.savez(path, values=np.concatenate(series), lengths=lengths)
    return path, series


def read(path: Path) -> tuple[dict[str, np.ndarray], dict]:
    with h5py.File(path) as f:
        arrays = {name: f[name][:] for name in f}
        attrs = dict(f.attrs)
    return arrays, attrs


def real_steps(arrays: dict[str, np.ndarray], name: str = "X") -> np.ndarray:
    """The real steps of every sequence in input order (rows by sequence, then offset)."""
    rows = np.lexsort((arrays["offset"], arrays["sequence"]))
    rows = rows[arrays["sequence"][rows] >= 0]
    return arrays[name][rows][arrays["mask"][rows] == 1]


@pytest.mark.parametrize("by", ["sequence", "time"])
@pytest.mark.parametrize("method", ["standard", "minmax"])
def test_fitted_on_the_training_part_only(tmp_path, tbptt, by, method):
    data, series = ragged(tmp_path / "in.npz")
    out = tmp_path / "o.h5"
    result = tbptt(
        "split", data, "--length", 8, "--scale", method, "--val-fraction", 0.4,
        "--val-by", by, "--seed", 3, "-o", out,
    )  # fmt: skip
    assert result.code == 0, result.stderr
    manifest = json.loads(out.with_name("o.manifest.json").read_text())
    if by == "sequence":
        held = set(json.loads(out.with_name("o.val.manifest.json").read_text())["sequences"]["id"])
        train = np.concatenate([s for i, s in enumerate(series) if str(i) not in held])
    else:
        train = np.concatenate([s[: int(np.floor(len(s) * 0.6))] for s in series])
    if method == "standard":
        center, scale = train.mean(axis=0), train.std(axis=0)
    else:
        center, scale = train.min(axis=0), train.max(axis=0) - train.min(axis=0)
    doc = manifest["scale"]
    np.testing.assert_allclose(doc["center"], center, rtol=1e-12)
    np.testing.assert_allclose(doc["scale"], scale, rtol=1e-12)
    assert doc["fitted_on"] == {"sequences": 3 if by == "sequence" else 5, "steps": len(train)}
    arrays, attrs = read(out)
    assert json.loads(attrs["scale"]) == doc
    written = real_steps(arrays)
    assert np.array_equal(written, ((train - center) / scale).astype(np.float32))
    if method == "minmax":
        assert written.min() == 0 and written.max() == 1
    # The held-out file: the training part's parameters, not its own.
    val, _ = read(out.with_name("o.val.h5"))
    val_manifest = json.loads(out.with_name("o.val.manifest.json").read_text())
    assert val_manifest["scale"] == doc
    held_steps = np.concatenate(
        [s for i, s in enumerate(series) if str(i) in held]
        if by == "sequence"
        else [s[int(np.floor(len(s) * 0.6)) :] for s in series]
    )
    assert np.array_equal(real_steps(val), ((held_steps - center) / scale).astype(np.float32))
    for name in ("o.h5", "o.val.h5"):
        check = tbptt("validate", tmp_path / name, "--against", data)
        assert check.code == 0, check.stderr


def test_predictions_invert_and_padding_stays_zero(tmp_path, tbptt):
    data, series = ragged(tmp_path / "in.npz")
    out = tmp_path / "o.h5"
    assert tbptt("split", data, "--length", 8, "--scale", "standard", "--target", "next",
                 "--dtype", "float64", "-o", out).code == 0  # fmt: skip
    arrays, attrs = read(out)
    doc = json.loads(attrs["scale"])
    assert doc["targets"] == ["next_x0", "next_x1", "next_x2"]
    assert doc["target_center"] == doc["center"] and doc["target_scale"] == doc["scale"]
    center, scale = np.array(doc["center"]), np.array(doc["scale"])
    raw_x = real_steps(arrays) * scale + center  # what training code does to invert
    raw_y = real_steps(arrays, "y") * scale + center
    np.testing.assert_allclose(raw_x, np.concatenate([s[:-1] for s in series]), rtol=1e-12)
    np.testing.assert_allclose(raw_y, np.concatenate([s[1:] for s in series]), rtol=1e-12)
    padded = arrays["mask"] == 0
    assert padded.any() and not arrays["X"][padded].any() and not arrays["y"][padded].any()


def test_a_column_target_is_left_as_it_is_and_next_col_uses_its_feature(tmp_path, tbptt):
    csv = tmp_path / "in.csv"
    rows = [f"{i % 2},{10 * i},{i * i},{i % 3}" for i in range(40)]
    csv.write_text("id,a,b,label\n" + "\n".join(rows) + "\n")
    out = tmp_path / "o.h5"
    args = ("asis", csv, "--id-col", "id", "--scale", "standard")
    assert tbptt(*args, "--target", "label", "-o", out).code == 0
    arrays, attrs = read(out)
    doc = json.loads(attrs["scale"])
    assert doc["features"] == ["a", "b"] and doc["targets"] == ["label"]
    assert (doc["target_center"], doc["target_scale"]) == ([0.0], [1.0])
    assert sorted(set(real_steps(arrays, "y")[:, 0])) == [0.0, 1.0, 2.0]
    assert tbptt(*args, "--target", "next:b", "-o", out).code == 0
    doc = json.loads(read(out)[1]["scale"])
    assert doc["features"] == ["a", "b", "label"] and doc["targets"] == ["next_b"]
    assert doc["target_center"] == doc["center"][1:2] and doc["target_scale"] == doc["scale"][1:2]
    assert tbptt("validate", out, "--against", csv).code == 0


def test_a_constant_feature_gets_scale_1_and_a_warning(tmp_path, tbptt):
    np.save(tmp_path / "x.npy", np.stack([np.arange(40.0), np.full(40, 7.0)], 1).reshape(2, 20, 2))
    result = tbptt("asis", tmp_path / "x.npy", "--scale", "minmax", "-o", tmp_path / "o.h5")
    assert result.code == 0
    assert result.stderr.startswith(
        "tbptt: warning: --scale minmax: feature x1 is constant in the training part; it is "
        "written as 0 (scale 1)\n"
    )
    arrays, attrs = read(tmp_path / "o.h5")
    assert json.loads(attrs["scale"])["scale"][1] == 1.0 and not arrays["X"][..., 1].any()


def test_validate_notices_a_file_scaled_otherwise(tmp_path, tbptt):
    data, _ = ragged(tmp_path / "in.npz")
    out = tmp_path / "o.h5"
    assert tbptt("split", data, "--length", 8, "--scale", "standard", "-o", out).code == 0
    with h5py.File(out, "r+") as f:
        doc = json.loads(f.attrs["scale"])
        doc["center"][1] += 1.0
        f.attrs["scale"] = json.dumps(doc, sort_keys=True)
    result = tbptt("validate", out, "--against", data)
    assert result.code == 65
    assert "the scale parameters in the file differ from the manifest's scale" in result.stderr
    assert "X differs from the input at step 0" in result.stderr


def test_no_scale_writes_no_parameters(tmp_path, tbptt):
    data, _ = ragged(tmp_path / "in.npz")
    assert tbptt("split", data, "--length", 8, "-o", tmp_path / "o.h5").code == 0
    assert "scale" not in read(tmp_path / "o.h5")[1]
    assert "scale" not in json.loads((tmp_path / "o.manifest.json").read_text())


def test_grid_files_are_scaled_alike(tmp_path, tbptt):
    data, _ = ragged(tmp_path / "in.npz")
    assert tbptt("grid", data, "--lengths", "5,9", "--scale", "standard",
                 "-o", tmp_path / "g").code == 0  # fmt: skip
    docs = [json.loads(read(tmp_path / "g" / f"len_{k}.h5")[1]["scale"]) for k in (5, 9)]
    assert docs[0] == docs[1] and docs[0]["method"] == "standard"


def test_the_fit_reads_each_step_once_in_bounded_blocks(monkeypatch):
    """Small blocks, ragged sequences out of storage order, holes and overlaps."""
    monkeypatch.setattr(scaling, "BLOCK_ROWS", 7)
    values = np.random.default_rng(1).normal(size=(100, 2)) * [3, 0.5] + [1, -2]
    starts, lengths = np.array([60, 3, 40, 45, 0]), np.array([25, 20, 10, 3, 0])
    blocks = list(scaling.steps_in_blocks(values, starts, lengths))
    assert all(len(b) <= 7 for b in blocks)
    rows = sorted({r for s, n in zip(starts, lengths, strict=True) for r in range(s, s + n)})
    assert np.array_equal(np.concatenate(blocks), values[rows])
    starts, lengths = np.array([60, 3, 40, 52]), np.array([25, 20, 10, 3])  # no overlap
    data = SequenceSet(values, starts, lengths, list("abcd"), ["p", "q"])
    fitted, _ = scaling.fit(data, "standard")
    steps = [np.arange(s, s + n) for s, n in zip(starts, lengths, strict=True)]
    picked = values[np.concatenate(steps)]
    np.testing.assert_allclose(fitted.scaling.center, picked.mean(axis=0), rtol=1e-13)
    np.testing.assert_allclose(fitted.scaling.scale, picked.std(axis=0), rtol=1e-13)
