"""--engine dask on a real cluster: one LocalCluster of 2 worker processes for the module.

On one folder of Parquet, gzip CSV, CSV, Arrow and TSV parts, with the rows of every
sensor spread over the parts, the merged output of a Dask run is the local run's byte for
byte; a worker killed mid-task is replaced and the output is still whole and identical; a
shard deleted afterwards makes validate fail; a driver killed mid-write leaves the old
output as it was.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
from shard_inputs import MIXED, both_engines, mixed, rows_with, same_output, warnings

distributed = pytest.importorskip("distributed")

from tbptt_cli import cluster, parts, shards  # noqa: E402
from tbptt_cli.batches import BatchFile  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RUNS = {
    "split": "split --length 7 --batch-size 2 --target next --scale standard",
    "stepwise": "stepwise --batch-size 5 --target humidity",
    "acf": "domain acf --rule acf --max-lag 12 --batch-size 2",
    "decoupled": "decoupled --k1 8 --k2 3 --stride 2 --batch-size 4 --val-fraction 0.4",
}


@pytest.fixture(scope="module")
def scheduler() -> Iterator[str]:
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
    ) as local:
        yield local.scheduler_address


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(shards, "SHARD_BYTES", 1024)  # several shards per output
    monkeypatch.chdir(tmp_path)  # the tests change folders: back to the old one at the end
    return mixed(tmp_path)


@pytest.mark.parametrize("name", RUNS)
def test_merged_output_equals_the_local_run(tbptt, scheduler, root, name) -> None:
    local, remote = both_engines(tbptt, root, *RUNS[name].split(), *MIXED, scheduler=scheduler)
    assert local.code == remote.code == 0, remote.stderr
    same_output(root)
    assert len(list((root / "dask" / "out.h5.d").glob("*/part-*.h5"))) > 1
    assert tbptt("validate", root / "dask" / "out.h5").code == 0


@pytest.mark.parametrize("mode", ["zero", "drop"])
def test_nan_repairs_are_counted_as_a_local_run_counts_them(
    tbptt, scheduler, tmp_path, monkeypatch, mode
) -> None:
    """Each part's count (or each group's) comes back from a worker and is summed."""
    monkeypatch.chdir(tmp_path)  # the test changes folders: back to the old one at the end
    root = mixed(tmp_path, rows_with("nan"))
    run = ("split", *MIXED, "--length", 5, "--batch-size", 3, "--nan", mode)
    local, remote = both_engines(tbptt, root, *run, scheduler=scheduler)
    assert local.code == remote.code == 0, remote.stderr
    said = [w for w in warnings(local) if w.startswith(f"tbptt: warning: --nan {mode}:")]
    assert len(said) == 1 and "6 missing cell(s)" in said[0]
    assert warnings(remote) == warnings(local)
    same_output(root)  # the manifests' input.missing too


def test_the_error_a_local_run_meets_first(tbptt, scheduler, tmp_path, monkeypatch) -> None:
    """Each group's error comes back from its worker; the earliest check's is reported."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(parts, "GROUP_BYTES", 1)  # a group per sequence
    for side in ("local", "dask"):
        (tmp_path / side / "data").mkdir(parents=True)
        (tmp_path / side / "data" / "a.csv").write_text("id,t,v\nx,0,\nx,1,2\nz,0,1\n")
        (tmp_path / side / "data" / "b.csv").write_text("id,t,v\nz,0,2\n")
    run = ("asis", "data", "--id-col", "id", "--time-col", "t", "--nan", "ffill")
    local, remote = both_engines(tbptt, tmp_path, *run, scheduler=scheduler)
    assert local.code == remote.code == 65 and remote.stderr == local.stderr
    assert "two rows of sequence 'z' have t 0" in local.stderr


class KillOnce(distributed.WorkerPlugin):
    """Kills its worker's process (SIGKILL, no cleanup) the first time a task named
    ``prefix`` starts there; a marker file makes it once per cluster, not per worker.
    With ``pause``, it only slows those tasks down while the marker exists."""

    def __init__(self, prefix: str, marker: str, pause: float = 0.0) -> None:
        self.prefix, self.marker, self.pause = prefix, marker, pause

    def transition(self, key: Any, start: str, finish: str, **kwargs: Any) -> None:
        name = key[0] if isinstance(key, tuple) else str(key)
        if finish != "executing" or not name.startswith(self.prefix):
            return
        if self.pause:
            if os.path.exists(self.marker):
                time.sleep(self.pause)
            return
        try:
            os.close(os.open(self.marker, os.O_CREAT | os.O_EXCL))
        except FileExistsError:
            return
        os.kill(os.getpid(), signal.SIGKILL)


@pytest.fixture
def plugin(scheduler: str) -> Iterator[Any]:
    """Registers a worker plugin for one test."""
    with distributed.Client(scheduler) as client:
        names: list[str] = []

        def register(plugin: Any) -> None:
            names.append(f"tbptt-test-{len(names)}")
            client.register_plugin(plugin, name=names[-1])

        yield register
        for name in names:
            client.unregister_worker_plugin(name)


