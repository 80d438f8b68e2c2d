"""Subscription windows across a run's instances, and the launch hold of ``--on-rate-limit wait``.

Every instance's CLI reports the same account's windows (``rate_limit_event`` lines, read by
the tracker). The board keeps the latest reading of each window, says when one changed (one
log line each), and in ``wait`` mode holds new launches while a window is ``rejected``, until
its ``resetsAt``. What already runs goes on: the hold only concerns launches not yet decided.

A ``rejected`` reading sticks until its reset time: a later ``allowed`` for the same window from
another instance may come from an answer sent before the limit was hit. Times are Unix
seconds from an injectable wall clock (``resetsAt`` is wall time).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from budget_core import RateLimitEvent, RateLimitStatus, WindowReading, window_label
from budget_core.formatting import format_clock
from budget_core.ratelimit import UNSPECIFIED

# A rejection that names no reset time: hold this long, then let a launch try again.
UNKNOWN_RESET_HOLD_S = 60.0
# No subscription window is longer than a week: a reset further away is capped here.
MAX_HOLD_S = 8 * 24 * 3600.0
COUNTDOWN_EVERY_S = 300.0  # a countdown line this often while launches are held
_ORDER = ("five_hour", "seven_day")
WallClock = Callable[[], float]


class OnRateLimit(StrEnum):
    CONTINUE = "continue"  # launch as if nothing was reported (the CLI fails what it must)
    WAIT = "wait"  # hold new launches while a window is rejected, until its reset


class HoldState(StrEnum):
    """Whether new launches may go: ``open -> holding -> open``; a later reset extends."""

    OPEN = "open"
    HOLDING = "holding"

    def can_become(self, other: HoldState) -> bool:
        return other in _HOLD_TRANSITIONS[self]


_HOLD_TRANSITIONS = {
    HoldState.OPEN: frozenset({HoldState.HOLDING}),
    HoldState.HOLDING: frozenset({HoldState.OPEN, HoldState.HOLDING}),
}


@dataclass(frozen=True, slots=True)
class WindowView:
    """A window's latest reading, and the instance whose CLI reported it."""

    window: str
    status: RateLimitStatus
    resets_at: float | None
    utilization: float | None
    reported_by: str

    @property
    def label(self) -> str:
        return window_label(self.window)


@dataclass(frozen=True, slots=True)
class RateLimitView:
    """The windows and the hold at one moment (``now``, wall time), for subscribers."""

    policy: OnRateLimit
    windows: tuple[WindowView, ...]
    hold: HoldState
    hold_until: float | None
    hold_window: str | None
    now: float
    events: int
    holds: int
    held_s: float

    @property
    def seconds_left(self) -> float | None:
        if self.hold is not HoldState.HOLDING or self.hold_until is None:
            return None
        return max(0.0, self.hold_until - self.now)

    @property
    def shown(self) -> tuple[WindowView, ...]:
        """The windows worth showing: a report that names no window only when it is all
        there is, or when it is not plain ``allowed``."""
        named = [w for w in self.windows if w.window != UNSPECIFIED]
        return tuple(
            w
            for w in self.windows
            if w.window != UNSPECIFIED or not named or w.status is not RateLimitStatus.ALLOWED
        )


@dataclass(frozen=True, slots=True)
class RateNote:
    """A log line the board calls for; ``warning``: worth a WARNING (a limit near or hit)."""

    text: str
    warning: bool = False


class IllegalHoldTransition(RuntimeError):
    """A bug: the hold tried a change its states do not have."""


