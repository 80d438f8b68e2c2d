"""Faults of instances and of the orchestrator: each ends in a clear message, a correct
summary and the right exit status, and every token an instance printed is counted once.

The matrix, with what the tool does in each row, is in docs/reliability.md.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import sys
import time
from pathlib import Path

import pytest
from faultlib import (
    HUGE,
    ORCHESTRATOR,
    PYTHON,
    SIMULATOR,
    FakeClaude,
    InTerminal,
    Watched,
    assert_all_gone,
    assert_counted_once,
    fake_claude,
    filtered_claude,
    process_gone,
    read_summary,
    run_orchestrator,
    sim_usage,
    simulate,
    track,
    usage_of,
    write_config,
)

from budget_core import BudgetManager, LevelCrossed, TokenUsage
from orchestrator.config import BudgetConfig, InstanceSpec, RunConfig
from orchestrator.palette import Palette
from orchestrator.report import summary_report
from orchestrator.run import Orchestrator
from orchestrator.simulator import DEFAULT_ERROR_TEXT
from orchestrator.state import InstanceStatus, Notice, NoticeKind, RunEvent
from orchestrator.summary import summary_dict

# /proc, ptys and process groups as Linux has them.
pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the fault matrix runs on Linux")
CALL_TOTAL = sim_usage(1).total  # one complete simulated API call: 4,800 tokens


def single(claude: FakeClaude, *sim_args: str) -> list[str]:
    """Arguments for one instance ``x`` running ``/x``, with budgets whose use is checked."""
    return [
        "/x",
        "--claude-bin",
        str(claude.path),
        *(f"--claude-arg={arg}" for arg in sim_args),
        "--overall-token-budget",
        str(HUGE),
        "--command-budget",
        f"/x={HUGE}",
    ]


def hanging_instances(names: list[str]) -> list[dict[str, object]]:
    """Instances that print one whole API call and then hang (each under its own key)."""
    args = ["--sim-fail=hang", "--sim-calls=2"]
    return [{"name": n, "command": f"/{n}", "claude_args": args} for n in names]


def exact_call_budgets(names: list[str]) -> dict[str, object]:
    """Budgets of exactly one call each: the EXCEEDED notice says that call was all counted."""
    return {"command_budgets": {f"/{n}": CALL_TOTAL for n in names}, "overall_budget": HUGE}


def exceeded(name: str) -> str:
    """The notice that the budget of ``name`` (see ``exact_call_budgets``) is used up."""
    return rf"budget /{name} .* is EXCEEDED"


# -- instance faults -------------------------------------------------------------------------


def test_crash_mid_stream_keeps_the_live_tokens_counted_once(tmp_path: Path) -> None:
    claude = fake_claude(tmp_path)
    result = run_orchestrator(single(claude, "--sim-fail=crash"), tmp_path)

    printed = track(simulate("--sim-fail=crash"))  # the same output, captured on its own
    assert not printed.is_final and printed.usage.total > CALL_TOTAL  # one call and a half
    inst = result.instance("x")
    assert result.code == 1, result
    assert inst["status"] == "failed" and inst["final"] is False
    assert inst["exit_code"] == 1
    assert inst["error"] == "exit code 1: Error: simulated crash during API call 2"
    assert usage_of(inst["tokens"]) == printed.usage
    assert_counted_once(result.summary)
    assert "* live count" in result.stdout
    assert_all_gone(claude.pids())


def test_killed_by_sigkill_from_outside(tmp_path: Path) -> None:
    claude = fake_claude(tmp_path)
    config = write_config(tmp_path, hanging_instances(["x"]), exact_call_budgets(["x"]))
    run = Watched(["--config", str(config), "--claude-bin", str(claude.path)], tmp_path)
    try:
        run.wait_for(exceeded("x"))  # warn mode: the first call is counted, the run goes on
        [pid] = claude.wait_for_pids(1)
        os.kill(pid, signal.SIGKILL)
        result = run.finish()
    finally:
        run.kill()

    inst = result.instance("x")
    assert result.code == 1, result
    assert inst["status"] == "failed" and inst["error"] == "killed by SIGKILL"
    assert inst["exit_code"] == -signal.SIGKILL
    assert usage_of(inst["tokens"]) == sim_usage(1) and inst["final"] is False
    assert_counted_once(result.summary)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_an_orchestrator_killed_by_sigkill_takes_its_instances_with_it(tmp_path: Path) -> None:
    # No handler sees SIGKILL: the children were told at launch to die with their parent.
    claude = fake_claude(tmp_path)
    names = ["x", "y"]
    config = write_config(tmp_path, hanging_instances(names), exact_call_budgets(names))
    run = Watched(["--config", str(config), "--claude-bin", str(claude.path)], tmp_path)
    try:
        pids = claude.wait_for_pids(2)
        # Both printed their call and now sleep: no write to a broken pipe will end them.
        run.wait_for(exceeded("x"), exceeded("y"))
        run.proc.kill()
        run.proc.wait(timeout=10)
    finally:
        run.kill()
    assert_all_gone(pids)


def test_hanging_instances_time_out_and_keep_what_they_printed(tmp_path: Path) -> None:
    claude = fake_claude(tmp_path)
    silent_args = ["--sim-fail=hang", "--sim-calls=0"]  # hangs before printing anything
    silent = {"name": "silent", "command": "/silent", "claude_args": silent_args}
    config = write_config(
        tmp_path, [silent, *hanging_instances(["half"])], {"overall_budget": HUGE}
    )
    started = time.monotonic()
    result = run_orchestrator(
        ["--config", str(config), "--claude-bin", str(claude.path), "--timeout", "2"], tmp_path
    )

    assert time.monotonic() - started < 10
    assert result.code == 1, result
    for name, printed in (("silent", TokenUsage()), ("half", sim_usage(1))):
        inst = result.instance(name)
        assert inst["status"] == "timed_out" and inst["error"] == "timed out after 2s"
        assert usage_of(inst["tokens"]) == printed
    assert_counted_once(result.summary)
    assert_all_gone(claude.pids())


def test_exit_0_without_a_result_line_fails(tmp_path: Path) -> None:
    claude = fake_claude(tmp_path)
    result = run_orchestrator(single(claude, "--sim-fail=no-result"), tmp_path)

    inst = result.instance("x")
    assert result.code == 1, result
    assert inst["status"] == "failed" and inst["error"] == "no result line"
    assert inst["exit_code"] == 0 and inst["final"] is False
    assert usage_of(inst["tokens"]) == sim_usage()
    assert_counted_once(result.summary)


def test_an_is_error_result_fails_with_the_cli_error_text(tmp_path: Path) -> None:
    claude = fake_claude(tmp_path)
    result = run_orchestrator(single(claude, "--sim-fail=error-result"), tmp_path)

    inst = result.instance("x")
    assert result.code == 1, result
    assert inst["status"] == "failed" and inst["error"] == DEFAULT_ERROR_TEXT
    assert inst["final"] is True and usage_of(inst["tokens"]) == sim_usage()
    assert f"x: {DEFAULT_ERROR_TEXT}" in result.stdout
    assert_counted_once(result.summary)


def test_a_non_zero_exit_after_a_good_result_fails(tmp_path: Path) -> None:
    claude = fake_claude(tmp_path)
    result = run_orchestrator(single(claude, "--sim-fail=exit-nonzero"), tmp_path)

    inst = result.instance("x")
    assert result.code == 1, result
    assert inst["status"] == "failed" and inst["error"] == "exit code 2"
    assert inst["final"] is True and usage_of(inst["tokens"]) == sim_usage()


# Lines no counter has seen before, placed right after every message_start.
UNKNOWN_LINES = [
    '{"type":"future_kind","usage":{"input_tokens":99999,"output_tokens":99999}}',
    '{"type":"system","subtype":"compact_boundary","compact_metadata":{"pre_tokens":99999}}',
    '{"type":"rate_limit_event","rate_limit_info":{"status":"allowed"}}',
    '{"type":"stream_event","event":{"type":"ping"}}',
    '{"type":"assistant"}',
    "[1, 2, 3]",
    '"a string"',
    "",
]
TRUNCATED = b'{"type":"assistant","message":{"id":"msg_cut","model":"claude-opus-4-8","usage":{"in'


@pytest.mark.parametrize("with_result", [True, False], ids=["final", "live"])
@pytest.mark.parametrize(
    "fault",
    [
        "garbage",
        "invalid-utf8",
        "huge-line",
        "null-usage",
        "unknown-types",
        "truncated-at-eof",
        "stderr-flood",
    ],
)
def test_bad_output_leaves_the_totals_exact(tmp_path: Path, fault: str, with_result: bool) -> None:
    """With the result line, totals are the CLI's; without it (removed by a filter), the live
    counts must still equal what the calls printed: bad lines neither add nor lose tokens."""
    inject = UNKNOWN_LINES if fault == "unknown-types" else ()
    tail = TRUNCATED if fault == "truncated-at-eof" else b""
    sim_args = [] if fault in ("unknown-types", "truncated-at-eof") else [f"--sim-fail={fault}"]
    if with_result and not inject and not tail:
        claude = fake_claude(tmp_path)  # the simulator itself, no filter
    else:
        claude = filtered_claude(
            tmp_path, inject_after_start=inject, tail=tail, drop_result=not with_result
        )
    result = run_orchestrator(single(claude, *sim_args), tmp_path, timeout=60)

    inst = result.instance("x")
    assert usage_of(inst["tokens"]) == sim_usage(), result
    assert inst["final"] is with_result
    if with_result:
        assert result.code == 0 and inst["status"] == "succeeded", result
    else:
        assert result.code == 1 and inst["error"] == "no result line", result
    assert_counted_once(result.summary)


def test_a_stderr_flood_before_a_crash_leaves_a_short_clear_error(tmp_path: Path) -> None:
    """10 MB on stderr, then a crash: nothing blocks, and the error quotes stderr's last line."""
    flood = "yes 'noise on stderr' | head -c 10000000 >&2"
    claude = fake_claude(tmp_path, prelude=[flood])
    result = run_orchestrator(single(claude, "--sim-fail=crash"), tmp_path, timeout=60)

    inst = result.instance("x")
    assert result.code == 1 and inst["status"] == "failed", result
    assert inst["error"] == "exit code 1: Error: simulated crash during API call 2"
    assert usage_of(inst["tokens"]) == track(simulate("--sim-fail=crash")).usage


