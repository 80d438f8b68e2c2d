"""Subscription windows from the CLI's ``rate_limit_event`` lines, read leniently.

Claude Code 2.1.x prints one such line whenever the state its API answers report changes
(only when it runs on a subscription: an OAuth login or ``CLAUDE_CODE_OAUTH_TOKEN``; never
with an API key; 1.0.x and 2.0.0 never print them)::

    {"type":"rate_limit_event","rate_limit_info":{"status":"allowed_warning",
     "resetsAt":1796070524,"rateLimitType":"five_hour","utilization":0.83,...},...}

``status`` is ``allowed``, ``allowed_warning`` or ``rejected``; ``resetsAt`` is Unix time in
seconds; ``rateLimitType`` names the window that decided (``five_hour``, ``seven_day``,
``seven_day_opus``, ...); ``utilization`` (0..1) comes with warnings. 2.1.332 adds
``unifiedWindows``: ``{window: {utilization, resetsAt}}`` for every window the answer named.
Such a line carries no tokens. A line without a known ``status`` is no event (the tracker
counts it as skipped); a field of the wrong type, NaN or out of range is taken as unknown.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

# Beyond this many seconds since 1970 (year 5138) a reset time is garbage (or milliseconds).
_MAX_EPOCH_S = 1e11
# Utilization is a fraction (1.0 = the whole window); past 10x it is garbage, not a reading.
_MAX_UTILIZATION = 10.0
_MAX_NAME = 40  # a window name longer than this is cut (it is shown in one header line)

_LABELS = {
    "five_hour": "5h",
    "seven_day": "7d",
    "seven_day_opus": "7d opus",
    "seven_day_sonnet": "7d sonnet",
    "seven_day_overage_included": "7d incl",
    "overage": "overage",
}
UNSPECIFIED = "unspecified"  # an event that names no window


class RateLimitStatus(StrEnum):
    ALLOWED = "allowed"
    ALLOWED_WARNING = "allowed_warning"
    REJECTED = "rejected"


_STATUSES = frozenset(s.value for s in RateLimitStatus)


@dataclass(frozen=True, slots=True)
class WindowReading:
    """One window as one event reports it."""

    window: str  # rateLimitType, or UNSPECIFIED
    status: RateLimitStatus
    resets_at: float | None  # Unix seconds
    utilization: float | None  # 0..1 (may pass 1)


@dataclass(frozen=True, slots=True)
class RateLimitEvent:
    """One ``rate_limit_event``: the window that decided (``main``) and any others named."""

    main: WindowReading
    others: tuple[WindowReading, ...] = ()

    @property
    def status(self) -> RateLimitStatus:
        return self.main.status

    @property
    def readings(self) -> tuple[WindowReading, ...]:
        return (self.main, *self.others)


def window_label(window: str) -> str:
    """``five_hour`` -> ``5h``; an unknown name as it is (cut, control characters dropped)."""
    if window == UNSPECIFIED:
        return "limit"
    label = _LABELS.get(window)
    if label is not None:
        return label
    clean = "".join(c for c in window if c.isprintable())
    return clean[:_MAX_NAME] or "?"


def parse_rate_limit_event(data: dict[str, Any]) -> RateLimitEvent | None:
    """The event of a parsed ``rate_limit_event`` line, or None when it has no usable status."""
    info = data.get("rate_limit_info")
    if not isinstance(info, dict):
        return None
    raw = info.get("status")
    if not isinstance(raw, str) or raw not in _STATUSES:  # (a list is unhashable)
        return None
    status = RateLimitStatus(raw)
    name = _window_name(info.get("rateLimitType"))
    resets_at = _epoch(info.get("resetsAt"))
    utilization = _fraction(info.get("utilization"))
    windows = info.get("unifiedWindows")
    others: list[WindowReading] = []
    if isinstance(windows, dict):
        for key, value in windows.items():
            other = _window_name(key)
            if not isinstance(value, dict) or other is None:
                continue
            if other == name:  # the deciding window: fill in what the top level lacks
                resets_at = resets_at if resets_at is not None else _epoch(value.get("resetsAt"))
                if utilization is None:
                    utilization = _fraction(value.get("utilization"))
                continue
            # Only the deciding window has a status of its own; the others were allowed.
            others.append(
                WindowReading(
                    other,
                    RateLimitStatus.ALLOWED,
                    _epoch(value.get("resetsAt")),
                    _fraction(value.get("utilization")),
                )
            )
    main = WindowReading(name or UNSPECIFIED, status, resets_at, utilization)
    return RateLimitEvent(main, tuple(others))


def _window_name(value: object) -> str | None:
    if not isinstance(value, str) or not value.strip():
        return None
    return value.strip()[:_MAX_NAME]


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:  # an integer too large for a float
        return None
    return number if math.isfinite(number) else None


def _epoch(value: object) -> float | None:
    number = _number(value)
    return number if number is not None and 0 < number < _MAX_EPOCH_S else None


def _fraction(value: object) -> float | None:
    number = _number(value)
    return number if number is not None and 0 <= number <= _MAX_UTILIZATION else None
