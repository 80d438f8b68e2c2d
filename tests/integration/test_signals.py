"""Stopping a run from outside: SIGINT/SIGTERM to the orchestrator, and ``--timeout``.
Every child must be gone afterwards (checked by the pids the fake claude recorded)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import pytest
from faultlib import (
    ORCHESTRATOR,
    FakeClaude,
    InTerminal,
    clean_env,
    fake_claude,
    process_gone,
    read_summary,
    summary_path,
    write_config,
)
from harness import MakeFakeClaude, Runner, Sim, instance

SLOW = Sim(calls=50, delay=0.02, deltas=1)  # runs for about 10 s unless stopped


@pytest.mark.parametrize(
    ("signum", "exit_code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["INT", "TERM"]
)
def test_a_signal_stops_every_child_and_still_reports(
    tmp_path: Path, make_fake_claude: MakeFakeClaude, signum: signal.Signals, exit_code: int
) -> None:
    # On SIGTERM from the orchestrator the fake claude prints ten more lines, then exits.
    runner = Runner(tmp_path, make_fake_claude(linger_lines=10))
    config = runner.config([instance(f"i{n}", f"/slow {n}", SLOW) for n in (1, 2, 3)])
    proc = runner.start("--config", str(config), "--max-concurrent=2")
    launches = runner.claude.wait_for_launches(2)
    for launch in launches:  # let both spend tokens first
        runner.claude.wait_for_tokens(launch.prompt)

    proc.send_signal(signum)
    result = runner.finish(proc)

    assert result.returncode == exit_code, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert "Summary" in result.stdout
    assert f"Exit status {exit_code}" in result.stdout
    assert len(result.lines_with(f"{signum.name} received")) == 1
    assert result.summary is not None
    assert result.summary["exit_code"] == exit_code
    statuses = {i["name"]: i["status"] for i in result.summary["instances"]}
    assert statuses == {"i1": "cancelled", "i2": "cancelled", "i3": "cancelled"}
    # The two that ran are counted as far as they got; the third never started.
    assert sorted(launch.prompt for launch in runner.claude.launches()) == ["/slow 1", "/slow 2"]
    for name, prompt in (("i1", "/slow 1"), ("i2", "/slow 2")):
        inst = result.instance(name)
        assert inst["final"] is False
        assert inst["exit_code"] == 143  # it lingered after SIGTERM, then exited
        assert 0 < inst["tokens"]["total"] < SLOW.usage()["total"]
        assert inst["tokens"] == runner.claude.counted(prompt).usage.as_dict()
    assert result.instance("i3")["tokens"]["total"] == 0
    runner.claude.assert_no_process_left()


def test_timeout_stops_a_hanging_instance(runner: Runner) -> None:
    hanging = Sim(calls=3, fail="hang")  # one call, then it hangs forever
    config = runner.config(
        [instance("hangs", "/hang", hanging), instance("quick", "/quick", Sim(calls=1))]
    )

    result = runner.run("--config", str(config), "--timeout", "0.5")

    assert result.returncode == 1, result.stdout + result.stderr
    assert result.summary is not None
    assert result.summary["exit_code"] == 1
    hangs = result.instance("hangs")
    assert hangs["status"] == "timed_out"
    assert "timed out after 0.5s" in hangs["error"]
    assert hangs["final"] is False
    assert hangs["tokens"] == hanging.usage(calls=1)
    assert 0.5 <= hangs["duration_s"] < 5
    assert result.instance("quick")["status"] == "succeeded"  # the limit is per instance
    runner.claude.assert_no_process_left()


# -- Ctrl-C under --tui: the same as headless (in a real terminal, with the simulator) -------


def tui_in_terminal(
    tmp_path: Path, prelude: Sequence[str] = (), main: str = ORCHESTRATOR[2]
) -> tuple[InTerminal, FakeClaude, str]:
    """``orchestrator --tui`` in a terminal of its own, running two instances that print one
    call and hang; their prompts carry a marker unique to this test, for ``pgrep``."""
    marker = f"marker-{uuid.uuid4().hex}"
    claude = fake_claude(tmp_path, prelude=prelude)
    hang = ["--sim-fail=hang", "--sim-calls=2"]
    instances = [{"name": n, "command": f"/{n} {marker}", "claude_args": hang} for n in "ab"]
    config = write_config(tmp_path, instances)
    args = ["--tui", "--config", str(config), "--claude-bin", str(claude.path)]
    args += ["--summary-json", str(summary_path(tmp_path))]
    return InTerminal(args, tmp_path, main), claude, marker


def processes_with(marker: str) -> list[str]:
    found = subprocess.run(["pgrep", "-af", marker], capture_output=True, text=True, check=False)
    return found.stdout.splitlines()


def started(terminal: InTerminal, claude: FakeClaude) -> list[int]:
    """Both instances run and the monitor is on the screen."""
    terminal.watch(20, until=lambda: len(claude.pids()) == 2)
    pids = claude.wait_for_pids(2, timeout=0)
    terminal.watch(1.0)
    return pids


def after_the_monitor(terminal: InTerminal) -> str:
    """What the terminal shows once the monitor gave it back (left the alternate screen)."""
    closed = terminal.output.rfind(b"\x1b[?1049l")
    assert closed >= 0, "the monitor never closed its screen"
    return terminal.output[closed:].decode(errors="replace").replace("\r\n", "\n")


@pytest.mark.parametrize("how", ["key", "SIGINT"])
def test_ctrl_c_under_tui_stops_every_instance_and_exits_130(tmp_path: Path, how: str) -> None:
    terminal, claude, marker = tui_in_terminal(tmp_path)
    try:
        started(terminal, claude)
        assert len(processes_with(marker)) == 2
        if how == "key":
            os.write(terminal.master, b"\x03")  # Ctrl-C typed in the monitor
        else:
            os.kill(terminal.pid, signal.SIGINT)
        code = terminal.exit_code(timeout=10)
    finally:
        terminal.close()

    assert code == 130
    assert processes_with(marker) == []
    summary = read_summary(tmp_path)
    assert summary is not None and summary["exit_code"] == 130
    for inst in summary["instances"]:
        assert inst["status"] == "cancelled" and inst["error"] == "interrupted by SIGINT"
        assert inst["exit_code"] == -signal.SIGTERM  # stopped gracefully, not killed
    shown = after_the_monitor(terminal)
    assert "Summary" in shown and "Exit status 130: interrupted" in shown
    assert "Traceback" not in shown


def test_a_second_ctrl_c_under_tui_kills_at_once(tmp_path: Path) -> None:
    terminal, claude, marker = tui_in_terminal(tmp_path, prelude=["trap '' TERM"])
    try:
        pids = started(terminal, claude)
        first = time.monotonic()
        os.write(terminal.master, b"\x03")
        terminal.watch(0.5)
        assert not any(process_gone(pid) for pid in pids)  # they ignore SIGTERM: still there
        os.write(terminal.master, b"\x03")
        code = terminal.exit_code(timeout=10)
        ended = time.monotonic()
    finally:
        terminal.close()

    assert ended - first < 2.5  # killed before the 3 s grace of the first Ctrl-C ran out
    assert code == 130
    assert processes_with(marker) == []
    summary = read_summary(tmp_path)
    assert summary is not None and summary["exit_code"] == 130
    assert [i["exit_code"] for i in summary["instances"]] == [-signal.SIGKILL] * 2


_BROKEN_RUN = """
import orchestrator.run
from orchestrator.cli import entry_point

