"""The headless run's last lines when a budget blocked or stopped work: how to continue it."""

from __future__ import annotations

import shlex

from budget_core import OVERALL, Unit
from budget_core.budgets import BudgetState
from orchestrator.ledger.session import RunLedger
from orchestrator.ledger.urls import redact_url
from orchestrator.state import InstanceStatus, RunSnapshot

_PAUSED = (InstanceStatus.BLOCKED, InstanceStatus.STOPPED_BY_BUDGET)


def raised_flag(budget: BudgetState) -> list[str]:
    """The flag that gives ``budget`` twice its limit, in its own window: the suggestion."""
    window = "" if budget.window.is_run else f"/{budget.window.name}"
    if budget.unit is Unit.USD:
        limit = f"{budget.limit * 2:.6f}".rstrip("0").rstrip(".")  # 5, 0.1, 0.000002
        flag = "--overall-cost-budget" if budget.is_overall else "--command-cost-budget"
    else:
        limit = str(int(budget.limit * 2))
        flag = "--overall-token-budget" if budget.is_overall else "--command-budget"
    value = limit + window if budget.is_overall else f"{budget.key}={limit}{window}"
    return [flag, value]


def resume_hint(
    snapshot: RunSnapshot,
    ledger: RunLedger | None,
    ledger_flag: str | None = None,
    throwaway: bool = False,
) -> str | None:
    """None unless an instance ended blocked or stopped by a budget. ``ledger_flag``: the
    run's --ledger (resume must be pointed at it too); ``throwaway``: the demo's own ledger,
    removed after the run."""
    paused = [i for i in snapshot.instances if i.status in _PAUSED]
    if not paused:
        return None
    if ledger is None or throwaway:
        where = (
            "the demo's ledger is thrown away (give --ledger PATH to keep it)"
            if throwaway
            else "it was not recorded in a ledger"
        )
        return (
            f"{len(paused)} instance(s) blocked or stopped by a budget; {where}, so "
            "`orchestrator resume` cannot continue this run"
        )
    keys = {i.budget_key for i in paused} | {OVERALL}
    exceeded = [b for b in snapshot.budgets.exceeded if b.key in keys]
    command = ["orchestrator", "resume", ledger.run_id]
    for budget in exceeded:
        command += raised_flag(budget)
    if ledger_flag is not None:  # else the environment's or the default ledger, found again
        command += ["--ledger", redact_url(ledger_flag)]
    lines = [
        f"{len(paused)} instance(s) blocked or stopped by a budget "
        f"({', '.join(i.name for i in paused)}). To continue their work (sessions resumed, "
        "nothing done again), raise the limit and resume, e.g.:",
        f"  {shlex.join(command)}",
    ]
    return "\n".join(lines)
