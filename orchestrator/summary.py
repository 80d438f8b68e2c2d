"""The final summary as data: the ``--summary-json`` schema of the design."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from budget_core import OVERALL, Unit
from orchestrator.ledger import redact_url
from orchestrator.ledger.session import RunLedger
from orchestrator.output_file import replace_file
from orchestrator.ratelimits import summary_rate_limits
from orchestrator.state import RunSnapshot

# Sums of float costs carry binary noise (0.026514999999999997); ten places drop it and
# are still far finer than one token's price.
USD_PLACES = 10


def summary_dict(
    snapshot: RunSnapshot, exit_code: int, ledger: RunLedger | None = None
) -> dict[str, Any]:
    instances = [
        {
            "name": i.name,
            "command": i.command,
            "budget_key": i.budget_key,
            "status": str(i.status),
            "exit_code": i.exit_code,
            "final": i.final,
            "tokens": i.usage.as_dict(),
            "cost_usd": round(i.cost_usd, USD_PLACES),
            "cost_is_estimate": i.cost_is_estimate,
            "duration_s": round(i.elapsed_s, 3),
            "error": i.error,
            "discrepancy": i.discrepancy,
            "skipped_lines": i.skipped_lines,
            # Resume and cooperative limits: the CLI stopped itself at the --max-budget-usd
            # it was given; the session it continued; processes started for it in this run.
            "stopped_by_cli": i.stopped_by_cli,
            "max_budget_usd": i.max_budget_usd,
            "resumed_session": i.resumed_session,
            "launches": i.launches,
        }
        for i in snapshot.instances
    ]
    now = time.time()
    budgets = [
        {
            "key": b.key,
            "unit": str(b.unit),
            "limit": round(b.limit, USD_PLACES) if b.unit is Unit.USD else b.limit,
            "used": round(b.used, USD_PLACES) if b.unit is Unit.USD else b.used,
            "fraction": b.fraction,
            "level": str(b.level),
            "window": b.window.name,
            "window_start": _iso(b.window.start(now)),
            "used_before_run": (
                ledger.used_before.get((None if b.key == OVERALL else b.key, b.unit), 0)
                if ledger is not None
                else 0
            ),
        }
        for b in snapshot.budgets.budgets
    ]
    return {
        "run_id": ledger.run_id if ledger is not None else None,
        "ledger": redact_url(ledger.ledger.url) if ledger is not None else None,
        "enforcement_mode": snapshot.mode,
        "exit_code": exit_code,
        "instances": instances,
        "budgets": budgets,
        "totals": {
            # From the instances themselves: exact even if the budget system failed mid-run.
            "tokens": snapshot.instances_usage.as_dict(),
            "cost_usd": round(snapshot.instances_cost, USD_PLACES),
        },
        "rate_limits": (
            summary_rate_limits(snapshot.rate_limits) if snapshot.rate_limits is not None else None
        ),
    }


def _iso(ts: float | None) -> str | None:
    return datetime.fromtimestamp(ts).astimezone().isoformat() if ts is not None else None


def write_summary_json(
    path: str, data: dict[str, Any], inputs: Sequence[tuple[str, str]] = ()
) -> None:
    """Replace ``path`` atomically (see ``output_file``). Raises ``OSError``."""
    replace_file(path, json.dumps(data, indent=2) + "\n", inputs)
