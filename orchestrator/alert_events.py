"""What is worth an alert, as data: a budget crossing a percentage, an instance blocked,
stopped by its budget or failed, and the run's end.

Built from the run's snapshots, never from the log's text, so an alert carries the figures
themselves. ``AlertWatch`` is fed snapshots (at each notice and on a timer) and returns what
is new since the last one; it does no I/O, and delivering is the business of its sinks
(``alerts.AlertSender``, ``github_actions``).
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from budget_core import BudgetLevel, BudgetState, Unit, format_tokens
from budget_core.levels import CRITICAL_AT, WARNING_AT
from orchestrator.report import EXIT_MEANINGS, cost_text
from orchestrator.run import describe_budget
from orchestrator.state import InstanceStatus, InstanceView, RunSnapshot

# The level thresholds, in percent: what --alert-at is when not given.
DEFAULT_THRESHOLDS: tuple[float, ...] = (WARNING_AT * 100, CRITICAL_AT * 100, 100.0)
USD_PLACES = 10
S = InstanceStatus


class AlertKind(StrEnum):
    THRESHOLD = "threshold"  # a budget reached one of the --alert-at percentages
    BLOCKED = "blocked"  # an instance was not launched: its budget is exceeded
    BUDGET_STOP = "budget_stop"  # an instance was stopped by its budget
    FAILED = "failed"  # an instance failed or timed out
    RUN_END = "run_end"


Severity = Literal["info", "warning", "error"]


@dataclass(frozen=True, slots=True)
class AlertEvent:
    kind: AlertKind
    severity: Severity
    title: str  # short: a GitHub annotation's title
    text: str  # one line a chat webhook can show
    data: dict[str, Any] = field(default_factory=dict)  # the JSON, ``text`` included


def run_status(exit_code: int) -> str:
    """The run's end in one word (the ``status`` output and alert field)."""
    if exit_code == 0:
        return "succeeded"
    if exit_code == 3:
        return "budget_stopped"
    if exit_code >= 128:
        return "interrupted"
    return "failed"


def percent_text(value: float) -> str:
    return f"{value:g}%"


