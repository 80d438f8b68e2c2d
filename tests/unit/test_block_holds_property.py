"""Block holds whatever the timing: random schedules of many instances, slow spawns, first
lines at random times, random budgets, mode flips and stop requests.

The orchestrator runs for real, in this process, on an event loop; only its processes are
fakes that print stream-json lines on a schedule (``process_factory``). After every line is
handled, and after every flip or stop, the test checks the rule: in block mode no instance
charged to an exceeded budget is still starting or running. It also checks that nothing is
launched while its budget is exceeded, that no instance whose budget was exceeded in block
mode when it finished ends ``succeeded``, and that every budget's ``used`` is the exact sum
of what its instances printed.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from budget_core import BudgetManager, Mode, TokenUsage
from orchestrator.config import BudgetConfig, InstanceSpec, RunConfig
from orchestrator.process import ProcessExit, SpawnAbandoned
from orchestrator.run import Orchestrator
from orchestrator.state import InstanceStatus

MODEL = "claude-sonnet-4-5"
_pids = itertools.count(10_000_000)


@dataclass(frozen=True)
class Call:
    input: int
    cache_read: int
    output: int

    @property
    def usage(self) -> TokenUsage:
        return TokenUsage(input=self.input, output=self.output, cache_read=self.cache_read)


@dataclass(frozen=True)
class Script:
    """What one fake process does."""

    spawn_delay: float  # a slow spawn: the instance stays ``starting`` this long
    first_line_delay: float
    gap: float  # between lines
    calls: tuple[Call, ...]
    linger_lines: int  # lines it still prints after SIGTERM
    spawn_fails: bool = False


def lines_for(calls: Sequence[Call], session: str = "s") -> list[bytes]:
    out = [{"type": "system", "subtype": "init", "session_id": session, "model": MODEL}]
    for n, c in enumerate(calls):
        out.append(
            {
                "type": "stream_event",
                "event": {
                    "type": "message_start",
                    "message": {
                        "id": f"msg_{n}",
                        "model": MODEL,
                        "usage": {
                            "input_tokens": c.input,
                            "cache_read_input_tokens": c.cache_read,
                            "output_tokens": 1,
                        },
                    },
                },
            }
        )
        out.append(
            {
                "type": "stream_event",
                "event": {"type": "message_delta", "usage": {"output_tokens": c.output}},
            }
        )
    total = sum((c.usage for c in calls), TokenUsage())
    out.append(
        {
            "type": "result",
            "subtype": "success",
            "is_error": False,
            "usage": {
                "input_tokens": total.input,
                "output_tokens": total.output,
                "cache_read_input_tokens": total.cache_read,
            },
        }
    )
    return [json.dumps(line).encode() for line in out]


@dataclass
class Checker:
    """Collects every breach of the rules, with the moment it was seen."""

    orchestrator: Orchestrator | None = None
    violations: list[str] = field(default_factory=list)

    @property
    def orch(self) -> Orchestrator:
        assert self.orchestrator is not None
        return self.orchestrator

    def blocked_key(self, key: str) -> bool:
        budgets = self.orch.budgets
        return budgets.mode == "block" and bool(budgets.exceeded_for(key))

    def check_rule(self, when: str) -> None:
        for view in self.orch.snapshot().instances:
            if view.status in (InstanceStatus.STARTING, InstanceStatus.RUNNING) and (
                self.blocked_key(view.budget_key)
            ):
                self.violations.append(f"{when}: {view.name} {view.status} on an exceeded budget")


class FakeProcess:
    def __init__(self, scripts: dict[str, Script], checker: Checker) -> None:
        self._scripts = scripts
        self._checker = checker
        self.pid: int | None = None
        self._done: asyncio.Future[int] | None = None
        self._term = asyncio.Event()
        self._killed = False
        self.printed = TokenUsage()
        self.name = ""
        self._abandoned = False

    def abandon(self) -> None:
        self._abandoned = True

    async def start(
        self,
        argv: Sequence[str],
        on_line: Callable[[bytes], None],
        keep_line: Callable[[bytes], bool],
        on_spawned: Callable[[Any], None],
        cwd: str | None = None,
        env: Any = None,
    ) -> None:
        self.name = next(a for a in argv if a in self._scripts)  # the prompt: its name
        script = self._scripts[self.name]
        key = next(i.budget_key for i in self._checker.orch.config.instances if i.name == self.name)
        if self._checker.blocked_key(key):
            self._checker.violations.append(f"{self.name} launched on an exceeded budget")
        FAKES.append(self)
        await asyncio.sleep(script.spawn_delay)
        if self._abandoned:
            raise SpawnAbandoned
        if script.spawn_fails:
            raise OSError(2, "No such file or directory")
        self.pid = next(_pids)
        self._done = asyncio.get_running_loop().create_future()
        on_spawned(self)
        asyncio.get_running_loop().create_task(self._print(script, on_line, key))

    async def _print(self, script: Script, on_line: Callable[[bytes], None], key: str) -> None:
        assert self._done is not None
        await asyncio.sleep(script.first_line_delay)
        calls = iter(script.calls)
        left_after_term: int | None = None
        # The session is named after the instance: a resumed process (--resume NAME, with
        # the resume prompt) is known by it.
        for line in lines_for(script.calls, self.name):
            if self._killed:
                break
            if self._term.is_set():
                left_after_term = (
                    script.linger_lines if left_after_term is None else left_after_term
                )
                if left_after_term == 0:
                    break
                left_after_term -= 1
            # What the stream shows: the start's placeholder output of 1, then the exact one.
            if b'"message_start"' in line:
                call = next(calls)
                self.printed += TokenUsage(input=call.input, output=1, cache_read=call.cache_read)
            elif b'"message_delta"' in line:
                self.printed += TokenUsage(output=call.output - 1)
            on_line(line)
            self._checker.check_rule(f"after a line of {self.name}")
            await asyncio.sleep(script.gap)
        else:
            if self._checker.blocked_key(key) and not self._killed:
                FINISHED_ON_EXCEEDED.add(self.name)
            self._done.set_result(0)
            return
        self._done.set_result(-signal.SIGKILL if self._killed else -signal.SIGTERM)

    def signal_group(self, sig: int) -> bool:
        if self._done is None or self._done.done():
            return False
        if sig == signal.SIGKILL:
            self._killed = True
        self._term.set()
        return True

    async def wait(self) -> ProcessExit:
        assert self._done is not None
        return ProcessExit(await self._done, "")


FAKES: list[FakeProcess] = []
FINISHED_ON_EXCEEDED: set[str] = set()

calls = st.builds(
    Call,
    input=st.integers(0, 3000),
    cache_read=st.integers(0, 3000),
    output=st.integers(1, 2000),
)
scripts = st.builds(
    Script,
    spawn_delay=st.sampled_from([0.0, 0.0, 0.001, 0.005, 0.02]),
    first_line_delay=st.sampled_from([0.0, 0.0, 0.002, 0.01]),
    gap=st.sampled_from([0.0, 0.0, 0.001, 0.003]),
    calls=st.lists(calls, min_size=1, max_size=4).map(tuple),
    linger_lines=st.integers(0, 2),
    spawn_fails=st.sampled_from([False] * 9 + [True]),
)
keys = st.sampled_from(["/a", "/b", "/c"])


@st.composite
def schedules(draw: st.DrawFn) -> dict[str, Any]:
    n = draw(st.integers(1, 32))
    return {
        "instances": [(f"i{k}", draw(keys), draw(scripts)) for k in range(n)],
        "limits": {key: draw(st.integers(1, 40_000)) for key in draw(st.sets(keys, max_size=3))},
        "overall": draw(st.none() | st.integers(1, 120_000)),
        "mode": draw(st.sampled_from(["warn", "block"])),
        "max_concurrent": draw(st.integers(1, 32)),
        # (seconds into the run, action): flip the mode, or stop one instance
        "actions": draw(
            st.lists(
                st.tuples(
                    st.sampled_from([0.0, 0.001, 0.005, 0.01, 0.03]),
                    st.sampled_from(["flip"]) | st.integers(0, n - 1).map(lambda i: f"i{i}"),
                ),
                max_size=4,
            )
        ),
    }


def run_schedule(schedule: dict[str, Any]) -> tuple[Orchestrator, Checker]:
    FAKES.clear()
    FINISHED_ON_EXCEEDED.clear()
    specs = tuple(InstanceSpec(name, name, key) for name, key, _ in schedule["instances"])
    run = RunConfig(
        instances=specs,
        budgets=BudgetConfig(overall_tokens=schedule["overall"], command_tokens=schedule["limits"]),
        claude_cmd=("fake-claude",),
        max_concurrent=schedule["max_concurrent"],
        stop_grace_s=0.05,
    )
    manager = BudgetManager(schedule["mode"])
    if schedule["overall"]:
        manager.set_overall(tokens=schedule["overall"])
    for key, limit in schedule["limits"].items():
        manager.set_budget(key, tokens=limit)
    checker = Checker()
    by_name = {name: script for name, _, script in schedule["instances"]}
    orch = Orchestrator(run, budgets=manager, process_factory=lambda: FakeProcess(by_name, checker))
    checker.orchestrator = orch
    orch.hold_when_paused = schedule.get("hold", False)  # as under the monitor

    async def act(at: float, what: str) -> None:
        await asyncio.sleep(at)
        if what == "flip":
            mode: Mode = "warn" if orch.budgets.mode == "block" else "block"
            orch.set_enforcement_mode(mode)
        elif what.startswith(("raise:", "lower:")):  # a limit changed (+ in the monitor)
            verb, key = what.split(":")
            orch.set_limit(key, tokens=10**9 if verb == "raise" else 1)
        elif what == "stop_all":  # q in the monitor
            orch.stop_all()
        elif what == "resume:*":  # r on every blocked or stopped instance, at once
            for view in orch.snapshot().instances:
                orch.resume_instance(view.name)
        elif what.startswith("resume:"):  # r in the monitor
            orch.resume_instance(what.removeprefix("resume:"))
        else:
            orch.stop_instance(what)
        checker.check_rule(f"after {what}")

    async def main() -> None:
        actions = [asyncio.create_task(act(at, what)) for at, what in schedule["actions"]]
        await asyncio.wait_for(orch.run(), 30)
        for task in actions:
            task.cancel()

    asyncio.run(main())
    return orch, checker


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(schedules())
def test_block_holds_over_random_schedules(schedule: dict[str, Any]) -> None:
    orch, checker = run_schedule(schedule)
    assert checker.violations == []
    snapshot = orch.snapshot()
    views = {v.name: v for v in snapshot.instances}
    assert all(v.status.is_done for v in views.values()), views
    # Nothing ends succeeded whose budget was exceeded in block mode when it finished.
    for name in FINISHED_ON_EXCEEDED:
        assert views[name].status is not InstanceStatus.SUCCEEDED, name
    # Exact: what each fake printed was counted, once; budgets hold the sums.
    for fake in FAKES:
        assert views[fake.name].usage == fake.printed, fake.name
    spend = snapshot.budgets.spend
    for key in {v.budget_key for v in views.values()}:
        counted = sum((v.usage for v in views.values() if v.budget_key == key), TokenUsage())
        assert (spend[key].usage if key in spend else TokenUsage()) == counted
    assert snapshot.budgets.total.usage == sum((v.usage for v in views.values()), TokenUsage())
    for budget in snapshot.budgets.budgets:
        assert budget.used == (
            snapshot.total_usage.total
            if budget.key == "overall"
            else spend[budget.key].usage.total
            if budget.key in spend
            else 0
        )


def test_a_budget_crossed_by_the_first_line_stops_all_sixteen_starting_together() -> None:
    """The first version's failure, in-process: 16 slow spawns, the first line crosses."""
    script = Script(0.02, 0.0, 0.001, (Call(900, 900, 100), Call(900, 900, 100)), 0)
    schedule = {
        "instances": [(f"i{k}", "/a", script) for k in range(16)],
        "limits": {"/a": 1800},
        "overall": None,
        "mode": "block",
        "max_concurrent": 16,
        "actions": [],
    }
    orch, checker = run_schedule(schedule)
    assert checker.violations == []
    statuses = {v.status for v in orch.snapshot().instances}
    assert InstanceStatus.SUCCEEDED not in statuses
    assert statuses <= {InstanceStatus.STOPPED_BY_BUDGET, InstanceStatus.BLOCKED}


