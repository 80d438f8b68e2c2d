"""Helpers for the fault tests: fake `claude` executables, runs of the real CLI, PID checks.

Every fake `claude` here records its PID in a folder before it runs the simulator, so a test
can prove afterwards, by PID, that no instance outlived the run.
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import queue
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from budget_core import TokenUsage, UsageTracker
from orchestrator.simulator import expected_usage

ROOT = Path(__file__).resolve().parents[2]
SIMULATOR = ROOT / "orchestrator" / "simulator.py"
PYTHON = sys.executable
ORCHESTRATOR = (PYTHON, "-c", "from orchestrator.cli import entry_point; entry_point()")
# The simulator's defaults, spelled out: calls, input, output, cache_creation, cache_read.
CALLS, INPUT, OUTPUT, CACHE_CREATION, CACHE_READ = 2, 1200, 400, 200, 3000
HUGE = 1 << 40  # an overall budget no test reaches: only there so its `used` can be checked


def sim_usage(calls: int = CALLS) -> TokenUsage:
    """What the simulator prints for ``calls`` complete API calls with default numbers."""
    totals = expected_usage(calls, INPUT, OUTPUT, CACHE_CREATION, CACHE_READ)
    return TokenUsage(**totals)


def clean_env(**extra: str) -> dict[str, str]:
    """The test's environment without settings that would change what the run does."""
    drop = ("NO_COLOR", "ORCHESTRATOR_CLAUDE_BIN", "ORCHESTRATOR_PRICES", "ORCHESTRATOR_LEDGER")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIM_") and k not in drop}
    return {**env, "NO_COLOR": "1", **extra}


# -- fake claude executables -----------------------------------------------------------------


@dataclass(frozen=True)
class FakeClaude:
    path: Path
    piddir: Path

    def pids(self) -> list[int]:
        """Every PID a fake instance (or a grandchild it started) recorded so far."""
        return sorted(int(p.name.split(".")[0]) for p in self.piddir.glob("*.pid"))

    def wait_for_pids(self, count: int, timeout: float = 10.0) -> list[int]:
        wait_until(lambda: len(self.pids()) >= count, timeout, f"{count} instance(s) to start")
        return self.pids()


