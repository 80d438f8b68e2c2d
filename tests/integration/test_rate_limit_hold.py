"""``--on-rate-limit``: the run with real simulated instances (their ``rate_limit_event``
lines) and an injected wall clock: ``wait`` holds launches until the reset time and then goes
on; what already started is not touched; a stop, block mode and the lifecycle still rule."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from orchestrator import simulator
from orchestrator.config import BudgetConfig, InstanceSpec, RunConfig
from orchestrator.palette import Palette
from orchestrator.process import ChildProcess, Spawner
from orchestrator.ratelimits import HoldState, OnRateLimit
from orchestrator.report import format_notice, progress_report, summary_report
from orchestrator.run import Orchestrator
from orchestrator.state import InstanceStatus, Notice, NoticeKind
from orchestrator.summary import summary_dict

S = InstanceStatus
SIM = (sys.executable, str(Path(simulator.__file__)))
NOW = 1_796_048_400.0  # Mon 2026-11-30 14:20 UTC: the injected wall clock starts here
PLAIN = Palette(False)


@pytest.fixture(autouse=True)
def utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


class Wall:
    """The injected wall clock: moves only when a test moves it."""

    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


def ok(name: str, key: str = "/a", prompt: str = "go") -> InstanceSpec:
    return InstanceSpec(name, f"{key} {prompt}", key, claude_args=("--sim-calls", "1"))


def rejected(name: str, reset_in: float = 3600.0, key: str = "/r") -> InstanceSpec:
    args = ("--sim-rate-limit", "rejected", "--sim-rate-limit-reset", f"@{NOW + reset_in}")
    return InstanceSpec(name, f"{key} go", key, claude_args=args)


def orchestrator(
    *specs: InstanceSpec,
    policy: OnRateLimit = OnRateLimit.WAIT,
    wall: Wall | None = None,
    concurrent: int = 1,
    budgets: BudgetConfig | None = None,
    process_factory: Callable[[], Any] | None = None,
) -> tuple[Orchestrator, list[Notice]]:
    config = RunConfig(
        instances=specs,
        budgets=budgets or BudgetConfig(),
        claude_cmd=SIM,
        max_concurrent=concurrent,
        on_rate_limit=policy,
    )
    orch = Orchestrator(
        config, wall_clock=wall or Wall(), rate_limit_poll_s=0.01, process_factory=process_factory
    )
    notices: list[Notice] = []
    orch.subscribe(lambda e: notices.append(e) if isinstance(e, Notice) else None)
    return orch, notices


def status(orch: Orchestrator, name: str) -> InstanceStatus:
    return next(i.status for i in orch.snapshot().instances if i.name == name)


async def until(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        await asyncio.sleep(0.01)


def rate_lines(notices: Sequence[Notice]) -> list[str]:
    return [n.message for n in notices if n.kind is NoticeKind.RATE]


def test_wait_holds_launches_until_the_reset_then_goes_on() -> None:
    wall = Wall()
    orch, notices = orchestrator(rejected("r"), ok("a"), ok("b"), wall=wall)

    async def scenario() -> int:
        run = asyncio.create_task(orch.run())
        await until(lambda: status(orch, "r").is_done)
        assert orch.rate_limits.state is HoldState.HOLDING
        await asyncio.sleep(0.3)  # real time passes, the injected clock does not
        assert (status(orch, "a"), status(orch, "b")) == (S.PENDING, S.PENDING)
        snapshot = orch.snapshot()
        assert snapshot.rate_limits is not None and snapshot.rate_limits.seconds_left == 3600
        head = progress_report(snapshot, PLAIN).splitlines()[0]
        assert head.endswith("1/3 done, 0 tokens, $0.0000, HOLD 1:00:00 until 15:20"), head
        wall.now = NOW + 3599
        await asyncio.sleep(0.1)
        assert status(orch, "a") is S.PENDING
        wall.now = NOW + 3600
        return await asyncio.wait_for(run, 20)

    code = asyncio.run(scenario())
    assert code == 1  # r failed: its CLI was refused
    assert [status(orch, n) for n in "rab"] == [S.FAILED, S.SUCCEEDED, S.SUCCEEDED]
    assert rate_lines(notices) == [
        "5h window LIMIT, resets 15:20",
        "holding new launches until 15:20 (1:00:00 from now): the 5h window resets then",
        "launches held: 0:01 left, until 15:20",  # a countdown (every 5 minutes)
        "5h window reset time reached: launching again",
    ]
    hold = next(n for n in notices if "holding" in n.message)
    assert hold.warning and format_notice(hold, PLAIN).startswith("[0:00] RATE   holding")
    limits = summary_dict(orch.snapshot(), code)["rate_limits"]
    assert limits["hold"] == {"state": "open", "until": None, "holds": 1, "held_s": 3600.0}
    assert limits["windows"]["five_hour"]["status"] == "rejected"
    assert limits["events"] == 1
    assert "  subscription windows: 5h reset at 15:20" in summary_report(
        orch.snapshot(), code, PLAIN
    )


def test_continue_launches_at_once_and_still_reports_the_window() -> None:
    orch, notices = orchestrator(rejected("r"), ok("a"), policy=OnRateLimit.CONTINUE)
    code = asyncio.run(asyncio.wait_for(orch.run(), 30))  # the injected clock never moves
    assert code == 1 and status(orch, "a") is S.SUCCEEDED
    assert rate_lines(notices) == ["5h window LIMIT, resets 15:20"]
    view = orch.snapshot().rate_limits
    assert view is not None and (view.hold, view.holds) == (HoldState.OPEN, 0)
    report = summary_report(orch.snapshot(), code, PLAIN)
    assert "  subscription windows: 5h LIMIT resets 15:20" in report


def test_a_reset_time_already_past_does_not_hold() -> None:
    orch, notices = orchestrator(rejected("r", reset_in=-120), ok("a"))
    code = asyncio.run(asyncio.wait_for(orch.run(), 30))
    assert code == 1 and status(orch, "a") is S.SUCCEEDED
    assert rate_lines(notices)[-1] == "5h window rejected, but its reset time 14:18 has passed"


def test_warnings_from_the_simulator_are_shown_once_and_cost_no_token() -> None:
    warn = ("--sim-rate-limit", "allowed_warning", "--sim-rate-limit-reset", f"@{NOW + 7200}")
    specs = [
        InstanceSpec(f"w{i}", "/a go", "/a", claude_args=("--sim-calls", "2", *warn))
        for i in range(3)
    ]
    orch, notices = orchestrator(*specs, concurrent=3)
    assert asyncio.run(asyncio.wait_for(orch.run(), 30)) == 0
    assert rate_lines(notices) == ["5h window 83%, resets 16:20"]  # three reports, one line
    snapshot = orch.snapshot()
    per_instance = simulator.expected_usage(2, 1200, 400, 200, 3000)
    assert snapshot.total_usage.total == 3 * sum(per_instance.values())
    assert all(i.skipped_lines == 0 for i in snapshot.instances)
    assert snapshot.rate_limits is not None and snapshot.rate_limits.events == 3


class GatedProcess(ChildProcess):
    """A child whose spawn waits for ``gate`` when its prompt says SLOW: still ``starting``."""

    def __init__(self, spawner: Spawner, gate: asyncio.Event) -> None:
        super().__init__(spawner)
        self._gate = gate

    async def start(
        self,
        argv: Sequence[str],
        on_line: Callable[[bytes], None],
        keep_line: Callable[[bytes], bool],
        on_spawned: Callable[[Any], None],
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        if "SLOW" in argv[-1]:
            await self._gate.wait()
        await super().start(argv, on_line, keep_line, on_spawned, cwd, env)


def test_a_rejection_arriving_while_an_instance_starts_holds_only_what_is_not_launched() -> None:
    """b's launch was decided (it is ``starting``) when r's rejection arrives: b runs; c waits."""
    wall = Wall()
    spawner = Spawner()

    async def scenario() -> tuple[int, Orchestrator]:
        gate = asyncio.Event()
        orch, _ = orchestrator(
            rejected("r"),
            ok("b", prompt="SLOW"),
            ok("c"),
            wall=wall,
            concurrent=3,
            process_factory=lambda: GatedProcess(spawner, gate),
        )
        run = asyncio.create_task(orch.run())
        await until(lambda: status(orch, "r").is_done)
        assert orch.rate_limits.state is HoldState.HOLDING
        assert (status(orch, "b"), status(orch, "c")) == (S.STARTING, S.PENDING)
        gate.set()
        await until(lambda: status(orch, "b").is_done)
        assert status(orch, "b") is S.SUCCEEDED and status(orch, "c") is S.PENDING
        wall.now = NOW + 3600
        return await asyncio.wait_for(run, 20), orch

    try:
        code, orch = asyncio.run(scenario())
    finally:
        spawner.close()
    assert code == 1 and status(orch, "c") is S.SUCCEEDED


def test_a_stop_during_the_hold_cancels_what_waits_at_once() -> None:
    orch, _ = orchestrator(rejected("r", reset_in=5 * 3600), ok("a"), ok("b"))

    async def scenario() -> int:
        run = asyncio.create_task(orch.run())
        await until(lambda: orch.rate_limits.state is HoldState.HOLDING)
        await until(lambda: status(orch, "r").is_done)
        orch.interrupt(signal.SIGINT)
        return await asyncio.wait_for(run, 5)  # not five hours

    assert asyncio.run(scenario()) == 130
    assert [status(orch, n) for n in "ab"] == [S.CANCELLED, S.CANCELLED]
    assert orch.snapshot().rate_limits is not None


def test_block_mode_still_decides_each_launch_after_the_hold() -> None:
    """x exceeds /a and is stopped; r is refused; y (on /a) waits out the hold and is then
    blocked by its budget, not launched."""
    wall = Wall()
    budgets = BudgetConfig(command_tokens={"/a": 1000}, mode="block")
    x = InstanceSpec("x", "/a go", "/a", claude_args=("--sim-calls", "3", "--sim-delay", "0.05"))
    orch, notices = orchestrator(x, rejected("r"), ok("y"), wall=wall, budgets=budgets)

    async def scenario() -> int:
        run = asyncio.create_task(orch.run())
        await until(lambda: orch.rate_limits.state is HoldState.HOLDING)
        await asyncio.sleep(0.2)
        assert status(orch, "y") is S.PENDING
        wall.now = NOW + 3600
        return await asyncio.wait_for(run, 20)

    code = asyncio.run(scenario())
    assert [status(orch, n) for n in "xry"] == [S.STOPPED_BY_BUDGET, S.FAILED, S.BLOCKED]
    assert code == 1
    y = next(i for i in orch.snapshot().instances if i.name == "y")
    assert y.pid is None and not y.usage
    released = next(i for i, n in enumerate(notices) if "launching again" in n.message)
    blocked = next(i for i, n in enumerate(notices) if n.kind is NoticeKind.BLOCK)
    assert released < blocked