@pytest.mark.parametrize(
    ("how", "message"),
    [
        ("missing path", "does not exist"),
        ("not executable", "is not executable"),
        ("a directory", "is not executable"),
        ("not on PATH", "not found on PATH"),
        ("env var missing", "(from ORCHESTRATOR_CLAUDE_BIN) does not exist"),
    ],
)
def test_a_missing_or_unusable_executable_launches_nothing(
    tmp_path: Path, how: str, message: str
) -> None:
    claude = fake_claude(tmp_path)
    args = ["/x"]
    env: dict[str, str] = {}
    if how == "missing path":
        args += ["--claude-bin", str(tmp_path / "nowhere" / "claude")]
    elif how == "not executable":
        claude.path.chmod(0o644)
        args += ["--claude-bin", str(claude.path)]
    elif how == "a directory":
        args += ["--claude-bin", str(tmp_path)]
    elif how == "not on PATH":
        args += ["--claude-bin", "claude-that-is-not-installed"]
    else:
        env["ORCHESTRATOR_CLAUDE_BIN"] = str(tmp_path / "gone")
    result = run_orchestrator(args, tmp_path, env=env)

    assert result.code == 2, result
    assert result.stderr.count("\n") == 1 and message in result.stderr, result
    assert result.stderr.startswith("orchestrator: error: claude executable ")
    assert result.stdout == "" and result.summary is None
    assert claude.pids() == []


