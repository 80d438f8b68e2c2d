"""Block holds with real processes: many instances started together on a budget crossed by
the very first line, and the run's other ways of failing open or hanging (regressions)."""

from __future__ import annotations

import json
import os
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path

import pytest

from tests.integration.faultlib import (
    assert_all_gone,
    assert_counted_once,
    fake_claude,
    process_gone,
    run_orchestrator,
    wait_until,
    write_config,
)

PYTHON = sys.executable

# A fake claude that makes an "API call" every 50 ms, 40 in all, each 2,000 tokens at its
# first line, and records when it starts each call (CALLS/<pid>: one time per line).
_CALLER = """\
#!{python}
import json, os, sys, time
if sys.argv[1:] == ["--version"]:
    print("2.1.197 (Claude Code)")
    sys.exit(0)
log = open(os.path.join({calls!r}, str(os.getpid())), "a", buffering=1)
out = sys.stdout
def emit(obj):
    out.write(json.dumps(obj) + "\\n")
    out.flush()
emit({{"type": "system", "subtype": "init", "session_id": "s", "model": "claude-sonnet-4-5"}})
for n in range(40):
    log.write(f"{{time.time()}}\\n")
    emit({{"type": "stream_event", "event": {{"type": "message_start", "message": {{
        "id": f"msg_{{n}}", "model": "claude-sonnet-4-5",
        "usage": {{"input_tokens": 1999, "output_tokens": 1}}}}}}}})
    time.sleep(0.05)
emit({{"type": "result", "subtype": "success", "is_error": False,
      "usage": {{"input_tokens": 79960, "output_tokens": 40}}}})
"""


def _caller(folder: Path) -> tuple[Path, Path]:
    calls = folder / "calls"
    calls.mkdir()
    path = folder / "claude"
    path.write_text(_CALLER.format(python=PYTHON, calls=str(calls)), encoding="utf-8")
    path.chmod(0o755)
    return path, calls


def test_sixteen_started_together_on_a_budget_crossed_by_the_first_line(tmp_path: Path) -> None:
    claude, calls = _caller(tmp_path)
    config = write_config(tmp_path, [{"name": f"a{i}", "command": "/a go"} for i in range(16)])
    result = run_orchestrator(
        [
            *("--config", str(config), "--claude-bin", str(claude)),
            *("--max-concurrent", "16", "--startup-delay", "0"),
            *("--command-budget", "/a=1.8k", "--budget-enforcement-mode", "block"),
        ],
        tmp_path,
    )
    assert result.code == 3, result
    assert result.summary is not None
    statuses = {i["status"] for i in result.summary["instances"]}
    assert statuses <= {"stopped_by_budget", "blocked"}, result
    starts = sorted(float(t) for f in calls.iterdir() for t in f.read_text().split() if t.strip())
    crossing = starts[0]  # every call crosses 1.8K by itself
    late = [t - crossing for t in starts if t - crossing > 1.0]
    assert not late, f"{len(late)} API calls started more than 1 s after the crossing"
    assert_counted_once(result.summary)
    assert_all_gone(int(f.name) for f in calls.iterdir())


def test_twenty_simulated_instances_on_a_5k_budget(tmp_path: Path) -> None:
    fake = fake_claude(tmp_path)
    config = write_config(tmp_path, [{"name": f"a{i}", "command": "/a x"} for i in range(20)])
    result = run_orchestrator(
        [
            *("--config", str(config), "--claude-bin", str(fake.path)),
            *("--max-concurrent", "20", "--command-budget", "/a=5k"),
            *("--budget-enforcement-mode", "block"),
        ],
        tmp_path,
        env={"SIM_CALLS": "20", "SIM_DELAY": "0.05"},
    )
    assert result.code == 3, result
    assert result.summary is not None
    assert not [i for i in result.summary["instances"] if i["status"] == "succeeded"], result
    (budget,) = [b for b in result.summary["budgets"] if b["key"] == "/a"]
    # Each instance's first call is 4.4K: at most the calls in flight at the crossing
    # went over, not the 1.8M of the first version.
    assert budget["used"] < 20 * 4400, budget
    assert_counted_once(result.summary)
    assert_all_gone(fake.pids())


