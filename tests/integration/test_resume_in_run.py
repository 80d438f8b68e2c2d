"""Resuming within a run, with the real Orchestrator and simulator processes: ``+`` and ``r``
in the monitor (Pilot), the paused run, and the races around them."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from budget_core import BudgetLevel
from orchestrator.config import BudgetConfig, InstanceSpec, RunConfig
from orchestrator.run import Orchestrator
from orchestrator.state import InstanceStatus, Notice, NoticeKind, RunEvent
from orchestrator.threaded import ThreadedRun
from tests.integration.test_tui_with_orchestrator import group_gone, slow_instance, wait_for
from tui.app import build_app
from tui.instances import InstanceTable

SIMULATOR = Path(__file__).resolve().parents[2] / "orchestrator" / "simulator.py"
S = InstanceStatus


def quick_instance(name: str, key: str) -> InstanceSpec:
    return InstanceSpec(
        name=name, prompt=f"{key} x", budget_key=key, claude_args=("--sim-calls", "1")
    )


def view(orchestrator: Orchestrator, name: str):  # type: ignore[no-untyped-def]
    return next(i for i in orchestrator.snapshot().instances if i.name == name)


async def test_raising_a_limit_in_the_monitor_launches_the_blocked_instance_and_r_resumes() -> None:
    """Block mode: 'first' takes /k past 5K and is stopped; 'second' is then blocked and the
    run pauses. ``r`` on the stopped one while /k is still exceeded launches nothing; ``+``
    with 10M launches the blocked one; ``r`` then continues the stopped one's session."""
    config = RunConfig(
        instances=(slow_instance("first", "/k"), slow_instance("second", "/k")),
        budgets=BudgetConfig(command_tokens={"/k": 5_000}, mode="block"),
        claude_cmd=(sys.executable, str(SIMULATOR)),
        max_concurrent=1,
        stop_grace_s=2.0,
    )
    orchestrator = Orchestrator(config)
    orchestrator.hold_when_paused = True  # as `orchestrator --tui` runs it
    control = ThreadedRun(orchestrator)
    app = build_app(control, run=control.run, animate=False)
    async with app.run_test(size=(120, 35)) as pilot:
        await wait_for(
            lambda: view(orchestrator, "second").status is S.BLOCKED, "second to be blocked"
        )
        first = view(orchestrator, "first")
        assert first.status is S.STOPPED_BY_BUDGET and first.launches == 1
        assert not orchestrator.snapshot().finished  # paused, not over
        table = app.query_one(InstanceTable)

        # r on 'first' while /k is exceeded: decided again, blocked, no process.
        table.move_cursor(row=0)
        await pilot.press("r")
        await wait_for(lambda: view(orchestrator, "first").status is S.BLOCKED, "blocked again")
        assert view(orchestrator, "first").launches == 1

        # + on 'second': the dialog for /k; 10M applied at once launches the blocked ones.
        table.move_cursor(row=1)
        await pilot.press("plus", "1", "0", "M", "enter")
        await wait_for(lambda: view(orchestrator, "first").status is S.RUNNING, "first runs")
        levels = {b.key: b.level for b in orchestrator.snapshot().budgets.budgets}
        assert levels["/k"] is BudgetLevel.OK
        # Both blocked launches were queued again, in order; one slot: 'first' continues its
        # session, 'second' waits for the slot, then starts afresh.
        resumed = view(orchestrator, "first")
        assert resumed.launches == 2 and resumed.resumed_session is not None
        assert resumed.usage.total >= first.usage.total  # its first process stays counted
        assert view(orchestrator, "second").status is S.RESUMING
        first_pid = resumed.pid
        assert first_pid is not None
        control.stop_instance("first")
        await wait_for(lambda: view(orchestrator, "second").status is S.RUNNING, "second runs")
        second = view(orchestrator, "second")
        assert second.launches == 1 and second.resumed_session is None
        assert group_gone(first_pid)
        await pilot.press("q")  # asks first: an instance runs
        await pilot.press("y")
        await wait_for(lambda: orchestrator.snapshot().finished, "the run to end")
    assert app.return_value == 130  # both ended cancelled: stopped by the user, then quit


async def test_a_paused_run_ends_on_quit_without_asking() -> None:
    config = RunConfig(
        instances=(quick_instance("a", "/k"),),
        budgets=BudgetConfig(command_tokens={"/k": 100}, mode="block"),
        claude_cmd=(sys.executable, str(SIMULATOR)),
    )
    orchestrator = Orchestrator(config)
    orchestrator.hold_when_paused = True
    control = ThreadedRun(orchestrator)
    app = build_app(control, run=control.run, animate=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(lambda: view(orchestrator, "a").status.is_done, "a to end")
        await asyncio.sleep(0.2)
        assert not orchestrator.snapshot().finished
        await pilot.press("q")
        await wait_for(lambda: orchestrator.snapshot().finished, "the run to end")
    assert app.return_value == 3


async def test_a_limit_raised_while_launches_are_decided_launches_each_instance_once() -> None:
    """/k is exceeded before the run (spend from elsewhere); the limit is raised from the
    notice of the third block, while the first pass still goes through the instances: the
    three blocked are queued again, the rest launched as they come, each exactly once."""
    names = [f"i{n}" for n in range(6)]
    config = RunConfig(
        instances=tuple(quick_instance(name, "/k") for name in names),
        budgets=BudgetConfig(command_tokens={"/k": 1_000}, mode="block"),
        claude_cmd=(sys.executable, str(SIMULATOR)),
        max_concurrent=2,
    )
    orchestrator = Orchestrator(config)
    orchestrator.budgets.set_outside("/k", orchestrator.budgets.snapshot().budgets[0].unit, 5_000)
    blocks: list[str] = []

    def on_event(event: RunEvent) -> None:
        if isinstance(event, Notice) and event.kind is NoticeKind.BLOCK:
            blocks.append(event.message)
            if len(blocks) == 3:
                orchestrator.set_limit("/k", tokens=10_000_000)

    orchestrator.subscribe(on_event)
    code = await asyncio.wait_for(orchestrator.run(), 60)
    views = orchestrator.snapshot().instances
    assert code == 0, [(v.name, v.status, v.error) for v in views]
    assert len(blocks) == 3
    assert [v.launches for v in views] == [1] * 6
    assert {v.status for v in views} == {S.SUCCEEDED}


async def test_r_after_the_run_is_over_is_refused() -> None:
    config = RunConfig(
        instances=(quick_instance("a", "/k"),),
        budgets=BudgetConfig(command_tokens={"/k": 100}, mode="block"),
        claude_cmd=(sys.executable, str(SIMULATOR)),
    )
    orchestrator = Orchestrator(config)
    assert await asyncio.wait_for(orchestrator.run(), 30) == 3
    assert view(orchestrator, "a").status is S.STOPPED_BY_BUDGET
    assert orchestrator.resume_instance("a") == "the run is over"
    assert orchestrator.resume_instance("nobody") == "no instance 'nobody'"


@pytest.mark.parametrize("status", [S.SUCCEEDED, S.FAILED])
def test_only_blocked_or_stopped_instances_resume(status: InstanceStatus) -> None:
    assert not status.can_become(S.RESUMING)
