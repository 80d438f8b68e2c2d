"""A RunControl driven by explicit steps: no processes, no clock, no sleeping.

Tests build a ``ScriptedRun``, hand it to the monitor, and move it along with ``launch``,
``charge``, ``tick``, ``finish`` …; every step tells subscribers what a real orchestrator would
(``StateChanged`` and ``Notice`` s). Budgets go through the real ``BudgetManager``, so levels
and crossings are the library's. Like the orchestrator, ``set_enforcement_mode("block")``
stops the running instances of exceeded budgets at once.
"""

from __future__ import annotations

import asyncio
import dataclasses
import signal
from collections.abc import Callable, Iterable

from budget_core import (
    OVERALL,
    BudgetManager,
    LevelCrossed,
    Mode,
    TokenUsage,
    Unit,
    format_percent,
    parse_window,
)
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

S = InstanceStatus


class ScriptedRun:
    """Implements ``RunControl``; records what the monitor asked in ``calls``."""

    def __init__(
        self,
        instances: Iterable[tuple[str, str, str]],
        *,
        mode: Mode = "warn",
        token_budgets: dict[str, int] | None = None,
        usd_budgets: dict[str, float] | None = None,
        token_windows: dict[str, str] | None = None,
    ) -> None:
        """``token_windows`` gives a token budget a window (``day``, ``5h``); ``run`` if none."""
        self.manager = BudgetManager(mode)
        windows = token_windows or {}
        for key, tokens in (token_budgets or {}).items():
            window = parse_window(windows[key]) if key in windows else None
            self.manager.set_budget(key, tokens=tokens, tokens_window=window)
        for key, usd in (usd_budgets or {}).items():
            self.manager.set_budget(key, usd=usd)
        self._instances = {
            name: InstanceView(name, command, key, S.PENDING, TokenUsage(), 0.0, False, False, 0.0)
            for name, command, key in instances
        }
        self._listeners: list[RunListener] = []
        self._burn: dict[str, BurnView] = {}
        self._done = asyncio.Event()
        self.elapsed_s = 0.0
        self.enforcement_ok = True
        self.finished = False
        self.interrupted = False
        self.calls: list[tuple[str, ...]] = []
        self.snapshot_calls = 0

    # -- RunControl --------------------------------------------------------------------------

    def snapshot(self) -> RunSnapshot:
        self.snapshot_calls += 1
        return RunSnapshot(
            mode=self.manager.mode,
            elapsed_s=self.elapsed_s,
            instances=tuple(self._instances.values()),
            budgets=self.manager.snapshot(),
            burn=tuple(self._burn.values()),
            enforcement_ok=self.enforcement_ok,
            finished=self.finished,
        )

    def subscribe(self, listener: RunListener) -> Callable[[], None]:
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def set_enforcement_mode(self, mode: Mode) -> None:
        self.calls.append(("set_enforcement_mode", mode))
        if mode == self.manager.mode:
            return
        self.manager.set_mode(mode)
        self._notice(NoticeKind.MODE, f"enforcement mode is now {mode.upper()}")
        if mode == "block":
            for budget in self.manager.snapshot().exceeded:
                self._stop_over_budget(budget.key)
        self.changed()

    def stop_all(self) -> None:
        self.calls.append(("stop_all",))
        self._stop_everything("quit")

    def interrupt(self, signum: int) -> None:
        """As the orchestrator: the first stops everything (and ends the run), later ones
        only kill."""
        self.calls.append(("interrupt", signal.Signals(signum).name))
        if not self.interrupted:
            self._stop_everything(signal.Signals(signum).name)

    def stop_instance(self, name: str) -> None:
        self.calls.append(("stop_instance", name))
        if not self._instances[name].status.is_done:
            self._set(name, status=S.CANCELLED, pid=None)
            self._notice(NoticeKind.STOP, f"{name} stopped by the user")
            self.changed()

    def resume_instance(self, name: str) -> str | None:
        """As the orchestrator: a blocked or stopped instance is queued again (``resuming``);
        ``launch`` then decides it like any other."""
        self.calls.append(("resume_instance", name))
        if self._instances[name].status not in RESUMABLE:
            return f"{name} is {self._instances[name].status}"
        self._set(name, status=S.RESUMING, error=None)
        self._notice(NoticeKind.LAUNCH, f"{name}: queued again (resumed)")
        self.changed()
        return None

    def set_limit(self, key: str, tokens: int | None = None, usd: float | None = None) -> None:
        self.calls.append(("set_limit", key, str(tokens), str(usd)))
        self.manager.set_budget(key, tokens=tokens, usd=usd)
        # As the orchestrator: a blocked launch the new limit allows is decided again.
        for name, view in self._instances.items():
            if view.status is S.BLOCKED and self.manager.decide_launch(view.budget_key).allowed:
                self.launch(name)
        self.changed()

    async def run(self) -> int:
        """Returns once ``end`` (or ``stop_all``) was called, with the run's exit code."""
        await self._done.wait()
        return self.exit_code()

    # -- steps -------------------------------------------------------------------------------

    def launch(self, *names: str) -> None:
        for name in names:
            view = self._instances[name]
            decision = self.manager.decide_launch(view.budget_key)
            if not decision.allowed:
                self._set(name, status=S.BLOCKED, error=decision.reason)
                self._notice(NoticeKind.BLOCK, f"{name} not started: {decision.reason}", True)
                continue
            pid = 4100 + list(self._instances).index(name)
            self._set(name, status=S.RUNNING, pid=pid)
            self._notice(NoticeKind.LAUNCH, f"{name} started: {view.command}")
        self.changed()

    def charge(self, name: str, usage: TokenUsage, cost: float, *, estimate: bool = False) -> None:
        view = self._instances[name]
        self._set(
            name,
            usage=view.usage + usage,
            cost_usd=view.cost_usd + cost,
            cost_is_estimate=view.cost_is_estimate or estimate,
        )
        for crossing in self.manager.charge(view.budget_key, name, usage, cost):
            self._crossed(crossing)
        self.changed()

    def spent_before(self, key: str, amount: float, unit: Unit = Unit.TOKENS) -> None:
        """A windowed budget's spend from before this run (other runs', as a ledger says)."""
        for crossing in self.manager.set_outside(key, unit, amount):
            self._crossed(crossing)
        self.changed()

    def tick(self, seconds: float) -> None:
        """Time passes: the run and every running instance get older."""
        self.elapsed_s += seconds
        for view in self._instances.values():
            if view.status is S.RUNNING:
                self._set(view.name, elapsed_s=view.elapsed_s + seconds)
        self.changed()

    def burn(self, key: str, tokens_per_min: float, seconds_left: float | None) -> None:
        self._burn[key] = BurnView(key, tokens_per_min, seconds_left)
        self.changed()

    def finish(
        self, name: str, status: InstanceStatus = S.SUCCEEDED, error: str | None = None
    ) -> None:
        code = 0 if status is S.SUCCEEDED else 1
        self._set(name, status=status, final=True, pid=None, exit_code=code, error=error)
        if status is S.SUCCEEDED:
            self._notice(NoticeKind.DONE, f"{name} succeeded")
        else:
            self._notice(NoticeKind.FAIL, f"{name} {status.value}: {error}", True)
        self.changed()

    def fail_enforcement(self, reason: str) -> None:
        self.enforcement_ok = False
        self._notice(
            NoticeKind.ERROR, f"budget system failed ({reason}); going on without it", True
        )
        self.changed()

    def end(self) -> None:
        """Every instance is done: the run is finished and ``run()`` returns."""
        self.finished = True
        self._burn.clear()  # nothing burns once everything has ended
        self._done.set()
        self.changed()

    def exit_code(self) -> int:
        statuses = {v.status for v in self._instances.values()}
        if self.interrupted:
            return 130
        if statuses & {S.FAILED, S.TIMED_OUT}:
            return 1
        if statuses & {S.BLOCKED, S.STOPPED_BY_BUDGET}:
            return 3
        return 0

    def changed(self) -> None:
        self._emit(StateChanged())

    # -- inside ------------------------------------------------------------------------------

    def _stop_everything(self, why: str) -> None:
        self.interrupted = True
        for view in list(self._instances.values()):
            if not view.status.is_done:
                self._set(view.name, status=S.CANCELLED, pid=None)
                self._notice(NoticeKind.STOP, f"{view.name} stopped ({why})")
        self.end()

    def _set(self, name: str, **changes: object) -> None:
        self._instances[name] = dataclasses.replace(self._instances[name], **changes)  # type: ignore[arg-type]

    def _crossed(self, crossing: LevelCrossed) -> None:
        budget = crossing.budget
        unit = " $" if budget.unit == "usd" else ""
        level = budget.level.value.upper()
        message = (
            f"{budget.key}{unit} reached {level} ({format_percent(budget.used, budget.limit)})"
        )
        if budget.level.value == "exceeded":
            message += "; warn mode: going on" if self.manager.mode == "warn" else ""
        self._emit(Notice(self.elapsed_s, NoticeKind.LEVEL, message, budget.level, crossing.rising))
        if budget.level.value == "exceeded" and self.manager.mode == "block":
            self._stop_over_budget(budget.key)

    def _stop_over_budget(self, key: str) -> None:
        for view in list(self._instances.values()):
            charged = key == OVERALL or view.budget_key == key
            if charged and view.status is S.RUNNING:
                self._set(view.name, status=S.STOPPED_BY_BUDGET, pid=None)
                self._notice(NoticeKind.STOP, f"{view.name} stopped: budget {key} exceeded", True)

    def _notice(self, kind: NoticeKind, message: str, warning: bool = False) -> None:
        self._emit(Notice(self.elapsed_s, kind, message, None, warning))

    def _emit(self, event: RunEvent) -> None:
        for listener in tuple(self._listeners):
            listener(event)


