"""tbptt validate: good outputs pass; every kind of damage is caught by the check meant for it."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from tbptt_cli.digest import sha256_file
from tbptt_cli.errors import InputDataError, InputMissingError
from tbptt_cli.validate import validate_output

ROWS = ("X", "mask", "sequence", "offset", "length", "reset")


@pytest.fixture
def npy(tmp_path: Path) -> Path:
    """5 sequences of 23 steps: split --length 7 gives 4 chunks each, the last 2 steps long."""
    path = tmp_path / "walks.npy"
    np.save(path, np.random.default_rng(0).normal(size=(5, 23)))
    return path


def make(tbptt, npy: Path, *args: object) -> Path:
    out = npy.with_name("out.h5")
    result = tbptt(*args[:1], npy, *args[1:], "-o", out, "-q")
    assert result.code == 0, result.stderr
    return out


def rehash(out: Path) -> None:
    """Make the manifest agree with an edited file, so only the layout checks can object."""
    where = out.with_name(out.stem + ".manifest.json")
    doc = json.loads(where.read_text())
    doc["output"]["sha256"] = sha256_file(out)
    doc["output"]["size"] = out.stat().st_size
    where.write_text(json.dumps(doc))


def edit(out: Path, name: str, row: int, value: object) -> None:
    with h5py.File(out, "r+") as f:
        f[name][row] = value
    rehash(out)


@pytest.mark.parametrize(
    "args",
    [
        ("split", "--length", "7"),
        ("split", "--length", "7", "--packing", "lanes", "--batch-size", "3"),
        ("split", "--length", "5", "--remainder", "drop", "--batch-size", "2"),
        ("split", "--length", "6", "--jitter", "2", "--batch-size", "2", "--dtype", "float16"),
        ("stepwise", "--target", "next"),
        ("asis", "--pad-to", "20", "--truncate", "--pad-side", "pre"),
        ("decoupled", "--k1", "6", "--k2", "3", "--stride", "2"),
        ("decoupled", "--k1", "6", "--k2", "3"),
    ],
)
def test_good_outputs_pass_every_check(tbptt, npy: Path, args: tuple[str, ...]) -> None:
    out = make(tbptt, npy, *args)
    report = validate_output(str(out), None, str(npy))
    assert report["problems"] == []
    assert report["ok"] is True
    expected = ["manifest", "layout", "coverage", "sequences", "against"]
    overlapping = "--stride" in args
    if args[0] in ("split", "stepwise") or (args[0] == "decoupled" and not overlapping):
        expected.insert(2, "state")
    assert report["checked"] == expected
    assert report["manifest"] == str(out.with_name("out.manifest.json"))


@pytest.mark.parametrize("by", ["sequence", "time"])
def test_both_files_of_a_validation_split_pass(tbptt, npy: Path, by: str) -> None:
    out = make(tbptt, npy, "split", "--length", "7", "--val-fraction", "0.4", "--val-by", by)
    for path in (out, out.with_name("out.val.h5")):
        assert validate_output(str(path), None, str(npy))["problems"] == []


def test_segments_may_drop_steps_but_never_repeat_them(tmp_path: Path) -> None:
    from tbptt_cli import config, core

    path = tmp_path / "words.csv"
    ends = [0, 0, 1, 0, 0, 0, 0, 1, 0, 1]
    rows = "".join(f"d{i // 10},{i},{ends[i % 10]}\n" for i in range(30))
    path.write_text("doc,len,eos\n" + rows)
    out = tmp_path / "segments.h5"
    raw = {
        "input": {"path": str(path), "id_col": "doc", "features": ["len"]},
        "output": {"path": str(out)},
        "domain-segments": {"boundary_col": "eos", "pad_to": "3", "overflow": "truncate"},
    }
    core.execute(config.resolve("domain-segments", raw, {}, "test"), core.RunOptions())
    assert validate_output(str(out), None, str(path))["problems"] == []
    with h5py.File(out, "r") as f:
        assert f["length"][:3].tolist() == [3, 3, 2]  # the 5-step segment lost 2 steps
    edit(out, "offset", 1, 1)
    problems = validate_output(str(out), None, None)["problems"]
    assert problems == ["sequence 'd0': steps 1..2 are in both sample 0 and sample 1"]


def test_a_flipped_byte_in_x_fails_the_hash(tbptt, npy: Path) -> None:
    out = make(tbptt, npy, "split", "--length", "7")
    with h5py.File(out, "r") as f:
        chunk = f["X"].id.get_chunk_info(0)
        middle = chunk.byte_offset + chunk.size // 2
    raw = bytearray(out.read_bytes())
    raw[middle] ^= 0xFF
    out.write_bytes(bytes(raw))
    problems = validate_output(str(out), None, None)["problems"]
    assert problems == [f"{out}: sha256 differs from the manifest's; the file changed since"]
    # The input comparison finds the very value that changed.
    against = validate_output(str(out), None, str(npy))["problems"]
    assert any("X differs from the input at step" in p for p in against[1:])


def test_an_edited_offset_breaks_state_continuity(tbptt, npy: Path) -> None:
    out = make(tbptt, npy, "split", "--length", "7")  # batch 5: sample 5 is chunk 1 of seq 0
    edit(out, "offset", 5, 8)
    report = validate_output(str(out), None, None)
    assert report["ok"] is False
    assert report["problems"] == [
        "sample 5 (batch 1, row 0): sequence '0' continues at step 8, expected 7",
        "sample 10 (batch 2, row 0): sequence '0' continues at step 14, expected 15",
        "sequence '0': steps 14..14 are in both sample 5 and sample 10",
        "sequence '0': steps 7..7 are in no sample",
    ]


def test_swapped_rows_break_the_layout(tbptt, npy: Path) -> None:
    out = make(tbptt, npy, "split", "--length", "7")  # samples 6, 7: chunk 1 of sequences 1, 2
    with h5py.File(out, "r+") as f:
        for name in ROWS:  # a consistent swap: each row still agrees with itself
            first, second = f[name][6], f[name][7]
            f[name][6], f[name][7] = second, first
    rehash(out)
    problems = validate_output(str(out), None, None)["problems"]
    held = "starts without a reset but the row held"
    assert problems[:4] == [
        f"sample 6 (batch 1, row 1): sequence '2' {held} sequence '1'",
        f"sample 7 (batch 1, row 2): sequence '1' {held} sequence '2'",
        f"sample 11 (batch 2, row 1): sequence '1' {held} sequence '2'",
        f"sample 12 (batch 2, row 2): sequence '2' {held} sequence '1'",
    ]
    assert problems[-2:] == [
        "sequence '1': its samples are not first_sample 1 + j * stride 5 as the manifest says",
        "sequence '2': its samples are not first_sample 2 + j * stride 5 as the manifest says",
    ]


def test_mask_tampering_is_caught(tbptt, npy: Path) -> None:
    out = make(tbptt, npy, "split", "--length", "7")
    edit(out, "mask", 3, np.array([1, 1, 1, 0, 1, 1, 1], dtype=np.uint8))
    problems = validate_output(str(out), None, None)["problems"]
    assert problems == [
        "sample 3: mask has 6 real steps but length says 7",
        "sample 3: mask is not one contiguous run",
    ]


def test_lost_and_doubled_steps_are_coverage_problems(tbptt, npy: Path) -> None:
    out = make(tbptt, npy, "asis")
    edit(out, "sequence", 1, 0)  # row 1 now claims sequence 0: 0 doubled, 1 lost
    problems = validate_output(str(out), None, None)["problems"]
    assert "sequence '0': steps 0..22 are in both sample 0 and sample 1" in problems
    assert "sequence '1': none of its 23 steps is in any sample" in problems


def test_overlapping_windows_must_train_every_target_once(tbptt, npy: Path) -> None:
    out = make(tbptt, npy, "decoupled", "--k1", "6", "--k2", "3", "--stride", "2")
    with h5py.File(out, "r") as f:
        row = int(np.flatnonzero((f["sequence"][()] == 2) & (f["offset"][()] == 4))[0])
        loss = f["loss_mask"][row]
    assert loss.tolist() == [0, 0, 0, 0, 1, 1]  # steps 8, 9 of sequence 2
    edit(out, "loss_mask", row, np.zeros(6, dtype=np.uint8))
    problems = validate_output(str(out), None, None)["problems"]
    assert problems == ["sequence '2': targets 8..9 are in no sample"]


def test_against_a_modified_input_reports_the_first_step_per_sequence(tbptt, npy: Path) -> None:
    out = make(tbptt, npy, "split", "--length", "7")
    values = np.load(npy)
    values[2, 10] += 1.0
    values[2, 15] += 1.0
    values[4, 0] = 0.25
    np.save(npy, values)
    report = validate_output(str(out), None, str(npy))
    differs = [p for p in report["problems"] if "differs from the input" in p]
    assert len(differs) == 2
    # In file order: sample 4 (chunk 0 of sequence 4) comes before sample 7 (chunk 1 of 2).
    assert differs[0].startswith("sequence '4': X differs from the input at step 0 (sample 4, ")
    assert differs[0].endswith(" in the file, 0.25 in the input)")
    assert differs[1].startswith("sequence '2': X differs from the input at step 10 (sample 7, ")
    assert "time 3, feature x0: " in differs[1]


def test_against_a_shorter_input_names_the_missing_steps(tbptt, npy: Path) -> None:
    out = make(tbptt, npy, "split", "--length", "7")
    np.save(npy, np.load(npy)[:, :20])
    problems = validate_output(str(out), None, str(npy))["problems"]
    assert "sequence '0': 20 steps in the input, 23 in the manifest" in problems
    assert "sample 15: sequence '0' has no steps 21..22 in the input" in problems


def test_missing_manifest_is_a_problem_and_a_named_one_is_missing_input(tbptt, npy: Path) -> None:
    out = make(tbptt, npy, "split", "--length", "7")
    out.with_name("out.manifest.json").unlink()
    report = validate_output(str(out), None, None)
    assert report["problems"] == [
        f"{out.with_name('out.manifest.json')}: no manifest beside the file; pass --manifest PATH"
    ]
    assert report["checked"] == ["layout", "state", "coverage"]
    with pytest.raises(InputMissingError, match="no such manifest file"):
        validate_output(str(out), str(npy.with_name("nope.json")), None)


def test_a_file_missing_an_index_dataset_skips_the_row_checks(tbptt, npy: Path) -> None:
    out = make(tbptt, npy, "split", "--length", "7")
    with h5py.File(out, "r+") as f:
        del f["reset"]
    rehash(out)
    report = validate_output(str(out), None, None)
    assert report["checked"] == ["manifest"]
    assert report["problems"] == [
        "dataset reset is in the manifest, not in the file",
        f"{out}: dataset(s) reset missing; not a whole output, other checks skipped",
    ]


def test_files_that_are_not_ours_are_refused(tmp_path: Path, npy: Path) -> None:
    with pytest.raises(InputMissingError, match="no such file"):
        validate_output(str(tmp_path / "absent.h5"), None, None)
    with pytest.raises(InputDataError, match="not an HDF5 file"):
        validate_output(str(npy), None, None)
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f["X"] = np.zeros((2, 3, 1))
    with pytest.raises(InputDataError, match="not a tbptt output"):
        validate_output(str(foreign), None, None)


def test_exit_codes_and_messages(tbptt, npy: Path, tmp_path: Path) -> None:
    out = make(tbptt, npy, "split", "--length", "7")
    ok = tbptt("validate", out, "--against", npy)
    assert ok.code == 0
    assert ok.stderr == f"{out}: ok (manifest, layout, state, coverage, sequences, against)\n"
    as_json = tbptt("validate", out, "--json")
    assert json.loads(as_json.stdout)["ok"] is True
    edit(out, "offset", 5, 8)
    bad = tbptt("validate", out, "--json")
    assert bad.code == 65
    assert json.loads(bad.stdout)["ok"] is False
    assert "tbptt: sample 5 (batch 1, row 0): sequence '0' continues at step 8" in bad.stderr
    assert bad.stderr.endswith(f"tbptt: error: {out}: 4 problem(s) found\n")
    assert tbptt("validate", npy).code == 65
    missing = tbptt("validate", tmp_path / "absent.h5")
    assert missing.code == 66
    assert missing.stderr == f"tbptt: error: {tmp_path / 'absent.h5'}: no such file\n"
    assert tbptt("validate", out, "--against", tmp_path / "absent.npy").code == 66


def test_a_newer_format_version_is_refused(tbptt, npy: Path) -> None:
    out = make(tbptt, npy, "split", "--length", "7")
    with h5py.File(out, "r+") as f:
        f.attrs["format_version"] = 2
    with pytest.raises(InputDataError, match="format version 2; this tbptt reads version 1"):
        validate_output(str(out), None, None)
