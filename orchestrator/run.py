"""The run: launches instances, feeds their lines to trackers, charges budgets, enforces.

One-way flow: child stdout -> ``UsageTracker`` -> ``BudgetManager`` -> events and snapshots
for subscribers (headless reporter, TUI). Subscribers act only through the ``RunControl``
methods (``set_enforcement_mode``, ``stop_all``, ``stop_instance``).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import TypeVar

from budget_core import (
    OVERALL,
    BudgetEvent,
    BudgetLevel,
    BudgetManager,
    BurnRate,
    LaunchAction,
    LevelCrossed,
    Mode,
    ModeChanged,
    PriceTable,
    Unit,
    UsageTracker,
    format_budget_amounts,
    format_percent,
    format_tokens,
    line_may_carry_usage,
)
from budget_core.budgets import BudgetState
from orchestrator.config import InstanceSpec, RunConfig, instance_argv
from orchestrator.process import ChildProcess, ProcessExit
from orchestrator.state import (
    BurnView,
    InstanceStatus,
    InstanceView,
    Notice,
    NoticeKind,
    RunEvent,
    RunListener,
    RunSnapshot,
    StateChanged,
)

T = TypeVar("T")
BURN_SAMPLE_INTERVAL_S = 1.0
_STATE_CHANGED = StateChanged()


@dataclass(eq=False)
class _Instance:
    spec: InstanceSpec
    tracker: UsageTracker = field(default_factory=UsageTracker)
    status: InstanceStatus = InstanceStatus.PENDING
    process: ChildProcess | None = None
    started_at: float | None = None
    ended_at: float | None = None
    exit_code: int | None = None
    error: str | None = None
    stop_as: InstanceStatus | None = None  # set once a stop was asked for, and why
    stop_reason: str | None = None
    charged_cost: float = 0.0
    timers: list[asyncio.TimerHandle] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def key(self) -> str:
        return self.spec.budget_key

    @property
    def is_live(self) -> bool:
        """Started and not yet finished."""
        return self.process is not None and not self.status.is_done


def describe_budget(budget: BudgetState) -> str:
    """``/analyze 35.5K/50K tokens (71%)`` or ``overall $1.20/$2.00 (60%)``."""
    percent = format_percent(budget.used, budget.limit)
    return f"{budget.key} {format_budget_amounts(budget)} ({percent})"


class Orchestrator:
    def __init__(
        self,
        config: RunConfig,
        clock: Callable[[], float] = time.monotonic,
        budgets: BudgetManager | None = None,
        prices: PriceTable | None = None,
    ) -> None:
        self.config = config
        self._clock = clock
        self.budgets = budgets if budgets is not None else budget_manager_for(config)
        self._instances = [_Instance(spec, UsageTracker(prices)) for spec in config.instances]
        self._listeners: list[RunListener] = []
        self._burn = {key: BurnRate() for key in self.budgets.keys}
        self._started_at: float | None = None
        self._ended_at: float | None = None  # elapsed time stops with the run
        self._finished = False
        self._enforcement_ok = True
        self._stop_requested = asyncio.Event()
        self.interrupted_by: int | None = None  # the signal that interrupted the run
        self.budgets.subscribe(self._on_budget_event)

    # -- RunControl ----------------------------------------------------------------------

    def subscribe(self, listener: RunListener) -> Callable[[], None]:
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def set_enforcement_mode(self, mode: Mode) -> None:
        """Switch warn/block now; switching to block stops what an exceeded budget covers."""
        self._guard(self.budgets.set_mode, mode)

    def stop_all(self, reason: str = "stopped by request") -> None:
        """Cancel what has not started and stop what runs (SIGTERM, then SIGKILL)."""
        self._stop_requested.set()
        for inst in self._instances:
            if inst.status is InstanceStatus.PENDING and inst.process is None:
                inst.status = InstanceStatus.CANCELLED
                inst.error = "cancelled before launch"
            else:
                self._stop(inst, InstanceStatus.CANCELLED, reason)
        self._emit(_STATE_CHANGED)

    def stop_instance(self, name: str) -> None:
        for inst in self._instances:
            if inst.name == name:
                if inst.status is InstanceStatus.PENDING and inst.process is None:
                    inst.status, inst.error = InstanceStatus.CANCELLED, "cancelled before launch"
                    self._notice(NoticeKind.STOP, f"{name}: cancelled before launch")
                else:
                    self._stop(inst, InstanceStatus.CANCELLED, "stopped by request")
                self._emit(_STATE_CHANGED)

    def interrupt(self, signum: int) -> None:
        """A signal arrived: stop everything; a second one kills at once."""
        if self.interrupted_by is not None:
            for inst in self._instances:
                if inst.process is not None:
                    inst.process.signal_group(signal.SIGKILL)
            return
        self.interrupted_by = signum
        name = signal.Signals(signum).name
        self._notice(NoticeKind.STOP, f"{name} received: stopping every instance", warning=True)
        self.stop_all(f"interrupted by {name}")

    def kill_now(self, reason: str) -> None:
        """No event loop is left to stop instances gracefully (the monitor failed): kill every
        live process group at once, so none outlives the orchestrator."""
        for inst in self._instances:
            if inst.status.is_done:
                continue
            if inst.process is not None:
                inst.process.signal_group(signal.SIGKILL)
            # stop_as too: a run thread still reading them must not call them failed.
            inst.stop_as, inst.stop_reason = InstanceStatus.CANCELLED, reason
            inst.status, inst.error = InstanceStatus.CANCELLED, reason
            inst.ended_at = inst.ended_at if inst.ended_at is not None else self._clock()

    def snapshot(self) -> RunSnapshot:
        now = self._ended_at if self._ended_at is not None else self._clock()
        budgets = self.budgets.snapshot()
        burn = []
        for key, meter in self._burn.items():
            if self._finished:
                burn.append(BurnView(key, 0.0, None))  # nothing runs: nothing burns
                continue
            token_budget = next((b for b in budgets.for_key(key) if b.unit is Unit.TOKENS), None)
            left = meter.seconds_left(token_budget.remaining) if token_budget else None
            burn.append(BurnView(key, meter.per_minute(), left))
        return RunSnapshot(
            mode=budgets.mode,
            elapsed_s=now - self._started_at if self._started_at is not None else 0.0,
            instances=tuple(self._view(inst, now) for inst in self._instances),
            budgets=budgets,
            burn=tuple(burn),
            enforcement_ok=self._enforcement_ok,
            finished=self._finished,
        )

    # -- the run -------------------------------------------------------------------------

    async def run(self) -> int:
        """Run every instance; returns the exit status of the whole run."""
        self._started_at = self._clock()
        sampler = asyncio.create_task(self._sample_burn())
        slots = asyncio.Semaphore(max(1, self.config.max_concurrent))
        tasks: list[asyncio.Task[None]] = []
        try:
            for index, inst in enumerate(self._instances):
                await slots.acquire()
                if not self._may_launch(inst):
                    slots.release()
                    continue
                tasks.append(asyncio.create_task(self._run_instance(inst, slots)))
                if self.config.startup_delay_s > 0 and index < len(self._instances) - 1:
                    await self._pause(self.config.startup_delay_s)
            await asyncio.gather(*tasks)
        finally:
            sampler.cancel()
            self._ended_at = self._clock()
            self._finished = True
            self._sample_now()
            self._emit(_STATE_CHANGED)
        return self.exit_code()

    def exit_code(self) -> int:
        if self.interrupted_by is not None:
            return 128 + self.interrupted_by
        statuses = {inst.status for inst in self._instances}
        if statuses & {InstanceStatus.FAILED, InstanceStatus.TIMED_OUT}:
            return 1
        if statuses & {InstanceStatus.BLOCKED, InstanceStatus.STOPPED_BY_BUDGET}:
            return 3
        if InstanceStatus.CANCELLED in statuses:
            return 130  # the user quit the monitor: as if interrupted
        return 0

    def _may_launch(self, inst: _Instance) -> bool:
        if inst.status is not InstanceStatus.PENDING:
            return False  # cancelled while waiting for a slot
        if self._stop_requested.is_set():
            inst.status, inst.error = InstanceStatus.CANCELLED, "cancelled before launch"
            return False
        if not self._enforcement_ok:
            return True
        decision = self._guard(self.budgets.decide_launch, inst.key)
        if decision is None or decision.action is LaunchAction.ALLOW:
            return True
        if decision.action is LaunchAction.BLOCK:
            inst.status, inst.error = InstanceStatus.BLOCKED, decision.reason
            self._notice(
                NoticeKind.BLOCK, f"{inst.name}: not launched, {decision.reason}", warning=True
            )
            self._emit(_STATE_CHANGED)
            return False
        self._notice(NoticeKind.LEVEL, f"{inst.name}: {decision.reason}", warning=True)
        return True

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop_requested.wait(), seconds)

    async def _run_instance(self, inst: _Instance, slots: asyncio.Semaphore) -> None:
        try:
            await self._launch_and_wait(inst)
        finally:
            for timer in inst.timers:
                timer.cancel()
            slots.release()
            self._emit(_STATE_CHANGED)

    async def _launch_and_wait(self, inst: _Instance) -> None:
        argv = instance_argv(self.config, inst.spec)
        inst.started_at = self._clock()
        inst.status = InstanceStatus.RUNNING  # starting: a stop now is applied once it has a pid
        try:
            inst.process = await ChildProcess.start(
                argv,
                on_line=partial(self._on_line, inst),
                keep_line=line_may_carry_usage,
                cwd=self.config.workspace,
            )
        except OSError as exc:
            inst.ended_at = self._clock()
            inst.status = InstanceStatus.FAILED
            inst.error = f"cannot start {argv[0]}: {exc.strerror or exc}"
            self._notice(NoticeKind.FAIL, f"{inst.name}: {inst.error}", warning=True)
            return
        self._notice(
            NoticeKind.LAUNCH, f"{inst.name}: launched ({inst.key}), pid {inst.process.pid}"
        )
        loop = asyncio.get_running_loop()
        if self.config.timeout_s:
            reason = f"timed out after {self.config.timeout_s:g}s"
            inst.timers.append(
                loop.call_later(
                    self.config.timeout_s, self._stop, inst, InstanceStatus.TIMED_OUT, reason
                )
            )
        if inst.stop_as is not None:  # asked to stop while it was starting
            self._signal_stop(inst)
        elif self._stop_requested.is_set():
            self._stop(inst, InstanceStatus.CANCELLED, "stopped by request")
        self._finish(inst, await inst.process.wait())

    def _finish(self, inst: _Instance, exit: ProcessExit) -> None:
        inst.ended_at = self._clock()
        inst.exit_code = exit.returncode
        tracker = inst.tracker
        if inst.stop_as is not None:
            inst.status, inst.error = inst.stop_as, inst.stop_reason
        elif tracker.is_final and not tracker.is_error and exit.returncode == 0:
            inst.status = InstanceStatus.SUCCEEDED
        else:
            inst.status, inst.error = InstanceStatus.FAILED, _failure_reason(tracker, exit)
        counted = format_tokens(tracker.usage.total)
        kind = "final" if tracker.is_final else "live count"
        if inst.status is InstanceStatus.SUCCEEDED:
            self._notice(NoticeKind.DONE, f"{inst.name}: succeeded, {counted} tokens ({kind})")
        else:
            detail = f": {inst.error}" if inst.error else ""
            self._notice(
                NoticeKind.FAIL if inst.status is InstanceStatus.FAILED else NoticeKind.STOP,
                f"{inst.name}: {inst.status}{detail}; {counted} tokens ({kind})",
                warning=inst.status is not InstanceStatus.CANCELLED,
            )

    # -- counting ------------------------------------------------------------------------

    def _on_line(self, inst: _Instance, line: bytes) -> None:
        tracker = inst.tracker
        delta = tracker.feed_line(line)
        cost = tracker.cost_usd
        if delta or cost != inst.charged_cost:
            cost_delta, inst.charged_cost = cost - inst.charged_cost, cost
            if self._enforcement_ok:
                self._guard(self.budgets.charge, inst.key, inst.name, delta, cost_delta)
            self._emit(_STATE_CHANGED)

    # -- enforcement ---------------------------------------------------------------------

    def _on_budget_event(self, event: BudgetEvent) -> None:
        if isinstance(event, LevelCrossed) and event.rising:
            budget = event.budget
            self._notice(
                NoticeKind.LEVEL,
                f"budget {describe_budget(budget)} is {budget.level.upper()}",
                level=budget.level,
                warning=True,
            )
            if budget.level is BudgetLevel.EXCEEDED and self.budgets.mode == "block":
                self._enforce(budget)
        elif isinstance(event, ModeChanged):
            self._notice(
                NoticeKind.MODE,
                f"enforcement mode {event.mode.upper()} (was {event.previous.upper()})",
                warning=event.mode == "block",
            )
            if event.mode == "block":
                for budget in self.budgets.snapshot().exceeded:
                    self._enforce(budget)
            self._emit(_STATE_CHANGED)

    def _enforce(self, budget: BudgetState) -> None:
        """Block mode: stop every running instance charged to an exceeded budget."""
        for inst in self._instances:
            if inst.is_live and (budget.key == OVERALL or inst.key == budget.key):
                self._stop(
                    inst,
                    InstanceStatus.STOPPED_BY_BUDGET,
                    f"budget {budget.key} ({budget.unit}) exceeded",
                )

    def _stop(self, inst: _Instance, status: InstanceStatus, reason: str) -> None:
        if inst.stop_as is not None or inst.status.is_done:
            return
        inst.stop_as, inst.stop_reason = status, reason
        if inst.process is None:
            return  # still starting: _launch_and_wait signals it once it has a pid
        inst.status = InstanceStatus.STOPPING
        self._notice(NoticeKind.STOP, f"{inst.name}: stopping, {reason}", warning=True)
        self._signal_stop(inst)
        self._emit(_STATE_CHANGED)

    def _signal_stop(self, inst: _Instance) -> None:
        assert inst.process is not None
        inst.status = InstanceStatus.STOPPING
        inst.process.signal_group(signal.SIGTERM)
        loop = asyncio.get_running_loop()
        inst.timers.append(
            loop.call_later(self.config.stop_grace_s, inst.process.signal_group, signal.SIGKILL)
        )

    def _guard(self, call: Callable[..., T], *args: object) -> T | None:
        """Call into the budget system; if it raises, go on without enforcement, loudly."""
        if not self._enforcement_ok:
            return None
        try:
            return call(*args)
        except Exception as exc:  # the run must survive a broken budget system
            self._enforcement_ok = False
            self._notice(
                NoticeKind.ERROR,
                f"budget system failed ({type(exc).__name__}: {exc}); "
                "the run goes on WITHOUT budget enforcement",
                warning=True,
            )
            return None

    # -- burn rate -----------------------------------------------------------------------

    async def _sample_burn(self) -> None:
        while True:
            self._sample_now()
            await asyncio.sleep(BURN_SAMPLE_INTERVAL_S)

    def _sample_now(self) -> None:
        if not self._burn:
            return
        snapshot = self.budgets.snapshot()
        now = self._clock()
        for key, meter in self._burn.items():
            spent = snapshot.total if key == OVERALL else snapshot.spend.get(key)
            meter.add(now, spent.usage.total if spent else 0)

    # -- events --------------------------------------------------------------------------

    def _notice(
        self,
        kind: NoticeKind,
        message: str,
        level: BudgetLevel | None = None,
        warning: bool = False,
    ) -> None:
        at = self._clock() - self._started_at if self._started_at is not None else 0.0
        self._emit(Notice(at, kind, message, level, warning))

    def _emit(self, event: RunEvent) -> None:
        for listener in tuple(self._listeners):
            listener(event)

    def _view(self, inst: _Instance, now: float) -> InstanceView:
        tracker = inst.tracker
        if inst.started_at is None:
            elapsed = 0.0
        else:
            elapsed = (inst.ended_at if inst.ended_at is not None else now) - inst.started_at
        return InstanceView(
            name=inst.name,
            command=inst.spec.prompt,
            budget_key=inst.key,
            status=inst.status,
            usage=tracker.usage,
            cost_usd=tracker.cost_usd,
            # Nothing spent is nothing estimated (an instance blocked or not yet started).
            cost_is_estimate=tracker.cost_is_estimate and bool(tracker.usage),
            final=tracker.is_final,
            elapsed_s=elapsed,
            pid=inst.process.pid if inst.process is not None else None,
            exit_code=inst.exit_code,
            error=inst.error,
            unknown_models=tuple(sorted(tracker.unknown_models)),
            skipped_lines=tracker.skipped_lines,
        )


def _failure_reason(tracker: UsageTracker, exit: ProcessExit) -> str:
    if tracker.is_error and tracker.error_text:
        return tracker.error_text
    if exit.signal is not None:
        try:
            name = signal.Signals(exit.signal).name
        except ValueError:
            name = f"signal {exit.signal}"
        return f"killed by {name}"
    if exit.returncode != 0:
        last = next((ln for ln in reversed(exit.stderr_tail.splitlines()) if ln.strip()), "")
        return f"exit code {exit.returncode}" + (f": {last.strip()[:300]}" if last else "")
    return "no result line"


def budget_manager_for(config: RunConfig) -> BudgetManager:
    """Budgets from the merged configuration (instances' max_tokens_per_command last)."""
    spec = config.budgets
    manager = BudgetManager(spec.mode)
    if spec.overall_tokens is not None or spec.overall_usd is not None:
        manager.set_overall(tokens=spec.overall_tokens, usd=spec.overall_usd)
    for key in dict.fromkeys([*spec.command_tokens, *spec.command_usd]):
        manager.set_budget(key, tokens=spec.command_tokens.get(key), usd=spec.command_usd.get(key))
    per_instance: dict[str, int] = {}
    for inst in config.instances:
        if inst.max_tokens is not None and inst.budget_key not in spec.command_tokens:
            # Instances sharing a key may disagree: the strictest limit holds.
            per_instance[inst.budget_key] = min(
                inst.max_tokens, per_instance.get(inst.budget_key, inst.max_tokens)
            )
    for key, limit in per_instance.items():
        manager.set_budget(key, tokens=limit)
    return manager