# -- the run the snapshots show --------------------------------------------------------------

INSTANCES = (
    ("analyze-src", "/analyze src", "/analyze"),
    ("analyze-docs", "/analyze docs", "/analyze"),
    ("review-api", "/review api", "/review"),
    ("review-ui", "/review ui", "/review"),
    ("test-unit", "/test unit", "/test"),
    ("test-e2e", "/test e2e", "/test"),
)


def demo_run(mode: Mode = "warn") -> ScriptedRun:
    """Six pending instances and five budgets (overall, three commands, one in dollars)."""
    return ScriptedRun(
        INSTANCES,
        mode=mode,
        token_budgets={OVERALL: 400_000, "/analyze": 200_000, "/review": 50_000, "/test": 20_000},
        usd_budgets={"/review": 0.50},
    )


def windowed_run(mode: Mode = "warn") -> ScriptedRun:
    """``demo_run`` with /review at 240K a day and /test at 20K in any 5 hours."""
    return ScriptedRun(
        INSTANCES,
        mode=mode,
        # /test before /review: at 60x15 the exceeded /test scrolls to the top, /review below
        token_budgets={OVERALL: 400_000, "/analyze": 200_000, "/test": 20_000, "/review": 240_000},
        usd_budgets={"/review": 0.50},
        token_windows={"/review": "day", "/test": "5h"},
    )