def test_a_relative_claude_bin_is_found_whatever_the_workspace(tmp_path: Path) -> None:
    fake_claude(tmp_path)
    workspace = tmp_path / "elsewhere"
    workspace.mkdir()
    args = ["/x", "--claude-bin", "./claude", "--workspace", str(workspace)]
    result = run_orchestrator(args, tmp_path)

    assert result.code == 0, result
    assert result.instance("x")["status"] == "succeeded"


def test_an_executable_that_cannot_start_fails_each_instance(tmp_path: Path) -> None:
    """It exists and is executable, but its interpreter does not: found only at launch."""
    claude = tmp_path / "claude"
    claude.write_text("#!/nonexistent/interpreter\n")
    claude.chmod(0o755)
    config = write_config(tmp_path, [{"name": "a", "command": "/a"}, {"name": "b", "prompt": "hi"}])
    result = run_orchestrator(["--config", str(config), "--claude-bin", str(claude)], tmp_path)

    assert result.code == 1, result
    for name in ("a", "b"):
        inst = result.instance(name)
        assert inst["status"] == "failed"
        assert inst["error"].startswith(f"cannot start {claude}: ")
    assert "Traceback" not in result.stdout + result.stderr


# -- orchestrator faults ---------------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_an_interrupt_stops_every_child_group_and_writes_the_summary(
    tmp_path: Path, sig: signal.Signals
) -> None:
    # Each instance leaves a grandchild in its process group: it must go too.
    claude = fake_claude(tmp_path, prelude=['sleep 300 & echo $! > "$PIDDIR/$!.pid"'])
    names = ["a", "b", "c"]
    config = write_config(tmp_path, hanging_instances(names), exact_call_budgets(names))
    args = ["--config", str(config), "--claude-bin", str(claude.path), "--max-concurrent", "2"]
    run = Watched(args, tmp_path)
    try:
        # a and b run (c waits for a slot), and each has printed its first call.
        run.wait_for(exceeded("a"), exceeded("b"))
        pids = claude.wait_for_pids(4)
        run.signal(sig)
        result = run.finish()
    finally:
        run.kill()

    assert result.code == 128 + sig, result
    assert result.summary is not None and result.summary["exit_code"] == 128 + sig
    for name in ("a", "b"):
        inst = result.instance(name)
        assert inst["status"] == "cancelled" and inst["error"] == f"interrupted by {sig.name}"
        assert usage_of(inst["tokens"]) == sim_usage(1)
    c = result.instance("c")
    assert c["status"] == "cancelled" and c["error"] == "cancelled before launch"
    assert f"{sig.name} received: stopping every instance" in result.stdout
    assert f"Exit status {128 + sig}" in result.stdout
    assert_counted_once(result.summary)
    assert_all_gone(pids)
    assert len(claude.pids()) == 4  # nothing was launched after the signal