def _executable(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")
    path.chmod(0o755)


def fake_claude(folder: Path, name: str = "claude", prelude: Sequence[str] = ()) -> FakeClaude:
    """A shell script that records its PID and execs the simulator (exec keeps the PID).

    ``prelude``: shell lines run before the exec, e.g. ``trap '' TERM`` (an instance that
    ignores SIGTERM) or a grandchild started in the background. ``$PIDDIR`` is set for them.
    """
    piddir = folder / f"{name}-pids"
    piddir.mkdir(parents=True, exist_ok=True)
    lines = [
        "#!/bin/sh",
        # The orchestrator's version check is not an instance: no PID, no prelude.
        f'[ "$*" = --version ] && exec "{PYTHON}" "{SIMULATOR}" --version',
        f"PIDDIR='{piddir}'",
        'echo $$ > "$PIDDIR/$$.pid"',
        *prelude,
        f'exec "{PYTHON}" "{SIMULATOR}" "$@"',
    ]
    path = folder / name
    _executable(path, "\n".join(lines) + "\n")
    return FakeClaude(path, piddir)


_FILTER = '''\
#!{python}
"""A fake claude: the simulator, with its stdout edited on the way (see faultlib)."""
import os, subprocess, sys
from pathlib import Path

if sys.argv[1:] == ["--version"]:  # the orchestrator's version check: not an instance
    os.execv({python!r}, [{python!r}, {simulator!r}, "--version"])
Path({piddir!r}, f"{{os.getpid()}}.pid").write_text(str(os.getpid()))
INJECT = [line.encode() for line in {inject!r}]
sim = subprocess.Popen([{python!r}, {simulator!r}, *sys.argv[1:]], stdout=subprocess.PIPE)
out = sys.stdout.buffer
for line in sim.stdout:
    if {drop_result!r} and line.startswith(b'{{"type":"result"'):
        continue
    out.write(line)
    if b'"type":"message_start"' in line:
        out.writelines(extra + b"\\n" for extra in INJECT)
out.write({tail!r})
out.flush()
sys.exit(sim.wait())
'''


def filtered_claude(
    folder: Path,
    *,
    inject_after_start: Sequence[str] = (),
    drop_result: bool = False,
    tail: bytes = b"",
    name: str = "claude",
) -> FakeClaude:
    """The simulator behind a filter: extra lines after every ``message_start``, the result
    line removed (so only live counts remain), and ``tail`` written last (no newline added).
    """
    piddir = folder / f"{name}-pids"
    piddir.mkdir(parents=True, exist_ok=True)
    path = folder / name
    text = _FILTER.format(
        python=PYTHON,
        simulator=str(SIMULATOR),
        piddir=str(piddir),
        inject=list(inject_after_start),
        drop_result=drop_result,
        tail=tail,
    )
    _executable(path, text)
    return FakeClaude(path, piddir)


# -- the simulator on its own, for expected values --------------------------------------------


def simulate(*sim_args: str) -> bytes:
    """The simulator's stdout for ``sim_args``, as an instance would print it."""
    argv = [PYTHON, str(SIMULATOR), "-p", "x", "--output-format", "stream-json", "--verbose"]
    done = subprocess.run(
        [*argv, "--include-partial-messages", *sim_args],
        env=clean_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=30,
        check=False,
    )
    return done.stdout


def track(stdout: bytes) -> UsageTracker:
    """A fresh tracker fed every line of ``stdout``, a last unterminated line included."""
    tracker = UsageTracker()
    for line in stdout.split(b"\n"):
        tracker.feed_line(line)
    return tracker


# -- running the orchestrator ----------------------------------------------------------------


@dataclass
class RunResult:
    code: int
    stdout: str
    stderr: str
    summary: dict[str, Any] | None

    def instance(self, name: str) -> dict[str, Any]:
        assert self.summary is not None, f"no summary written\n{self}"
        return next(i for i in self.summary["instances"] if i["name"] == name)

    def __str__(self) -> str:
        return f"exit {self.code}\n--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}"


def summary_path(folder: Path) -> Path:
    return folder / "summary.json"


def read_summary(folder: Path) -> dict[str, Any] | None:
    path = summary_path(folder)
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def run_orchestrator(
    args: Sequence[str],
    folder: Path,
    timeout: float = 30,
    summary: bool = True,
    env: dict[str, str] | None = None,
) -> RunResult:
    """Run the ``orchestrator`` command to its end in ``folder``; headless, no colour."""
    extra = ["--summary-json", str(summary_path(folder))] if summary else []
    done = subprocess.run(
        [*ORCHESTRATOR, *args, "--status-report-interval", "0", *extra],
        cwd=folder,
        env=clean_env(**(env or {})),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return RunResult(done.returncode, done.stdout, done.stderr, read_summary(folder))


class Watched:
    """A started orchestrator whose stdout is read as it comes (so a test can wait on it)."""

    def __init__(self, args: Sequence[str], folder: Path, summary: bool = True) -> None:
        extra = ["--summary-json", str(summary_path(folder))] if summary else []
        self.folder = folder
        self.proc = subprocess.Popen(
            [*ORCHESTRATOR, *args, "--status-report-interval", "0", *extra],
            cwd=folder,
            env=clean_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # a signal for it never reaches pytest
        )
        self._lines: queue.Queue[str] = queue.Queue()
        self._seen: list[str] = []
        assert self.proc.stdout is not None
        threading.Thread(target=self._pump, args=(self.proc.stdout,), daemon=True).start()

    def _pump(self, stream: TextIO) -> None:
        for line in stream:
            self._lines.put(line)
        self._lines.put("")  # end of output

    def wait_for(self, *patterns: str, timeout: float = 10.0) -> None:
        """Until every regex in ``patterns`` matched a stdout line (seen before or now)."""
        deadline = time.monotonic() + timeout
        missing = [p for p in patterns if not any(re.search(p, line) for line in self._seen)]
        while missing and (left := deadline - time.monotonic()) > 0:
            try:
                line = self._lines.get(timeout=left)
            except queue.Empty:
                break
            if line == "":
                break
            self._seen.append(line)
            missing = [p for p in missing if not re.search(p, line)]
        if missing:
            seen = "".join(self._seen)
            raise AssertionError(f"no line matched {missing} within {timeout}s; saw:\n{seen}")

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def finish(self, timeout: float = 20.0) -> RunResult:
        code = self.proc.wait(timeout=timeout)
        assert self.proc.stderr is not None
        stderr = self.proc.stderr.read()
        rest: list[str] = []
        while (line := self._lines.get(timeout=timeout)) != "":
            rest.append(line)
        stdout = "".join([*self._seen, *rest])
        return RunResult(code, stdout, stderr, read_summary(self.folder))

    def kill(self) -> None:
        """Clean-up after a failed test: the orchestrator's own process only."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


class InTerminal:
    """The orchestrator on a pseudo-terminal of its own, as if started in a terminal window.

    ``main`` is the Python code the child runs (``ORCHESTRATOR`` does the plain command); the
    screen it draws is read as it comes (kept in ``output``), or the child would block on a
    full terminal.
    """

    def __init__(self, args: Sequence[str], folder: Path, main: str = ORCHESTRATOR[2]) -> None:
        env = clean_env(TERM="xterm-256color")
        del env["NO_COLOR"]
        argv = [PYTHON, "-c", main, *args]
        self.pid, self.master = pty.fork()
        if self.pid == 0:  # the child: exec at once, nothing else in a forked test process
            try:
                os.chdir(folder)
                os.execve(PYTHON, argv, env)
            finally:
                os._exit(127)
        fcntl.ioctl(self.master, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
        self.status: int | None = None
        self.output = bytearray()  # everything written to the terminal, escapes included

    def watch(self, seconds: float, until: Callable[[], bool] = lambda: False) -> None:
        """Keep reading the screen for ``seconds``, or until ``until()`` holds."""
        deadline = time.monotonic() + seconds
        while self.master >= 0 and time.monotonic() < deadline and not until():
            ready, _, _ = select.select([self.master], [], [], 0.05)
            if ready:
                try:
                    self.output += os.read(self.master, 65536)
                except OSError:  # the child closed its side: nothing more to read
                    return

    def hang_up(self) -> None:
        """Close the terminal, as when its window is closed or an ssh connection drops."""
        os.close(self.master)
        self.master = -1

    def exit_code(self, timeout: float) -> int:
        """The child's exit status; fails if it still runs after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while self.status is None and time.monotonic() < deadline:
            self.watch(0.05)
            done, status = os.waitpid(self.pid, os.WNOHANG)
            if done:
                self.status = status
        if self.status is None:
            raise AssertionError(f"the orchestrator (pid {self.pid}) still runs after {timeout}s")
        return os.waitstatus_to_exitcode(self.status)

    def close(self) -> None:
        """Clean-up, whatever the test did: the terminal closed, the child reaped."""
        if self.master >= 0:
            self.hang_up()
        if self.status is None:
            os.kill(self.pid, signal.SIGKILL)
            self.status = os.waitpid(self.pid, 0)[1]


def write_config(
    folder: Path, instances: Iterable[object], budget: dict[str, Any] | None = None
) -> Path:
    data: dict[str, Any] = {"instances": list(instances)}
    if budget is not None:
        data["budget"] = budget
    path = folder / "config.json"
    path.write_text(json.dumps(data, indent=2), encoding="utf-8")
    return path


# -- checks ----------------------------------------------------------------------------------


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def process_gone(pid: int) -> bool:
    """True once ``pid`` no longer runs. A zombie counts as gone: it runs nothing, and a
    grandchild re-parented to a PID 1 that does not reap stays one for ever."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def assert_all_gone(pids: Iterable[int], timeout: float = 5.0) -> None:
    pids = list(pids)
    assert pids, "no PID was recorded: the fake claude never ran"
    try:
        wait_until(lambda: all(process_gone(p) for p in pids), timeout, "instances to end")
    except AssertionError:
        alive = [p for p in pids if not process_gone(p)]
        for pid in alive:  # do not leave them behind for the next test
            os.kill(pid, signal.SIGKILL)
        raise AssertionError(f"processes still running after the run: {alive}") from None


def usage_of(tokens: dict[str, int]) -> TokenUsage:
    return TokenUsage(
        tokens["input"], tokens["output"], tokens["cache_creation"], tokens["cache_read"]
    )


def assert_counted_once(summary: dict[str, Any] | None) -> None:
    """Every token in the summary was charged exactly once: each token budget's ``used``
    equals the tokens of the instances charged to it, and the totals add up."""
    assert summary is not None, "no summary was written"
    instances = summary["instances"]
    total = sum((usage_of(i["tokens"]) for i in instances), TokenUsage())
    assert summary["totals"]["tokens"] == total.as_dict()
    for budget in summary["budgets"]:
        if budget["unit"] != "tokens":
            continue
        charged = [i for i in instances if budget["key"] in ("overall", i["budget_key"])]
        expected = sum(i["tokens"]["total"] for i in charged)
        assert budget["used"] == expected, f"budget {budget['key']} counted {budget['used']}"