def test_a_nul_byte_in_a_prompt_fails_that_instance_and_the_run_ends(tmp_path: Path) -> None:
    """The OS refuses the argument: that instance fails with the reason; no hang."""
    from orchestrator.config import BudgetConfig, InstanceSpec, RunConfig
    from orchestrator.run import Orchestrator

    fake = fake_claude(tmp_path)
    run = RunConfig(
        instances=(InstanceSpec("bad", "/a \0 x", "/a"), InstanceSpec("good", "/b", "/b")),
        budgets=BudgetConfig(),
        claude_cmd=(str(fake.path),),
    )
    import asyncio

    orch = Orchestrator(run)
    code = asyncio.run(asyncio.wait_for(orch.run(), 30))
    views = {v.name: v for v in orch.snapshot().instances}
    assert code == 1
    assert views["bad"].status == "failed"
    assert views["bad"].error is not None and "null byte" in views["bad"].error
    assert views["good"].status == "succeeded"


def test_a_setsid_grandchild_is_stopped_with_its_instance(tmp_path: Path) -> None:
    """An agent's background server that left the process group does not outlive the run."""
    marker = tmp_path / "server.pid"
    server = tmp_path / "server.sh"
    server.write_text(f"#!/bin/sh\necho $$ > '{marker}'\nexec sleep 120\n")
    server.chmod(0o755)
    fake = fake_claude(tmp_path, prelude=[f"setsid '{server}' &", "sleep 0.3"])
    result = run_orchestrator(["/a go", "--claude-bin", str(fake.path)], tmp_path)
    assert result.code == 0, result
    wait_until(marker.exists, 5, "the server's pid")
    server_pid = int(marker.read_text())
    wait_until(lambda: process_gone(server_pid), 5, "the setsid server to be stopped")


def test_a_failing_subscriber_neither_loses_lines_nor_turns_enforcement_off(
    tmp_path: Path,
) -> None:
    import asyncio

    from orchestrator.config import BudgetConfig, InstanceSpec, RunConfig
    from orchestrator.run import Orchestrator
    from orchestrator.state import Notice

    fake = fake_claude(tmp_path)
    run = RunConfig(
        instances=(InstanceSpec("a", "/a", "/a"),),
        budgets=BudgetConfig(command_tokens={"/a": 1000}, mode="block"),
        claude_cmd=(str(fake.path),),
    )
    orch = Orchestrator(run)
    notices: list[Notice] = []

    def broken(event: object) -> None:
        raise RuntimeError("a broken monitor")

    orch.subscribe(broken)
    orch.subscribe(lambda e: notices.append(e) if isinstance(e, Notice) else None)
    code = asyncio.run(asyncio.wait_for(orch.run(), 30))
    snapshot = orch.snapshot()
    assert code == 3
    assert snapshot.enforcement_ok
    assert snapshot.instances[0].status == "stopped_by_budget"
    assert sum("a subscriber failed" in n.message for n in notices) == 1
    # Every line the process printed before the stop was counted.
    assert snapshot.budgets.spend["/a"].usage == snapshot.instances[0].usage