def test_a_child_ignoring_sigterm_is_killed_at_a_second_interrupt(tmp_path: Path) -> None:
    claude = fake_claude(tmp_path, prelude=["trap '' TERM"])
    config = write_config(tmp_path, hanging_instances(["x"]), exact_call_budgets(["x"]))
    run = Watched(["--config", str(config), "--claude-bin", str(claude.path)], tmp_path)
    try:
        run.wait_for(exceeded("x"))
        [pid] = claude.wait_for_pids(1)
        run.signal(signal.SIGINT)
        run.wait_for("x: stopping")
        assert not process_gone(pid)  # SIGTERM ignored: it waits for the grace period
        second = time.monotonic()
        run.signal(signal.SIGINT)
        result = run.finish()
    finally:
        run.kill()

    assert time.monotonic() - second < 2.5  # well inside the 3 s grace: killed at once
    assert result.code == 130, result
    assert result.instance("x")["status"] == "cancelled"
    assert usage_of(result.instance("x")["tokens"]) == sim_usage(1)
    assert_all_gone([pid])


def test_a_child_ignoring_sigterm_is_killed_after_the_grace(tmp_path: Path) -> None:
    claude = fake_claude(tmp_path, prelude=["trap '' TERM"])
    config = write_config(tmp_path, hanging_instances(["x"]), exact_call_budgets(["x"]))
    started = time.monotonic()
    result = run_orchestrator(
        ["--config", str(config), "--claude-bin", str(claude.path), "--timeout", "0.5"], tmp_path
    )

    assert 3.0 < time.monotonic() - started < 10  # timeout, SIGTERM ignored, SIGKILL at +3 s
    inst = result.instance("x")
    assert result.code == 1 and inst["status"] == "timed_out", result
    assert usage_of(inst["tokens"]) == sim_usage(1)
    assert_all_gone(claude.pids())