def test_a_stop_asked_for_before_the_spawn_means_no_process_at_all() -> None:
    script = Script(0.05, 0.0, 0.001, (Call(10, 0, 10),), 0)
    schedule = {
        "instances": [("i0", "/a", script)],
        "limits": {},
        "overall": None,
        "mode": "warn",
        "max_concurrent": 1,
        "actions": [(0.01, "i0")],
    }
    orch, _ = run_schedule(schedule)
    (view,) = orch.snapshot().instances
    assert view.status is InstanceStatus.CANCELLED, view
    assert view.error == "stopped by request"
    assert [fake.pid for fake in FAKES] == [None]  # abandoned: never spawned


def test_the_lifecycle_has_one_way_through() -> None:
    S = InstanceStatus
    assert S.PENDING.can_become(S.STARTING) and not S.PENDING.can_become(S.RUNNING)
    assert S.STARTING.can_become(S.STOPPING) and not S.STARTING.can_become(S.SUCCEEDED)
    assert S.STOPPING.can_become(S.STOPPED_BY_BUDGET) and not S.STOPPING.can_become(S.SUCCEEDED)
    ends = [s for s in S if s.is_done]
    # An end is final, but for continuing a blocked or stopped instance within the run.
    assert all(not end.can_become(other) for end in ends for other in S if other != S.RESUMING)
    assert {end for end in ends if end.can_become(S.RESUMING)} == {
        S.BLOCKED,
        S.STOPPED_BY_BUDGET,
        S.CANCELLED,
    }
    assert S.RESUMING.can_become(S.STARTING) and S.RESUMING.can_become(S.BLOCKED)
    assert not S.RESUMING.can_become(S.RUNNING) and not S.RESUMING.is_active
    assert {s for s in S if s.is_active} == {S.STARTING, S.RUNNING, S.STOPPING}


