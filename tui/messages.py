"""Typed messages between the run's listener, the run worker and the app."""

from __future__ import annotations

from textual.message import Message

from orchestrator.state import Notice


class NoticeReceived(Message):
    """A line for the event log (low rate: launches, crossings, stops)."""

    def __init__(self, notice: Notice) -> None:
        super().__init__()
        self.notice = notice


class RunFinished(Message):
    """The run coroutine returned (``exit_code``) or raised (``error``)."""

    def __init__(self, exit_code: int | None, error: BaseException | None = None) -> None:
        super().__init__()
        self.exit_code = exit_code
        self.error = error
