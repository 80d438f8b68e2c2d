"""The orchestrator asks the CLI its version once per run: an old CLI runs without partial
messages, a version it cannot tell never blocks the run, a stop signal meanwhile stops it.

The CLI here is the simulator behind a script that answers ``--version`` as told. The real
old CLI (1.0.108) is run in tests/e2e/test_cli_versions.py.
"""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest
from harness import ORCHESTRATOR, Runner, Sim, clean_env, process_exists, wait_until

PARTIAL = "--include-partial-messages"


def versioned_claude(runner: Runner, version_body: str) -> Path:
    """A claude whose ``--version`` runs ``version_body`` (shell); anything else is the
    recording fake claude of ``runner``."""
    path = runner.workdir.parent / "versioned-claude"
    path.write_text(
        "#!/bin/sh\n"
        f'if [ "$*" = --version ]; then\n{version_body}\nfi\n'
        f'exec "{runner.claude.path}" "$@"\n'
    )
    path.chmod(0o755)
    return path


@pytest.mark.parametrize(
    ("version", "partial", "warned"),
    [
        ("1.0.108 (Claude Code)", False, True),  # refuses --include-partial-messages
        ("1.0.109 (Claude Code)", True, False),
        ("2.1.332 (Claude Code)", True, False),
    ],
)
def test_the_version_decides_partial_messages(
    runner: Runner, version: str, partial: bool, warned: bool
) -> None:
    claude = versioned_claude(runner, f"echo '{version}'; exit 0")
    sim = Sim(calls=2)

    result = runner.run(
        "/a", f"--claude-bin={claude}", *(f"--claude-arg={a}" for a in sim.args()), claude_bin=False
    )

    assert result.returncode == 0, result.stdout + result.stderr
    [launch] = runner.claude.launches()
    assert (PARTIAL in launch.argv) is partial
    assert launch.argv[-2:] == ["--", "/a"]
    if warned:
        [line] = result.stderr.splitlines()
        assert line.startswith(f"orchestrator: warning: {claude} is Claude Code 1.0.108, ")
        assert "running without --include-partial-messages" in line
    else:
        assert result.stderr == ""
    # Without partial messages the counting falls back to the assistant lines; the CLI's
    # result line makes the final figures exact either way.
    entry = result.instance("a")
    assert (entry["status"], entry["final"]) == ("succeeded", True)
    assert entry["tokens"] == sim.usage()


def test_dry_run_shows_the_argv_the_version_calls_for(runner: Runner) -> None:
    claude = versioned_claude(runner, "echo '1.0.50 (Claude Code)'; exit 0")

    result = runner.run(
        "-x is a flag?", "--dry-run", f"--claude-bin={claude}", claude_bin=False, summary=False
    )

    assert result.returncode == 0, result.stderr
    assert f"{claude} -p --output-format stream-json --verbose -- '-x is a flag?'" in result.stdout
    assert "1.0.50" in result.stderr
    assert runner.claude.launches() == []


@pytest.mark.parametrize(
    ("version_body", "problem"),
    [
        ("echo 'not a version'; exit 0", "--version printed 'not a version', not a version"),
        ("exit 4", "--version exited with status 4"),
        ("echo 'error: unknown option --version' >&2; exit 1", "exited with status 1"),
    ],
)
def test_a_version_that_cannot_be_told_warns_once_and_the_run_goes_on(
    runner: Runner, version_body: str, problem: str
) -> None:
    claude = versioned_claude(runner, version_body)

    result = runner.run(
        "/a", f"--claude-bin={claude}", "--claude-arg=--sim-calls=1", claude_bin=False
    )

    assert result.returncode == 0, result.stdout + result.stderr
    [line] = result.stderr.splitlines()
    assert line.startswith(f"orchestrator: warning: cannot tell the version of {claude} (")
    assert problem in line
    assert line.endswith("running it as a current Claude Code CLI")
    [launch] = runner.claude.launches()
    assert PARTIAL in launch.argv
    assert result.instance("a")["tokens"] == Sim(calls=1).usage()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_stop_signal_during_the_version_check_stops_it_and_everything_it_started(
    runner: Runner, signum: int
) -> None:
    pidfile = runner.workdir / "version-child.pid"
    claude = versioned_claude(runner, f"sleep 60 & echo $! > {pidfile}\nwait")
    proc = subprocess.Popen(
        [str(ORCHESTRATOR), "/a", f"--claude-bin={claude}"],
        cwd=runner.workdir,
        env=clean_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    child = wait_until(lambda: pidfile.exists() and pidfile.read_text().strip(), 10, "--version")
    started = time.monotonic()
    proc.send_signal(signum)
    stdout, stderr = proc.communicate(timeout=10)

    elapsed = time.monotonic() - started
    assert proc.returncode == 128 + signum, stdout + stderr
    assert "Traceback" not in stderr, stderr
    assert elapsed < 5, f"{elapsed:.1f}s"
    # SIGKILL has been sent to its group; give the kernel a moment to finish the job.
    wait_until(lambda: not process_exists(int(child)), 5, f"pid {child} (--version's child)")
    assert runner.claude.launches() == []
