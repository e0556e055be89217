"""grid: one split per length in OUTDIR, grid.json, and a directory replaced whole."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from tbptt_cli import core
from tbptt_cli.errors import InputDataError, UsageError
from tbptt_cli.params import GridParams
from tbptt_cli.sequences import SequenceSet
from tbptt_cli.strategies.grid import grid_lengths, padded_fraction, plan_grid


def ragged(lengths: list[int]) -> SequenceSet:
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    return SequenceSet.from_offsets(np.arange(float(offsets[-1])), offsets)


def npz(tmp_path: Path, lengths: list[int]) -> Path:
    path = tmp_path / "in.npz"
    total = sum(lengths)
    values = np.stack([np.arange(total), -np.arange(total)], axis=1).astype(np.float64)
    np.savez(path, values=values, lengths=np.array(lengths))
    return path


def snapshot(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"lengths": "50, 25,100,25"}, [25, 50, 100]),
        ({"lengths": "7"}, [7]),
        ({"factors": True}, [2, 3, 4, 6, 12]),
        ({"factors": True, "min_length": 3, "max_length": 6}, [3, 4, 6]),
        ({"factors": True, "min_length": 1, "max_length": 100}, [1, 2, 3, 4, 6, 12]),
    ],
)
def test_lengths_and_factors(params: dict, expected: list[int]) -> None:
    assert grid_lengths(ragged([12, 12]), GridParams(**params)) == expected


@pytest.mark.parametrize(
    ("params", "phrase"),
    [
        ({}, "exactly one of --lengths"),
        ({"lengths": "5", "factors": True}, "exactly one of --lengths"),
        ({"lengths": "5,x"}, "comma-separated positive integers"),
        ({"lengths": "5,0"}, "comma-separated positive integers"),
        ({"lengths": "5,,10"}, "comma-separated positive integers"),
        ({"lengths": ""}, "comma-separated positive integers"),
        ({"lengths": "5", "min_length": 2}, "bound --factors only"),
        ({"factors": True, "min_length": 7, "max_length": 11}, "no divisor of the sequence length"),
        ({"factors": True, "min_length": 6, "max_length": 3}, "1 <= min <= max"),
        ({"factors": True, "min_length": 0}, "--min-length must be at least 1, not 0"),
    ],
)
def test_bad_grid_options_are_usage_errors(params: dict, phrase: str) -> None:
    with pytest.raises(UsageError, match=phrase.replace("-", r"\-")):
        grid_lengths(ragged([12, 12]), GridParams(**params))


def test_factors_of_one_step_sequences_name_no_option_left_at_its_default() -> None:
    with pytest.raises(UsageError) as error:
        grid_lengths(ragged([1, 1]), GridParams(factors=True))
    assert str(error.value) == (
        "no divisor of the sequence length 1 lies in [2, 1]; widen --min-length/--max-length "
        "or pass --lengths"
    )


def test_factors_need_equal_lengths() -> None:
    with pytest.raises(InputDataError, match="equal length, found lengths 10 to 12"):
        grid_lengths(ragged([12, 10]), GridParams(factors=True))


def test_each_plan_is_split_with_padded_tails() -> None:
    plans = plan_grid(ragged([6, 4]), GridParams(lengths="4,2", batch_size=2))
    assert [k for k, _ in plans] == [2, 4]
    four = plans[1][1]
    assert four.sequence.tolist() == [0, 1, 0, -1]
    assert four.length.tolist() == [4, 4, 2, 0]
    assert padded_fraction(four) == 6 / 16
    assert padded_fraction(plans[0][1]) == 2 / 12  # 5 rows of 2 + one filler row


def test_cli_writes_one_file_per_length_and_grid_json(tmp_path: Path, tbptt) -> None:
    source, out = npz(tmp_path, [6, 4]), tmp_path / "grid"
    result = tbptt("grid", source, "--lengths", "4,2,5", "--batch-size", 2, "-o", out, "--json")
    assert result.code == 0, result.stderr
    names = ["grid.json"] + [f"len_{k}.{ext}" for k in (2, 4, 5) for ext in ("h5", "manifest.json")]
    assert sorted(p.name for p in out.iterdir()) == sorted(names)
    index = json.loads((out / "grid.json").read_text())
    entries = {e["length"]: e for e in index["grid"]}
    assert [e["length"] for e in index["grid"]] == [2, 4, 5]
    assert entries[4] == {
        "length": 4,
        "file": "len_4.h5",
        "manifest": "len_4.manifest.json",
        "samples": 4,
        "batches": 2,
        "batch_size": 2,
        "padded_fraction": 0.375,
        "divides": False,
        "bytes": (out / "len_4.h5").stat().st_size,
    }
    assert entries[2]["divides"] is True and entries[2]["padded_fraction"] == 2 / 12
    assert entries[5]["padded_fraction"] == 10 / 20
    assert index["input"]["sequences"] == 2 and index["params"]["grid"]["lengths"] == "4,2,5"
    summary = json.loads(result.stdout)
    assert summary["output"] == str(out) and summary["grid"] == index["grid"]
    assert summary["warnings"] == []
    manifest = json.loads((out / "len_4.manifest.json").read_text())
    assert manifest["output"]["file"] == "len_4.h5"
    assert manifest["grid"] == {
        "length": 4,
        "index": "grid.json",
        "padded_fraction": 0.375,
        "divides": False,
    }
    assert result.stderr == f"wrote {out}: 3 file(s) + manifests, grid.json\n"  # no table


def test_a_warning_several_lengths_share_is_said_once(tmp_path: Path, tbptt) -> None:
    source, out = npz(tmp_path, [40]), tmp_path / "grid"
    result = tbptt("grid", source, "--lengths", "10,5,20", "-o", out, "-n", "--json")
    assert result.code == 0, result.stderr
    chose = "--batch-size auto chose 1: every larger batch needs more than 10% filler rows"
    warnings = json.loads(result.stdout)["plan"]["warnings"]
    assert [w.split(": ", 1)[0] for w in warnings] == ["lengths 5, 10, 20"]
    assert warnings[0].split(": ", 1)[1].startswith(chose)
    assert result.stderr.count(chose) == 1


def test_cli_prints_a_table_and_each_file_equals_split(tmp_path: Path, tbptt) -> None:
    source, out = npz(tmp_path, [9, 13, 4]), tmp_path / "grid"
    result = tbptt("grid", source, "--lengths", "3,5", "-o", out)
    assert result.code == 0, result.stderr
    lines = result.stderr.splitlines()
    header = ["length", "samples", "batch", "batches", "padded", "divides", "file"]
    assert lines[0].split() == header
    assert lines[1].split()[0] == "3" and lines[1].split()[-1] == "len_3.h5"
    assert lines[-1] == f"wrote {out}: 2 file(s) + manifests, grid.json"
    for k in (3, 5):
        split = tmp_path / f"split{k}.h5"
        assert tbptt("split", source, "--length", k, "--remainder", "pad", "-o", split).code == 0
        with h5py.File(out / f"len_{k}.h5") as mine, h5py.File(split) as theirs:
            assert sorted(mine) == sorted(theirs)
            for name in mine:
                assert np.array_equal(mine[name][()], theirs[name][()]), (k, name)
            for key in ("window", "batch_size", "stateful", "packing", "order"):
                assert mine.attrs[key] == theirs.attrs[key]
            assert mine.attrs["strategy"] == "grid"


def test_cli_factors_and_their_errors(tmp_path: Path, tbptt) -> None:
    equal = tmp_path / "equal.npy"
    np.save(equal, np.arange(24.0).reshape(2, 12))
    result = tbptt(
        "grid", equal, "--factors", "--min-length", 3, "--max-length", 6, "-o", tmp_path / "g"
    )
    assert result.code == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "g").glob("*.h5")) == [
        "len_3.h5",
        "len_4.h5",
        "len_6.h5",
    ]
    unequal = tbptt("grid", npz(tmp_path, [6, 4]), "--factors", "-o", tmp_path / "h")
    assert unequal.code == 65 and "equal length" in unequal.stderr
    for flags in ([], ["--factors", "--lengths", "4"], ["--lengths", "4,-1"]):
        bad = tbptt("grid", equal, *flags, "-o", tmp_path / "h")
        assert bad.code == 2 and bad.stderr.count("\n") == 1, (flags, bad.stderr)
    assert not (tmp_path / "h").exists()


def test_dry_run_writes_nothing(tmp_path: Path, tbptt) -> None:
    source = npz(tmp_path, [6, 4])
    before = snapshot(tmp_path)
    result = tbptt("grid", source, "--lengths", "2,4", "-n", "-o", tmp_path / "grid", "--json")
    assert result.code == 0, result.stderr
    assert snapshot(tmp_path) == before
    plan = json.loads(result.stdout)["plan"]
    assert [e["length"] for e in plan["grid"]] == [2, 4]
    assert plan["output"] == str(tmp_path / "grid")
    table = tbptt("grid", source, "--lengths", "2,4", "-n")
    assert "len_4.h5" in table.stderr and "nothing written" in table.stderr
    assert snapshot(tmp_path) == before


def test_failed_run_leaves_the_previous_outdir_byte_identical(
    tmp_path: Path, tbptt, monkeypatch: pytest.MonkeyPatch
) -> None:
    source, out = npz(tmp_path, [6, 4]), tmp_path / "grid"
    assert tbptt("grid", source, "--lengths", "2,4", "-o", out).code == 0
    before, siblings = snapshot(out), sorted(p.name for p in tmp_path.iterdir())
    real_write, calls = core.hdf5.write_h5, []

    def full_disk_on_second_file(*args, **kwargs):
        calls.append(args[0])
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(*args, **kwargs)

    monkeypatch.setattr(core.hdf5, "write_h5", full_disk_on_second_file)
    result = tbptt("grid", source, "--lengths", "3,5,7", "-o", out)
    assert result.code == 74 and "No space left on device" in result.stderr
    assert len(calls) == 2 and snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == siblings  # no staging left behind
    monkeypatch.undo()
    rerun = tbptt("grid", source, "--lengths", "3", "-o", out)
    assert rerun.code == 0 and sorted(p.name for p in out.iterdir()) == [
        "grid.json",
        "len_3.h5",
        "len_3.manifest.json",
    ]


def test_a_run_killed_mid_swap_is_repaired_by_the_next(tmp_path: Path, tbptt) -> None:
    source, out = npz(tmp_path, [6, 4]), tmp_path / "grid"
    assert tbptt("grid", source, "--lengths", "2", "-o", out).code == 0
    before = snapshot(out)
    out.rename(tmp_path / ".grid.old")  # killed between the two renames
    (tmp_path / ".grid.tmp.dead").mkdir()
    result = tbptt(
        "grid", source, "--lengths", "2", "--order", "sequential", "--batch-size", 2, "-o", out
    )
    assert result.code == 2  # fails after taking the lock: the repair has run
    assert snapshot(out) == before
    assert not (tmp_path / ".grid.old").exists() and not (tmp_path / ".grid.tmp.dead").exists()


def test_refuses_to_replace_a_directory_that_is_not_a_grid(tmp_path: Path, tbptt) -> None:
    source, out = npz(tmp_path, [6, 4]), tmp_path / "results"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    result = tbptt("grid", source, "--lengths", "2", "-o", out)
    assert result.code == 73 and "holds no grid.json" in result.stderr
    assert snapshot(out) == {"precious.txt": b"keep me"}
    clobber = tbptt("grid", source, "--lengths", "2", "-o", tmp_path / "new")
    assert clobber.code == 0
    again = tbptt("grid", source, "--lengths", "2", "--no-clobber", "-o", tmp_path / "new")
    assert again.code == 73 and "--no-clobber" in again.stderr
