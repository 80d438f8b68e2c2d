"""Integration test harness: the installed ``orchestrator`` command run as a real
subprocess against a fake ``claude`` (the simulator) that records what it did.

The fake ``claude`` is a tiny script written into the test's tmp dir. It runs the simulator
in its own process and leaves, per process, ``<pid>.json`` (its pid and argv) and, unless
turned off, ``<pid>.out`` (a byte-exact copy of everything it wrote to stdout). Tests use
the pids to prove no process outlived the run, and the copies to prove the orchestrator
counted exactly what was printed. With ``linger_lines`` it answers SIGTERM by printing that
many more lines before it exits, as a CLI finishing its current write would: tokens printed
after a stop was asked for must still be counted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from budget_core import UsageTracker
from orchestrator.simulator import cost_usd, expected_usage

ORCHESTRATOR = Path(sys.executable).parent / "orchestrator"
# Variables of the developer's shell that would change what the tests see.
SCRUBBED_ENV_PREFIXES = ("SIM_", "NO_COLOR", "ORCHESTRATOR_")
RUN_TIMEOUT_S = 60.0

# Simulator defaults (orchestrator.simulator.Config), for tests that rely on them.
SIM_DEFAULTS = {"calls": 2, "input": 1200, "output": 400, "cache_creation": 200, "cache_read": 3000}

_WRAPPER = '''\
#!{python}
"""Fake claude: the simulator, recording its pid, argv and (optionally) its stdout."""
import json
import os
import signal
import sys
import time

from orchestrator import simulator

RECORD = {record!r}
COPY_STDOUT = {copy_stdout!r}
LINGER_LINES = {linger_lines!r}
if sys.argv[1:] == ["--version"]:  # the orchestrator's version check: not an instance
    sys.exit(simulator.main(["--version"]))
pid = os.getpid()
lines_left = None  # lines still to print after SIGTERM (with LINGER_LINES)


def on_sigterm(signum, frame):
    global lines_left
    if lines_left is None:
        lines_left = LINGER_LINES


class TeeOut:
    """Unbuffered stdout that copies every byte first; a stop signal waits for both."""

    def __init__(self):
        self.copy = os.open(os.path.join(RECORD, f"{{pid}}.out"), os.O_WRONLY | os.O_CREAT, 0o600)

    def write(self, data):
        global lines_left
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {{signal.SIGTERM, signal.SIGINT}})
        try:
            for fd in (self.copy, 1):
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        if lines_left is not None:
            lines_left -= data.count(b"\\n")
            if lines_left <= 0:
                os._exit(128 + signal.SIGTERM)

    def flush(self):
        pass


if LINGER_LINES:
    signal.signal(signal.SIGTERM, on_sigterm)
out = TeeOut() if COPY_STDOUT else sys.stdout.buffer
# Recorded last, so a recorded pid always has its stdout copy.
tmp = os.path.join(RECORD, f".{{pid}}.tmp")
with open(tmp, "w") as f:
    json.dump({{"pid": pid, "argv": sys.argv[1:], "at_ns": time.time_ns()}}, f)
os.replace(tmp, os.path.join(RECORD, f"{{pid}}.json"))
cfg = simulator.parse_config(sys.argv[1:], os.environ)
try:
    code = simulator.run(cfg, out, sys.stderr.buffer)
except BrokenPipeError:
    code = 1
sys.exit(code)
'''


@dataclass(frozen=True)
class Launch:
    """One process the fake claude ran."""

    pid: int
    argv: list[str]

    @property
    def prompt(self) -> str:
        return self.argv[self.argv.index("--") + 1]


class FakeClaude:
    """The executable to pass as ``--claude-bin``, and what its processes recorded."""

    def __init__(self, directory: Path, copy_stdout: bool = True, linger_lines: int = 0) -> None:
        assert copy_stdout or not linger_lines, "lingering counts lines as it copies them"
        self.record = directory / "record"
        self.record.mkdir(parents=True)
        self.path = directory / "claude"
        self.path.write_text(
            _WRAPPER.format(
                python=sys.executable,
                record=str(self.record),
                copy_stdout=copy_stdout,
                linger_lines=linger_lines,
            )
        )
        self.path.chmod(0o755)

    def launches(self) -> list[Launch]:
        """Every process started so far, in the order they started."""
        records = [json.loads(file.read_text()) for file in self.record.glob("*.json")]
        records.sort(key=lambda data: data["at_ns"])
        return [Launch(data["pid"], data["argv"]) for data in records]

    def launch_for(self, prompt: str) -> Launch:
        found = [launch for launch in self.launches() if launch.prompt == prompt]
        assert len(found) == 1, f"expected one launch of {prompt!r}, found {found}"
        return found[0]

    def stdout_of(self, launch: Launch) -> bytes:
        return (self.record / f"{launch.pid}.out").read_bytes()

    def counted(self, prompt: str) -> UsageTracker:
        """A fresh tracker fed with everything the process running ``prompt`` printed."""
        tracker = UsageTracker()
        data = self.stdout_of(self.launch_for(prompt))
        lines = data.split(b"\n")
        if lines[-1] == b"":
            lines.pop()
        for line in lines:
            tracker.feed_line(line)
        return tracker

    def wait_for_launches(self, count: int, timeout: float = 10.0) -> list[Launch]:
        launches: list[Launch] = wait_until(
            lambda: found if len(found := self.launches()) >= count else None,
            timeout,
            f"{count} launches of the fake claude",
        )
        return launches

    def wait_for_tokens(self, prompt: str, timeout: float = 10.0) -> None:
        """Until the process running ``prompt`` has printed some usage."""
        wait_until(lambda: self.counted(prompt).usage.total > 0, timeout, f"{prompt} tokens")

    def assert_no_process_left(self) -> None:
        launches = self.launches()
        for launch in launches:
            assert not process_exists(launch.pid), f"pid {launch.pid} ({launch.prompt}) lives on"
            with pytest.raises(ProcessLookupError):
                os.killpg(launch.pid, 0)  # its whole process group is gone too


MakeFakeClaude = Callable[..., FakeClaude]  # the make_fake_claude fixture


def process_exists(pid: int) -> bool:
    """True while ``pid`` is a live (not zombie) process."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    try:
        state = stat.read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def wait_until(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := condition():
            return result
        time.sleep(0.01)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


# -- simulator numbers ----------------------------------------------------------------------


@dataclass(frozen=True)
class Sim:
    """Simulator options for one instance, and what a correct counter must find."""

    calls: int = SIM_DEFAULTS["calls"]
    input: int = SIM_DEFAULTS["input"]
    output: int = SIM_DEFAULTS["output"]
    cache_creation: int = SIM_DEFAULTS["cache_creation"]
    cache_read: int = SIM_DEFAULTS["cache_read"]
    model: str = "claude-opus-4-8"
    delay: float = 0.0
    deltas: int = 2
    fail: str = "none"
    extra: tuple[str, ...] = ()

    def args(self) -> list[str]:
        return [
            f"--sim-calls={self.calls}",
            f"--sim-input-tokens={self.input}",
            f"--sim-output-tokens={self.output}",
            f"--sim-cache-creation={self.cache_creation}",
            f"--sim-cache-read={self.cache_read}",
            f"--sim-model={self.model}",
            f"--sim-delay={self.delay}",
            f"--sim-deltas={self.deltas}",
            f"--sim-fail={self.fail}",
            *self.extra,
        ]

    def usage(self, calls: int | None = None) -> dict[str, int]:
        """Tokens after ``calls`` complete calls (all of them by default), with the total."""
        parts = expected_usage(
            self.calls if calls is None else calls,
            self.input,
            self.output,
            self.cache_creation,
            self.cache_read,
        )
        return {**parts, "total": sum(parts.values())}

    def cost(self) -> float:
        """The simulator's total_cost_usd for the whole run."""
        usage = self.usage()
        del usage["total"]
        return cost_usd(self.model, usage)


def instance(name: str, command: str, sim: Sim | None = None, **keys: Any) -> dict[str, Any]:
    """One entry of a config's ``instances``."""
    return {"name": name, "command": command, "claude_args": (sim or Sim()).args(), **keys}


# -- running the orchestrator -------------------------------------------------------------


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(SCRUBBED_ENV_PREFIXES)}
    return {**env, **(extra or {})}


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str
    summary: dict[str, Any] | None

    def instance(self, name: str) -> dict[str, Any]:
        assert self.summary is not None, "no --summary-json was written"
        found: list[dict[str, Any]] = [i for i in self.summary["instances"] if i["name"] == name]
        assert len(found) == 1, f"no single instance {name!r} in {self.summary['instances']}"
        return found[0]

    def budget(self, key: str, unit: str = "tokens") -> dict[str, Any]:
        assert self.summary is not None, "no --summary-json was written"
        found: list[dict[str, Any]] = [
            b for b in self.summary["budgets"] if b["key"] == key and b["unit"] == unit
        ]
        assert len(found) == 1, f"no single {unit} budget {key!r} in {self.summary['budgets']}"
        return found[0]

    def lines_with(self, *words: str) -> list[str]:
        return [line for line in self.stdout.splitlines() if all(w in line for w in words)]