@pytest.mark.parametrize(
    ("where", "problem"),
    [("no-such-folder/s.json", "does not exist"), (".", "is a directory")],
    ids=["missing folder", "a directory"],
)
def test_an_unwritable_summary_path_is_refused_before_launch(
    tmp_path: Path, where: str, problem: str
) -> None:
    claude = fake_claude(tmp_path)
    args = [*single(claude), "--summary-json", str(tmp_path / where)]
    result = run_orchestrator(args, tmp_path, summary=False)

    assert result.code == 2, result
    assert result.stderr.startswith("orchestrator: error: --summary-json: cannot write there")
    assert problem in result.stderr and result.stderr.count("\n") == 1
    assert claude.pids() == []


def test_a_summary_path_that_goes_away_mid_run_still_prints_the_results(tmp_path: Path) -> None:
    claude = fake_claude(tmp_path)
    folder = tmp_path / "out"
    folder.mkdir()
    args = [*single(claude, "--sim-delay=0.03"), "--summary-json", str(folder / "s.json")]
    run = Watched(args, tmp_path, summary=False)
    try:
        claude.wait_for_pids(1)
        shutil.rmtree(folder)  # about a second before the instance ends
        result = run.finish()
    finally:
        run.kill()

    assert result.code == 1, result  # the instance succeeded, but the summary was lost
    assert result.stderr.startswith(f"orchestrator: error: cannot write --summary-json {folder}")
    assert result.stderr.count("\n") == 1
    assert re.search(r"^\s+x\s+/x\s+succeeded\s", result.stdout, re.MULTILINE), result
    assert f"{sim_usage().total:,}" in result.stdout
    assert "Exit status 1: every instance succeeded, but the summary JSON was not written" in (
        result.stdout
    )


# -- the terminal going away under --tui -----------------------------------------------------


def tui_run(tmp_path: Path, main: str = ORCHESTRATOR[2]) -> tuple[InTerminal, FakeClaude]:
    """``orchestrator --tui`` in a terminal of its own, with two instances that hang."""
    pytest.importorskip("tui.app", reason="the TUI (tui.app) is not importable yet")
    claude = fake_claude(tmp_path)
    config = write_config(tmp_path, hanging_instances(["a", "b"]))
    args = ["--tui", "--config", str(config), "--claude-bin", str(claude.path)]
    args += ["--summary-json", str(tmp_path / "summary.json")]
    return InTerminal(args, tmp_path, main), claude


