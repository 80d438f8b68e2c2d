"""Cooperative limits: the CLI is told what it may spend, so it stops itself cleanly.

Claude Code takes ``--max-budget-usd AMOUNT`` (in ``--print`` mode): it finishes the API call
that crosses the amount, runs no further tool and prints a proper result line (subtype
``error_max_budget_usd``) with its final figures. In block mode an instance under a USD
budget is launched with the tightest remainder of its key's and the overall USD budget at
that moment; the orchestrator's own stop stays the backstop (token budgets, several
instances sharing a budget, a CLI that overshoots). Off with ``--no-cooperative-limits``.
"""

from __future__ import annotations

from budget_core import OVERALL, BudgetSnapshot, Unit

FLAG = "--max-budget-usd"


def max_budget_usd(budgets: BudgetSnapshot, key: str) -> float | None:
    """What an instance charged to ``key`` may spend now: the smallest remainder of the USD
    budgets it counts against, or None when none applies (or one is used up: such a
    launch is blocked, not given a limit of nothing)."""
    left = [b.remaining for b in budgets.budgets if b.unit is Unit.USD and b.key in (key, OVERALL)]
    if not left or min(left) <= 0:
        return None
    return min(left)


def max_budget_args(budgets: BudgetSnapshot, key: str) -> tuple[str, ...]:
    """``("--max-budget-usd", "0.123456")`` or nothing. Rounded down to a millionth of a
    dollar, never up: the CLI must not be allowed more than is left."""
    amount = max_budget_usd(budgets, key)
    if amount is None:
        return ()
    micro = int(amount * 1_000_000)
    if micro <= 0:
        return ()
    return (FLAG, f"{micro / 1_000_000:.6f}")
