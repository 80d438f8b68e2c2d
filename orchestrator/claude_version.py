"""The Claude Code CLI's version, asked once per run, and what the run does about it.

``<claude> --version`` prints e.g. ``2.1.197 (Claude Code)``. Two things depend on it:
``--include-partial-messages`` exists from 1.0.109 on (1.0.108 and older refuse it as
an unknown option), so an older CLI runs without it and counting falls back to the
assistant lines; ``--max-budget-usd`` from 2.0.30 on (cooperative limits, see
``orchestrator.cooperative``), so an older CLI is never given it. A version that cannot be
read (a wrapper script, a hang, garbage) never blocks a run: the run goes on as for a current
CLI, with a warning.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import selectors
import signal
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from orchestrator.descendants import child_env, kill_all, strays

PARTIAL_MESSAGES_SINCE = (1, 0, 109)
# --max-budget-usd (orchestrator.cooperative): 2.0.29 refuses it as an unknown option, 2.0.30
# takes it (checked with both against the fake Messages API; its notes said 2.0.28).
MAX_BUDGET_USD_SINCE = (2, 0, 30)
# `claude --version` of the 1.0.x and 2.0.x npm CLIs (Node, a 9 MB bundle) took up to 4 s on a
# loaded 2-core machine: too short a limit would take a real, old CLI for a current one.
TIMEOUT_S = 10.0
_MAX_OUTPUT = 4096  # a version line is short; never hold more of a runaway script's output
_VERSION = re.compile(r"\s*v?(\d+)\.(\d+)\.(\d+)\b")

Version = tuple[int, int, int]
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Interrupted(Exception):
    """SIGINT, SIGTERM or SIGHUP arrived while ``--version`` ran (it was stopped first)."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"interrupted by signal {signum}")
        self.signum = signum


@dataclass(frozen=True, slots=True)
class VersionCheck:
    """What ``--version`` said: the version, or why there is none (``problem``)."""

    version: Version | None
    problem: str | None = None

    @property
    def partial_messages(self) -> bool:
        """Whether to pass ``--include-partial-messages`` (yes, unless known to be too old)."""
        return self.version is None or self.version >= PARTIAL_MESSAGES_SINCE

    @property
    def max_budget_usd(self) -> bool:
        """Whether the CLI takes ``--max-budget-usd`` (yes, unless known to be too old)."""
        return self.version is None or self.version >= MAX_BUDGET_USD_SINCE

    def warning(self, executable: str) -> str | None:
        """One line for the user, or None when there is nothing to say."""
        if self.version is None:
            return (
                f"cannot tell the version of {executable} ({self.problem}); "
                "running it as a current Claude Code CLI"
            )
        if not self.partial_messages:
            return (
                f"{executable} is Claude Code {format_version(self.version)}, older than "
                f"{format_version(PARTIAL_MESSAGES_SINCE)}: running without "
                "--include-partial-messages, so live output counts move once per API call"
            )
        return None


def format_version(version: Version) -> str:
    return ".".join(map(str, version))


def parse_version(output: str) -> Version | None:
    """``2.1.197 (Claude Code)`` -> (2, 1, 197); None when the first line is not a version."""
    first_line = output.strip().split("\n", 1)[0] if output.strip() else ""
    match = _VERSION.match(first_line)
    if match is None:
        return None
    major, minor, patch = (int(part) for part in match.groups())
    return major, minor, patch


def check_version(claude_cmd: Sequence[str], timeout_s: float = TIMEOUT_S) -> VersionCheck:
    """Run ``<claude_cmd> --version`` (no shell, stdin /dev/null, its own process group).

    Whatever it does, it is over when this returns: the group is killed, so a script that
    hangs or leaves a child behind costs at most ``timeout_s`` and leaves nothing running,
    even when a stop signal arrives meanwhile (then ``Interrupted`` is raised).
    """
    with _stop_signals_raise():
        return _check_version(claude_cmd, timeout_s)


def _check_version(claude_cmd: Sequence[str], timeout_s: float) -> VersionCheck:
    # Marked like an instance: what it starts outside its group (setsid) is found and
    # killed too, once this (subreaper) process has inherited it.
    token = f"{os.getpid()}-{secrets.token_hex(4)}-version"
    try:
        proc = subprocess.Popen(
            [*claude_cmd, "--version"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            env=child_env(token),
        )
    except OSError as exc:
        return VersionCheck(None, f"--version could not start: {exc.strerror or exc}")
    try:
        output, problem = _read_output(proc, timeout_s)
    finally:
        _kill_group(proc)
        kill_all(strays([token]))
    if problem is None and proc.returncode != 0:
        problem = f"--version exited with status {proc.returncode}"
    if problem is not None:
        return VersionCheck(None, problem)
    text = output.decode("utf-8", errors="replace")
    version = parse_version(text)
    if version is None:
        first_line = text.strip().split("\n", 1)[0][:60] or "nothing"
        return VersionCheck(None, f"--version printed {first_line!r}, not a version")
    return VersionCheck(version)


def _read_output(proc: subprocess.Popen[bytes], timeout_s: float) -> tuple[bytes, str | None]:
    """Its stdout once it has exited (a child left holding the pipe does not matter), or
    the reason there is none in time. The process is left unreaped: a zombie keeps its pid,
    so its process group cannot be another's when it is killed next."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout_s
    output = bytearray()
    with proc.stdout, selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        eof = False
        while not _exited(proc):
            left = deadline - time.monotonic()
            if left <= 0:
                return bytes(output), f"--version did not finish within {timeout_s:g} s"
            if not eof and selector.select(min(left, 0.05)):
                chunk = os.read(proc.stdout.fileno(), _MAX_OUTPUT)
                eof = not chunk
                output += chunk
            elif eof:
                time.sleep(min(left, 0.01))
            if len(output) > _MAX_OUTPUT:
                return bytes(output), f"--version printed more than {_MAX_OUTPUT} bytes"
        # Exited: what it wrote is in the pipe; take it without waiting for a writer that
        # may still hold the pipe open.
        os.set_blocking(proc.stdout.fileno(), False)
        while len(output) <= _MAX_OUTPUT:
            try:
                chunk = os.read(proc.stdout.fileno(), _MAX_OUTPUT)
            except BlockingIOError:
                break
            if not chunk:
                break
            output += chunk
    if len(output) > _MAX_OUTPUT:
        return bytes(output), f"--version printed more than {_MAX_OUTPUT} bytes"
    return bytes(output), None


@contextlib.contextmanager
def _stop_signals_raise() -> Iterator[None]:
    """Turn stop signals into ``Interrupted`` for a while, so cleanup code runs (main
    thread only: elsewhere the caller's own handlers stay as they are)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, _frame: object) -> None:
        raise Interrupted(signum)

    previous = {sig: signal.signal(sig, interrupt) for sig in _STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _exited(proc: subprocess.Popen[bytes]) -> bool:
    return os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the process group (its pgid is its pid: start_new_session), then reap."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
