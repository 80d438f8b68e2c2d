"""The Textual monitor of a run: draws what the RunControl reports, asks it to act.

It never parses claude output and never decides enforcement. Updates are coalesced: the run's
listener only marks the view dirty, and a timer re-reads the snapshot at most
``1 / refresh_interval`` times a second. Notices (low rate) go straight to the event log.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import ClassVar, Protocol

from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.css.query import NoMatches
from textual.reactive import reactive
from textual.widgets import Footer

from budget_core import Unit
from budget_core.budgets import BudgetState
from orchestrator.state import Notice, RunControl, RunEvent, RunSnapshot
from tui.budgets import BudgetPanel, BudgetRow
from tui.eventlog import EventLog
from tui.header import EnforcementBanner, Phase, StatusLine
from tui.instances import InstanceTable
from tui.limit_dialog import LimitDialog, NewLimit, budget_for
from tui.messages import NoticeReceived, RunFinished
from tui.ratelimit_line import RateLimitLine
from tui.screens import ConfirmQuit, HelpScreen

RunCoroutine = Callable[[], Awaitable[int]]
Clock = Callable[[], float]


class MonitorControl(RunControl, Protocol):
    """What the monitor asks of a run: a ``RunControl`` that can also be interrupted."""

    def interrupt(self, signum: int) -> None:
        """As a signal would: stop every instance; a second time, kill them at once."""


IDLE_REFRESH_S = 1.0  # re-read this often even without events, so elapsed times keep ticking


class MonitorApp(App[int]):
    """Use ``build_app`` to make one."""

    CSS_PATH = Path(__file__).with_name("monitor.tcss")
    TITLE = "claude budget monitor"
    ENABLE_COMMAND_PALETTE = False
    # Screen classes for the stylesheet. No ClassVar: Textual declares these as
    # ``ClassVar[...] | None``, which mypy reads as instance variables.
    HORIZONTAL_BREAKPOINTS = [(0, "-very-narrow"), (70, "-narrow"), (100, "-wide")]  # noqa: RUF012
    VERTICAL_BREAKPOINTS = [(0, "-very-short"), (24, "-short"), (30, "-tall")]  # noqa: RUF012

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding(
            "m",
            "toggle_mode",
            "Warn/Block",
            id="monitor.toggle-mode",
            tooltip="flip enforcement between WARN and BLOCK",
        ),
        Binding(
            "s",
            "stop_selected",
            "Stop",
            id="monitor.stop-instance",
            tooltip="stop the instance selected in the table",
        ),
        Binding(
            "r",
            "resume_selected",
            "Resume",
            id="monitor.resume-instance",
            tooltip="resume the selected blocked or stopped instance (its session continues)",
        ),
        Binding(
            "plus",
            "raise_limit",
            "Limit",
            id="monitor.set-limit",
            tooltip="raise or lower a budget's limit: the focused budget row (tab), else the "
            "selected instance's",
        ),
        Binding(
            "question_mark",
            "help",
            "Help",
            id="monitor.help",
            tooltip="show this help",
        ),
        Binding(
            "q",
            "quit",
            "Quit",
            id="monitor.quit",
            tooltip="quit (asks first while instances run)",
        ),
        Binding(
            "ctrl+c",
            "interrupt",
            "Stop all",
            id="monitor.interrupt",
            tooltip="stop every instance and quit; a second ctrl+c kills them at once",
            show=False,
            priority=True,  # in the dialogs too
        ),
    ]

    run_snapshot: reactive[RunSnapshot | None] = reactive[RunSnapshot | None](None, init=False)
    phase: reactive[Phase] = reactive(Phase.LIVE, init=False)
    exit_code: reactive[int | None] = reactive[int | None](None, init=False)
    enforcement_failed: reactive[bool] = reactive(False, init=False)

    def __init__(
        self,
        control: MonitorControl,
        *,
        run: RunCoroutine | None = None,
        clock: Clock | None = None,
        animate: bool = True,
        refresh_interval: float = 0.1,
    ) -> None:
        if refresh_interval <= 0:
            raise ValueError(f"refresh_interval must be > 0 seconds, not {refresh_interval!r}")
        super().__init__()
        if not animate:
            self.animation_level = "none"
        self.control = control
        self._run = run
        self._clock = clock or time.monotonic
        self._refresh_interval = refresh_interval
        self._dirty = True
        self._last_read = float("-inf")
        self._run_done = False
        self._quit_requested = False
        self._unsubscribe: Callable[[], None] | None = None
        self.run_error: BaseException | None = None

    # -- layout ---------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield StatusLine().data_bind(
            MonitorApp.run_snapshot, MonitorApp.phase, MonitorApp.exit_code
        )
        yield RateLimitLine().data_bind(MonitorApp.run_snapshot)
        yield EnforcementBanner().data_bind(failed=MonitorApp.enforcement_failed)
        yield BudgetPanel().data_bind(MonitorApp.run_snapshot)
        yield InstanceTable().data_bind(MonitorApp.run_snapshot)
        yield EventLog()
        yield Footer()

    def on_mount(self) -> None:
        self._unsubscribe = self.control.subscribe(self._on_run_event)
        self.sync()
        self.set_interval(self._refresh_interval, self._tick, name="refresh")
        self.query_one(InstanceTable).focus()
        if self._run is not None:
            self.run_worker(self._drive(self._run), name="run", group="run")

    def on_unmount(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None

    # -- state in -------------------------------------------------------------------------

    def _on_run_event(self, event: RunEvent) -> None:
        """The run's listener: may be called thousands of times a second, so it only marks."""
        self._dirty = True
        if isinstance(event, Notice):
            self.post_message(NoticeReceived(event))

    def _tick(self) -> None:
        idle_due = self.phase is Phase.LIVE and self._clock() - self._last_read >= IDLE_REFRESH_S
        if self._dirty or idle_due:
            self.sync()

    def sync(self) -> None:
        """Re-read the run's snapshot now and redraw what changed."""
        self._dirty = False
        self._last_read = self._clock()
        snapshot = self.control.snapshot()
        self.run_snapshot = snapshot
        self.enforcement_failed = not snapshot.enforcement_ok
        if self._run is None and snapshot.finished and self.phase is Phase.LIVE:
            self.phase = Phase.FINISHED

    def on_notice_received(self, message: NoticeReceived) -> None:
        try:
            log = self.query_one(EventLog)
        except NoMatches:  # the app is closing: the run's last notices have nowhere to go
            return
        log.add(message.notice)

    async def _drive(self, run: RunCoroutine) -> None:
        """Run the orchestrator inside this event loop; tell the app how it ended."""
        try:
            code = await run()
        except Exception as error:  # close the app; whoever ran it reads ``run_error``
            self.post_message(RunFinished(None, error))
        else:
            self.post_message(RunFinished(code))

    def on_run_finished(self, message: RunFinished) -> None:
        self._run_done = True
        self.exit_code = message.exit_code
        self.phase = Phase.FINISHED
        self.sync()
        if message.error is not None:
            self.run_error = message.error
            self.exit(None)  # the run gave no exit code, only its error
        elif self._quit_requested:
            self.exit(message.exit_code)

    # -- intents out ----------------------------------------------------------------------

    def action_toggle_mode(self) -> None:
        current = self.control.snapshot().mode  # not the drawn one, which may be a tick old
        self.control.set_enforcement_mode("block" if current == "warn" else "warn")
        self.sync()  # the user asked: show the answer now, not at the next tick

    def action_stop_selected(self) -> None:
        name = self.query_one(InstanceTable).selected_instance()
        snapshot = self.run_snapshot
        view = next((i for i in snapshot.instances if i.name == name), None) if snapshot else None
        if view is None:
            self.notify("no instance selected", severity="warning")
            return
        if view.status.is_done:
            self.notify(f"{view.name} is already {view.status.value}", severity="warning")
            return
        self.control.stop_instance(view.name)
        self.sync()

    def action_resume_selected(self) -> None:
        name = self.query_one(InstanceTable).selected_instance()
        if name is None:
            self.notify("no instance selected", severity="warning")
            return
        problem = self.control.resume_instance(name)
        if problem is not None:
            self.notify(problem, severity="warning")
            return
        self.notify(f"{name}: resuming")
        self.sync()

    def action_raise_limit(self) -> None:
        snapshot = self.control.snapshot()
        focused = self.focused
        if isinstance(focused, BudgetRow):
            budget = next((b for b in snapshot.budgets.budgets if _same(b, focused.budget)), None)
        else:
            name = self.query_one(InstanceTable).selected_instance()
            view = next((i for i in snapshot.instances if i.name == name), None)
            budget = budget_for(snapshot, view)
        if budget is None:
            self.notify("no budget to change", severity="warning")
            return
        self.push_screen(LimitDialog(budget), self._limit_given)

    def _limit_given(self, answer: NewLimit | None) -> None:
        if answer is None:
            return
        key, unit, limit = answer
        if unit is Unit.TOKENS:
            self.control.set_limit(key, tokens=int(limit))
        else:
            self.control.set_limit(key, usd=limit)
        self.notify(f"budget {key} ({unit}): limit now {limit:,g}")
        self.sync()

    def action_help(self) -> None:
        bindings = [b for b in self.BINDINGS if isinstance(b, Binding)]
        keys = [(self.get_key_display(b), b.tooltip or b.description) for b in bindings]
        after_stop = 1 + next(i for i, b in enumerate(bindings) if b.action == "stop_selected")
        keys.insert(after_stop, ("↑ ↓", "select an instance in the table"))
        self.push_screen(HelpScreen(keys))

    async def action_quit(self) -> None:
        """``q`` (and ctrl+q): ask first while instances run, then stop them and wait."""
        if self.phase is Phase.STOPPING:
            self.notify("stopping instances; the monitor closes when they have ended")
            return
        if self._run_done:
            self.exit(self.exit_code)
            return
        snapshot = self.control.snapshot()
        if snapshot.finished and not snapshot.running:
            if self._run is None:
                self.exit(None)
            else:
                self._quit_requested = True  # the run is wrapping up; exit with its code
            return
        if all(i.status.is_done for i in snapshot.instances):
            # Paused by a budget (nothing runs, nothing waits): nothing to confirm.
            self._quit_answered(True)
            return
        self.push_screen(ConfirmQuit(len(snapshot.running)), self._quit_answered)

    def action_interrupt(self) -> None:
        self.interrupt(signal.SIGINT)

    def interrupt(self, signum: int) -> None:
        """Ctrl-C (the key, or SIGINT/SIGTERM): the same as headless. The run stops every
        instance (SIGTERM, SIGKILL after the grace) and the app closes with its exit code;
        a second one has the run kill them at once. Once the run is over, it just closes."""
        if self._run_done:
            self.exit(self.exit_code)
            return
        self.control.interrupt(signum)  # at once, whatever the app is doing
        self._quit_requested = True
        self.call_later(self._show_stopping)  # in turn: a signal may come before the mount

    def _show_stopping(self) -> None:
        if self._run_done:
            return
        if self.phase is Phase.LIVE:
            self.notify("stopping every instance; Ctrl-C again kills them at once")
        if isinstance(self.screen, ConfirmQuit):
            self.screen.dismiss(False)  # the question is answered
        self.phase = Phase.STOPPING
        self.sync()
        if self._run is None:
            self.exit(None)  # nothing to wait for: a bare control has no exit code to give

    def _quit_answered(self, confirmed: bool | None) -> None:
        if not confirmed:
            return
        if self._run_done:
            self.exit(self.exit_code)
            return
        self._quit_requested = True
        self.phase = Phase.STOPPING
        self.control.stop_all()
        self.sync()
        if self._run is None:
            self.exit(None)  # nothing to wait for: a bare control has no exit code to give


def _same(a: BudgetState, b: BudgetState) -> bool:
    return (a.key, a.unit, a.window) == (b.key, b.unit, b.window)


def build_app(
    control: MonitorControl,
    *,
    run: RunCoroutine | None = None,
    clock: Clock | None = None,
    animate: bool = True,
    refresh_interval: float = 0.1,
) -> MonitorApp:
    """The monitor of ``control``; with ``run``, the app also runs it and returns its exit code.

    ``clock`` paces the idle refresh (tests pass a fixed one); ``animate=False`` turns off
    every animation so that screenshots are deterministic.
    """
    return MonitorApp(
        control, run=run, clock=clock, animate=animate, refresh_interval=refresh_interval
    )
