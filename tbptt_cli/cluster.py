"""``--engine dask``: the `sharded.Executor` on a Dask distributed cluster.

``--scheduler tcp://HOST:8786`` joins a running cluster; ``local:N`` starts a
LocalCluster of N worker processes on this machine for the run. Dask runs a task again
when its worker dies (up to the scheduler's ``allowed-failures``); every task here
writes its files under temp names and renames them, so a second run of it is harmless.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from tbptt_cli import __version__
from tbptt_cli.errors import UsageError, WriteError

T = TypeVar("T")
R = TypeVar("R")
EXTRA = "pip install 'tbptt-cli[dask]'"
CONNECT_TIMEOUT = "20s"
# The worker processes of a LocalCluster: glibc's own heap (Dask sets
# MALLOC_TRIM_THRESHOLD_, which also turns off glibc's adaptive mmap threshold: every
# buffer of a parsed batch then came as fresh pages, a quarter more CPU reading CSV) and
# no statistical profiler sampling every thread's stack 100 times a second.
LOCAL_CONFIG = {
    "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None,
    "distributed.worker.profile.enabled": False,
}
# A driver killed outright (SIGKILL, the OOM killer) cannot close its LocalCluster: then
# multiprocessing's resource tracker (a process of its own, started with the driver's -W
# options) removes the semaphores of the workers' queues itself, and printed a
# "leaked semaphore objects" UserWarning after the kill for nothing left behind.
QUIET_TRACKER = "ignore:resource_tracker:UserWarning"


def require() -> None:
    """Exit 2 naming the extra when Dask distributed is not installed."""
    try:
        import distributed  # noqa: F401
    except ImportError:
        raise UsageError(f"--engine dask needs Dask distributed; install it: {EXTRA}") from None


def default_scheduler() -> str:
    return f"local:{os.cpu_count() or 1}"


def parse_local(address: str) -> int | None:
    """N of ``local:N``; None for a scheduler address; a usage error for anything else."""
    if address.startswith("local:"):
        count = address.removeprefix("local:")
        if count.isdigit() and int(count) >= 1:
            return int(count)
    elif "://" in address and address.split("://", 1)[1]:
        return None
    raise UsageError(
        f"--scheduler must be tcp://HOST:PORT (a running Dask scheduler) or local:N "
        f"(N worker processes here), not {address!r}"
    )


class DaskExecutor:
    """Maps tasks over a Dask cluster's workers (see `sharded.Executor`)."""

    def __init__(self, address: str | None) -> None:
        import dask
        import distributed

        self.address = address or default_scheduler()
        workers = parse_local(self.address)
        self.description = {"name": "dask", "scheduler": self.address}
        self.cluster: Any = None
        if workers is not None:
            if QUIET_TRACKER not in sys.warnoptions:  # before the tracker starts
                sys.warnoptions.append(QUIET_TRACKER)
            with dask.config.set(LOCAL_CONFIG):
                self.cluster = distributed.LocalCluster(
                    n_workers=workers,
                    threads_per_worker=1,
                    processes=True,
                    dashboard_address=":0",  # any free port: never a clash with a running one
                    silence_logs=logging.CRITICAL,  # task errors are reported here, once
                )
            self.client = distributed.Client(self.cluster)
        else:
            try:
                self.client = distributed.Client(self.address, timeout=CONNECT_TIMEOUT)
            except (OSError, TimeoutError) as e:
                raise WriteError(
                    f"{self.address}: cannot reach the Dask scheduler ({e}); start it "
                    "(`dask scheduler`) or fix --scheduler"
                ) from None
        try:
            self._check_workers()
        except BaseException:
            self.close()
            raise

    def _check_workers(self) -> None:
        """Every worker must run this version of tbptt: shards must be the same bytes."""
        try:
            found = self.client.run(_tool_version)
        except ImportError:
            raise UsageError(
                f"{self.address}: the Dask workers cannot import tbptt_cli; install "
                f"tbptt-cli {__version__} on every worker"
            ) from None
        other = {w: v for w, v in found.items() if v != __version__}
        if other:
            worker, version = sorted(other.items())[0]
            raise UsageError(
                f"{self.address}: worker {worker} runs tbptt {version}, this is {__version__}; "
                "install the same version everywhere"
            )

    def map(
        self,
        function: Callable[[T], R],
        tasks: Sequence[T],
        done: Callable[[int], None] | None = None,
    ) -> list[R]:
        """Results in task order. On an error, the tasks after the failed one are
        cancelled and those before it awaited, so the error raised is always that of the
        first failing task (the same message whichever worker was faster)."""
        from distributed import as_completed

        futures = self.client.map(function, list(tasks), pure=False)
        position = {f.key: i for i, f in enumerate(futures)}
        failed: int | None = None
        try:
            for future in as_completed(futures):
                if future.status == "finished" and done is not None:
                    done(position[future.key])
                if future.status == "error":
                    index = position[future.key]
                    failed = index if failed is None else min(failed, index)
                    for later in futures[failed + 1 :]:
                        later.cancel()
                if failed is not None and all(f.done() for f in futures[:failed]):
                    break
            if failed is not None:
                for earlier in futures[:failed]:
                    if earlier.status == "error":
                        _raise(earlier)
                _raise(futures[failed])
            return [f.result() for f in futures]
        finally:
            self.client.cancel(futures)

    def close(self) -> None:
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()


def _raise(future: Any) -> None:
    from distributed import KilledWorker

    try:
        future.result()
    except KilledWorker as e:
        raise WriteError(
            f"Dask workers died running {e.task!r} again and again (out of memory?); "
            "give them more memory or use more, smaller parts"
        ) from None


def _tool_version() -> str:
    import tbptt_cli

    return tbptt_cli.__version__
