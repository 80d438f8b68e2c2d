"""Where the ledger lives: ``--ledger URL`` / ``ORCHESTRATOR_LEDGER``, else the user data dir."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

from orchestrator.ledger.base import Ledger, LedgerError

LEDGER_ENV = "ORCHESTRATOR_LEDGER"
NONE = "none"
_PASSWORD = re.compile(r"^([a-z][a-z0-9+.-]*://[^/@:]*):[^/]*@", re.IGNORECASE)
_PASSWORD_PARAM = re.compile(r"([?&]password=)[^&#]*", re.IGNORECASE)  # libpq's ?password=
_PASSWORD_ANYWHERE = re.compile(r"([a-z][a-z0-9+.-]*://[^/@:\s]*):[^/\s]*@", re.IGNORECASE)
_POSTGRES = ("postgresql://", "postgres://")


def default_ledger_url(env: Mapping[str, str]) -> str:
    """``$XDG_DATA_HOME/claude-budget-orchestrator/ledger.sqlite3`` (~/.local/share when unset)."""
    data = env.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return str(Path(data) / "claude-budget-orchestrator" / "ledger.sqlite3")


def resolve_ledger_url(given: str | None, env: Mapping[str, str], throwaway: str | None) -> str:
    """The flag, else the environment, else ``throwaway`` (the demo's), else the default."""
    if given is not None:
        return given
    if env.get(LEDGER_ENV):
        return env[LEDGER_ENV]
    return throwaway if throwaway is not None else default_ledger_url(env)


def redact_url(url: str) -> str:
    """The URL with any password removed (``postgresql://u:secret@h/db`` -> ``u@h/db``,
    ``?password=secret`` -> ``?password=***``)."""
    return _PASSWORD_PARAM.sub(r"\1***", _PASSWORD.sub(r"\1@", url))


def redact_arg(arg: str) -> str:
    """A command-line word with any URL password in it removed (``--ledger=postgresql://...``)."""
    return _PASSWORD_PARAM.sub(r"\1***", _PASSWORD_ANYWHERE.sub(r"\1@", arg))


def sqlite_path(url: str) -> Path | None:
    """The file of a SQLite URL or path; None when ``url`` names another kind of ledger."""
    if url.startswith("sqlite:///"):
        return Path(url.removeprefix("sqlite://"))
    if url.startswith("sqlite:"):
        raise LedgerError(f"ledger URL {url!r}: use sqlite:///ABSOLUTE/PATH or a plain path")
    if "://" in url:
        return None
    return Path(url).expanduser()


def open_ledger(url: str) -> Ledger | None:
    """The ledger at ``url``; None for ``none``. Raises ``LedgerError`` with the reason."""
    if url.strip().lower() == NONE:
        return None
    if not url.strip():
        raise LedgerError("the ledger URL is empty (give a path, sqlite:///PATH or none)")
    if url.lower().startswith(_POSTGRES):
        from orchestrator.ledger.postgres import PostgresLedger

        return PostgresLedger(url, display=redact_url(url))
    path = sqlite_path(url)
    if path is None:
        scheme = url.split("://", 1)[0]
        raise LedgerError(
            f"ledger URL {redact_url(url)!r}: {scheme} ledgers are not supported "
            "(give a path, sqlite:///PATH, postgresql://... or none)"
        )
    from orchestrator.ledger.sqlite import SqliteLedger

    return SqliteLedger(path, display=redact_url(url))
