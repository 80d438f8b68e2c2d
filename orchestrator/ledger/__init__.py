"""The ledger: every charge of every run, kept durably, so budgets can span time and runs.

``Ledger`` is the one interface; ``open_ledger`` picks the implementation from a URL
(``sqlite:///path``, a path, or ``none``). The run talks to it only through ``RunLedger``
(``orchestrator.ledger.session``), which writes and polls on a thread of its own.
"""

from __future__ import annotations

from orchestrator.ledger.base import (
    GROUPINGS,
    Charge,
    InstanceRecord,
    Ledger,
    LedgerError,
    RunRecord,
    UsageRow,
    WindowQuery,
    WindowSpend,
)
from orchestrator.ledger.urls import (
    LEDGER_ENV,
    default_ledger_url,
    open_ledger,
    redact_url,
    resolve_ledger_url,
)

__all__ = [
    "GROUPINGS",
    "LEDGER_ENV",
    "Charge",
    "InstanceRecord",
    "Ledger",
    "LedgerError",
    "RunRecord",
    "UsageRow",
    "WindowQuery",
    "WindowSpend",
    "default_ledger_url",
    "open_ledger",
    "redact_url",
    "resolve_ledger_url",
]
