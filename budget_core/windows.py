"""Budget windows: the stretch of time a budget counts spend over, as pure arithmetic.

``run`` is this run only. Calendar windows (``hour``, ``day``, ``week`` from Monday,
``month``) start at a boundary in local time (``TZ`` honoured, daylight saving included);
rolling windows (``90m``, ``5h``, ``7d``) are the last N units up to now. Times are POSIX
seconds; nothing here reads a clock or does I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

WindowKind = Literal["run", "calendar", "rolling"]
CALENDAR = ("hour", "day", "week", "month")
_ROLLING = re.compile(r"^([1-9][0-9]{0,5})([mhd])$")
_UNIT_SECONDS = {"m": 60, "h": 3600, "d": 86400}
_UNIT_WORDS = {"m": "min", "h": "h", "d": "d"}
_CALENDAR_LABELS = {
    "hour": "this hour",
    "day": "today",
    "week": "this week",
    "month": "this month",
}
ALLOWED = "run, hour, day, week, month, or <N>m, <N>h, <N>d (e.g. 90m, 5h, 7d)"


@dataclass(frozen=True, slots=True)
class Window:
    """A budget's window, by its name as users write it (``day``, ``5h``, ``run``)."""

    name: str = "run"

    @property
    def kind(self) -> WindowKind:
        if self.name == "run":
            return "run"
        return "calendar" if self.name in CALENDAR else "rolling"

    @property
    def is_run(self) -> bool:
        return self.name == "run"

    @property
    def is_rolling(self) -> bool:
        return self.kind == "rolling"

    @property
    def rolling_seconds(self) -> int:
        match = _ROLLING.match(self.name)
        if match is None:
            raise ValueError(f"window {self.name!r} is not rolling")
        return int(match.group(1)) * _UNIT_SECONDS[match.group(2)]

    @property
    def label(self) -> str:
        """How a bar says it: ``today``, ``this week``, ``last 5h``, ``this run``."""
        if self.is_run:
            return "this run"
        if self.name in _CALENDAR_LABELS:
            return _CALENDAR_LABELS[self.name]
        match = _ROLLING.match(self.name)
        assert match is not None
        return f"last {match.group(1)}{_UNIT_WORDS[match.group(2)]}"

    def start(self, now: float) -> float | None:
        """When the window holding ``now`` began (None for ``run``)."""
        if self.is_run:
            return None
        if self.is_rolling:
            return now - self.rolling_seconds
        return calendar_start(self.name, now)

    def end(self, now: float) -> float | None:
        """When the window holding ``now`` ends: the next calendar boundary, ``now`` for a
        rolling window (it slides), None for ``run``."""
        if self.is_run:
            return None
        if self.is_rolling:
            return now
        return calendar_end(self.name, now)


RUN = Window("run")


def parse_window(text: str) -> Window:
    """``day`` -> Window("day"); raises ``ValueError`` naming what is allowed."""
    name = text.strip().lower()
    if name == "run" or name in CALENDAR or _ROLLING.match(name):
        return Window(name)
    raise ValueError(f"window {text.strip()!r} is not one of {ALLOWED}")


def _local(ts: float) -> datetime:
    return datetime.fromtimestamp(ts).astimezone()


def _at(year: int, month: int, day: int, hour: int = 0) -> float:
    """Local wall-clock time -> POSIX seconds (a time skipped by DST moves forward)."""
    return datetime(year, month, day, hour).timestamp()


def calendar_start(name: str, now: float) -> float:
    t = _local(now)
    if name == "hour":
        # Hour boundaries are whole hours of real time: a DST fold repeats a wall hour.
        return now - (t.minute * 60 + t.second + t.microsecond / 1e6)
    if name == "day":
        return _at(t.year, t.month, t.day)
    if name == "week":
        monday = t.date() - timedelta(days=t.weekday())
        return _at(monday.year, monday.month, monday.day)
    if name == "month":
        return _at(t.year, t.month, 1)
    raise ValueError(f"window {name!r} is not a calendar window")


def calendar_end(name: str, now: float) -> float:
    if name == "hour":
        return calendar_start("hour", now) + 3600
    t = _local(now)
    if name == "day":
        nxt = t.date() + timedelta(days=1)
        return _at(nxt.year, nxt.month, nxt.day)
    if name == "week":
        nxt = t.date() + timedelta(days=7 - t.weekday())
        return _at(nxt.year, nxt.month, nxt.day)
    if name == "month":
        year, month = (t.year + 1, 1) if t.month == 12 else (t.year, t.month + 1)
        return _at(year, month, 1)
    raise ValueError(f"window {name!r} is not a calendar window")


def calendar_buckets(name: str, since: float, until: float) -> list[tuple[float, float]]:
    """The calendar windows (start, end) that cover [since, until), in order."""
    buckets: list[tuple[float, float]] = []
    start = calendar_start(name, since)
    while start < until:
        end = calendar_end(name, start)
        buckets.append((start, end))
        start = end
    return buckets
