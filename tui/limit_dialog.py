"""The ``+`` dialog: a budget's new limit, typed as on the command line, applied at once."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Label

from budget_core import Unit, format_tokens, format_usd, parse_limit
from budget_core.budgets import BudgetState
from orchestrator.state import InstanceView, RunSnapshot

NewLimit = tuple[str, Unit, float]  # key, unit, limit


def parse_new_limit(text: str, budget: BudgetState) -> float:
    """The limit typed for ``budget``, checked as its flag would check it (``50k``, ``1.5M``
    for tokens; ``2.50`` or ``$2.50`` for USD). The window stays the budget's: a ``/WINDOW``
    is refused rather than silently ignored. Raises ``ValueError`` naming the problem."""
    limit_text, slash, window = text.strip().partition("/")
    if slash:
        raise ValueError(
            f"give the limit only: the window stays {budget.window.name} ({window!r} given)"
        )
    return parse_limit(limit_text, budget.unit)


def limit_text(budget: BudgetState) -> str:
    return format_usd(budget.limit) if budget.unit is Unit.USD else format_tokens(budget.limit)


def budget_for(snapshot: RunSnapshot, selected: InstanceView | None) -> BudgetState | None:
    """The budget ``+`` means when no budget row has the focus: the selected instance's
    (exceeded first, its own key before overall), else the first exceeded, else the first."""
    budgets = snapshot.budgets.budgets
    if not budgets:
        return None
    if selected is not None:
        mine = [b for b in budgets if b.key == selected.budget_key] + [
            b for b in budgets if b.is_overall
        ]
        if mine:
            return max(mine, key=lambda b: b.level.rank)  # the first at the highest level
    return max(budgets, key=lambda b: b.level.rank)


class LimitDialog(ModalScreen[NewLimit | None]):
    """Asks for ``budget``'s new limit; dismisses with it once valid, None on escape."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Cancel", id="limit.cancel"),
    ]

    def __init__(self, budget: BudgetState) -> None:
        super().__init__()
        self.budget = budget

    def compose(self) -> ComposeResult:
        b = self.budget
        window = "this run" if b.window.is_run else b.window.name
        example = "e.g. 2.50 or $2.50" if b.unit is Unit.USD else "e.g. 200k or 1.5M"
        with Vertical(id="limit-dialog", classes="dialog"):
            yield Label(f"New limit for {b.key} ({b.unit}, {window})", classes="dialog-title")
            yield Label(
                f"now {limit_text(b)}; {example}. Enter applies it at once "
                "(a blocked launch it allows starts); escape cancels.",
                classes="dialog-body",
                markup=False,
            )
            yield Input(value=limit_text(b).lstrip("$"), id="limit-input")
            yield Label("", id="limit-error", markup=False)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        try:
            limit = parse_new_limit(event.value, self.budget)
        except ValueError as exc:
            self.query_one("#limit-error", Label).update(str(exc))
            return
        self.dismiss((self.budget.key, self.budget.unit, limit))

    def action_cancel(self) -> None:
        self.dismiss(None)
