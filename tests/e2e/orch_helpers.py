"""The `orchestrator` command run as a subprocess against the real Claude Code CLI.

The orchestrator passes its own environment on to every instance unchanged, so the CLI's
settings (ANTHROPIC_BASE_URL of the fake API, scratch HOME, retries, timeouts) are set on the
orchestrator process. Each run gets an empty workspace and writes its `--summary-json`.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from claude_cli import parse_stream_json
from fake_api import FakeAnthropicAPI, Usage

ORCHESTRATOR = Path(sys.executable).parent / "orchestrator"
RUN_TIMEOUT_S = 90.0
_LAUNCHED = re.compile(r"\] LAUNCH\s+(?P<name>\S+): launched \(.*\), pid (?P<pid>\d+)$", re.M)


@dataclass
class OrchestratorRun:
    """A finished orchestrator run: exit status, output, and the summary JSON it wrote."""

    returncode: int
    stdout: str
    stderr: str
    elapsed_s: float
    summary: dict[str, Any] = field(repr=False)

    def instance(self, name: str) -> dict[str, Any]:
        """The summary entry of one instance."""
        return next(i for i in self.summary["instances"] if i["name"] == name)

    def budget(self, key: str) -> dict[str, Any]:
        return next(b for b in self.summary["budgets"] if b["key"] == key)

    def pid(self, name: str) -> int:
        """The CLI's pid, from the log line `name: launched (key), pid N`."""
        pids = {m["name"]: int(m["pid"]) for m in _LAUNCHED.finditer(self.stdout)}
        return pids[name]

    @property
    def timing(self) -> str:
        """`4.2s (a1 3.1s, a2 3.0s)`: the whole run, then each instance."""
        each = ", ".join(f"{i['name']} {i['duration_s']:.1f}s" for i in self.summary["instances"])
        return f"{self.elapsed_s:.1f}s ({each})"

    def explain(self, fake: FakeAnthropicAPI | None = None) -> str:
        """Context for assertion failures: the orchestrator's output and the fake's log."""
        requests = "\n".join(fake.request_summaries()) if fake else "(no fake API)"
        return (
            f"exit {self.returncode} after {self.elapsed_s:.1f}s\nstdout:\n{self.stdout}\n"
            f"stderr:\n{self.stderr}\nrequests:\n{requests}"
        )


def run_orchestrator(
    claude_bin: Path,
    instances: Sequence[dict[str, Any]],
    env: dict[str, str],
    run_dir: Path,
    *options: str,
    timeout_s: float = RUN_TIMEOUT_S,
) -> OrchestratorRun:
    """Write the config into `run_dir`, run the orchestrator on it headless, read its summary.

    On timeout the orchestrator gets SIGTERM (it stops its instances and still writes the
    summary), then SIGKILL.
    """
    run_dir.mkdir(parents=True)
    workspace = run_dir / "workspace"
    workspace.mkdir()
    config = run_dir / "config.json"
    config.write_text(json.dumps({"instances": list(instances)}))
    summary = run_dir / "summary.json"
    argv = [
        str(ORCHESTRATOR),
        "--config",
        str(config),
        "--claude-bin",
        str(claude_bin),
        "--workspace",
        str(workspace),
        "--summary-json",
        str(summary),
        "--status-report-interval",
        "0",
        "--max-concurrent",
        str(len(instances)),
        *options,
    ]
    started = time.monotonic()
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=run_dir,
    )
    try:
        stdout, stderr = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)
        try:
            stdout, stderr = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            stdout, stderr = proc.communicate()
        stderr += f"\n[test] orchestrator still running after {timeout_s:g}s: stopped"
    elapsed = time.monotonic() - started
    data = json.loads(summary.read_text()) if summary.exists() else {}
    return OrchestratorRun(proc.returncode, stdout, stderr, elapsed, data)


def tokens(usage: Usage) -> dict[str, int]:
    """A fake-API usage in the summary's `tokens` form."""
    return {
        "input": usage.input,
        "output": usage.output,
        "cache_creation": usage.cache_creation,
        "cache_read": usage.cache_read,
        "total": usage.total,
    }


ZERO_TOKENS = tokens(Usage())


def group_is_gone(pgid: int) -> bool:
    """True when no process is left in the process group `pgid`."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


@dataclass(frozen=True)
class TeeClaude:
    """A real `claude` behind a bash wrapper that copies each process's argv and stdout to
    `<folder>/<pid>.argv` and `<pid>.out` (the pid is the one the orchestrator launched:
    the wrapper execs the CLI). So a test can read the very result line a process printed.
    """

    path: Path
    folder: Path

    @classmethod
    def around(cls, real: Path, folder: Path, drop_results: bool = False) -> TeeClaude:
        """With `drop_results`, the orchestrator never sees a result line (the copy does):
        it then ends on its live counts and its own cost estimate."""
        folder.mkdir(parents=True)
        path = folder / "claude"
        logs = shlex.quote(str(folder))
        drop = ' | grep --line-buffered -v \'"type":"result"\'' if drop_results else ""
        path.write_text(
            "#!/bin/bash\n"
            f"printf '%s\\0' \"$@\" > {logs}/$$.argv\n"
            f"exec > >(tee {logs}/$$.out{drop})\n"
            f'exec {shlex.quote(str(real))} "$@"\n'
        )
        path.chmod(0o755)
        return cls(path, folder)

    def argv(self, pid: int) -> list[str]:
        return (self.folder / f"{pid}.argv").read_text().split("\0")[:-1]

    def lines(self, pid: int) -> list[dict[str, Any]]:
        """The JSON lines process `pid` printed."""
        return parse_stream_json((self.folder / f"{pid}.out").read_text())

    def result(self, pid: int) -> dict[str, Any]:
        """The (last) result line process `pid` printed."""
        results = [line for line in self.lines(pid) if line.get("type") == "result"]
        assert results, f"process {pid} printed no result line"
        return results[-1]
