"""The header's second line: subscription windows, and the launch hold's countdown.

Hidden until a CLI reports a window (only subscription logins do): ``5h 83% resets 14:20 ·
7d ok``; while ``--on-rate-limit wait`` holds launches it starts with ``HOLD 1:59:12 until
14:20``. The countdown moves with the monitor's idle refresh (once a second).
"""

from __future__ import annotations

from rich.text import Text
from textual.reactive import reactive
from textual.widgets import Static

from budget_core import RateLimitStatus
from orchestrator.ratelimits import RateLimitView, hold_text, window_short_text
from orchestrator.state import RunSnapshot

_STYLES = {
    RateLimitStatus.ALLOWED: "green",
    RateLimitStatus.ALLOWED_WARNING: "bold yellow",
    RateLimitStatus.REJECTED: "bold red",
}


def rate_limit_text(view: RateLimitView) -> Text:
    """The line as styled text (empty: nothing to show)."""
    text = Text(no_wrap=True, overflow="ellipsis")
    hold = hold_text(view)
    if hold is not None:
        text.append(f" {hold} ", style="bold black on yellow")
    for window in view.shown:
        if text:
            text.append(" · ", style="dim")
        text.append(window_short_text(window, view.now), style=_STYLES[window.status])
    return text


class RateLimitLine(Static):
    DEFAULT_CSS = """
    RateLimitLine {
        display: none;
        height: 1;
        padding: 0 1;
        background: $panel;
    }
    RateLimitLine.-shown {
        display: block;
    }
    """

    run_snapshot: reactive[RunSnapshot | None] = reactive[RunSnapshot | None](None)

    def __init__(self) -> None:
        super().__init__("", id="rate-limits")

    def watch_run_snapshot(self, snapshot: RunSnapshot | None) -> None:
        view = snapshot.rate_limits if snapshot is not None else None
        text = rate_limit_text(view) if view is not None else Text()
        self.set_class(bool(text), "-shown")
        self.update(text)
