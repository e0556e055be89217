"""The exception hierarchy of the core; `cli.py` maps each class to its exit code."""

from __future__ import annotations


class TbpttError(Exception):
    """Base class: a message for people and the process exit code that goes with it."""

    exit_code = 70
    # Set when the command already printed its --json object, which carries this error.
    json_sent = False


class UsageError(TbpttError):
    """Options that contradict each other or are out of range."""

    exit_code = 2


class InputDataError(TbpttError):
    """The input exists but its content is wrong (parse error, NaN, bad shape).

    ``check``: which of the readers' checks over whole sequences found it (below), 0 for
    any other. A read of the whole input makes each of them over every sequence before
    the next; where groups of sequences are checked apart (Dask workers), the error that
    read meets first is that of the earliest check, then of the first group.
    """

    exit_code = 65

    def __init__(self, message: str, check: int = 0) -> None:
        super().__init__(message)
        self.check = check


# The readers' checks over whole sequences, in the order a read makes them: two rows at
# one time, a step off the --freq grid, a gap, and a sequence that starts without a value
# (--nan ffill) in a feature, then in a target column.
DUPLICATE_TIME, OFF_GRID, GAP, LEADING_FEATURE, LEADING_TARGET = range(1, 6)


class InputMissingError(TbpttError):
    """The input does not exist or cannot be read."""

    exit_code = 66


class InternalError(TbpttError):
    """A bug: something the tool promised itself did not hold."""

    exit_code = 70


class OutputError(TbpttError):
    """The output cannot be created (bad directory, permissions, --no-clobber)."""

    exit_code = 73


class WriteError(TbpttError):
    """An I/O error while writing, a full disk included."""

    exit_code = 74


class LockedError(TbpttError):
    """Another run holds the output's lock."""

    exit_code = 75


class ConfigError(TbpttError):
    """The YAML config file is malformed or names unknown keys."""

    exit_code = 78


class Interrupted(TbpttError):
    """SIGINT or SIGTERM arrived; cleanup has run."""

    def __init__(self, signum: int, committed: bool = False) -> None:
        import signal

        name = signal.Signals(signum).name
        done = "the outputs were already committed" if committed else "partial output removed"
        super().__init__(f"interrupted by {name}; {done}")
        self.signum = signum
        self.exit_code = 128 + signum


EXIT_CODES: dict[int, str] = {
    0: "success",
    2: "usage error (bad option or option combination)",
    65: "bad input data (parse error, NaN, wrong shape)",
    66: "input missing or unreadable",
    70: "internal error (re-run with --debug and report it)",
    73: "output cannot be created (or exists, with --no-clobber)",
    74: "I/O error while writing (disk full included)",
    75: "another run holds the output's lock",
    78: "bad config file",
    130: "interrupted (SIGINT)",
    143: "terminated (SIGTERM)",
}