def windows_half_spent_and_exceeded(run: ScriptedRun) -> None:
    """On ``windowed_run``: half of today's /review spent before the run, 12K of /test's
    last 5h; then ``mid_run`` takes /review to 66% (159K/240K) and /test past its limit
    (30.8K/20K)."""
    run.spent_before("/review", 120_000)
    run.spent_before("/test", 12_000)
    mid_run(run)


def mid_run(run: ScriptedRun) -> None:
    """/analyze green (45%), /review yellow (78%), /test red (94%, critical)."""
    run.launch("analyze-src", "review-api", "review-ui", "test-unit", "test-e2e")
    run.tick(12)
    run.charge("analyze-src", TokenUsage(30_000, 12_000, 8_000, 40_000), 0.3125)
    run.charge("review-api", TokenUsage(9_000, 6_000, 2_000, 8_000), 0.1400)
    run.charge("review-ui", TokenUsage(5_000, 3_000, 1_000, 5_000), 0.0700)
    run.charge("test-unit", TokenUsage(4_000, 2_500, 1_500, 4_000), 0.0515)
    run.tick(30)
    run.finish("test-unit")
    run.charge("test-e2e", TokenUsage(2_000, 1_200, 400, 3_200), 0.0250, estimate=True)
    run.tick(41)
    run.burn(OVERALL, 52_300, 290)
    run.burn("/analyze", 31_400, 210)
    run.burn("/review", 12_600, 52)
    run.burn("/test", 4_100, 18)


def exceeded_in_warn(run: ScriptedRun) -> None:
    """``mid_run``, then /review goes past its limit (112%) while warn mode lets it run."""
    mid_run(run)
    run.tick(9)
    run.charge("review-api", TokenUsage(10_000, 7_000, 0, 0), 0.2100)
    run.burn("/review", 14_800, None)


def paused_by_budget(run: ScriptedRun) -> None:
    """On a block-mode ``demo_run``: ``mid_run``, then test-e2e takes /test past its limit
    (109%) and is stopped by the budget."""
    mid_run(run)
    run.tick(9)
    run.charge("test-e2e", TokenUsage(1_000, 800, 0, 0), 0.0200)
