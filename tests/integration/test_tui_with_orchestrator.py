"""The monitor driving the real Orchestrator, with simulator subprocesses: `m` is real."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from budget_core import BudgetLevel
from orchestrator.config import BudgetConfig, InstanceSpec, RunConfig
from orchestrator.run import Orchestrator
from orchestrator.state import InstanceStatus
from orchestrator.threaded import ThreadedRun
from tui.app import build_app
from tui.header import ModeBadge

SIMULATOR = Path(__file__).resolve().parents[2] / "orchestrator" / "simulator.py"


def slow_instance(name: str, key: str) -> InstanceSpec:
    # ~4.8K tokens a call, a call every ~0.5 s: a 5K budget is exceeded within a second or so,
    # while the instance would go on for half a minute.
    args = ("--sim-calls", "60", "--sim-delay", "0.03", "--sim-deltas", "4")
    return InstanceSpec(name=name, prompt=f"{key} work", budget_key=key, claude_args=args)


async def wait_for(condition: Callable[[], object], what: str, timeout: float = 15.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def group_gone(pid: int) -> bool:
    try:
        os.killpg(pid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.mark.parametrize("threaded", [False, True], ids=["same-loop", "own-thread"])
async def test_m_switches_the_real_run_to_block_and_stops_the_exceeded_budgets_instances(
    threaded: bool,
) -> None:
    config = RunConfig(
        instances=(slow_instance("hungry", "/hungry"), slow_instance("calm", "/calm")),
        budgets=BudgetConfig(command_tokens={"/hungry": 5_000, "/calm": 10_000_000}, mode="warn"),
        claude_cmd=(sys.executable, str(SIMULATOR)),
        stop_grace_s=2.0,
    )
    orchestrator = Orchestrator(config)
    # own-thread is what `orchestrator --tui` runs: the run on a thread, the monitor apart.
    control = ThreadedRun(orchestrator) if threaded else orchestrator
    app = build_app(control, run=control.run, animate=False)

    def status(name: str) -> InstanceStatus:
        return next(i.status for i in orchestrator.snapshot().instances if i.name == name)

    async with app.run_test(size=(120, 35)) as pilot:
        await wait_for(
            lambda: any(
                b.key == "/hungry" and b.level is BudgetLevel.EXCEEDED
                for b in orchestrator.snapshot().budgets.budgets
            ),
            "/hungry to be exceeded",
        )
        # Warn mode: exceeded, yet still running.
        assert status("hungry") is InstanceStatus.RUNNING
        pid = next(i.pid for i in orchestrator.snapshot().instances if i.name == "hungry")
        assert pid is not None

        await pilot.press("m")
        await wait_for(lambda: orchestrator.budgets.mode == "block", "block mode", timeout=2)
        assert str(app.query_one(ModeBadge).content) == "BLOCK"

        await wait_for(lambda: status("hungry").is_done, "hungry to stop")
        assert status("hungry") is InstanceStatus.STOPPED_BY_BUDGET
        assert group_gone(pid)
        # The other budget is fine: its instance keeps running.
        assert status("calm") is InstanceStatus.RUNNING

        control.stop_all()
        await wait_for(lambda: orchestrator.snapshot().finished, "the run to end")