class Runner:
    """Runs the installed ``orchestrator`` in ``workdir`` with the fake claude."""

    def __init__(self, workdir: Path, claude: FakeClaude) -> None:
        self.workdir = workdir
        self.claude = claude
        self.summary_path = workdir / "summary.json"

    def config(
        self, instances: Iterable[dict[str, Any]], budget: dict[str, Any] | None = None
    ) -> Path:
        path = self.workdir / "config.json"
        data: dict[str, Any] = {"instances": list(instances)}
        if budget is not None:
            data["budget"] = budget
        path.write_text(json.dumps(data, indent=1))
        return path

    def argv(self, args: Iterable[str], claude_bin: bool = True, summary: bool = True) -> list[str]:
        # No periodic reports unless a test asks for them (its flags come later and win).
        argv = [str(ORCHESTRATOR), "--status-report-interval=0", *args]
        if claude_bin:
            argv.append(f"--claude-bin={self.claude.path}")
        if summary:
            argv.append(f"--summary-json={self.summary_path}")
        return argv

    def run(
        self,
        *args: str,
        env: Mapping[str, str] | None = None,
        claude_bin: bool = True,
        summary: bool = True,
        timeout: float = RUN_TIMEOUT_S,
    ) -> Result:
        self.summary_path.unlink(missing_ok=True)
        proc = subprocess.run(
            self.argv(args, claude_bin, summary),
            cwd=self.workdir,
            env=clean_env(env),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=timeout,
            check=False,
        )
        return Result(proc.returncode, proc.stdout, proc.stderr, self.read_summary())

    def start(self, *args: str, env: Mapping[str, str] | None = None) -> subprocess.Popen[str]:
        """Start without waiting (for signal tests); finish with ``finish``."""
        self.summary_path.unlink(missing_ok=True)
        return subprocess.Popen(
            self.argv(args),
            cwd=self.workdir,
            env=clean_env(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
        )

    def finish(self, proc: subprocess.Popen[str], timeout: float = RUN_TIMEOUT_S) -> Result:
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            stdout, stderr = proc.communicate()
            raise AssertionError(f"orchestrator did not finish:\n{stdout}\n{stderr}") from None
        return Result(proc.returncode, stdout, stderr, self.read_summary())

    def read_summary(self) -> dict[str, Any] | None:
        if not self.summary_path.exists():
            return None
        summary: dict[str, Any] = json.loads(self.summary_path.read_text())
        return summary
