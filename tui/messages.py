"""Typed messages between the run's listener, the run worker and the app."""

from __future__ import annotations

from dataclasses import dataclass

from textual.message import Message

from orchestrator.state import Notice


@dataclass
class NoticeReceived(Message):
    """A line for the event log (low rate: launches, crossings, stops)."""

    notice: Notice


@dataclass
class RunFinished(Message):
    """The run coroutine returned (``exit_code``) or raised (``error``)."""

    exit_code: int | None
    error: BaseException | None = None
