"""Plain-text renderings shared by the headless reports and the TUI."""

from __future__ import annotations

import math
from typing import NamedTuple

from budget_core.budgets import BudgetState, Unit

_UNITS = ((10**12, "T"), (1_000_000_000, "B"), (1_000_000, "M"), (1_000, "K"))
_COMPACT_USD_FROM = 1_000_000  # $1.2M: a budget that large needs no cents
_SMALLEST_USD = 0.00005  # rounds to $0.0001, the last digit of $0.0123


def format_tokens(count: float) -> str:
    """``950``, ``1.2K``, ``45.6K``, ``123K``, ``3.4M``, ``1.2T``: three significant figures
    at most (the largest limit, 10**15, reads ``1000T``)."""
    sign = "-" if count < 0 else ""
    n = abs(count)
    if not math.isfinite(n):
        return f"{sign}{n}"
    for size, suffix in _UNITS:
        if n >= size * 0.9995:  # so 999_999 reads 1M, not 1000K
            value = n / size
            text = f"{value:.1f}" if value < 99.95 else f"{value:.0f}"
            return f"{sign}{text.removesuffix('.0')}{suffix}"
    return f"{sign}{int(n)}"


def format_usd(amount: float) -> str:
    """``$0.0123`` below a dollar (cents hide most single runs), ``$12.34`` above, ``$1.5M``
    from a million. An amount that is not zero but would read ``$0.0000`` reads ``$1.0e-07``."""
    sign = "-" if amount < 0 else ""
    n = abs(amount)
    if not math.isfinite(n):
        return f"{sign}${n}"
    if 0 < n < _SMALLEST_USD:
        return f"{sign}${n:.1e}"
    if n < 0.99995:  # not $1.0000
        return f"{sign}${n:.4f}"
    if n >= _COMPACT_USD_FROM * 0.9995:
        return f"{sign}${format_tokens(n)}"
    return f"{sign}${n:,.2f}"


def render_bar(used: float, limit: float, width: int = 20) -> str:
    """``[##############------]``; full, with ``!`` as its last cell, once past 100%."""
    if width < 1:
        raise ValueError("a bar needs a width of at least 1")
    if limit <= 0 or used > limit:
        return "[" + "#" * (width - 1) + "!]"
    filled = min(width, math.floor(max(used, 0) / limit * width))
    return "[" + "#" * filled + "-" * (width - filled) + "]"


class WindowBarCells(NamedTuple):
    """How a windowed budget's bar splits its cells: spend before this run, this run's, what
    is left, and whether the last cell marks spend past 100%."""

    earlier: int
    this_run: int
    left: int
    over: bool


def window_bar_cells(before: float, used: float, limit: float, width: int) -> WindowBarCells:
    """The cells of a ``width``-cell windowed bar (the headless log and the monitor alike).

    ``used`` includes ``before``; ``before`` outside [0, used] is clamped (this run's own
    spend that left a rolling window makes it negative). Past 100% the bar is full, scaled to
    ``used`` so the earlier part stays in proportion, and its last cell is the ``over`` mark."""
    if width < 1:
        raise ValueError("a bar needs a width of at least 1")
    before = min(max(before, 0), max(used, 0))
    over = limit <= 0 or used > limit
    cells = width - 1 if over else width
    scale = max(used, limit) if limit > 0 else 1
    filled = cells if over else min(cells, math.floor(max(used, 0) / scale * cells))
    earlier = min(filled, math.floor(before / scale * cells)) if scale > 0 else 0
    return WindowBarCells(earlier, filled - earlier, cells - filled, over)


def render_window_bar(before: float, used: float, limit: float, width: int = 20) -> str:
    """A windowed budget's bar: ``#`` spend before this run (earlier and other runs), ``=``
    this run's, ``-`` what is left: ``[####====------------]``; ``!`` last once past 100%
    (see ``window_bar_cells``)."""
    cells = window_bar_cells(before, used, limit, width)
    rest = "!" if cells.over else ""
    return "[" + "#" * cells.earlier + "=" * cells.this_run + "-" * cells.left + rest + "]"


def format_clock(seconds: float) -> str:
    """``0:07``, ``12:34``, ``1:02:03``: a stopwatch reading (logs and the monitor alike)."""
    total = max(int(seconds), 0)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}:{minutes:02}:{secs:02}"
    return f"{minutes}:{secs:02}"


def format_percent(used: float, limit: float) -> str:
    """``71%``; ``>999%`` past that, so a tiny limit keeps the percent column's width."""
    if limit <= 0:
        return "inf%"
    percent = used / limit * 100
    return f"{percent:.0f}%" if percent < 999.5 else ">999%"


def format_budget_amounts(budget: BudgetState) -> str:
    """``35.5K/50K tokens`` or ``$1.20/$2.00``: used against limit, in the budget's unit."""
    window = "" if budget.window.is_run else f" {budget.window.label}"
    if budget.unit is Unit.USD:
        return f"{format_usd(budget.used)}/{format_usd(budget.limit)}{window}"
    return f"{format_tokens(budget.used)}/{format_tokens(budget.limit)} tokens{window}"
