"""The top of the monitor: mode, clock, totals, counts, run phase; and the failure banner."""

from __future__ import annotations

from enum import StrEnum

from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.reactive import reactive
from textual.widgets import Label, Static

from budget_core import Mode, format_tokens
from orchestrator.state import RunSnapshot
from tui.format import clock_text, cost_total_text, counts_text


class Phase(StrEnum):
    LIVE = "live"
    STOPPING = "stopping"
    FINISHED = "finished"


class ModeBadge(Label):
    """``WARN`` or ``BLOCK`` in capitals, coloured by the ``-warn`` / ``-block`` class."""

    mode: reactive[Mode] = reactive[Mode]("warn")

    def watch_mode(self, mode: Mode) -> None:
        self.update(mode.upper())
        self.set_class(mode == "warn", "-warn")
        self.set_class(mode == "block", "-block")


class PhaseBadge(Label):
    """``● LIVE``, ``STOPPING…`` or ``FINISHED exit 0``."""

    phase: reactive[Phase] = reactive(Phase.LIVE)
    exit_code: reactive[int | None] = reactive[int | None](None)

    def _refresh_text(self) -> None:
        if self.phase is Phase.FINISHED:
            code = "" if self.exit_code is None else f" exit {self.exit_code}"
            self.update(f"FINISHED{code}")
        elif self.phase is Phase.STOPPING:
            self.update("STOPPING…")
        else:
            self.update("● LIVE")
        for phase in Phase:
            self.set_class(self.phase is phase, f"-{phase.value}")

    def watch_phase(self) -> None:
        self._refresh_text()

    def watch_exit_code(self) -> None:
        self._refresh_text()


class StatusLine(Horizontal):
    """One line: mode, elapsed, total tokens and cost, instance counts, phase."""

    run_snapshot: reactive[RunSnapshot | None] = reactive[RunSnapshot | None](None)
    phase: reactive[Phase] = reactive(Phase.LIVE)
    exit_code: reactive[int | None] = reactive[int | None](None)

    def compose(self) -> ComposeResult:
        yield ModeBadge(id="mode")
        yield Label(id="elapsed", markup=False)
        yield Label(id="tokens", markup=False)
        yield Label(id="cost", markup=False)
        yield Label(id="counts", markup=False)
        yield PhaseBadge(id="phase").data_bind(StatusLine.phase, StatusLine.exit_code)

    def watch_run_snapshot(self, snapshot: RunSnapshot | None) -> None:
        if snapshot is None:
            return
        self.query_one(ModeBadge).mode = snapshot.mode
        self.query_one("#elapsed", Label).update(f"elapsed {clock_text(snapshot.elapsed_s)}")
        self.query_one("#tokens", Label).update(f"{format_tokens(snapshot.total_usage.total)} tok")
        self.query_one("#cost", Label).update(cost_total_text(snapshot))
        self.query_one("#counts", Label).update(counts_text(snapshot))


class EnforcementBanner(Static):
    """Loud, and only there once the budget system failed and the run went on without it."""

    failed: reactive[bool] = reactive(False)

    def __init__(self) -> None:
        super().__init__(
            "⚠ budget system failed: running WITHOUT enforcement", id="banner", markup=False
        )

    def watch_failed(self, failed: bool) -> None:
        self.set_class(failed, "-failed")
