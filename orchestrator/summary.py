"""The final summary as data: the ``--summary-json`` schema of the design."""

from __future__ import annotations

import json
import os
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from budget_core import OVERALL
from orchestrator.ledger import redact_url
from orchestrator.ledger.session import RunLedger
from orchestrator.state import RunSnapshot


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
            "cost_usd": i.cost_usd,
            "cost_is_estimate": i.cost_is_estimate,
            "duration_s": round(i.elapsed_s, 3),
            "error": i.error,
        }
        for i in snapshot.instances
    ]
    now = time.time()
    budgets = [
        {
            "key": b.key,
            "unit": str(b.unit),
            "limit": b.limit,
            "used": b.used,
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
            "cost_usd": snapshot.instances_cost,
        },
    }


def _iso(ts: float | None) -> str | None:
    return datetime.fromtimestamp(ts).astimezone().isoformat() if ts is not None else None


def check_writable(path: Path) -> str | None:
    """Why ``path`` cannot be written, or None; checked before anything is launched."""
    if path.is_dir():
        return f"{path} is a directory"
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        return f"folder {parent} does not exist"
    if path.exists() and not os.access(path, os.W_OK):
        return f"{path} is not writable"
    if not path.exists() and not os.access(parent, os.W_OK):
        return f"folder {parent} is not writable"
    return None


def write_summary_json(path: Path, data: dict[str, Any]) -> None:
    """Write atomically, so a reader never sees half a summary. Raises ``OSError``."""
    text = json.dumps(data, indent=2) + "\n"
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