class AlertWatch:
    """Turns snapshots into alert events, each once: a budget's percentages as it reaches
    them (all those one charge jumps over make one event, at the highest), and instances as
    they reach an end worth hearing about."""

    def __init__(self, thresholds: tuple[float, ...] = DEFAULT_THRESHOLDS) -> None:
        self.thresholds = tuple(sorted(set(thresholds)))
        self._reached: dict[tuple[str, Unit], int] = {}  # how many thresholds, per budget
        self._statuses: dict[int, InstanceStatus] = {}  # by index: names may repeat
        self._host = socket.gethostname()

    def check(self, snapshot: RunSnapshot) -> list[AlertEvent]:
        events = [e for b in snapshot.budgets.budgets if (e := self._budget(snapshot, b))]
        for index, view in enumerate(snapshot.instances):
            if self._statuses.get(index) is view.status:
                continue
            self._statuses[index] = view.status
            if (event := self._instance(snapshot, view)) is not None:
                events.append(event)
        return events

    def _budget(self, snapshot: RunSnapshot, budget: BudgetState) -> AlertEvent | None:
        # Multiplied, not divided: 63,000 of 70,000 tokens is exactly 90%.
        reached = sum(1 for t in self.thresholds if budget.used * 100 >= budget.limit * t)
        before = self._reached.get((budget.key, budget.unit), 0)
        self._reached[(budget.key, budget.unit)] = reached  # lower again as a window ages out
        if reached <= before:
            return None
        threshold = self.thresholds[reached - 1]
        percent = budget.fraction * 100
        level = budget.level
        text = (
            f"budget {describe_budget(budget)} reached {percent_text(threshold)}: {level.upper()}"
        )
        if level is BudgetLevel.EXCEEDED:
            text += (
                "; block mode: its instances are stopped and no more are launched"
                if snapshot.mode == "block"
                else "; warn mode: its instances go on"
            )
        severity: Severity = "error" if level is BudgetLevel.EXCEEDED else "warning"
        return self._event(
            snapshot,
            AlertKind.THRESHOLD,
            severity,
            f"Budget {budget.key} at {percent_text(threshold)}",
            text,
            threshold_percent=threshold,
            budget=budget_data(budget, percent),
        )

    def _instance(self, snapshot: RunSnapshot, view: InstanceView) -> AlertEvent | None:
        cost = cost_text(view.cost_usd, view.cost_is_estimate)
        spent = f"{format_tokens(view.usage.total)} tokens, {cost}"
        reason = view.error or str(view.status)
        if view.status is S.BLOCKED:
            kind, title, text = AlertKind.BLOCKED, "Blocked", f"{view.name}: not launched, {reason}"
        elif view.status is S.STOPPED_BY_BUDGET:
            kind, title = AlertKind.BUDGET_STOP, "Stopped by budget"
            text = f"{view.name}: stopped by budget ({reason}) after {spent}"
        elif view.status in (S.FAILED, S.TIMED_OUT):
            kind, title = AlertKind.FAILED, "Instance failed"
            text = f"{view.name}: {view.status}: {reason} ({spent})"
        else:
            return None
        return self._event(
            snapshot, kind, "error", f"{title}: {view.name}", text, instance=instance_data(view)
        )

    def run_end(self, snapshot: RunSnapshot, exit_code: int, meaning: str | None) -> AlertEvent:
        meaning = meaning or EXIT_MEANINGS.get(exit_code, "")
        counts: dict[str, int] = {}
        for view in snapshot.instances:
            counts[str(view.status)] = counts.get(str(view.status), 0) + 1
        usage, cost = snapshot.instances_usage, snapshot.instances_cost
        statuses = ", ".join(f"{n} {status}" for status, n in counts.items())
        text = (
            f"run finished, exit status {exit_code}"
            + (f" ({meaning})" if meaning else "")
            + f": {statuses or 'no instances'}; {format_tokens(usage.total)} tokens, "
            + cost_text(cost, snapshot.cost_is_estimate)
        )
        severity: Severity = "info" if exit_code == 0 else "error"
        return self._event(
            snapshot,
            AlertKind.RUN_END,
            severity,
            f"Run finished: exit status {exit_code}",
            text,
            exit_code=exit_code,
            status=run_status(exit_code),
            meaning=meaning,
            instances=counts,
            totals={
                "tokens": usage.as_dict(),
                "cost_usd": round(cost, USD_PLACES),
                "cost_is_estimate": snapshot.cost_is_estimate,
            },
            budgets=[budget_data(b, b.fraction * 100) for b in snapshot.budgets.budgets],
        )

    def _event(
        self,
        snapshot: RunSnapshot,
        kind: AlertKind,
        severity: Severity,
        title: str,
        text: str,
        **fields: Any,
    ) -> AlertEvent:
        data: dict[str, Any] = {
            "event": str(kind),
            "severity": severity,
            "text": f"[orchestrator@{self._host}] {text}",
            "time": datetime.fromtimestamp(time.time()).astimezone().isoformat(),
            "elapsed_s": round(snapshot.elapsed_s, 3),
            "host": self._host,
            "mode": snapshot.mode,
            **fields,
        }
        return AlertEvent(kind, severity, title, text, data)


def budget_data(budget: BudgetState, percent: float) -> dict[str, Any]:
    usd = budget.unit is Unit.USD
    return {
        "key": budget.key,
        "unit": str(budget.unit),
        "limit": round(budget.limit, USD_PLACES) if usd else budget.limit,
        "used": round(budget.used, USD_PLACES) if usd else budget.used,
        "percent": round(percent, 2),
        "level": str(budget.level),
        "window": budget.window.name,
    }


def instance_data(view: InstanceView) -> dict[str, Any]:
    return {
        "name": view.name,
        "command": view.command,
        "budget_key": view.budget_key,
        "status": str(view.status),
        "error": view.error,
        "model": view.model,
        "tokens": view.usage.as_dict(),
        "cost_usd": round(view.cost_usd, USD_PLACES),
        "cost_is_estimate": view.cost_is_estimate,
        "final": view.final,
        "duration_s": round(view.elapsed_s, 3),
    }
