"""What a ledger stores and answers, independent of where it stores it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from budget_core import TokenUsage, Unit

# How ``orchestrator usage --by`` may group (``label:KEY`` besides).
GROUPINGS = ("day", "week", "month", "command", "model", "run", "instance")
CRASHED_AFTER_S = 30.0  # a run whose heartbeat is older than this and never closed: crashed


class LedgerError(Exception):
    """The ledger cannot be opened, read or written; the message is the reason, one line."""


class LedgerUnreachable(LedgerError):
    """The fleet ledger's server cannot be reached (now): worth retrying, journal meanwhile."""


@dataclass(frozen=True, slots=True)
class RunRecord:
    id: str
    started: float
    host: str
    user: str
    cwd: str
    argv: tuple[str, ...]
    mode: str
    labels: Mapping[str, str] = field(default_factory=dict)
    resumed_from: str | None = None


@dataclass(frozen=True, slots=True)
class InstanceRecord:
    run_id: str
    name: str
    command: str
    budget_key: str
    status: str
    usage: TokenUsage
    cost_usd: float
    final: bool
    cost_is_estimate: bool
    started: float | None
    ended: float | None
    error: str | None
    session_id: str | None = None


@dataclass(frozen=True, slots=True)
class Charge:
    """One delta counted for one instance; idempotent on (run_id, instance, seq)."""

    run_id: str
    instance: str
    seq: int
    at: float  # POSIX seconds
    budget_key: str
    model: str | None
    usage: TokenUsage
    cost_usd: float
    cost_is_estimate: bool


@dataclass(frozen=True, slots=True)
class WindowQuery:
    """Spend on ``key`` (None: every key) in ``unit`` since ``start``."""

    key: str | None
    unit: Unit
    start: float


@dataclass(frozen=True, slots=True)
class WindowSpend:
    others: float  # by every other run, since the window's start
    own_before: float  # by this run, before the window's start (aged out of it)


@dataclass(frozen=True, slots=True)
class UsageRow:
    group: str
    usage: TokenUsage
    cost_usd: float
    cost_is_estimate: bool
    runs: int
    instances: int
    status: str | None = None  # grouped by run: running, ended, crashed


class Ledger(Protocol):
    """A store of runs, instances and charges. Methods may block (call them off the event
    loop) and raise ``LedgerError``. Not shared between threads: each thread opens its own."""

    url: str  # as given, with any password removed

    def open_run(self, run: RunRecord) -> None: ...

    def write(
        self,
        charges: Sequence[Charge],
        instances: Sequence[InstanceRecord],
        heartbeat: tuple[str, float] | None = None,
    ) -> None:
        """Write in one transaction; a charge already written is not counted again."""

    def close_run(self, run_id: str, ended: float, exit_code: int) -> None: ...

    def window_spend(self, run_id: str, queries: Sequence[WindowQuery]) -> list[WindowSpend]: ...

    def usage(self, since: float, until: float, by: str, now: float) -> list[UsageRow]: ...

    # For ``orchestrator resume``: a run, its instances, and what its runs charged by key.
    def find_run(self, run_id: str | None) -> RunRecord | None:
        """The run of that id; with None, the run started last."""

    def run_instances(self, run_id: str) -> list[InstanceRecord]: ...

    def resumes_of(self, run_id: str) -> list[str]:
        """The runs recorded as resuming that one, first started first."""

    def run_spend(self, run_ids: Sequence[str]) -> dict[str, tuple[TokenUsage, float]]:
        """What those runs charged, by budget key: (tokens, cost)."""

    def close(self) -> None: ...
