"""Budget levels and where their thresholds lie."""

from __future__ import annotations

from enum import StrEnum


class BudgetLevel(StrEnum):
    """How much of a budget is used: ok < 70% <= warning < 90% <= critical < 100% <= exceeded."""

    OK = "ok"
    WARNING = "warning"
    CRITICAL = "critical"
    EXCEEDED = "exceeded"

    @property
    def rank(self) -> int:
        return _RANK[self]


_RANK = {
    BudgetLevel.OK: 0,
    BudgetLevel.WARNING: 1,
    BudgetLevel.CRITICAL: 2,
    BudgetLevel.EXCEEDED: 3,
}

WARNING_AT = 0.70
CRITICAL_AT = 0.90


def level_for(used: float, limit: float) -> BudgetLevel:
    """The level of ``used`` against ``limit``; exact for integer token counts."""
    if limit <= 0 or used >= limit:
        return BudgetLevel.EXCEEDED
    # Multiply rather than divide so that 63_000 of 70_000 is exactly 90%.
    if used * 10 >= limit * 9:
        return BudgetLevel.CRITICAL
    if used * 10 >= limit * 7:
        return BudgetLevel.WARNING
    return BudgetLevel.OK