@pytest.mark.parametrize("how", ["close the terminal", "SIGHUP"])
def test_the_terminal_closing_under_tui_stops_every_child(tmp_path: Path, how: str) -> None:
    terminal, claude = tui_run(tmp_path)
    try:
        terminal.watch(20, until=lambda: len(claude.pids()) == 2)
        children = claude.wait_for_pids(2, timeout=0)
        terminal.watch(0.5)  # time to print their first call
        if how == "SIGHUP":  # the terminal stays: the app must end and give it back
            os.kill(terminal.pid, signal.SIGHUP)
            terminal.watch(5)
        terminal.hang_up()
        assert_all_gone(children, timeout=5)
        code = terminal.exit_code(timeout=10)
    finally:
        terminal.close()

    assert code == 128 + signal.SIGHUP
    summary = read_summary(tmp_path)
    assert summary is not None and summary["exit_code"] == code
    for inst in summary["instances"]:
        assert inst["status"] == "cancelled"
        assert usage_of(inst["tokens"]) in (TokenUsage(), sim_usage(1))


# The monitor fails after a second and a half, through Textual's own App.panic.
_FAILING_MONITOR = """
import asyncio, tui.app
from orchestrator.cli import entry_point

build_app = tui.app.build_app

def failing_build_app(control, *, run, **options):
    async def run_then_fail():
        loop = asyncio.get_running_loop()
        loop.call_later(1.5, lambda: app.panic("simulated failure of the monitor"))
        return await run()

    app = build_app(control, run=run_then_fail, **options)
    return app

tui.app.build_app = failing_build_app
entry_point()
"""


def test_a_failing_monitor_leaves_no_child_behind(tmp_path: Path) -> None:
    terminal, claude = tui_run(tmp_path, main=_FAILING_MONITOR)
    try:
        terminal.watch(20, until=lambda: len(claude.pids()) == 2)
        children = claude.wait_for_pids(2, timeout=0)
        code = terminal.exit_code(timeout=15)
    finally:
        terminal.close()

    assert_all_gone(children, timeout=1)
    assert code == 1
    summary = read_summary(tmp_path)
    assert summary is not None and summary["exit_code"] == 1
    for inst in summary["instances"]:
        assert inst["status"] == "cancelled"
        assert inst["error"] == "stopped: the monitor ended before the run did"


# -- the budget system failing ---------------------------------------------------------------


class BrokenManager(BudgetManager):
    """A budget manager whose first charge raises, as a bug in it would."""

    def __init__(self) -> None:
        super().__init__("block")
        self.charges = 0

    def charge(
        self, key: str, instance: str, usage_delta: TokenUsage, cost_delta: float = 0.0
    ) -> list[LevelCrossed]:
        self.charges += 1
        if self.charges == 1:
            raise RuntimeError("simulated bug in the budget system")
        return super().charge(key, instance, usage_delta, cost_delta)


async def test_a_failing_budget_system_leaves_the_run_going_without_enforcement() -> None:
    instances = tuple(InstanceSpec(name=n, prompt=f"/{n}", budget_key=f"/{n}") for n in "ab")
    config = RunConfig(instances, BudgetConfig(), claude_cmd=(PYTHON, str(SIMULATOR)))
    manager = BrokenManager()
    manager.set_budget("/a", tokens=10)  # would stop a in block mode, were enforcement on
    orchestrator = Orchestrator(config, budgets=manager)
    notices: list[Notice] = []

    def listen(event: RunEvent) -> None:
        if isinstance(event, Notice):
            notices.append(event)

    orchestrator.subscribe(listen)
    code = await asyncio.wait_for(orchestrator.run(), 30)

    snapshot = orchestrator.snapshot()
    assert code == 0
    assert snapshot.enforcement_ok is False
    for inst in snapshot.instances:
        assert inst.status is InstanceStatus.SUCCEEDED and inst.usage == sim_usage()
    errors = [n for n in notices if n.kind is NoticeKind.ERROR]
    assert len(errors) == 1 and errors[0].warning
    assert "simulated bug in the budget system" in errors[0].message
    assert "WITHOUT budget enforcement" in errors[0].message
    report = summary_report(snapshot, code, Palette(False))
    assert "budget enforcement was OFF" in report
    totals = summary_dict(snapshot, code)["totals"]["tokens"]
    assert totals == (sim_usage() + sim_usage()).as_dict()
