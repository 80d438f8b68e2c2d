"""The event log: one timestamped line per Notice, coloured by kind and level."""

from __future__ import annotations

from typing import ClassVar

from rich.table import Table
from rich.text import Text
from textual.widgets import RichLog

from orchestrator.state import Notice, NoticeKind
from tui.format import clock_text

TAG_WIDTH = 8
_TAGS = {
    NoticeKind.LAUNCH: "LAUNCH",
    NoticeKind.BLOCK: "BLOCKED",
    NoticeKind.STOP: "STOP",
    NoticeKind.FAIL: "FAIL",
    NoticeKind.DONE: "DONE",
    NoticeKind.MODE: "MODE",
    NoticeKind.ERROR: "ERROR",
}


def notice_tag(notice: Notice) -> str:
    """The word in the tag column: the level reached for crossings, else the kind."""
    if notice.kind is NoticeKind.LEVEL and notice.level is not None:
        return notice.level.value.upper()
    return _TAGS.get(notice.kind, notice.kind.value.upper())


def notice_class(notice: Notice) -> str:
    if notice.kind is NoticeKind.LEVEL and notice.level is not None:
        return f"eventlog--{notice.level.value}"
    return f"eventlog--{notice.kind.value}"


class EventLog(RichLog):
    """Tags take their colour from ``eventlog--<kind>`` / ``eventlog--<level>`` classes."""

    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "eventlog--time",
        *(f"eventlog--{kind.value}" for kind in NoticeKind),
        "eventlog--ok",
        "eventlog--warning",
        "eventlog--critical",
        "eventlog--exceeded",
    }

    def __init__(self) -> None:
        super().__init__(id="events", wrap=True, max_lines=2000, markup=False, auto_scroll=True)
        self.border_title = "Events"

    def add(self, notice: Notice) -> None:
        # A grid rather than one Text, so a long message wraps under itself, not under the time.
        line = Table.grid(padding=(0, 1))
        line.add_column(width=5, justify="right", no_wrap=True)
        line.add_column(width=TAG_WIDTH, no_wrap=True)
        line.add_column(ratio=1)
        line.add_row(
            Text(clock_text(notice.at_s), self.get_component_rich_style("eventlog--time")),
            Text(notice_tag(notice), self.get_component_rich_style(notice_class(notice))),
            Text(notice.message),
        )
        self.write(line, expand=True)