def test_an_unexpected_error_in_the_run_stops_every_instance_and_exits_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio

    from orchestrator.config import BudgetConfig, InstanceSpec, RunConfig
    from orchestrator.run import Orchestrator

    fake = fake_claude(tmp_path)
    run = RunConfig(
        instances=tuple(InstanceSpec(f"a{i}", "/a", "/a") for i in range(3)),
        budgets=BudgetConfig(),
        claude_cmd=(str(fake.path),),
        max_concurrent=3,
        startup_delay_s=0.3,
    )
    orch = Orchestrator(run)
    original = orch._may_launch
    calls = 0

    def fails_on_the_third(inst: object) -> bool:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise KeyError("a bug")
        return original(inst)  # type: ignore[arg-type]

    monkeypatch.setattr(orch, "_may_launch", fails_on_the_third)
    monkeypatch.setenv("SIM_CALLS", "50")
    monkeypatch.setenv("SIM_DELAY", "0.05")
    with pytest.raises(KeyError):  # raised once every instance has ended, for the caller
        asyncio.run(asyncio.wait_for(orch.run(), 30))
    assert orch.exit_code() == 1
    assert orch.run_error is not None and "KeyError" in orch.run_error
    statuses = [v.status for v in orch.snapshot().instances]
    assert statuses[:2] == ["cancelled", "cancelled"], statuses
    assert statuses[2] == "cancelled"  # never launched
    assert_all_gone(fake.pids())