@pytest.mark.parametrize("task", ["scan_part", "write_shard"])
def test_a_worker_killed_mid_task_is_replaced(tbptt, scheduler, root, plugin, task) -> None:
    marker = root / "killed"
    plugin(KillOnce(task, str(marker)))
    command = ("split", "--length", 5, "--batch-size", 2, *MIXED)
    local, remote = both_engines(tbptt, root, *command, scheduler=scheduler)
    assert marker.exists()  # a worker did die running a task
    assert local.code == remote.code == 0, remote.stderr
    same_output(root)
    names = sorted(p.name for p in (root / "dask" / "out.h5.d").glob("*/*"))
    assert names == [f"part-{i:05d}.h5" for i in range(len(names))]  # no temp file left
    assert [p.name for p in (root / "dask").glob(".*tmp*")] == []  # nor the parts' rows
    (root / "dask").joinpath(shards_of(root / "dask")[1]).unlink()
    found = tbptt("validate", root / "dask" / "out.h5")
    assert found.code == 65 and "is missing; its rows would read as fill values" in found.stderr


def shards_of(folder: Path) -> list[str]:
    with h5py.File(folder / "out.h5") as f:
        return shards.sources(f)


@pytest.mark.slow
def test_a_killed_driver_leaves_the_old_output(tbptt, scheduler, root, monkeypatch, plugin):
    monkeypatch.chdir(root / "dask")
    common = ("split", *MIXED, "-o", "out.h5", "--engine", "dask")
    assert tbptt(*common, "--length", 6, "--scheduler", scheduler).code == 0
    before = {p: p.read_bytes() for p in Path().rglob("*") if p.is_file() and "lock" not in p.name}
    slow = root / "slow"
    slow.touch()
    plugin(KillOnce("write_shard", str(slow), pause=1.0))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "tbptt_cli", *map(str, common), "--length", "4"]
    driver = subprocess.Popen([*command, "--scheduler", scheduler], env=env)
    deadline = time.monotonic() + 60
    while not list(Path("out.h5.d").glob(".*.tmp.*")) and time.monotonic() < deadline:
        time.sleep(0.01)
    driver.kill()  # mid pass 2: its shards are being written
    assert driver.wait(timeout=10) == -signal.SIGKILL
    slow.unlink()
    for path, content in before.items():
        assert path.read_bytes() == content, path
    assert tbptt("validate", "out.h5").code == 0
    assert BatchFile("out.h5").window == 6
    assert tbptt(*common, "--length", 4, "--scheduler", scheduler).code == 0
    left = [p.name for p in Path().rglob(".*") if ".tmp." in p.name or p.name.endswith(".old")]
    assert left == [] and len(list(Path("out.h5.d").iterdir())) == 1
    assert BatchFile("out.h5").window == 4


@pytest.mark.slow
def test_a_driver_killed_with_its_local_cluster_says_nothing_more(root, monkeypatch) -> None:
    """multiprocessing's resource tracker removes the semaphores of the killed driver's
    worker queues; it used to print a "leaked semaphore objects" warning after the kill."""
    monkeypatch.chdir(root / "dask")
    run = ["split", *MIXED, "--length", "4", "-o", "out.h5", "--engine", "dask"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "tbptt_cli", *run, "--scheduler", "local:1"]
    driver = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not list(Path().glob(".out.h5.tmp.*")) and time.monotonic() < deadline:
        time.sleep(0.01)  # the cluster is up: the parts' rows have a folder
    driver.kill()
    _, stderr = driver.communicate(timeout=60)  # to the end: the tracker's output too
    assert driver.returncode == -signal.SIGKILL
    assert "leaked" not in stderr and "Warning" not in stderr, stderr


def test_worker_versions_must_match(tbptt, scheduler, root, monkeypatch) -> None:
    monkeypatch.chdir(root / "dask")
    monkeypatch.setattr(cluster, "__version__", "0.0.0-other")
    run = ("split", *MIXED, "--length", 5, "-o", "out.h5")
    result = tbptt(*run, "--engine", "dask", "--scheduler", scheduler)
    assert result.code == 2 and "runs tbptt 0.1.0, this is 0.0.0-other" in result.stderr
    assert sorted(p.name for p in Path().iterdir()) == [".out.h5.lock", "data"]


def test_an_unreachable_scheduler_is_74(tbptt, root, monkeypatch) -> None:
    monkeypatch.chdir(root / "dask")
    monkeypatch.setattr(cluster, "CONNECT_TIMEOUT", "1s")
    run = ("split", *MIXED, "--length", 5, "-o", "out.h5")
    result = tbptt(*run, "--engine", "dask", "--scheduler", "tcp://127.0.0.1:9")
    assert result.code == 74, result.stderr
    assert result.stderr.startswith("tbptt: error: tcp://127.0.0.1:9: cannot reach the Dask")


@pytest.mark.slow
def test_local_n_starts_a_cluster_for_the_run(tbptt, root) -> None:
    run = ("stepwise", *MIXED, "--batch-size", 3)
    local, remote = both_engines(tbptt, root, *run, scheduler="local:1")
    assert local.code == remote.code == 0, remote.stderr
    same_output(root)


@pytest.mark.slow
def test_a_script_without_a_main_guard(tmp_path: Path) -> None:
    """Worker processes start by importing the script that started them: tbptt's main
    does nothing there, so a script without ``if __name__ == "__main__":`` runs once."""
    script = tmp_path / "job.py"
    script.write_text("from tbptt_cli.cli import main\n\nmain()\n")
    np_file = tmp_path / "in.npy"
    np.save(np_file, np.arange(40.0).reshape(2, 20))
    run = [sys.executable, str(script), "split", str(np_file), "--length", "5", "-o"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [*run, str(tmp_path / "out.h5"), "--engine", "dask", "--scheduler", "local:1"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("wrote ") == 1 and "error" not in done.stderr
