"""The run: launches instances, feeds their lines to trackers, charges budgets, enforces.

One-way flow: child stdout -> ``UsageTracker`` -> ``BudgetManager`` -> events and snapshots
for subscribers (headless reporter, TUI). Subscribers act only through the ``RunControl``
methods (``set_enforcement_mode``, ``stop_all``, ``stop_instance``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import secrets
import signal
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol, TypeVar

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
    TokenUsage,
    Unit,
    UsageDiscrepancy,
    UsageTracker,
    format_budget_amounts,
    format_percent,
    format_tokens,
    line_may_carry_usage,
)
from budget_core.budgets import BudgetState
from orchestrator.config import InstanceSpec, RunConfig, instance_argv
from orchestrator.cooperative import max_budget_args
from orchestrator.descendants import child_env, kill_all, strays
from orchestrator.ledger.base import InstanceRecord, WindowSpend
from orchestrator.ledger.session import RunLedger
from orchestrator.process import ChildProcess, ProcessExit, SpawnAbandoned, Spawner
from orchestrator.ratelimits import HoldState, RateLimitBoard, RateNote
from orchestrator.state import (
    RESUMABLE,
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
RECORD_INTERVAL_S = 0.025  # this run's counts reach the ledger within ~100 ms
DEFAULT_RESUME_PROMPT = "Continue where you left off."
# A CLI given --max-budget-usd that has reached it finishes its call and stops itself; the
# orchestrator's own stop follows only if it has not after this long (the backstop).
COOPERATIVE_GRACE_S = 15.0
_STATE_CHANGED = StateChanged()
S = InstanceStatus


class Process(Protocol):
    """What the run needs of a child process (``ChildProcess``; tests inject slow ones)."""

    pid: int | None

    async def start(
        self,
        argv: Sequence[str],
        on_line: Callable[[bytes], None],
        keep_line: Callable[[bytes], bool],
        on_spawned: Callable[[Any], None],
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None: ...

    def signal_group(self, sig: int) -> bool: ...

    def abandon(self) -> None: ...

    async def wait(self) -> ProcessExit: ...


@dataclass(frozen=True, slots=True)
class _StopRequest:
    """A stop asked for: the end it gives the instance, and why."""

    outcome: InstanceStatus
    reason: str


@dataclass(eq=False)
class _Instance:
    spec: InstanceSpec
    token: str  # in its environment (INSTANCE_ENV): finds what it started, wherever it went
    tracker: UsageTracker = field(default_factory=UsageTracker)
    status: InstanceStatus = S.PENDING
    process: Process | None = None  # set the moment it has a pid
    spawning: Process | None = None  # while it is being started
    stop: _StopRequest | None = None
    started_at: float | None = None
    ended_at: float | None = None
    exit_code: int | None = None
    error: str | None = None
    charged_cost: float = 0.0
    reported_discrepancy: UsageDiscrepancy | None = None
    handed_over: tuple[TokenUsage, float, bool] | None = None  # to the ledger, last time
    rate_limit_events: int = 0  # of its tracker's, already handed to the board
    timers: list[asyncio.TimerHandle] = field(default_factory=list)
    # Earlier processes of this instance in this run (resumed with ``r``): their counts.
    prior_usage: TokenUsage = field(default_factory=TokenUsage)
    prior_cost: float = 0.0
    launches: int = 0
    max_budget: float | None = None  # the --max-budget-usd its process was given

    @property
    def usage(self) -> TokenUsage:
        prior = self.prior_usage
        return prior + self.tracker.usage if prior else self.tracker.usage

    @property
    def cost(self) -> float:
        return self.prior_cost + self.tracker.cost_usd

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def key(self) -> str:
        return self.spec.budget_key

    @property
    def has_live_process(self) -> bool:
        return self.process is not None and self.status.is_active


class IllegalTransition(RuntimeError):
    """A bug: the run tried a status change the lifecycle does not have."""


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
        process_factory: Callable[[], Process] | None = None,
        ledger: RunLedger | None = None,
        wall_clock: Callable[[], float] = time.time,
        rate_limit_poll_s: float = 1.0,
    ) -> None:
        self.config = config
        self.ledger = ledger  # writes this run's charges; brings other runs' window spend
        self._clock = clock
        self._spawner = Spawner()
        self._new_process = process_factory or partial(ChildProcess, self._spawner)
        self._prices = prices
        self.resume_prompt = DEFAULT_RESUME_PROMPT
        # With a monitor: a run whose instances a budget blocked or stopped waits (paused)
        # for a raised limit and ``r``, or for the user to quit, instead of ending.
        self.hold_when_paused = False
        self._wake = asyncio.Event()  # an instance was queued again (or the run stops)
        self._launching = False  # the launcher still takes queued instances
        self.budgets = budgets if budgets is not None else budget_manager_for(config)
        run_token = f"{os.getpid()}-{secrets.token_hex(4)}"
        self._instances = [
            _Instance(
                spec,
                f"{run_token}-{i}",
                UsageTracker(
                    prices, resumed=spec.resume_session_id is not None, settled=spec.resume_settled
                ),
            )
            for i, spec in enumerate(config.instances)
        ]
        self._listeners: list[RunListener] = []
        self._failed_listeners: set[int] = set()  # told once, then quietly skipped
        self._burn = {key: BurnRate() for key in self.budgets.keys}
        self._started_at: float | None = None
        self._ended_at: float | None = None  # elapsed time stops with the run
        self._finished = False
        self._enforcement_ok = True
        self._stop_requested = asyncio.Event()
        self._ledger_up = asyncio.Event()  # cleared while the fleet ledger is away
        self._ledger_up.set()
        self._watchers: list[asyncio.Task[None]] = []
        self.interrupted_by: int | None = None  # the signal that interrupted the run
        self.run_error: str | None = None  # an unexpected error that ended the run
        self.budgets.subscribe(self._on_budget_event)
        # Subscription windows the CLIs report; in wait mode they hold launches.
        self.rate_limits = RateLimitBoard(config.on_rate_limit, wall_clock)
        self._rate_limit_poll_s = rate_limit_poll_s

    # -- RunControl ----------------------------------------------------------------------

    def subscribe(self, listener: RunListener) -> Callable[[], None]:
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def set_enforcement_mode(self, mode: Mode) -> None:
        """Switch warn/block now; switching to block stops what an exceeded budget covers."""
        self._guard(self.budgets.set_mode, mode)

    def set_limit(self, key: str, tokens: int | None = None, usd: float | None = None) -> None:
        """Raise or lower a budget's limit now; in block mode a limit that leaves a budget
        exceeded stops its instances at once (raises ``ValueError`` for a bad limit)."""
        self.budgets.set_budget(key, tokens=tokens, usd=usd)
        self._burn.setdefault(key, BurnRate())
        self._enforce_all()
        self._redecide_blocked()
        self._emit(_STATE_CHANGED)

    def resume_instance(self, name: str) -> str | None:
        """Continue a blocked or stopped instance within the run: its session with
        ``--resume`` (fresh if it never started); the launch is decided again as for any
        instance (in block mode an exceeded budget blocks it again). Returns why it cannot
        be resumed, or None."""
        inst = next((i for i in self._instances if i.name == name), None)
        if inst is None:
            return f"no instance {name!r}"
        if inst.status not in RESUMABLE:
            return f"{name} is {inst.status}: only a blocked or stopped instance is resumed"
        if not self._launching or self._stop_requested.is_set():
            return "the run is over" if not self._launching else "the run is stopping"
        self._queue_again(inst, "resumed")
        return None

    def _redecide_blocked(self) -> None:
        """A limit changed: a blocked launch its budgets now allow is queued again."""
        if not self._launching or self._stop_requested.is_set() or not self._enforcement_ok:
            return
        for inst in self._instances:
            if inst.status is S.BLOCKED:
                decision = self._guard(self.budgets.decide_launch, inst.key)
                if decision is not None and decision.allowed:
                    self._queue_again(inst, "its budget allows it now")

    def _queue_again(self, inst: _Instance, why: str) -> None:
        # The session to continue: the one its last process ran (a configured --session-id
        # only once it was used), else the one it was to resume; none: start afresh.
        spec = inst.spec
        session = (
            inst.tracker.session_id
            or spec.resume_session_id
            or (spec.session_id if inst.launches else None)
        )
        inst.prior_usage = inst.usage
        inst.prior_cost += max(inst.tracker.cost_usd, inst.charged_cost)
        settled = inst.tracker.is_final or inst.launches == 0
        inst.tracker = UsageTracker(self._prices, resumed=session is not None, settled=settled)
        if session is not None:
            inst.spec = dataclasses.replace(
                inst.spec, resume_session_id=session, resume_prompt=self.resume_prompt
            )
        inst.charged_cost = 0.0
        inst.reported_discrepancy = None
        inst.stop = inst.process = inst.spawning = None
        inst.ended_at = inst.exit_code = inst.error = None
        inst.timers = []
        self._move(inst, S.RESUMING)
        how = f"continuing session {session}" if session else "from the start"
        self._notice(NoticeKind.LAUNCH, f"{inst.name}: queued again ({why}), {how}")
        self._wake.set()
        self._emit(_STATE_CHANGED)

    def stop_all(self, reason: str = "stopped by request") -> None:
        """Cancel what has not started and stop what runs (SIGTERM, then SIGKILL)."""
        self._stop_requested.set()
        self._wake.set()
        for inst in self._instances:
            self._cancel_or_stop(inst, reason)
        self._emit(_STATE_CHANGED)

    def stop_instance(self, name: str) -> None:
        for inst in self._instances:
            if inst.name == name:
                self._cancel_or_stop(inst, "stopped by request")
                self._emit(_STATE_CHANGED)

    def interrupt(self, signum: int) -> None:
        """A signal arrived: stop everything; a second one kills at once."""
        if self.interrupted_by is not None:
            self._kill_live_groups()
            return
        self.interrupted_by = signum
        name = signal.Signals(signum).name
        self._notice(NoticeKind.STOP, f"{name} received: stopping every instance", warning=True)
        self.stop_all(f"interrupted by {name}")

    def kill_now(self, reason: str) -> None:
        """No event loop is left to stop instances gracefully (the monitor failed): kill every
        live process group at once, so none outlives the orchestrator."""
        self._kill_live_groups()
        self._stop_requested.set()
        self._wake.set()
        for inst in self._instances:
            self._cancel_or_stop(inst, reason, signal_now=False)

    def tell(self, message: str) -> None:
        """A line in the event log for something a subscriber asked that did not happen."""
        self._notice(NoticeKind.ERROR, message, warning=True)

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
            rate_limits=self.rate_limits.view(),
        )

    # -- the run -------------------------------------------------------------------------

    async def run(self) -> int:
        """Run every instance; returns the exit status of the whole run.

        An error of its own (a bug) stops every instance, waits for them all to end, and is
        then raised, for the caller to show: the summary is still complete and exact."""
        self._started_at = self._clock()
        if self.ledger is not None:
            loop = asyncio.get_running_loop()
            self.ledger.start(loop, self._on_window_spend, self._on_ledger_error)
        sampler = asyncio.create_task(self._sample_burn())
        recorder = asyncio.create_task(self._record_spend())
        failure: Exception | None = None
        try:
            try:
                await self._launch_all()
            except Exception as exc:  # a bug: end the run cleanly rather than hang or orphan
                failure = exc
                self._fail_run(exc)
            await asyncio.gather(*self._watchers)
            self._end_unwatched()
        finally:
            sampler.cancel()
            recorder.cancel()
            self._sweep_strays(inst.token for inst in self._instances)
            self._spawner.close()  # only now: its thread's end kills what it started
            self._ended_at = self._clock()
            self._finished = True
            self.record_spend()
            self._sample_now()
            self._emit(_STATE_CHANGED)
        if failure is not None:
            raise failure
        return self.exit_code()

    def _end_unwatched(self) -> None:
        """After a failed run: an instance the failure caught between its launch decision
        and its spawn has no process to wait for; it ends as its stop asked."""
        for inst in self._instances:
            if not inst.status.is_active or inst.process is not None:
                continue
            if inst.stop is None:
                self._end(inst, S.FAILED, "never started: the run failed")
            else:
                self._end(inst, inst.stop.outcome, inst.stop.reason)

    def exit_code(self) -> int:
        if self.interrupted_by is not None:
            return 128 + self.interrupted_by
        statuses = {inst.status for inst in self._instances}
        if self.run_error is not None or statuses & {S.FAILED, S.TIMED_OUT}:
            return 1
        if statuses & {S.BLOCKED, S.STOPPED_BY_BUDGET}:
            return 3
        if S.CANCELLED in statuses:
            return 130  # the user quit the monitor: as if interrupted
        return 0

    async def _launch_all(self) -> None:
        slots = asyncio.Semaphore(max(1, self.config.max_concurrent))
        self._launching = True
        try:
            await self._launch_each(self._instances, slots)
            while await self._queued_again():
                queued = [i for i in self._instances if i.status is S.RESUMING]
                await self._launch_each(queued, slots)
        finally:
            self._launching = False

    async def _queued_again(self) -> bool:
        """Wait until an instance is queued again (True), or until none can be: every
        process has ended and the run does not hold, or the run stops (False)."""
        told = False
        while True:
            if any(i.status is S.RESUMING for i in self._instances):
                return True
            live = [w for w in self._watchers if not w.done()]
            holding = self.hold_when_paused and not self._stop_requested.is_set()
            paused = [i.name for i in self._instances if i.status in RESUMABLE - {S.CANCELLED}]
            if not live and not (holding and paused):
                return False
            if not live and not told:
                told = True
                self._notice(
                    NoticeKind.BLOCK,
                    f"paused: {len(paused)} instance(s) blocked or stopped by a budget; "
                    "raise a limit (+) or resume one (r), or quit (q)",
                    warning=True,
                )
            self._wake.clear()
            wake = asyncio.ensure_future(self._wake.wait())
            try:
                await asyncio.wait([wake, *live], return_when=asyncio.FIRST_COMPLETED)
            finally:
                wake.cancel()

    async def _launch_each(self, instances: Sequence[_Instance], slots: asyncio.Semaphore) -> None:
        last = len(instances) - 1
        for index, inst in enumerate(instances):
            await slots.acquire()
            await self._hold_for_rate_limit()
            await self._ledger_back()
            if not self._may_launch(inst):
                slots.release()
                continue
            await self._launch(inst)
            if inst.process is None:
                slots.release()  # it never started
            else:
                self._watchers.append(asyncio.create_task(self._watch(inst, slots)))
            if self.config.startup_delay_s > 0 and index < last:
                await self._pause(self.config.startup_delay_s)
            else:
                # One spawn per turn of the loop: lines are read and budgets enforced
                # between launches, however many start at once.
                await asyncio.sleep(0)

    def _fail_run(self, exc: Exception) -> None:
        self.run_error = f"{type(exc).__name__}: {exc}"
        self._notice(
            NoticeKind.ERROR,
            f"the run failed ({self.run_error}); stopping every instance",
            warning=True,
        )
        self.stop_all(f"stopped: the run failed ({self.run_error})")

    def _may_launch(self, inst: _Instance) -> bool:
        if inst.status not in (S.PENDING, S.RESUMING):
            return False  # cancelled while waiting for a slot
        if self._stop_requested.is_set():
            self._move(inst, S.CANCELLED, "cancelled before launch")
            return False
        if not self._enforcement_ok:
            return True
        decision = self._guard(self.budgets.decide_launch, inst.key)
        if decision is None or decision.action is LaunchAction.ALLOW:
            return True
        if decision.action is LaunchAction.BLOCK:
            self._move(inst, S.BLOCKED, decision.reason)
            self._notice(
                NoticeKind.BLOCK, f"{inst.name}: not launched, {decision.reason}", warning=True
            )
            self._emit(_STATE_CHANGED)
            return False
        self._notice(NoticeKind.LEVEL, f"{inst.name}: {decision.reason}", warning=True)
        return True

    async def _hold_for_rate_limit(self) -> None:
        """``--on-rate-limit wait``: no launch decision while a window is rejected."""
        if self.rate_limits.state is HoldState.HOLDING:
            await self.rate_limits.wait_open(
                self._stop_requested,
                self._rate_notice,
                lambda: self._emit(_STATE_CHANGED),  # the countdown on show moves
                self._rate_limit_poll_s,
            )

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop_requested.wait(), seconds)

    async def _launch(self, inst: _Instance) -> None:
        """Start ``inst``: ``starting`` before the spawn, ``running`` once it has a pid."""
        self._move(inst, S.STARTING)
        inst.launches += 1
        inst.started_at = self._clock()
        if self.config.timeout_s:
            reason = f"timed out after {self.config.timeout_s:g}s"
            loop = asyncio.get_running_loop()
            timeout = loop.call_later(
                self.config.timeout_s, self._request_stop, inst, S.TIMED_OUT, reason
            )
            inst.timers.append(timeout)
        self._emit(_STATE_CHANGED)
        try:
            argv = instance_argv(self.config, inst.spec, self._cooperative_limit(inst))
            process = inst.spawning = self._new_process()
            await process.start(
                argv,
                on_line=partial(self._on_line, inst),
                keep_line=line_may_carry_usage,
                on_spawned=partial(self._on_spawned, inst),
                cwd=self.config.workspace,
                env=child_env(inst.token),
            )
        except SpawnAbandoned:  # stopped before its turn to be spawned: it never ran
            assert inst.stop is not None
            self._end(inst, inst.stop.outcome, inst.stop.reason)
            self._notice(NoticeKind.STOP, f"{inst.name}: {inst.status} before it started")
        except Exception as exc:  # OSError, ValueError (a NUL byte), or anything else
            if inst.process is not None:  # it did start: none may outlive its failure
                inst.process.signal_group(signal.SIGKILL)
            command = self.config.claude_cmd[0] if self.config.claude_cmd else "claude"
            self._end(inst, S.FAILED, f"cannot start {command}: {_spawn_error(exc)}")
            self._notice(NoticeKind.FAIL, f"{inst.name}: {inst.error}", warning=True)

    def _cooperative_limit(self, inst: _Instance) -> tuple[str, ...]:
        """``--max-budget-usd`` with what the instance's USD budgets leave, in block mode."""
        inst.max_budget = None
        if not self.config.cooperative_limits or self.budgets.mode != "block":
            return ()
        snapshot = self._guard(self.budgets.snapshot)
        args = max_budget_args(snapshot, inst.key) if snapshot is not None else ()
        inst.max_budget = float(args[1]) if args else None
        return args

    def _on_spawned(self, inst: _Instance, process: Process) -> None:
        """The process exists (its output is not read yet): apply what was asked meanwhile."""
        inst.process = process
        self._record(inst)
        self._notice(NoticeKind.LAUNCH, f"{inst.name}: launched ({inst.key}), pid {process.pid}")
        if inst.status is S.STARTING:
            self._move(inst, S.RUNNING)
            self._enforce(inst)  # the launch decision, taken again now that it runs
        elif inst.status is S.STOPPING:
            self._signal_stop(inst)  # asked to stop while it was starting
        else:  # ended meanwhile (killed with no loop to wait on it): it may not run
            process.signal_group(signal.SIGKILL)
        self._emit(_STATE_CHANGED)

    async def _watch(self, inst: _Instance, slots: asyncio.Semaphore) -> None:
        """Wait for a started instance to end; whatever happens, it ends with a status."""
        assert inst.process is not None
        try:
            self._finish(inst, await inst.process.wait())
        except Exception as exc:  # a bug: this instance fails, the run goes on
            inst.process.signal_group(signal.SIGKILL)
            if not inst.status.is_done:
                self._end(inst, S.FAILED, f"internal error: {type(exc).__name__}: {exc}")
                self._notice(NoticeKind.ERROR, f"{inst.name}: {inst.error}", warning=True)
        finally:
            for timer in inst.timers:
                timer.cancel()
            self._sweep_strays([inst.token])
            slots.release()
            self._emit(_STATE_CHANGED)

    def _finish(self, inst: _Instance, exit: ProcessExit) -> None:
        inst.exit_code = exit.returncode
        tracker = inst.tracker
        if inst.stop is not None:
            self._end(inst, inst.stop.outcome, inst.stop.reason)
        elif tracker.stopped_by_cli_budget:
            self._end(inst, S.STOPPED_BY_BUDGET, "the CLI stopped at its --max-budget-usd")
        elif tracker.is_final and not tracker.is_error and exit.returncode == 0:
            self._end(inst, S.SUCCEEDED)
        else:
            self._end(inst, S.FAILED, _failure_reason(tracker, exit))
        counted = format_tokens(tracker.usage.total)
        kind = "final" if tracker.is_final else "live count"
        if inst.status is S.SUCCEEDED:
            self._notice(NoticeKind.DONE, f"{inst.name}: succeeded, {counted} tokens ({kind})")
        else:
            detail = f": {inst.error}" if inst.error else ""
            self._notice(
                NoticeKind.FAIL if inst.status is S.FAILED else NoticeKind.STOP,
                f"{inst.name}: {inst.status}{detail}; {counted} tokens ({kind})",
                warning=inst.status is not S.CANCELLED,
            )

    # -- the lifecycle: every status change goes through _move ---------------------------

    def _move(self, inst: _Instance, status: InstanceStatus, error: str | None = None) -> None:
        if not inst.status.can_become(status):
            raise IllegalTransition(f"{inst.name}: {inst.status} -> {status}")
        inst.status = status
        if error is not None:
            inst.error = error

    def _end(self, inst: _Instance, status: InstanceStatus, error: str | None = None) -> None:
        self._move(inst, status, error)
        inst.ended_at = self._clock()
        self.record_spend()
        self._record(inst)

    def _cancel_or_stop(self, inst: _Instance, reason: str, signal_now: bool = True) -> None:
        if inst.status in (S.PENDING, S.RESUMING):
            self._move(inst, S.CANCELLED, "cancelled before launch")
            self._notice(NoticeKind.STOP, f"{inst.name}: cancelled before launch")
        else:
            self._request_stop(inst, S.CANCELLED, reason, signal_now)

    def _request_stop(
        self, inst: _Instance, outcome: InstanceStatus, reason: str, signal_now: bool = True
    ) -> None:
        """Stop a started instance (or one being started: it is signalled once it has a
        pid). The first stop asked for decides how it ends."""
        if inst.stop is not None or inst.status not in (S.STARTING, S.RUNNING):
            return
        inst.stop = _StopRequest(outcome, reason)
        self._move(inst, S.STOPPING)
        self._notice(NoticeKind.STOP, f"{inst.name}: stopping, {reason}", warning=True)
        if inst.process is None and inst.spawning is not None:
            inst.spawning.abandon()  # not spawned yet: it never will be
        elif inst.process is not None and signal_now:
            self._signal_stop(inst)
        self._emit(_STATE_CHANGED)

    def _signal_stop(self, inst: _Instance) -> None:
        process = inst.process
        assert process is not None
        process.signal_group(signal.SIGTERM)
        loop = asyncio.get_running_loop()
        inst.timers.append(
            loop.call_later(self.config.stop_grace_s, process.signal_group, signal.SIGKILL)
        )

    def _kill_live_groups(self) -> None:
        for inst in self._instances:
            if inst.has_live_process:
                assert inst.process is not None
                inst.process.signal_group(signal.SIGKILL)

    def _sweep_strays(self, tokens: Iterable[str]) -> None:
        """Kill what ended instances started outside their process groups."""
        live = {
            i.process.pid
            for i in self._instances
            if i.has_live_process and i.process is not None and i.process.pid is not None
        }
        kill_all(strays(tokens, exclude=live))

    # -- counting ------------------------------------------------------------------------

    def _on_line(self, inst: _Instance, line: bytes) -> None:
        tracker = inst.tracker
        delta = tracker.feed_line(line)
        # Never down, not even by the float rounding of snapping to the CLI's own figure.
        cost = max(tracker.cost_usd, inst.charged_cost)
        if delta or cost != inst.charged_cost:
            cost_delta, inst.charged_cost = cost - inst.charged_cost, cost
            if self._enforcement_ok:
                self._guard(self.budgets.charge, inst.key, inst.name, delta, cost_delta)
                self._enforce(inst)
            self._emit(_STATE_CHANGED)
        if tracker.rate_limit_events != inst.rate_limit_events:
            self._on_rate_limit(inst)
        if tracker.discrepancy is not inst.reported_discrepancy:
            inst.reported_discrepancy = tracker.discrepancy
            if tracker.discrepancy is not None:
                self._notice(
                    NoticeKind.LEVEL,
                    f"{inst.name}: its result is below what it streamed: "
                    f"{tracker.discrepancy.describe()}",
                    warning=True,
                )

    def _on_rate_limit(self, inst: _Instance) -> None:
        """A new subscription-window report (never tokens): to the board, which may hold."""
        tracker = inst.tracker
        inst.rate_limit_events = tracker.rate_limit_events
        if tracker.rate_limit is not None:
            for note in self.rate_limits.observe(inst.name, tracker.rate_limit):
                self._rate_notice(note)
            self._emit(_STATE_CHANGED)

    def _rate_notice(self, note: RateNote) -> None:
        self._notice(NoticeKind.RATE, note.text, warning=note.warning)

    # -- enforcement: one rule, applied on every charge, crossing, mode or limit change --

    def _enforce(self, inst: _Instance) -> None:
        """Block mode: an instance charged to an exceeded budget does not go on running."""
        if inst.status not in (S.STARTING, S.RUNNING) or self.budgets.mode != "block":
            return
        if not self._guard(self.budgets.is_exceeded, inst.key):
            return  # the per-line path: a cheap look first
        exceeded = self._guard(self.budgets.exceeded_for, inst.key)
        if exceeded:
            budget = exceeded[0]
            # A CLI at its own --max-budget-usd ends itself after this call, with its final
            # figures: it is given the time to (the stop follows if it does not).
            cooperative = (
                inst.max_budget is not None
                and all(b.unit is Unit.USD for b in exceeded)
                and inst.tracker.cost_usd >= inst.max_budget
            )
            reason = f"budget {budget.key} ({budget.unit}) exceeded"
            self._request_stop(inst, S.STOPPED_BY_BUDGET, reason, signal_now=not cooperative)
            if cooperative and inst.process is not None:
                loop = asyncio.get_running_loop()
                inst.timers.append(loop.call_later(COOPERATIVE_GRACE_S, self._signal_stop, inst))

    def _enforce_all(self) -> None:
        for inst in self._instances:
            self._enforce(inst)

    # -- the ledger: spend from other runs comes in; this run's records go out ------------

    async def _record_spend(self) -> None:
        while True:
            await asyncio.sleep(RECORD_INTERVAL_S)
            self.record_spend()

    def record_spend(self) -> None:
        """Hand each instance's counts to the ledger, which writes what changed as charges:
        sampled every RECORD_INTERVAL_S, not per line, so reading a line costs nothing more."""
        if self.ledger is None:
            return
        for inst in self._instances:
            tracker = inst.tracker
            figures = (inst.usage, inst.cost, tracker.cost_is_estimate)
            if figures == inst.handed_over:
                continue  # nothing new: most instances, most of the time
            inst.handed_over = figures
            self.ledger.record_totals(
                inst.name,
                inst.key,
                tracker.model,
                inst.usage,
                inst.cost,
                tracker.cost_is_estimate,
            )

    def _on_window_spend(self, spends: list[WindowSpend]) -> None:
        """Other runs' spend in each windowed budget's window (it falls only as a rolling
        window ages out or a calendar one starts anew): levels follow, then the rule."""
        assert self.ledger is not None
        for budget, spend in zip(self.ledger.windowed, spends, strict=True):
            key = budget.key if budget.key is not None else OVERALL
            self._guard(self.budgets.set_outside, key, budget.unit, spend.others - spend.own_before)
        self._enforce_all()
        self._emit(_STATE_CHANGED)

    def _on_ledger_error(self, message: str | None) -> None:
        if self.ledger is not None and self.ledger.fleet:
            self._on_fleet_ledger(message)
        elif message is None:
            self._notice(NoticeKind.ERROR, "the ledger works again; pending charges written")
        else:
            self._notice(
                NoticeKind.ERROR,
                f"cannot write the ledger ({message}); charges are kept and retried",
                warning=True,
            )

    def _on_fleet_ledger(self, message: str | None) -> None:
        """The fleet ledger went away (``message``) or came back (None)."""
        assert self.ledger is not None
        if message is None:
            self._ledger_up.set()
            self._notice(NoticeKind.ERROR, self.ledger.back_note)
            return
        self._ledger_up.clear()
        holds = self.budgets.mode == "block" and not self.ledger.launch_while_unreachable
        then = "; no launch until it is back (--ledger-unreachable open: launch anyway)"
        self._notice(NoticeKind.ERROR, message + (then if holds else ""), warning=True)

    async def _ledger_back(self) -> None:
        """Block mode launches nothing while the fleet ledger is away (unless told to)."""
        while not self._ledger_up.is_set() and not self._stop_requested.is_set():
            if self.budgets.mode != "block" or (
                self.ledger is not None and self.ledger.launch_while_unreachable
            ):
                return
            waits = [
                asyncio.ensure_future(e.wait()) for e in (self._ledger_up, self._stop_requested)
            ]
            try:
                await asyncio.wait(
                    [*waits, asyncio.ensure_future(asyncio.sleep(0.5))],
                    return_when=asyncio.FIRST_COMPLETED,
                )
            finally:
                for w in waits:
                    w.cancel()

    def _record(self, inst: _Instance) -> None:
        if self.ledger is not None:
            self.ledger.instance(self.instance_record(inst.name))

    def instance_records(self) -> list[InstanceRecord]:
        return [self.instance_record(inst.name) for inst in self._instances]

    def instance_record(self, name: str) -> InstanceRecord:
        assert self.ledger is not None
        inst = next(i for i in self._instances if i.name == name)
        view = self._view(inst, self._clock())
        wall = time.time() - self._clock()  # monotonic -> wall clock, for the ledger
        return InstanceRecord(
            run_id=self.ledger.run_id,
            name=view.name,
            command=view.command,
            budget_key=view.budget_key,
            status=str(view.status),
            usage=view.usage,
            cost_usd=view.cost_usd,
            final=view.final,
            cost_is_estimate=view.cost_is_estimate,
            started=inst.started_at + wall if inst.started_at is not None else None,
            ended=inst.ended_at + wall if inst.ended_at is not None else None,
            error=view.error,
            # A configured --session-id names a session only once it was used.
            session_id=inst.tracker.session_id
            or inst.spec.resume_session_id
            or (inst.spec.session_id if inst.launches else None),
        )

    def _on_budget_event(self, event: BudgetEvent) -> None:
        if isinstance(event, LevelCrossed) and event.rising:
            budget = event.budget
            self._notice(
                NoticeKind.LEVEL,
                f"budget {describe_budget(budget)} is {budget.level.upper()}",
                level=budget.level,
                warning=True,
            )
            if budget.level is BudgetLevel.EXCEEDED:
                self._enforce_all()
        elif isinstance(event, ModeChanged):
            self._notice(
                NoticeKind.MODE,
                f"enforcement mode {event.mode.upper()} (was {event.previous.upper()})",
                warning=event.mode == "block",
            )
            self._enforce_all()
            self._emit(_STATE_CHANGED)

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
        """Tell every listener; one that fails is reported once and never stops the run,
        its enforcement or the reading of a line."""
        for listener in tuple(self._listeners):
            try:
                listener(event)
            except Exception as exc:
                if id(listener) not in self._failed_listeners:
                    self._failed_listeners.add(id(listener))
                    self._notice(
                        NoticeKind.ERROR,
                        f"a subscriber failed ({type(exc).__name__}: {exc}); "
                        "the run and its budgets go on",
                        warning=True,
                    )

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
            usage=inst.usage,
            cost_usd=inst.cost,
            # Nothing spent is nothing estimated (an instance blocked or not yet started).
            cost_is_estimate=tracker.cost_is_estimate and bool(inst.usage),
            final=tracker.is_final,
            elapsed_s=elapsed,
            pid=inst.process.pid if inst.process is not None else None,
            exit_code=inst.exit_code,
            error=inst.error,
            unknown_models=tuple(sorted(tracker.unknown_models)),
            discrepancy=tracker.discrepancy.describe() if tracker.discrepancy else None,
            skipped_lines=tracker.skipped_lines,
            stopped_by_cli=tracker.stopped_by_cli_budget,
            resumed_session=inst.spec.resume_session_id,
            launches=inst.launches,
            max_budget_usd=inst.max_budget,
            model=tracker.model,
        )


def _spawn_error(exc: Exception) -> str:
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    return f"{type(exc).__name__}: {exc}"


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
    windows = spec.windows
    if spec.overall_tokens is not None or spec.overall_usd is not None:
        manager.set_overall(
            spec.overall_tokens,
            spec.overall_usd,
            windows.get((OVERALL, Unit.TOKENS)),
            windows.get((OVERALL, Unit.USD)),
        )
    for key in dict.fromkeys([*spec.command_tokens, *spec.command_usd]):
        manager.set_budget(
            key,
            spec.command_tokens.get(key),
            spec.command_usd.get(key),
            windows.get((key, Unit.TOKENS)),
            windows.get((key, Unit.USD)),
        )
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