def test_a_second_interrupt_kills_only_live_process_groups(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A finished instance's pid may since name someone else's process group."""
    import asyncio
    import signal

    from orchestrator.config import BudgetConfig, InstanceSpec, RunConfig
    from orchestrator.run import Orchestrator

    fake = fake_claude(tmp_path, prelude=['case "$*" in *slow*) export SIM_CALLS=50;; esac'])
    run = RunConfig(
        instances=(InstanceSpec("quick", "quick", "q"), InstanceSpec("slow", "slow", "s")),
        budgets=BudgetConfig(),
        claude_cmd=(str(fake.path),),
        max_concurrent=2,
    )
    orch = Orchestrator(run)
    signalled: list[int] = []
    real_killpg = os.killpg

    def recording_killpg(pgid: int, sig: int) -> None:
        if sig == signal.SIGKILL:
            signalled.append(pgid)
        real_killpg(pgid, sig)

    async def scenario() -> int:
        task = asyncio.create_task(orch.run())
        while not any(v.status == "succeeded" for v in orch.snapshot().instances):
            await asyncio.sleep(0.02)
        monkeypatch.setattr(os, "killpg", recording_killpg)
        orch.interrupt(signal.SIGINT)
        orch.interrupt(signal.SIGINT)
        return await asyncio.wait_for(task, 30)

    monkeypatch.setenv("SIM_DELAY", "0.02")
    code = asyncio.run(scenario())
    views = {v.name: v for v in orch.snapshot().instances}
    assert code == 130
    assert views["quick"].status == "succeeded"
    assert views["slow"].status == "cancelled"
    assert views["quick"].pid not in signalled
    assert views["slow"].pid in signalled
    assert_all_gone(fake.pids())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux process tree")
def test_a_stop_while_spawning_is_not_lost_with_real_processes(tmp_path: Path) -> None:
    """Stop requested after the launch decision and before the pid exists."""
    import asyncio

    from orchestrator.config import BudgetConfig, InstanceSpec, RunConfig
    from orchestrator.run import Orchestrator

    fake = fake_claude(tmp_path)
    run = RunConfig(
        instances=(InstanceSpec("a", "/a", "/a"),),
        budgets=BudgetConfig(),
        claude_cmd=(str(fake.path),),
    )
    orch = Orchestrator(run)

    async def scenario() -> int:
        task = asyncio.create_task(orch.run())
        while orch.snapshot().instances[0].status == "pending":
            await asyncio.sleep(0)
        assert orch.snapshot().instances[0].status == "starting"
        orch.stop_instance("a")
        return await asyncio.wait_for(task, 30)

    code = asyncio.run(scenario())
    (view,) = orch.snapshot().instances
    assert code == 130
    assert view.status == "cancelled", view
    assert view.error == "stopped by request"


def test_an_instances_environment_is_ours_with_its_marker_and_without_our_secrets(
    tmp_path: Path,
) -> None:
    """Instances inherit the orchestrator's environment; it adds one variable, not secret,
    and withholds its own secrets (a ledger URL may hold a password; a webhook URL is one)."""
    dump = tmp_path / "env.json"
    script = tmp_path / "claude"
    script.write_text(
        textwrap.dedent(
            f"""\
            #!{PYTHON}
            import json, os
            json.dump(dict(os.environ), open({str(dump)!r}, "w"))
            print(json.dumps({{"type": "result", "subtype": "success", "is_error": False}}))
            """
        )
    )
    script.chmod(0o755)
    secrets = {
        "ORCHESTRATOR_LEDGER": str(tmp_path / "ledger.sqlite3"),
        "ORCHESTRATOR_ALERT_WEBHOOK": "http://127.0.0.1:9/hooks/T0/s3cret",
    }
    result = run_orchestrator(
        ["/a", "--claude-bin", str(script), "--alert-timeout", "0.5"],
        tmp_path,
        env={"MY_VAR": "x", **secrets},
    )
    assert result.code == 0, result
    seen = json.loads(dump.read_text())
    assert seen["MY_VAR"] == "x"
    assert seen["ORCHESTRATOR_INSTANCE"].count("-") == 2
    assert not set(secrets) & set(seen)
    assert (tmp_path / "ledger.sqlite3").exists()  # the orchestrator itself used them


def test_lowering_a_limit_below_the_spend_stops_its_instances_in_block_mode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Raising or lowering a limit goes through the same rule as a charge."""
    import asyncio

    from orchestrator.config import BudgetConfig, InstanceSpec, RunConfig
    from orchestrator.run import Orchestrator

    fake = fake_claude(tmp_path)
    run = RunConfig(
        instances=(InstanceSpec("a", "/a", "/a"), InstanceSpec("b", "/b", "/b")),
        budgets=BudgetConfig(command_tokens={"/a": 10**9}, mode="block"),
        claude_cmd=(str(fake.path),),
    )
    orch = Orchestrator(run)
    monkeypatch.setenv("SIM_CALLS", "50")
    monkeypatch.setenv("SIM_DELAY", "0.05")

    async def scenario() -> int:
        task = asyncio.create_task(orch.run())
        while orch.snapshot().budgets.for_key("/a")[0].used == 0:
            await asyncio.sleep(0.01)
        orch.set_limit("/a", tokens=1)
        views = {v.name: v for v in orch.snapshot().instances}
        assert views["a"].status == "stopping"  # at once, not at the next line
        assert views["b"].status == "running"
        orch.stop_instance("b")
        return await asyncio.wait_for(task, 30)

    assert asyncio.run(scenario()) == 3
    views = {v.name: v for v in orch.snapshot().instances}
    assert views["a"].status == "stopped_by_budget"
    assert views["b"].status == "cancelled"


def test_the_clis_own_budget_stop_ends_stopped_by_budget(tmp_path: Path) -> None:
    """``--max-budget-usd``: the CLI ends with subtype error_max_budget_usd, exit 1."""
    script = tmp_path / "claude"
    result_line = {
        "type": "result",
        "subtype": "error_max_budget_usd",
        "is_error": True,
        "usage": {"input_tokens": 0, "output_tokens": 0},
        "modelUsage": {"claude-sonnet-4-5": {"inputTokens": 500, "outputTokens": 20}},
        "total_cost_usd": 0.0018,
        "errors": ["Reached maximum budget ($0.001)"],
    }
    script.write_text(
        f"#!{PYTHON}\nimport sys\nprint({json.dumps(json.dumps(result_line))})\nsys.exit(1)\n"
    )
    script.chmod(0o755)
    result = run_orchestrator(["/a", "--claude-bin", str(script)], tmp_path)
    assert result.code == 3, result
    inst = result.instance("a")
    assert inst["status"] == "stopped_by_budget"
    assert inst["tokens"]["total"] == 520
    assert "--max-budget-usd" in inst["error"]


def test_a_result_below_the_stream_never_lowers_the_budget(tmp_path: Path) -> None:
    """Block mode: the stopped instance's budget does not free up for the next one."""
    script = tmp_path / "claude"
    start = {
        "type": "stream_event",
        "event": {
            "type": "message_start",
            "message": {"id": "m1", "model": "claude-sonnet-4-5", "usage": {"input_tokens": 5000}},
        },
    }
    result_line = {
        "type": "result",
        "subtype": "success",
        "is_error": False,
        "usage": {"input_tokens": 100, "output_tokens": 10},
        "modelUsage": {"claude-sonnet-4-5": {"inputTokens": 100, "outputTokens": 10}},
        "total_cost_usd": 0.0001,
    }
    script.write_text(
        f"#!{PYTHON}\nimport json, signal, sys, time\n"
        f"def done(*_):\n    print({json.dumps(json.dumps(result_line))}, flush=True)\n"
        "    sys.exit(0)\n"
        "signal.signal(signal.SIGTERM, done)\n"
        f"print({json.dumps(json.dumps(start))}, flush=True)\n"
        "time.sleep(0.5)\ndone()\n"
    )
    script.chmod(0o755)
    config = write_config(
        tmp_path, [{"name": "first", "command": "/a"}, {"name": "second", "command": "/a"}]
    )
    result = run_orchestrator(
        [
            *("--config", str(config), "--claude-bin", str(script), "--max-concurrent", "1"),
            *("--command-budget", "/a=1k", "--budget-enforcement-mode", "block"),
        ],
        tmp_path,
    )
    assert result.code == 3, result
    first, second = result.summary["instances"] if result.summary else ({}, {})
    assert first["status"] == "stopped_by_budget"
    assert first["tokens"]["input"] == 5000 and first["tokens"]["output"] == 10
    assert "5,000" in first["discrepancy"] and "100" in first["discrepancy"]
    assert second["status"] == "blocked"
    (budget,) = [b for b in result.summary["budgets"] if b["key"] == "/a"] if result.summary else []
    assert budget["used"] == 5010 and budget["level"] == "exceeded"
    assert "its result is below what it streamed" in result.stdout


def test_an_error_building_one_instances_argv_fails_that_instance_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio

    import orchestrator.run as run_module
    from orchestrator.config import BudgetConfig, InstanceSpec, RunConfig
    from orchestrator.run import Orchestrator

    fake = fake_claude(tmp_path)
    real = run_module.instance_argv

    def broken_for_b(config: RunConfig, spec: InstanceSpec, *more: Sequence[str]) -> list[str]:
        if spec.name == "b":
            raise RuntimeError("no argv for b")
        return real(config, spec, *more)

    monkeypatch.setattr(run_module, "instance_argv", broken_for_b)
    run = RunConfig(
        instances=(InstanceSpec("a", "/a", "/a"), InstanceSpec("b", "/b", "/b")),
        budgets=BudgetConfig(),
        claude_cmd=(str(fake.path),),
    )
    orch = Orchestrator(run)
    assert asyncio.run(asyncio.wait_for(orch.run(), 30)) == 1
    views = {v.name: v for v in orch.snapshot().instances}
    assert views["a"].status == "succeeded"
    assert views["b"].status == "failed"
    assert views["b"].error == f"cannot start {fake.path}: RuntimeError: no argv for b"


def test_what_the_version_check_starts_with_setsid_is_gone_too(tmp_path: Path) -> None:
    """``claude --version`` runs before any instance: its strays are found the same way."""
    marker = tmp_path / "server.pid"
    server = tmp_path / "server.sh"
    server.write_text(f"#!/bin/sh\necho $$ > '{marker}'\nexec sleep 120\n")
    server.chmod(0o755)
    claude = tmp_path / "claude"
    claude.write_text(f"#!/bin/sh\nsetsid '{server}' &\nsleep 0.2\necho '2.1.197 (Claude Code)'\n")
    claude.chmod(0o755)
    result = run_orchestrator(["/a go", "--claude-bin", str(claude), "--dry-run"], tmp_path)
    assert result.code == 0, result
    wait_until(marker.exists, 5, "the server's pid")
    server_pid = int(marker.read_text())
    wait_until(lambda: process_gone(server_pid), 5, "the version check's setsid server to go")