class RateLimitBoard:
    def __init__(self, policy: OnRateLimit, wall_clock: WallClock = time.time) -> None:
        self.policy = policy
        self._wall = wall_clock
        self._windows: dict[str, WindowView] = {}
        self._logged: dict[str, str] = {}
        self.state = HoldState.OPEN
        self._until: float | None = None
        self._hold_window: str | None = None
        self._held_since: float | None = None
        self._held_s = 0.0
        self._holds = 0
        self._events = 0
        self._next_countdown = 0.0
        self._changed = asyncio.Event()

    # -- in -------------------------------------------------------------------------------

    def observe(self, instance: str, event: RateLimitEvent) -> list[RateNote]:
        """Take one event; return the log lines it calls for (windows that changed, a hold)."""
        now = self._wall()
        self._events += 1
        lines: list[RateNote] = []
        for reading in event.readings:
            if self._keeps_rejection(reading, now):
                continue
            view = WindowView(
                reading.window, reading.status, reading.resets_at, reading.utilization, instance
            )
            self._windows[reading.window] = view
            text = window_log_text(view, now)
            if self._logged.get(reading.window) != text:
                self._logged[reading.window] = text
                lines.append(RateNote(text, reading.status is not RateLimitStatus.ALLOWED))
        if self.policy is OnRateLimit.WAIT and event.main.status is RateLimitStatus.REJECTED:
            lines += self._hold_for(event.main, now)
        return lines

    def tick(self) -> list[RateNote]:
        """Release the hold once its time has come; a countdown line now and then."""
        if self.state is not HoldState.HOLDING:
            return []
        now = self._wall()
        assert self._until is not None
        if now >= self._until:
            window = window_label(self._hold_window or UNSPECIFIED)
            self._move(HoldState.OPEN, now)
            return [RateNote(f"{window} window reset time reached: launching again")]
        if now >= self._next_countdown:
            self._next_countdown = now + COUNTDOWN_EVERY_S
            left, until = _left(self._until - now), _at(self._until, now)
            return [RateNote(f"launches held: {left} left, until {until}")]
        return []

    async def wait_open(
        self,
        stopped: asyncio.Event,
        say: Callable[[RateNote], None],
        on_poll: Callable[[], None],
        poll_s: float = 1.0,
    ) -> None:
        """Return once launches may go or the run is stopping; say what ``tick`` says, and
        call ``on_poll`` every ``poll_s`` (the countdown on show moves)."""
        while not stopped.is_set():
            for note in self.tick():
                say(note)
            if self.state is HoldState.OPEN:
                return
            on_poll()
            assert self._until is not None
            left = max(0.001, self._until - self._wall())
            self._changed.clear()
            waiters = [
                asyncio.ensure_future(stopped.wait()),
                asyncio.ensure_future(self._changed.wait()),
            ]
            try:
                await asyncio.wait(
                    waiters, timeout=min(left, poll_s), return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                for waiter in waiters:
                    waiter.cancel()

    # -- out ------------------------------------------------------------------------------

    def view(self) -> RateLimitView:
        now = self._wall()
        held = self._held_s + (now - self._held_since if self._held_since is not None else 0.0)
        return RateLimitView(
            policy=self.policy,
            windows=tuple(sorted(self._windows.values(), key=_order)),
            hold=self.state,
            hold_until=self._until if self.state is HoldState.HOLDING else None,
            hold_window=self._hold_window if self.state is HoldState.HOLDING else None,
            now=now,
            events=self._events,
            holds=self._holds,
            held_s=max(0.0, held),
        )

    # -- the hold -------------------------------------------------------------------------

    def _keeps_rejection(self, reading: WindowReading, now: float) -> bool:
        """A rejection still in force is not undone by a milder report (see the module)."""
        known = self._windows.get(reading.window)
        return (
            known is not None
            and known.status is RateLimitStatus.REJECTED
            and reading.status is not RateLimitStatus.REJECTED
            and known.resets_at is not None
            and known.resets_at > now
        )

    def _hold_for(self, reading: WindowReading, now: float) -> list[RateNote]:
        label = window_label(reading.window)
        if reading.resets_at is None:
            until = now + UNKNOWN_RESET_HOLD_S
            why = f"the {label} window gave no reset time"
        elif reading.resets_at <= now:
            passed = _at(reading.resets_at, now)
            return [RateNote(f"{label} window rejected, but its reset time {passed} has passed")]
        else:
            until = min(reading.resets_at, now + MAX_HOLD_S)
            why = f"the {label} window resets then"
        if self.state is HoldState.HOLDING and self._until is not None and until <= self._until:
            return []  # already held at least that long
        self._until, self._hold_window = until, reading.window
        self._move(HoldState.HOLDING, now)
        self._next_countdown = now + COUNTDOWN_EVERY_S
        at, left = _at(until, now), _left(until - now)
        text = f"holding new launches until {at} ({left} from now): {why}"
        return [RateNote(text, warning=True)]

    def _move(self, state: HoldState, now: float) -> None:
        if not self.state.can_become(state):
            raise IllegalHoldTransition(f"rate-limit hold: {self.state} -> {state}")
        if state is HoldState.HOLDING and self.state is HoldState.OPEN:
            self._holds += 1
            self._held_since = now
        elif state is HoldState.OPEN:
            if self._held_since is not None:
                self._held_s += max(0.0, now - self._held_since)
            self._held_since = None
            self._until = self._hold_window = None
        self.state = state
        self._changed.set()


# -- text ---------------------------------------------------------------------------------


def window_log_text(view: WindowView, now: float) -> str:
    """``5h window 83%, resets 14:20`` (headless log)."""
    return f"{view.label} window " + _state_text(view, now, ", ")


def window_short_text(view: WindowView, now: float) -> str:
    """``5h 83% resets 14:20`` (the monitor's header)."""
    return f"{view.label} " + _state_text(view, now, " ")


def hold_text(view: RateLimitView) -> str | None:
    """``HOLD 1:59:12 until 14:20`` while launches are held, else None."""
    left = view.seconds_left
    if left is None or view.hold_until is None:
        return None
    return f"HOLD {_left(left)} until {_at(view.hold_until, view.now)}"


def rate_limit_line(view: RateLimitView, with_hold: bool = True) -> str | None:
    """Everything in one line (``5h 83% resets 14:20 · 7d ok``), or None with nothing to say."""
    parts = [window_short_text(w, view.now) for w in view.shown]
    hold = hold_text(view) if with_hold else None
    if hold is not None:
        parts.insert(0, hold)
    return " · ".join(parts) if parts else None


def summary_rate_limits(view: RateLimitView) -> dict[str, Any]:
    """The ``rate_limits`` object of the summary JSON (README: Subscription windows)."""
    return {
        "on_rate_limit": str(view.policy),
        "events": view.events,
        "windows": {
            w.window: {
                "status": str(w.status),
                "utilization": w.utilization,
                "resets_at": _iso(w.resets_at),
                "reported_by": w.reported_by,
            }
            for w in view.windows
        },
        "hold": {
            "state": str(view.hold),
            "until": _iso(view.hold_until),
            "holds": view.holds,
            "held_s": round(view.held_s, 3),
        },
    }


def _state_text(view: WindowView, now: float, sep: str) -> str:
    percent = _percent(view.utilization)
    reset = f"resets {_at(view.resets_at, now)}" if view.resets_at is not None else None
    if view.status is RateLimitStatus.REJECTED:
        if view.resets_at is not None and view.resets_at <= now:
            return f"reset at {_at(view.resets_at, now)}"
        head = "LIMIT" if percent is None else f"{percent} LIMIT"
        return head + (f"{sep}{reset}" if reset else "")
    if view.status is RateLimitStatus.ALLOWED_WARNING:
        head = percent or "warning"
        return head + (f"{sep}{reset}" if reset else "")
    return "ok"


def _percent(utilization: float | None) -> str | None:
    if utilization is None:
        return None
    value = utilization * 100
    return ">999%" if value > 999 else f"{value:.0f}%"


def _at(epoch: float, now: float) -> str:
    """Local ``14:20``; ``Tue 14:20`` on another day."""
    when = datetime.fromtimestamp(epoch)
    if when.date() == datetime.fromtimestamp(now).date():
        return when.strftime("%H:%M")
    return when.strftime("%a %H:%M")


def _left(seconds: float) -> str:
    return format_clock(math.ceil(max(0.0, seconds)))  # never 0:00 while still held


def _iso(epoch: float | None) -> str | None:
    return datetime.fromtimestamp(epoch).astimezone().isoformat() if epoch is not None else None


def _order(view: WindowView) -> tuple[int, str]:
    known = _ORDER.index(view.window) if view.window in _ORDER else len(_ORDER)
    return (known if view.window != UNSPECIFIED else len(_ORDER) + 1, view.window)
