"""atomic.Transaction: files and directories staged, committed together or not at all."""

from __future__ import annotations

from pathlib import Path

import pytest

from tbptt_cli import atomic


def listing(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_a_directory_and_a_file_commit_together(tmp_path: Path) -> None:
    shards, index = tmp_path / "out.h5.d", tmp_path / "out.h5"
    shards.mkdir()
    (shards / "old.h5").write_text("old shard")
    index.write_text("old index")
    with atomic.transaction() as txn:
        staging = txn.stage_dir(shards)
        assert staging.parent == tmp_path and staging.name.startswith(".out.h5.d.tmp.")
        placed = txn.place(shards / "part-0.h5")
        assert placed == staging / "part-0.h5"  # no temp name inside a staged directory
        placed.write_text("new shard")
        nested = txn.place_dir(shards / "sub")
        assert nested == staging / "sub" and nested.is_dir()
        temp = txn.place(index)
        assert temp.parent == tmp_path and temp.name.startswith(".out.h5.tmp.")
        temp.write_text("new index")
        assert index.read_text() == "old index" and listing(shards) == ["old.h5"]
        txn.commit()
    assert index.read_text() == "new index"
    assert listing(shards) == ["part-0.h5", "sub"]
    assert listing(tmp_path) == ["out.h5", "out.h5.d"]  # no aside, no staging left


def test_an_error_before_the_commit_leaves_everything_as_it_was(tmp_path: Path) -> None:
    shards = tmp_path / "grid"
    shards.mkdir()
    (shards / "grid.json").write_text("{}")
    with pytest.raises(RuntimeError), atomic.transaction() as txn:
        txn.place_dir(shards).joinpath("len_5.h5").write_text("new")
        txn.place(tmp_path / "other.h5").write_text("new")
        raise RuntimeError("full disk")
    assert listing(tmp_path) == ["grid"] and listing(shards) == ["grid.json"]


def test_obsolete_directories_go_only_once_committed(tmp_path: Path) -> None:
    old = tmp_path / "old"
    old.mkdir()
    with pytest.raises(RuntimeError), atomic.transaction() as txn:
        txn.obsolete.append(old)
        raise RuntimeError("failed")
    assert old.is_dir()
    with atomic.transaction() as txn:
        txn.obsolete.append(old)
        txn.place(tmp_path / "new.h5").write_text("new")
        txn.commit()
    assert listing(tmp_path) == ["new.h5"]


def test_the_lock_holder_puts_back_a_directory_left_aside(tmp_path: Path) -> None:
    final = tmp_path / "out"
    aside = tmp_path / ".out.old"
    aside.mkdir()
    (aside / "data").write_text("committed before")
    (tmp_path / ".out.tmp.dead").mkdir()
    with atomic.output_lock(final):
        assert listing(final) == ["data"]
    assert listing(tmp_path) == [".out.lock", "out"]
    # Killed after the second rename: the aside is the stale one.
    aside.mkdir()
    with atomic.output_lock(final):
        assert not aside.exists() and listing(final) == ["data"]
