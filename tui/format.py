"""Plain-text pieces of the monitor: times, budget columns, instance cells.

Pure functions over the run's values, so the widgets stay thin and these stay testable.
"""

from __future__ import annotations

import math

from budget_core import (
    BudgetState,
    Unit,
    format_clock,
    format_percent,
    format_tokens,
    format_usd,
)
from orchestrator.state import BurnView, InstanceView, RunSnapshot

LIVE_MARK = "*"  # tokens not yet confirmed by the CLI's result line
ESTIMATE_MARK = "~"  # cost worked out from token prices, not reported by the CLI


clock_text = format_clock  # a stopwatch reading, as in the headless log


def span_text(seconds: float) -> str:
    """``45s``, ``3m12s``, ``1h05m``, ``>99h``: a compact duration for "time left"."""
    if not math.isfinite(seconds) or seconds >= 100 * 3600:
        return ">99h"
    total = max(math.ceil(seconds), 0)
    if total < 60:
        return f"{total}s"
    minutes, secs = divmod(total, 60)
    if minutes < 60:
        return f"{minutes}m{secs:02}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02}m"


def budget_name(budget: BudgetState) -> str:
    """The key, with ``$`` after it for a USD budget (a key may have both kinds)."""
    return f"{budget.key} $" if budget.unit is Unit.USD else budget.key


def amount_text(amount: float, unit: Unit) -> str:
    return format_usd(amount) if unit is Unit.USD else format_tokens(amount)


def used_text(budget: BudgetState) -> str:
    """``45.6K/200K``, ``$0.2100/$0.5000``, ``1.4M/2M today``, ``$31/$50 last 5h``."""
    text = f"{amount_text(budget.used, budget.unit)}/{amount_text(budget.limit, budget.unit)}"
    return text if budget.window.is_run else f"{text} {budget.window.label}"


def percent_text(budget: BudgetState) -> str:
    return format_percent(budget.used, budget.limit)


def level_word(budget: BudgetState) -> str:
    """Always printed, so the level reads without colour."""
    return budget.level.value.upper()


def rate_text(burn: BurnView | None) -> str:
    """Tokens per minute over the last minute, or ``idle``."""
    if burn is None or burn.tokens_per_min <= 0:
        return "idle"
    return f"{format_tokens(burn.tokens_per_min)}/min"


def left_text(budget: BudgetState, burn: BurnView | None) -> str:
    """Time until a token budget runs out at the current rate; blank when unknown."""
    if budget.unit is not Unit.TOKENS:
        return ""  # the burn rate is in tokens; it says nothing about dollars
    if budget.remaining <= 0:
        return "used up"
    if burn is None or burn.seconds_left is None:
        return ""
    return f"{span_text(burn.seconds_left)} left"


def tokens_cell(count: int, view: InstanceView) -> str:
    return format_tokens(count) + ("" if view.final else LIVE_MARK)


def cost_cell(view: InstanceView) -> str:
    return (ESTIMATE_MARK if view.cost_is_estimate else "") + format_usd(view.cost_usd)


def cost_total_text(snapshot: RunSnapshot) -> str:
    text = format_usd(snapshot.total_cost_usd)
    return f"{text} est." if snapshot.cost_is_estimate else text


def counts_text(snapshot: RunSnapshot) -> str:
    """``3 running · 2/6 done``: what the run is doing, at a glance."""
    done = sum(1 for i in snapshot.instances if i.status.is_done)
    return f"{len(snapshot.running)} running · {done}/{len(snapshot.instances)} done"
