"""Burn rate: tokens per minute over a recent window, from timestamped samples."""

from __future__ import annotations

from collections import deque


class BurnRate:
    """Rate of a growing counter over the last ``window`` seconds.

    The caller supplies the time of each sample, so this stays free of clocks and testable.
    """

    def __init__(self, window: float = 60.0) -> None:
        if window <= 0:
            raise ValueError("window must be > 0")
        self._window = window
        self._samples: deque[tuple[float, float]] = deque()

    def add(self, at: float, used: float) -> None:
        self._samples.append((at, used))
        # Keep one sample older than the window so the rate spans the whole window.
        while len(self._samples) > 2 and self._samples[1][0] <= at - self._window:
            self._samples.popleft()

    def per_minute(self) -> float:
        """Growth per minute between the oldest kept sample and the newest; 0 when unknown."""
        if len(self._samples) < 2:
            return 0.0
        (t0, u0), (t1, u1) = self._samples[0], self._samples[-1]
        if t1 <= t0:
            return 0.0
        return max(u1 - u0, 0.0) / (t1 - t0) * 60.0

    def seconds_left(self, remaining: float) -> float | None:
        """Seconds until ``remaining`` is used at the current rate; None when not burning."""
        rate = self.per_minute()
        if rate <= 0:
            return None
        return max(remaining, 0.0) / rate * 60.0