real_may_launch = orchestrator.run.Orchestrator._may_launch
decisions = []

def second_decision_fails(self, inst):
    decisions.append(inst.name)
    if len(decisions) == 2:
        raise RuntimeError("simulated bug in the run")
    return real_may_launch(self, inst)

orchestrator.run.Orchestrator._may_launch = second_decision_fails
entry_point()
"""


def test_an_error_in_the_run_under_tui_is_shown_after_the_monitor_closes(tmp_path: Path) -> None:
    terminal, claude, marker = tui_in_terminal(tmp_path, main=_BROKEN_RUN)
    try:
        code = terminal.exit_code(timeout=20)
    finally:
        terminal.close()

    assert code == 1
    assert processes_with(marker) == []  # the instance that did start was stopped
    assert len(claude.pids()) == 1
    shown = after_the_monitor(terminal)
    assert "Traceback (most recent call last)" in shown
    assert (
        "orchestrator: error: the run failed, a bug in the orchestrator "
        "(RuntimeError: simulated bug in the run); every instance was stopped"
    ) in shown
    assert "Exit status 1: the run failed (a bug in the orchestrator, see the error above)" in shown
    summary = read_summary(tmp_path)
    assert summary is not None and summary["exit_code"] == 1
    statuses = {i["name"]: i["status"] for i in summary["instances"]}
    assert statuses == {"a": "cancelled", "b": "cancelled"}


_STDERR_TO_A_FILE = """
import os, sys
fd = os.open(sys.argv.pop(1), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
os.dup2(fd, 2)
from orchestrator.cli import entry_point
entry_point()
"""


def test_tui_with_stderr_not_a_terminal_runs_headless_and_says_why(tmp_path: Path) -> None:
    # `orchestrator --tui 2>err.log` in a terminal: Textual would draw into the file.
    claude = fake_claude(tmp_path)
    config = write_config(tmp_path, [{"name": "a", "command": "/a", "claude_args": []}])
    err = tmp_path / "err.log"
    args = [str(err), "--tui", "--config", str(config), "--claude-bin", str(claude.path)]
    terminal = InTerminal(args, tmp_path, _STDERR_TO_A_FILE)
    try:
        code = terminal.exit_code(timeout=20)
    finally:
        terminal.close()

    assert code == 0
    shown = terminal.output.decode(errors="replace")
    assert shown.count("--tui needs a terminal on stdout and stderr") == 1
    assert (
        "orchestrator: --tui needs a terminal on stdout and stderr (stderr is not one); "
        "running headless"
    ) in shown
    assert "LAUNCH" in shown and "Exit status 0" in shown  # the headless log, on the terminal
    assert "\x1b[?1049h" not in shown  # no alternate screen: no monitor
    assert err.read_text() == ""  # and nothing of it in the file


@pytest.mark.parametrize("how", ["close the terminal", "SIGHUP"])
def test_a_hangup_once_the_run_is_over_closes_the_monitor_with_the_runs_status(
    tmp_path: Path, how: str
) -> None:
    # The run ended (exit 0) and the monitor stays on the screen for the user to read, until
    # the terminal goes away: then it must close, with the run's status, not spin for ever.
    claude = fake_claude(tmp_path)
    config = write_config(tmp_path, [{"name": "a", "command": "/a", "claude_args": []}])
    args = ["--tui", "--config", str(config), "--claude-bin", str(claude.path)]
    terminal = InTerminal([*args, "--summary-json", str(summary_path(tmp_path))], tmp_path)
    try:
        terminal.watch(20, until=lambda: b"FINISHED exit 0" in terminal.output)
        assert b"FINISHED exit 0" in terminal.output
        if how == "SIGHUP":
            os.kill(terminal.pid, signal.SIGHUP)
            terminal.watch(2)
        terminal.hang_up()
        code = terminal.exit_code(timeout=10)
    finally:
        terminal.close()

    assert code == 0
    summary = read_summary(tmp_path)
    assert summary is not None and summary["exit_code"] == 0
    assert summary["instances"][0]["status"] == "succeeded"


def test_ctrl_c_outside_the_run_is_one_line_and_130(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Before the run's handlers are in place (imports, config) or after (the summary), a
    # Ctrl-C is Python's KeyboardInterrupt: no traceback for it either.
    import orchestrator.cli

    def interrupted(argv: object = None) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(orchestrator.cli, "main", interrupted)
    with pytest.raises(SystemExit) as exit_:
        orchestrator.cli.entry_point()
    assert exit_.value.code == 130
    assert capsys.readouterr().err == "orchestrator: interrupted\n"


_LATE_INTERRUPT = """
import os, signal, time
import orchestrator.cli as cli

real_finish = cli._finish

def finish_after_a_late_ctrl_c(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGINT)  # typed a moment after the run ended
    time.sleep(0.2)
    return real_finish(*args, **kwargs)

cli._finish = finish_after_a_late_ctrl_c
cli.entry_point()
"""


def test_a_ctrl_c_after_the_run_does_not_cost_the_summary(tmp_path: Path) -> None:
    claude = fake_claude(tmp_path)
    summary = tmp_path / "s.json"
    done = subprocess.run(
        [sys.executable, "-c", _LATE_INTERRUPT, "/a", "--claude-bin", str(claude.path),
         "--summary-json", str(summary), "--status-report-interval", "0"],
        cwd=tmp_path, env=clean_env(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Exit status 0" in done.stdout
    assert json.loads(summary.read_text())["exit_code"] == 0


_CTRL_C_WHILE_IMPORTING = """
import builtins
real_import = builtins.__import__

def import_interrupted(name, *args, **kwargs):
    if name == "orchestrator.cli":
        raise KeyboardInterrupt  # Ctrl-C while the command's modules load
    return real_import(name, *args, **kwargs)

builtins.__import__ = import_interrupted
from orchestrator.entry import entry_point
entry_point()
"""


def test_a_ctrl_c_while_the_command_starts_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", _CTRL_C_WHILE_IMPORTING, "--demo"],
        cwd=tmp_path, env=clean_env(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 130
    assert done.stderr == "orchestrator: interrupted\n"
