"""Budgets per key (a slash command, or an instance name) and overall, in tokens and USD.

The manager is charged with usage deltas, keeps every budget's level, decides launches,
and tells subscribers what changed. It does no I/O and is meant for one thread.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import Literal, TypeAlias

from budget_core.levels import BudgetLevel, level_for
from budget_core.usage import ZERO, TokenUsage
from budget_core.windows import RUN, Window

OVERALL = "overall"
Mode = Literal["warn", "block"]
MODES: tuple[Mode, ...] = ("warn", "block")


class Unit(StrEnum):
    TOKENS = "tokens"
    USD = "usd"


@dataclass(frozen=True, slots=True)
class BudgetState:
    """One budget at one moment. A token budget counts ``TokenUsage.total``.

    ``used`` includes ``outside``: for a windowed budget, the spend in its window that this
    run did not charge here (other runs', read from a ledger), less this run's own spend that
    has left the window."""

    key: str
    unit: Unit
    limit: float
    used: float
    level: BudgetLevel
    window: Window = RUN
    outside: float = 0.0

    @property
    def fraction(self) -> float:
        return self.used / self.limit if self.limit > 0 else float("inf")

    @property
    def is_overall(self) -> bool:
        return self.key == OVERALL

    @property
    def remaining(self) -> float:
        return max(self.limit - self.used, 0)


@dataclass(frozen=True, slots=True)
class KeySpend:
    """What has been charged to one key, with or without a budget on it."""

    usage: TokenUsage = ZERO
    cost_usd: float = 0.0


@dataclass(frozen=True, slots=True)
class BudgetSnapshot:
    """Immutable state of every budget: overall first, then keys in the order they were set."""

    mode: Mode
    budgets: tuple[BudgetState, ...]
    spend: MappingProxyType[str, KeySpend]
    total: KeySpend

    def for_key(self, key: str) -> tuple[BudgetState, ...]:
        return tuple(b for b in self.budgets if b.key == key)

    @property
    def exceeded(self) -> tuple[BudgetState, ...]:
        return tuple(b for b in self.budgets if b.level is BudgetLevel.EXCEEDED)


class LaunchAction(StrEnum):
    ALLOW = "allow"
    WARN = "warn"
    BLOCK = "block"


@dataclass(frozen=True, slots=True)
class Decision:
    action: LaunchAction
    reason: str | None = None
    exceeded: tuple[BudgetState, ...] = ()

    @property
    def allowed(self) -> bool:
        return self.action is not LaunchAction.BLOCK


@dataclass(frozen=True, slots=True)
class SpendChanged:
    """Something was charged to ``key`` (and to the overall total)."""

    key: str
    instance: str


@dataclass(frozen=True, slots=True)
class LevelCrossed:
    """A budget moved from one level to another (told once per crossing)."""

    budget: BudgetState
    previous: BudgetLevel

    @property
    def rising(self) -> bool:
        return self.budget.level.rank > self.previous.rank


@dataclass(frozen=True, slots=True)
class ModeChanged:
    mode: Mode
    previous: Mode


BudgetEvent: TypeAlias = SpendChanged | LevelCrossed | ModeChanged
Subscriber = Callable[[BudgetEvent], None]


@dataclass(slots=True)
class _Budget:
    key: str
    unit: Unit
    limit: float
    level: BudgetLevel = BudgetLevel.OK
    window: Window = RUN
    outside: float = 0.0  # spend in the window from elsewhere (see BudgetState)


class BudgetManager:
    def __init__(self, mode: Mode = "warn") -> None:
        self._mode: Mode = _check_mode(mode)
        self._budgets: dict[tuple[str, Unit], _Budget] = {}
        # Usage and cost kept apart (not as KeySpend) so a charge builds as few objects as
        # possible: it runs for every line that changes a count.
        self._usage: dict[str, TokenUsage] = {}
        self._cost: dict[str, float] = {}
        self._total_usage = ZERO
        self._total_cost = 0.0
        self._subscribers: list[Subscriber] = []
        self._charged: dict[str, tuple[_Budget, ...]] = {}  # key -> budgets a charge moves

    # -- configuration -------------------------------------------------------------------

    def set_budget(
        self,
        key: str,
        tokens: int | None = None,
        usd: float | None = None,
        tokens_window: Window | None = None,
        usd_window: Window | None = None,
    ) -> None:
        """Set (or replace) the token and/or USD limit of ``key``; ``"overall"`` is the total.

        A window of None keeps the replaced budget's window (``run`` for a new one)."""
        if not key:
            raise ValueError("a budget needs a key")
        windows = {Unit.TOKENS: tokens_window, Unit.USD: usd_window}
        for unit, limit in ((Unit.TOKENS, tokens), (Unit.USD, usd)):
            if limit is None:
                continue
            if isinstance(limit, bool) or not isinstance(limit, int | float) or not limit > 0:
                raise ValueError(
                    f"budget {key} ({unit}): limit must be a number > 0, not {limit!r}"
                )
            if unit is Unit.TOKENS and limit != int(limit):
                raise ValueError(f"budget {key} (tokens): limit must be whole, not {limit!r}")
            replaced = self._budgets.get((key, unit))
            window = windows[unit] or (replaced.window if replaced is not None else RUN)
            outside = replaced.outside if replaced is not None and replaced.window == window else 0
            budget = _Budget(
                key, unit, float(limit) if unit is Unit.USD else int(limit), window=window
            )
            budget.outside = outside
            budget.level = level_for(self._used(key, unit) + outside, budget.limit)
            previous = replaced.level if replaced is not None else BudgetLevel.OK
            self._budgets[(key, unit)] = budget
            self._charged.clear()
            if budget.level is not previous:  # a new limit is a crossing like any other
                self._emit(LevelCrossed(self._state(budget), previous))

    def set_overall(
        self,
        tokens: int | None = None,
        usd: float | None = None,
        tokens_window: Window | None = None,
        usd_window: Window | None = None,
    ) -> None:
        self.set_budget(OVERALL, tokens, usd, tokens_window, usd_window)

    def windowed(self) -> tuple[BudgetState, ...]:
        """The budgets whose window is not ``run`` (they count spend from a ledger)."""
        return tuple(self._state(b) for b in self._ordered() if not b.window.is_run)

    def set_outside(self, key: str, unit: Unit, amount: float) -> list[LevelCrossed]:
        """Set a windowed budget's spend from elsewhere (see ``BudgetState.outside``).

        It may go down only as a rolling window lets old spend age out, or a calendar window
        starts anew; returns the crossings it caused (told like any other)."""
        budget = self._budgets.get((key, unit))
        if budget is None or budget.outside == amount:
            return []
        budget.outside = amount
        level = level_for(self._used(key, unit) + amount, budget.limit)
        if level is budget.level:
            return []
        previous, budget.level = budget.level, level
        crossing = LevelCrossed(self._state(budget), previous)
        self._emit(crossing)
        return [crossing]

    def has_budget(self, key: str) -> bool:
        return any(k == key for k, _ in self._budgets)

    @property
    def keys(self) -> tuple[str, ...]:
        """Keys that have a budget, overall first."""
        seen = dict.fromkeys(b.key for b in self._ordered())
        return tuple(seen)

    @property
    def mode(self) -> Mode:
        return self._mode

    def set_mode(self, mode: Mode) -> None:
        mode = _check_mode(mode)
        if mode != self._mode:
            previous, self._mode = self._mode, mode
            self._emit(ModeChanged(mode, previous))

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """Call ``callback`` with every event; returns a function that unsubscribes."""
        self._subscribers.append(callback)
        return lambda: self._subscribers.remove(callback)

    # -- charging ------------------------------------------------------------------------

    def charge(
        self, key: str, instance: str, usage_delta: TokenUsage, cost_delta: float = 0.0
    ) -> list[LevelCrossed]:
        """Charge a delta to ``key`` and to the overall total; returns the crossings it caused."""
        if not usage_delta and not cost_delta:
            return []
        usage = self._usage[key] = self._usage.get(key, ZERO) + usage_delta
        cost = self._cost[key] = self._cost.get(key, 0.0) + cost_delta
        total_usage = self._total_usage = self._total_usage + usage_delta
        total_cost = self._total_cost = self._total_cost + cost_delta
        crossings = []
        for budget in self._charged_budgets(key):
            if budget.unit is Unit.TOKENS:
                used: float = (total_usage if budget.key == OVERALL else usage).total
            else:
                used = total_cost if budget.key == OVERALL else cost
            used += budget.outside
            level = level_for(used, budget.limit)
            if level is not budget.level:
                previous, budget.level = budget.level, level
                state = BudgetState(
                    budget.key,
                    budget.unit,
                    budget.limit,
                    used,
                    level,
                    budget.window,
                    budget.outside,
                )
                crossings.append(LevelCrossed(state, previous))
        self._emit(SpendChanged(key, instance))
        for crossing in crossings:
            self._emit(crossing)
        return crossings

    def _charged_budgets(self, key: str) -> tuple[_Budget, ...]:
        """The budgets a charge to ``key`` counts against: overall's, then its own (cached:
        this is on the per-line path)."""
        budgets = self._charged.get(key)
        if budgets is None:
            keys = (OVERALL, key) if key != OVERALL else (OVERALL,)
            found = (self._budgets.get((k, unit)) for k in keys for unit in Unit)
            budgets = self._charged[key] = tuple(b for b in found if b is not None)
        return budgets

    # -- reading -------------------------------------------------------------------------

    def decide_launch(self, key: str) -> Decision:
        """Whether an instance charged to ``key`` may start now."""
        exceeded = self.exceeded_for(key)
        if not exceeded:
            return Decision(LaunchAction.ALLOW)
        names = ", ".join(f"{b.key} ({b.unit})" for b in exceeded)
        if self._mode == "block":
            return Decision(LaunchAction.BLOCK, f"budget exceeded: {names}", exceeded)
        return Decision(
            LaunchAction.WARN, f"budget exceeded: {names} (warn mode: launching)", exceeded
        )

    def is_exceeded(self, key: str) -> bool:
        """Whether a budget that a charge to ``key`` counts against is exceeded (cheap:
        meant for the per-line path)."""
        return any(b.level is BudgetLevel.EXCEEDED for b in self._charged_budgets(key))

    def exceeded_for(self, key: str) -> tuple[BudgetState, ...]:
        """Exceeded budgets that an instance charged to ``key`` counts against."""
        return tuple(
            self._state(b)
            for b in self._ordered()
            if b.level is BudgetLevel.EXCEEDED and b.key in (key, OVERALL)
        )

    def snapshot(self) -> BudgetSnapshot:
        return BudgetSnapshot(
            mode=self._mode,
            budgets=tuple(self._state(b) for b in self._ordered()),
            spend=MappingProxyType(
                {key: KeySpend(usage, self._cost[key]) for key, usage in self._usage.items()}
            ),
            total=KeySpend(self._total_usage, self._total_cost),
        )

    def _ordered(self) -> list[_Budget]:
        budgets = list(self._budgets.values())
        return [b for b in budgets if b.key == OVERALL] + [b for b in budgets if b.key != OVERALL]

    def _used(self, key: str, unit: Unit) -> float:
        if unit is Unit.TOKENS:
            return (self._total_usage if key == OVERALL else self._usage.get(key, ZERO)).total
        return self._total_cost if key == OVERALL else self._cost.get(key, 0.0)

    def _state(self, budget: _Budget) -> BudgetState:
        used = self._used(budget.key, budget.unit) + budget.outside
        return BudgetState(
            budget.key, budget.unit, budget.limit, used, budget.level, budget.window, budget.outside
        )

    def _emit(self, event: BudgetEvent) -> None:
        for callback in tuple(self._subscribers):
            callback(event)


def _check_mode(mode: str) -> Mode:
    if mode == "warn":
        return "warn"
    if mode == "block":
        return "block"
    raise ValueError(f"enforcement mode must be one of {', '.join(MODES)}, not {mode!r}")
