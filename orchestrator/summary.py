"""The final summary as data: the ``--summary-json`` schema of the design."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from budget_core import Unit
from orchestrator.output_file import replace_file
from orchestrator.state import RunSnapshot

# Sums of float costs carry binary noise (0.026514999999999997); ten places drop it and
# are still far finer than one token's price.
USD_PLACES = 10


def summary_dict(snapshot: RunSnapshot, exit_code: int) -> dict[str, Any]:
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
        }
        for i in snapshot.instances
    ]
    budgets = [
        {
            "key": b.key,
            "unit": str(b.unit),
            "limit": round(b.limit, USD_PLACES) if b.unit is Unit.USD else b.limit,
            "used": round(b.used, USD_PLACES) if b.unit is Unit.USD else b.used,
            "fraction": b.fraction,
            "level": str(b.level),
        }
        for b in snapshot.budgets.budgets
    ]
    return {
        "enforcement_mode": snapshot.mode,
        "exit_code": exit_code,
        "instances": instances,
        "budgets": budgets,
        "totals": {
            # From the instances themselves: exact even if the budget system failed mid-run.
            "tokens": snapshot.instances_usage.as_dict(),
            "cost_usd": round(snapshot.instances_cost, USD_PLACES),
        },
    }


def write_summary_json(
    path: str, data: dict[str, Any], inputs: Sequence[tuple[str, str]] = ()
) -> None:
    """Replace ``path`` atomically (see ``output_file``). Raises ``OSError``."""
    replace_file(path, json.dumps(data, indent=2) + "\n", inputs)
