"""Every code block of README.md, run exactly as printed.

The blocks run in README order in one sandbox: a copy of the repository's sample_data/,
configs/ and examples/ with an empty out/, so a block may use the files an earlier one
wrote. What a fence's language means here:

- ``sh``: a bash script that must exit 0.
- ``console``: ``$ command`` lines (continued by a trailing backslash or a here-document)
  followed by what the command prints on stdout and stderr, compared line by line. A line
  ``...`` stands for any number of lines; a line ending in ``...`` for any line that
  starts with the text before it; lines starting with ``# `` are comments.
- ``python``: a program that must exit 0; a ``text`` block right after it (blank lines
  between at most) is what it prints, compared as for ``console``.
- ``yaml``: a config file that ``tbptt run`` must run.
- ``make``: a Makefile whose first target ``make`` must build.
- ``cron``: crontab lines: five valid schedule fields, then a command run by ``sh`` with
  ``$HOME/tbptt`` being the sandbox.
- ``text``: not code (diagrams, usage synopses, output shown on its own).

The two set-up commands are checked as well: the install-and-run one in a fresh virtual
environment, the test one against the last line of ``.ci/run``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
FENCE = re.compile(r"^```([\w-]*)\n(.*?)^```[ \t]*$", re.S | re.M)
LANGUAGES = {"sh", "console", "python", "yaml", "make", "cron", "text"}
INSTALL = "pip install . && tbptt run configs/split.yaml"
TEST_COMMAND = "pip install -e '.[test]' && pytest"
SCHEDULE = re.compile(r"^(\S+\s+){5}")
TIMEOUT = 600


@dataclass
class Block:
    line: int
    language: str
    text: str
    expected: str | None = None  # for python: the text block printed right after it

    @property
    def name(self) -> str:
        return f"README.md:{self.line}:{self.language}"


def read_blocks() -> list[Block]:
    text = README.read_text(encoding="utf-8")
    blocks: list[Block] = []
    previous_end = -1
    for match in FENCE.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        block = Block(line, match.group(1), match.group(2))
        adjacent = previous_end >= 0 and not text[previous_end : match.start()].strip()
        if block.language == "text" and adjacent and blocks[-1].language == "python":
            blocks[-1].expected = block.text
        else:
            blocks.append(block)
        previous_end = match.end()
    return blocks


BLOCKS = read_blocks()
RUN = [b for b in BLOCKS if b.language != "text" and b.text.strip() not in (INSTALL, TEST_COMMAND)]


def test_every_block_says_what_it_is():
    unknown = [b.name for b in BLOCKS if b.language not in LANGUAGES]
    assert not unknown, f"label these fences with one of {sorted(LANGUAGES)}: {unknown}"


def test_the_readme_names_both_set_up_commands():
    texts = [b.text.strip() for b in BLOCKS if b.language == "sh"]
    assert INSTALL in texts and TEST_COMMAND in texts


def test_ci_runs_exactly_the_readme_test_command():
    lines = [line for line in (ROOT / ".ci/run").read_text().splitlines() if line.strip()]
    assert lines[-1] == TEST_COMMAND


@pytest.mark.slow
def test_install_and_main_job_in_a_fresh_venv(tmp_path):
    """The first set-up command, as printed, in a new virtualenv and a clean copy."""
    tree = copy_tree(tmp_path / "repo")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    env = {**os.environ, "PATH": f"{venv / 'bin'}:{os.environ['PATH']}", "VIRTUAL_ENV": str(venv)}
    env.pop("PYTHONPATH", None)
    result = subprocess.run(
        ["bash", "-c", INSTALL], cwd=tree, env=env, capture_output=True, text=True, timeout=TIMEOUT
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stderr.splitlines()[-1].startswith("wrote ")


def copy_tree(destination: Path) -> Path:
    """The repository as a clean clone has it: no virtualenvs, outputs or caches."""
    skip = shutil.ignore_patterns(
        ".git",
        ".venv",
        "venv*",
        "out",
        "build",
        "*.egg-info",
        "__pycache__",
        ".*_cache",
        ".hypothesis",
    )
    shutil.copytree(ROOT, destination, ignore=skip)
    (destination / "out").mkdir()
    return destination


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str | None]:
    """Every block run in README order in one sandbox; the failure message of each."""
    home = tmp_path_factory.mktemp("home")
    sandbox = home / "tbptt"
    sandbox.mkdir()
    for folder in ("sample_data", "configs", "examples"):
        shutil.copytree(ROOT / folder, sandbox / folder)
    (sandbox / "out").mkdir()
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "HOME": str(home),
        # Keras blocks run on the torch backend, which the test extra installs.
        "KERAS_BACKEND": os.environ.get("KERAS_BACKEND", "torch"),
        # torch's two threads per process fight each other on two loaded cores: a
        # Keras-on-torch step took 1 s with them and 62 ms with one.
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
    }
    for name in [k for k in env if k.startswith("TBPTT_")]:
        del env[name]
    return {block.name: run_block(block, sandbox, env) for block in RUN}


@pytest.mark.parametrize("name", [b.name for b in RUN])
def test_readme_block(results, name):
    failure = results[name]
    assert failure is None, failure


def run_block(block: Block, sandbox: Path, env: dict[str, str]) -> str | None:
    runner = {
        "sh": run_sh,
        "console": run_console,
        "python": run_python,
        "yaml": run_yaml,
        "make": run_make,
        "cron": run_cron,
    }[block.language]
    try:
        return runner(block, sandbox, env)
    except (ValueError, subprocess.TimeoutExpired) as e:
        return f"{type(e).__name__}: {e}"


def shell(script: str, cwd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", *args, "-c", script],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )


def failed(result: subprocess.CompletedProcess, what: str) -> str | None:
    if result.returncode == 0:
        return None
    return f"{what} exited {result.returncode}:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"


def run_sh(block: Block, sandbox: Path, env: dict[str, str]) -> str | None:
    return failed(shell(block.text, sandbox, env, "-eo", "pipefail"), "the script")


def run_python(block: Block, sandbox: Path, env: dict[str, str]) -> str | None:
    result = subprocess.run(
        [sys.executable, "-c", block.text],
        cwd=sandbox,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    problem = failed(result, "the program")
    if problem is None and block.expected is not None:
        problem = mismatch(block.expected, result.stdout)
    return problem


def run_yaml(block: Block, sandbox: Path, env: dict[str, str]) -> str | None:
    config = sandbox / f"readme-{block.line}.yaml"
    config.write_text(block.text)
    return failed(shell(f"tbptt run {config.name}", sandbox, env), "tbptt run")


def run_make(block: Block, sandbox: Path, env: dict[str, str]) -> str | None:
    makefile = sandbox / f"readme-{block.line}.mk"
    makefile.write_text(block.text)
    return failed(shell(f"make -f {makefile.name}", sandbox, env), "make")


def run_cron(block: Block, sandbox: Path, env: dict[str, str]) -> str | None:
    for line in block.text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = SCHEDULE.match(line)
        if match is None or not all(valid_field(f) for f in match.group(0).split()):
            return f"not a crontab line (five schedule fields, then a command): {line}"
        problem = failed(shell(line[match.end() :], sandbox, env), "the cron command")
        if problem:
            return problem
    return None


def valid_field(field: str) -> bool:
    return re.fullmatch(r"(\*|\d+(-\d+)?)(/\d+)?(,(\*|\d+(-\d+)?)(/\d+)?)*", field) is not None


def console_commands(text: str) -> list[tuple[str, str]]:
    """(command, expected output) pairs of a console block."""
    pairs: list[tuple[str, list[str]]] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("# "):  # a comment for the reader
            i += 1
            continue
        if not line.startswith("$ "):
            if not pairs:
                raise ValueError(f"output before the first command: {line!r}")
            pairs[-1][1].append(line)
            i += 1
            continue
        command = [line[2:]]
        heredoc = re.search(r"<<-?\s*'?(\w+)'?", line)
        while command[-1].endswith("\\") and i + 1 < len(lines):
            i += 1
            command.append(lines[i])
        if heredoc:
            end = heredoc.group(1)
            while i + 1 < len(lines) and lines[i] != end:
                i += 1
                command.append(lines[i])
        pairs.append(("\n".join(command), []))
        i += 1
    return [(command, "\n".join(output)) for command, output in pairs]


def run_console(block: Block, sandbox: Path, env: dict[str, str]) -> str | None:
    pairs = console_commands(block.text)
    marker = "@@readme-command@@"
    script = ["__status=0"]
    for command, _ in pairs:
        # The marker must not change $?, which `echo $?` in the block reads.
        script += [f"echo {marker}", "(exit $__status)", command, "__status=$?"]
    result = shell("exec 2>&1\n" + "\n".join(script), sandbox, env)
    outputs = result.stdout.split(marker + "\n")[1:]
    if len(outputs) != len(pairs):
        return f"the block did not run to its end:\n{result.stdout[-3000:]}"
    for (command, expected), actual in zip(pairs, outputs, strict=True):
        problem = mismatch(expected, actual)
        if problem:
            return f"$ {command}\n{problem}"
    return None


def mismatch(expected: str, actual: str) -> str | None:
    """None if ``actual`` matches ``expected`` (with its ``...`` wildcards)."""
    want = [line.rstrip() for line in expected.rstrip().splitlines()]
    got = [line.rstrip() for line in actual.rstrip().splitlines()]
    if matches(want, got):
        return None
    return "expected:\n" + "\n".join(want) + "\ngot:\n" + "\n".join(got)


def matches(want: list[str], got: list[str]) -> bool:
    if not want:
        return not got
    head, rest = want[0], want[1:]
    if head.strip() == "...":
        return any(matches(rest, got[i:]) for i in range(len(got) + 1))
    if not got:
        return False
    if head.endswith("...") and head.strip() != "...":
        same = got[0].startswith(head[:-3])
    else:
        same = got[0] == head
    return same and matches(rest, got[1:])
