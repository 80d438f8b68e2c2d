"""The monitor's header with subscription windows (``rate_limit_event``), at 80x24 and 60x15:
a 5-hour window in its warning band, then launches held by a rejected one (a countdown).

Regenerate with ``pytest tests/snapshots/test_rate_limit_snapshots.py --snapshot-update``
and look at every image before accepting it.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from typing import Any

import pytest
from textual.pilot import Pilot

from budget_core import RateLimitEvent, RateLimitStatus, WindowReading
from orchestrator.ratelimits import OnRateLimit, RateLimitBoard
from orchestrator.state import RunSnapshot
from tests.snapshots.scripted import ScriptedRun, demo_run, mid_run
from tui.app import build_app

SIZES = pytest.mark.parametrize("size", [(80, 24), (60, 15)], ids=["80x24", "60x15"])
NOW = 1_796_048_400.0  # 2026-11-30 14:20 UTC
S = RateLimitStatus


@pytest.fixture(autouse=True)
def utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Reset times are shown in local time: pin it, so the picture is the same anywhere."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


class WindowsRun(ScriptedRun):
    """The scripted run, with a real board fed real events at a fixed wall time."""

    def __init__(self, base: ScriptedRun) -> None:
        self.__dict__.update(base.__dict__)
        self.clock = NOW
        self.board = RateLimitBoard(OnRateLimit.WAIT, lambda: self.clock)

    def snapshot(self) -> RunSnapshot:
        return dataclasses.replace(super().snapshot(), rate_limits=self.board.view())

    def report(self, instance: str, *readings: WindowReading) -> None:
        self.board.observe(instance, RateLimitEvent(readings[0], readings[1:]))
        self.changed()


def _warning(run: ScriptedRun) -> None:
    assert isinstance(run, WindowsRun)
    mid_run(run)
    run.report(
        "analyze-src",
        WindowReading("five_hour", S.ALLOWED_WARNING, NOW + 7200, 0.83),
        WindowReading("seven_day", S.ALLOWED, NOW + 400_000, 0.2),
    )


def _held(run: ScriptedRun) -> None:
    assert isinstance(run, WindowsRun)
    _warning(run)
    run.report("review-api", WindowReading("five_hour", S.REJECTED, NOW + 5952, 1.0))
    run.clock += 10  # ten seconds into the hold


def _app(step: Any) -> tuple[Any, Any]:
    run = WindowsRun(demo_run())
    app = build_app(run, clock=lambda: 0.0, animate=False)

    async def before(pilot: Pilot[Any]) -> None:
        step(run)
        await pilot.pause()
        app.sync()

    return app, before


@SIZES
def test_header_shows_a_window_in_its_warning_band(
    snap_compare: Any, size: tuple[int, int]
) -> None:
    app, before = _app(_warning)
    assert snap_compare(app, terminal_size=size, run_before=before)


@SIZES
def test_header_counts_down_while_launches_are_held(
    snap_compare: Any, size: tuple[int, int]
) -> None:
    app, before = _app(_held)
    assert snap_compare(app, terminal_size=size, run_before=before)