@st.composite
def schedules_with_resumes(draw: st.DrawFn) -> dict[str, Any]:
    """Block mode, and actions that raise or lower limits and resume instances, at random
    moments: while instances are decided, spawned slowly, running or stopping."""
    schedule = draw(schedules())
    n = len(schedule["instances"])
    moment = st.sampled_from([0.0, 0.001, 0.003, 0.005, 0.01, 0.02, 0.03, 0.05])
    action = (
        st.sampled_from(["raise:/a", "raise:/b", "lower:/a", "lower:/c", "flip", "resume:*"])
        | st.integers(0, n - 1).map(lambda i: f"resume:i{i}")
        | st.integers(0, n - 1).map(lambda i: f"i{i}")
    )
    schedule["mode"] = "block"
    schedule["limits"] = {"/a": draw(st.integers(1, 20_000)), **schedule["limits"]}
    schedule["limits"].setdefault("/b", draw(st.integers(1, 20_000)))
    schedule["limits"].setdefault("/c", draw(st.integers(1, 20_000)))
    # Random actions, then the user's way out of a pause: resume, raise, resume, quit.
    finale = [(0.035, "resume:*"), (0.045, "raise:*"), (0.055, "resume:*"), (0.08, "stop_all")]
    schedule["actions"] = [*draw(st.lists(st.tuples(moment, action), max_size=8)), *finale]
    schedule["hold"] = True  # paused by a budget, the run waits for r, + or q (stop_all)
    return schedule


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(schedules_with_resumes())
def test_block_holds_while_limits_change_and_instances_resume(schedule: dict[str, Any]) -> None:
    """The rule holds through resumes and limit changes (nothing launched on an exceeded
    budget, nothing left running on one); every process of an instance is counted, once."""
    orch, checker = run_schedule(schedule)
    assert checker.violations == []
    views = {v.name: v for v in orch.snapshot().instances}
    assert all(v.status.is_done for v in views.values()), views
    for name, view in views.items():
        processes = [f for f in FAKES if f.name == name]
        assert view.usage == sum((f.printed for f in processes), TokenUsage()), name
        assert view.launches == len(processes), name  # one process per launch, none twice
    snapshot = orch.snapshot()
    assert snapshot.budgets.total.usage == sum((v.usage for v in views.values()), TokenUsage())
