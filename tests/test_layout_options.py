"""The layout options on the command line and in configs: --batch-size for stateless
outputs, --max-filler, --streams, --ranks, --packing stream; what a run reports and the
warnings with their cures."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from tbptt_cli.batches import BatchFile


def npz(tmp_path: Path, lengths: list[int]) -> Path:
    values = np.concatenate([np.arange(n, dtype=np.float64) for n in lengths])
    path = tmp_path / "in.npz"
    np.savez(path, values=values[:, None], lengths=np.array(lengths))
    return path


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["split", "--length", "5", "--ranks", "0"], "--ranks must be at least 1, not 0"),
        (["split", "--length", "5", "--streams", "0"], "--streams: must be auto or a positive"),
        (["split", "--length", "5", "--max-filler", "1"], "--max-filler must be at least 0"),
        (
            ["split", "--length", "5", "--ranks", "4"],
            "--ranks 4 needs at least 4 sequences (or parts of sequences), one for each rank, "
            "not 3; pass --streams 4 or fewer ranks",
        ),
        (
            ["split", "--length", "5", "--packing", "stream", "--remainder", "error"],
            "--packing stream pads only the end of each row, so --remainder error does not apply",
        ),
        (
            ["split", "--length", "5", "--order", "sequential", "--streams", "2"],
            "--streams lays the parts of a sequence side by side, --order sequential",
        ),
        (
            ["decoupled", "--k1", "6", "--k2", "3", "--stride", "3", "--streams", "2"],
            "overlapping windows (--stride < --k1) are independent samples: drop --streams",
        ),
        (["asis", "--batch-size", "0"], "--batch-size: must be auto or a positive integer"),
    ],
)
def test_misuse_exits_2_with_the_reason(tmp_path, tbptt, args, message):
    result = tbptt(*args[:1], npz(tmp_path, [20, 30, 12]), *args[1:], "-o", tmp_path / "o.h5")
    assert result.code == 2 and message in result.stderr
    assert result.stderr.count("\n") == 1 and not (tmp_path / "o.h5").exists()


@pytest.mark.parametrize("command", [["asis"], ["domain", "segments", "--boundary-col", "eos"]])
def test_stateless_outputs_pad_to_the_batch_size_given(tmp_path, tbptt, command):
    source = npz(tmp_path, [4, 6, 5, 7, 3, 8, 2, 9, 5, 4, 6, 3, 7])  # 13 rows: a prime
    if command[0] == "domain":  # 13 sentences of 4 words
        source = tmp_path / "t.csv"
        rows = [f"{i},{t},{t * 0.5},{int(t == 3)}" for i in range(13) for t in range(4)]
        source.write_text("id,t,x,eos\n" + "\n".join(rows) + "\n")
        command = [*command, "--id-col", "id", "--time-col", "t"]
    out = tmp_path / "o.h5"
    assert tbptt(*command, source, "-o", out).stderr.count(", batch 13 (1 batch, 0.0%") == 1
    result = tbptt(*command, source, "--batch-size", 7, "--json", "-o", out)
    summary = json.loads(result.stdout)
    assert (summary["samples"], summary["batch_size"], summary["batches"]) == (14, 7, 2)
    assert summary["filler_share"] == round(1 / 14, 6)
    with h5py.File(out) as f:
        assert f["sequence"][-1] == -1 and f["reset"][()].all() and not f["mask"][-1].any()
    assert [batch.rows for batch in BatchFile(out)] == [7, 7]
    doc = json.loads(out.with_suffix(".manifest.json").read_text())
    assert doc["batch_size_hints"] == {"recommended": 7, "valid": [1, 2, 7, 14]}


def test_a_run_reports_ranks_streams_batches_and_filler(tmp_path, tbptt):
    source, out = npz(tmp_path, [400, 250]), tmp_path / "o.h5"
    result = tbptt("split", source, "--length", 10, "--streams", 4, "--ranks", 2, "-o", out)
    assert result.code == 0, result.stderr
    line = result.stderr.splitlines()[-1]
    # Parts of 10 x 4 and 7, 6, 6, 6 chunks, dealt longest first: rank 0 takes 10, 10, 7,
    # 6 (blocks of 10 and 7 batches), rank 1 10, 10, 6, 6 (10 and 6, then a filler batch).
    assert ", batch 2 x 2 ranks (4 streams per sequence, 17 batches each, 4.4% filler), " in line
    with h5py.File(out) as f:
        assert (int(f.attrs["ranks"]), int(f.attrs["streams"])) == (2, 4)
    layout = json.loads(out.with_suffix(".manifest.json").read_text())["layout"]
    assert {k: layout[k] for k in ("ranks", "streams", "batches", "filler_rows")} == {
        "ranks": 2,
        "streams": 4,
        "batches": 34,
        "filler_rows": 3,
    }
    assert tbptt("validate", out).code == 0


def test_the_config_file_takes_the_layout_keys(tmp_path, tbptt):
    config = tmp_path / "c.yaml"
    config.write_text(
        f"strategy: split\ninput: {{path: {npz(tmp_path, [500])}}}\n"
        "split: {length: 10, streams: auto, max_filler: 0.05, ranks: 1, packing: lanes}\n"
        f"output: {{path: {tmp_path / 'o.h5'}}}\n"
    )
    result = tbptt("run", config, "--json")
    summary = json.loads(result.stdout)
    assert summary["streams"] == summary["batch_size"] >= 4
    assert summary["filler_share"] <= 0.05 and summary["warnings"] == []


def test_batch_one_warns_with_the_cures_that_apply(tmp_path, tbptt):
    result = tbptt("split", npz(tmp_path, [500]), "--length", 10, "-o", tmp_path / "o.h5")
    assert (
        "tbptt: warning: --batch-size auto chose 1: every larger batch needs more than 10% "
        "filler rows (--max-filler); one sequence fills one row; --streams auto cuts it into "
        "parallel streams\n"
    ) in result.stderr
    ragged = tbptt("split", npz(tmp_path, [500, 90, 260]), "--length", 10, "-n")
    assert (
        "filler rows (--max-filler); pass --batch-size B, a larger --max-filler, --packing "
        "lanes or --streams auto (each sequence as parallel streams)\n"
    ) in ragged.stderr


@pytest.mark.parametrize(
    ("args", "cure"),
    [
        (["asis"], "split --length K (chunks of the long sequences, not padding of the short"),
        (["split", "--length", "50"], "a shorter --length cuts it"),
        (["split", "--length", "5", "--batch-size", "3"], "--packing lanes (rows take the next"),
        (
            ["split", "--length", "5", "--batch-size", "3", "--packing", "lanes"],
            "a smaller --batch",
        ),
    ],
)
def test_mostly_padding_warns_with_the_cure(tmp_path, tbptt, args, cure):
    source = npz(tmp_path, [60, 3, 2, 4, 2, 3])
    result = tbptt(*args[:1], source, *args[1:], "-o", tmp_path / "o.h5")
    warnings = [w for w in result.stderr.splitlines() if "of the steps written are padding" in w]
    assert len(warnings) == 1 and cure in warnings[0], result.stderr


def test_a_little_padding_gives_no_warning(tmp_path, tbptt):
    result = tbptt("split", npz(tmp_path, [60, 58]), "--length", 10, "-o", tmp_path / "o.h5")
    assert "warning" not in result.stderr


def test_max_filler_with_a_given_batch_size_is_said_to_be_unused(tmp_path, tbptt):
    source = npz(tmp_path, [60, 30])
    result = tbptt("split", source, "--length", 10, "--batch-size", 2, "--max-filler", 0.2, "-n")
    assert (
        "tbptt: warning: --max-filler 0.2 was not used: it bounds the filler of --batch-size "
        "auto (and --streams auto), and the batch size is 2\n"
    ) in result.stderr
    quiet = tbptt("split", source, "--length", 10, "--batch-size", 2, "--streams", "auto", "-n")
    assert "warning" not in quiet.stderr


def test_a_validation_part_with_fewer_sequences_than_ranks_is_named(tmp_path, tbptt):
    source, out = npz(tmp_path, [30] * 10), tmp_path / "o.h5"
    args = ("split", source, "--length", 5, "--ranks", 2, "--val-fraction", 0.1, "-o", out)
    result = tbptt(*args)
    assert (result.code, result.stderr) == (
        2,
        "tbptt: error: the validation part (1 sequence(s), 30 steps held out by --val-fraction "
        "0.1 --val-by sequence): --ranks 2 needs at least 2 sequences (or parts of sequences), "
        "one for each rank, not 1; pass --streams 2 or fewer ranks\n",
    )
    assert not list(tmp_path.glob("o*"))
    for cure in (("--streams", 2), ("--val-by", "time"), ("--val-fraction", 0.2)):
        summary = json.loads(tbptt(*args, *cure, "--json").stdout)
        assert summary["ranks"] == 2, summary
        with h5py.File(tmp_path / "o.val.h5") as f:
            assert int(f.attrs["ranks"]) == 2
        assert tbptt("validate", tmp_path / "o.val.h5", "--against", source).code == 0
