"""What the orchestrator tells its subscribers (headless reporter, TUI): immutable values.

Data flows one way: processes -> trackers -> budget manager -> these snapshots and notices.
Subscribers never change state directly; they ask through ``RunControl``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol, TypeAlias

from budget_core import BudgetLevel, BudgetSnapshot, Mode, TokenUsage
from orchestrator.ratelimits import RateLimitView


class InstanceStatus(StrEnum):
    """An instance's lifecycle: ``pending -> starting -> running -> stopping ->`` an end.

    ``starting`` is set before the process is spawned, so a stop asked for while it starts
    is never lost: the instance goes to ``stopping`` and is signalled the moment it has a
    process. Every change goes through ``InstanceStatus.can_become`` (``TRANSITIONS``).

    ``resuming``: a blocked or stopped instance the user asked to continue within the run
    (``r`` in the monitor, or a raised limit re-deciding a blocked launch); it waits for its
    launch like ``pending`` and is decided again: it starts, or is blocked again.
    """

    PENDING = "pending"
    RESUMING = "resuming"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    BLOCKED = "blocked"
    STOPPED_BY_BUDGET = "stopped_by_budget"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"

    @property
    def is_done(self) -> bool:
        return self not in _NOT_DONE

    @property
    def is_active(self) -> bool:
        """Being started, running or being stopped: it has, or is about to have, a process."""
        return self in _ACTIVE

    def can_become(self, other: InstanceStatus) -> bool:
        return other in TRANSITIONS[self]


_S = InstanceStatus
_ACTIVE = frozenset({_S.STARTING, _S.RUNNING, _S.STOPPING})
_NOT_DONE = _ACTIVE | {_S.PENDING, _S.RESUMING}
# Ends from which an instance may be continued within the run (``resuming``).
RESUMABLE = frozenset({_S.BLOCKED, _S.STOPPED_BY_BUDGET, _S.CANCELLED})
# A stop's outcome: the end an instance reaches from ``stopping``.
STOP_OUTCOMES = frozenset({_S.STOPPED_BY_BUDGET, _S.TIMED_OUT, _S.CANCELLED})
TRANSITIONS: dict[InstanceStatus, frozenset[InstanceStatus]] = {
    _S.PENDING: frozenset({_S.STARTING, _S.BLOCKED, _S.CANCELLED}),
    # A spawn that fails ends ``failed`` whether or not a stop was asked for meanwhile.
    _S.STARTING: frozenset({_S.RUNNING, _S.STOPPING, _S.FAILED}),
    # The CLI can stop itself at its own --max-budget-usd: running -> stopped_by_budget.
    _S.RUNNING: frozenset({_S.STOPPING, _S.SUCCEEDED, _S.FAILED, _S.STOPPED_BY_BUDGET}),
    _S.STOPPING: STOP_OUTCOMES | {_S.FAILED},
    _S.RESUMING: frozenset({_S.STARTING, _S.BLOCKED, _S.CANCELLED}),
    **{end: frozenset() for end in _S if end not in _NOT_DONE | RESUMABLE},
    **{end: frozenset({_S.RESUMING}) for end in RESUMABLE},
}


@dataclass(frozen=True, slots=True)
class InstanceView:
    """One instance at one moment."""

    name: str
    command: str
    budget_key: str
    status: InstanceStatus
    usage: TokenUsage
    cost_usd: float
    cost_is_estimate: bool
    final: bool  # totals come from the CLI's result line (else: live counts)
    elapsed_s: float  # run time so far, or the whole duration once done
    pid: int | None = None
    exit_code: int | None = None
    error: str | None = None
    unknown_models: tuple[str, ...] = ()  # priced with the default family for estimates
    # The CLI's result reported less than the stream showed; the larger figures were kept.
    discrepancy: str | None = None
    skipped_lines: int = 0  # stdout lines that were not stream-json (so counted nothing)
    # The CLI ended itself at the --max-budget-usd it was given (a cooperative limit).
    stopped_by_cli: bool = False
    resumed_session: str | None = None  # the session it continues (--resume), if any
    launches: int = 0  # processes started for it so far (more than 1: resumed in the run)
    max_budget_usd: float | None = None  # the --max-budget-usd its latest process was given
    model: str | None = None  # the model its stream named first (metrics label it so)


@dataclass(frozen=True, slots=True)
class BurnView:
    """Spend rate of one budget key over the last minute."""

    key: str
    tokens_per_min: float
    seconds_left: float | None  # at that rate, until the token budget is used up


@dataclass(frozen=True, slots=True)
class RunSnapshot:
    mode: Mode
    elapsed_s: float
    instances: tuple[InstanceView, ...]
    budgets: BudgetSnapshot
    burn: tuple[BurnView, ...]
    enforcement_ok: bool  # False once the budget system failed and the run went on without it
    finished: bool
    rate_limits: RateLimitView | None = None  # subscription windows and the launch hold

    @property
    def total_usage(self) -> TokenUsage:
        return self.budgets.total.usage

    @property
    def total_cost_usd(self) -> float:
        return self.budgets.total.cost_usd

    @property
    def instances_usage(self) -> TokenUsage:
        """Sum over the instances' own trackers (exact even if the budget system failed)."""
        return sum((i.usage for i in self.instances), TokenUsage())

    @property
    def instances_cost(self) -> float:
        return sum(i.cost_usd for i in self.instances)

    @property
    def cost_is_estimate(self) -> bool:
        return any(i.cost_is_estimate and i.usage for i in self.instances)

    @property
    def running(self) -> tuple[InstanceView, ...]:
        return tuple(i for i in self.instances if not i.status.is_done and i.pid is not None)

    def burn_for(self, key: str) -> BurnView | None:
        return next((b for b in self.burn if b.key == key), None)


class NoticeKind(StrEnum):
    LAUNCH = "launch"
    LEVEL = "level"
    BLOCK = "block"
    STOP = "stop"
    FAIL = "fail"
    DONE = "done"
    MODE = "mode"
    ERROR = "error"
    RATE = "rate"  # a subscription window changed, or launches are held for one


@dataclass(frozen=True, slots=True)
class Notice:
    """A line for the event log: launches, level crossings, blocks, stops, failures."""

    at_s: float  # seconds since the run started
    kind: NoticeKind
    message: str
    level: BudgetLevel | None = None  # for crossings: the level reached
    warning: bool = False  # worth a WARNING in logs


@dataclass(frozen=True, slots=True)
class StateChanged:
    """Something in the snapshot changed; high rate, meant to be coalesced."""


RunEvent: TypeAlias = Notice | StateChanged
RunListener = Callable[[RunEvent], None]


class RunControl(Protocol):
    """What a monitor may read and ask of a run (the orchestrator, or a scripted stand-in)."""

    def snapshot(self) -> RunSnapshot: ...

    def subscribe(self, listener: RunListener) -> Callable[[], None]: ...

    def set_enforcement_mode(self, mode: Mode) -> None: ...

    def stop_all(self, reason: str = ...) -> None: ...

    def stop_instance(self, name: str) -> None: ...

    def resume_instance(self, name: str) -> str | None:
        """Continue a blocked or stopped instance within the run; why not, or None."""
        ...

    def set_limit(self, key: str, tokens: int | None = None, usd: float | None = None) -> None:
        """Raise or lower a budget's limit now (``ValueError`` for a bad one)."""
        ...
