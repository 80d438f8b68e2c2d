"""One row per budget: name, bar coloured by level, percent, used/limit, level word, burn.

A run's own budget draws Textual's progress bar; a windowed budget (``today``, ``last 5h``)
draws its own bar in two segments, spend before this run then this run's, as the headless
log does with ``#`` and ``=``."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.reactive import reactive
from textual.widget import Widget
from textual.widgets import Label, ProgressBar
from textual.widgets._progress_bar import Bar  # not exported; textual is pinned exactly

from budget_core import BudgetLevel, BudgetState, Unit, Window, window_bar_cells
from orchestrator.state import BurnView, RunSnapshot
from tui.format import budget_name, left_text, level_word, percent_text, rate_text, used_text

BudgetId = tuple[str, Unit, Window]


class FittedBar(Bar):
    """A Bar that rounds its fill again when its width changes.

    Textual's Bar rounds the percentage to the width it has when the value is set; a bar
    filled before its final layout would keep a fill rounded for another width.
    """

    def on_resize(self) -> None:
        if isinstance(self.parent, ProgressBar):
            self.percentage = self.parent.percentage


class LevelBar(ProgressBar):
    """The bar part only: our percent goes past 100%, and nothing ticks or animates."""

    def __init__(self) -> None:
        super().__init__(show_eta=False, show_percentage=False)

    def compose(self) -> ComposeResult:
        yield FittedBar(id="bar").data_bind(ProgressBar.percentage)


class WindowBar(Widget):
    """A windowed budget's bar: spend before this run, this run's, what is left, and a last
    ``!`` cell past 100% (cells split as in the headless log). Each part is a component
    class, coloured by the row's level in the stylesheet."""

    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "window-bar--earlier",
        "window-bar--this-run",
        "window-bar--left",
        "window-bar--over",
    }
    CELL = "━"  # as Textual's bar, so both kinds of bar look alike
    OVER = "!"

    budget: reactive[BudgetState | None] = reactive[BudgetState | None](None)

    def render(self) -> Text:
        budget, width = self.budget, self.size.width
        if budget is None or width < 1:
            return Text()
        cells = window_bar_cells(budget.outside, budget.used, budget.limit, width)
        style = self.get_component_rich_style
        return Text.assemble(
            (self.CELL * cells.earlier, style("window-bar--earlier")),
            (self.CELL * cells.this_run, style("window-bar--this-run")),
            (self.CELL * cells.left, style("window-bar--left")),
            (self.OVER if cells.over else "", style("window-bar--over")),
            end="",
        )


class BudgetRow(Horizontal, can_focus=True):
    """A budget at one moment; its level is the CSS class (``-ok`` … ``-exceeded``).
    Focusable (tab): ``+`` then changes this budget's limit."""

    budget: reactive[BudgetState] = reactive[BudgetState](
        BudgetState("", Unit.TOKENS, 1, 0, BudgetLevel.OK)
    )
    burn: reactive[BurnView | None] = reactive[BurnView | None](None)

    def __init__(self, budget: BudgetState, burn: BurnView | None) -> None:
        super().__init__()
        self.set_reactive(BudgetRow.budget, budget)
        self.set_reactive(BudgetRow.burn, burn)

    def compose(self) -> ComposeResult:
        yield Label(classes="name", markup=False)
        yield LevelBar() if self.budget.window.is_run else WindowBar()
        yield Label(classes="percent")
        yield Label(classes="used", markup=False)
        yield Label(classes="level")
        yield Label(classes="rate", markup=False)
        yield Label(classes="left", markup=False)

    def on_mount(self) -> None:
        self._draw()  # set_reactive in __init__ skips the first watch, so draw once here

    def watch_budget(self) -> None:
        self._draw()

    def watch_burn(self) -> None:
        self._draw()

    def _draw(self) -> None:
        budget, burn = self.budget, self.burn
        for level in BudgetLevel:
            self.set_class(budget.level is level, f"-{level.value}")
        if not self.children:
            return  # not composed yet: on_mount draws
        self.query_one(".name", Label).update(budget_name(budget))
        if budget.window.is_run:
            bar = self.query_one(ProgressBar)
            bar.update(total=budget.limit, progress=min(budget.used, budget.limit))
        else:
            self.query_one(WindowBar).budget = budget
        self.query_one(".percent", Label).update(percent_text(budget))
        self.query_one(".used", Label).update(used_text(budget))
        self.query_one(".level", Label).update(level_word(budget))
        self.query_one(".rate", Label).update(rate_text(burn))
        self.query_one(".left", Label).update(left_text(budget, burn))


class BudgetPanel(Vertical):
    """Every budget of the run, overall first, in the order the run reports them."""

    run_snapshot: reactive[RunSnapshot | None] = reactive[RunSnapshot | None](None)

    def __init__(self) -> None:
        super().__init__(id="budgets")
        self.border_title = "Budgets"
        self._rows: dict[BudgetId, BudgetRow] = {}
        self._worst: tuple[BudgetId, BudgetLevel] | None = None

    def compose(self) -> ComposeResult:
        yield Label("no budgets: spend is counted, nothing is enforced", id="no-budgets")

    def watch_run_snapshot(self, snapshot: RunSnapshot | None) -> None:
        if snapshot is None:
            return
        budgets = snapshot.budgets.budgets
        ids = [_budget_id(b) for b in budgets]
        if ids != list(self._rows):
            # The set of budgets is fixed for a run in practice; rebuild rather than diff
            # (a row draws one kind of bar, for its window).
            self.query(BudgetRow).remove()
            self._rows = {_budget_id(b): BudgetRow(b, snapshot.burn_for(b.key)) for b in budgets}
            self.mount_all(self._rows.values())
            self.set_class(bool(budgets), "-has-budgets")
            self.set_class(any(not b.window.is_run for b in budgets), "-windowed")
        else:
            for budget in budgets:
                row = self._rows[_budget_id(budget)]
                row.budget = budget
                row.burn = snapshot.burn_for(budget.key)
        self._keep_the_worst_in_view(budgets)

    def _keep_the_worst_in_view(self, budgets: tuple[BudgetState, ...]) -> None:
        """Where the panel is too short for every budget (a very short terminal), the one at
        the highest level is scrolled to the top when it changes: an exceeded budget is never
        left below the fold. Otherwise the user's scrolling is left alone."""
        if not budgets:
            return
        worst = max(budgets, key=lambda b: b.level.rank)  # the first of the highest level
        seen = (_budget_id(worst), worst.level)
        if worst.level is BudgetLevel.OK or seen == self._worst:
            return
        self._worst = seen
        self.call_after_refresh(self._scroll_to_worst)  # once the rows have their places

    def on_resize(self) -> None:
        self.call_after_refresh(self._scroll_to_worst)

    def _scroll_to_worst(self) -> None:
        row = self._rows.get(self._worst[0]) if self._worst is not None else None
        if row is not None:
            # To the top, not the least scroll: where it ends up must not depend on where
            # the panel was scrolled (or how tall it was) before.
            self.scroll_to_widget(row, animate=False, top=True)


def _budget_id(budget: BudgetState) -> BudgetId:
    return budget.key, budget.unit, budget.window
