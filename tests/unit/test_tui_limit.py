"""``+`` in the monitor: which budget it changes, how a typed limit is checked, what reaches
the run (a scripted one: no processes)."""

from __future__ import annotations

from textual.widgets import Label

from budget_core import Unit
from tests.snapshots.scripted import demo_run, mid_run
from tui.app import build_app
from tui.budgets import BudgetRow
from tui.limit_dialog import LimitDialog


async def test_plus_changes_the_focused_budget_rows_limit_once_the_text_is_valid() -> None:
    run = demo_run("block")
    app = build_app(run, clock=lambda: 0.0, animate=False)
    async with app.run_test(size=(120, 35)) as pilot:
        mid_run(run)
        await pilot.pause()
        rows = [r for r in app.query(BudgetRow) if r.budget.unit is Unit.USD]
        assert [r.budget.key for r in rows] == ["/review"]
        rows[0].focus()  # as tab would (rows take the focus in turn)
        await pilot.pause()
        await pilot.press("plus")
        await pilot.pause()
        assert isinstance(app.screen, LimitDialog)
        assert (app.screen.budget.key, app.screen.budget.unit) == ("/review", Unit.USD)
        await pilot.press("5", "k", "enter")  # 5k is a token limit, not an amount
        await pilot.pause()
        assert isinstance(app.screen, LimitDialog)
        error = str(app.screen.query_one("#limit-error", Label).content)
        assert error and "5k" in error
        assert not [c for c in run.calls if c[0] == "set_limit"]
        await pilot.press("escape")
        await pilot.pause()
        assert not isinstance(app.screen, LimitDialog)
        assert not [c for c in run.calls if c[0] == "set_limit"]

        await pilot.press("plus")
        await pilot.pause()
        await pilot.press("$", "1", ".", "2", "5", "enter")
        await pilot.pause()
        assert not isinstance(app.screen, LimitDialog)
        assert ("set_limit", "/review", "None", "1.25") in run.calls
        usd = next(b for b in run.snapshot().budgets.budgets if b.unit is Unit.USD)
        assert usd.limit == 1.25


async def test_plus_without_a_focused_row_means_the_selected_instances_worst_budget() -> None:
    run = demo_run("block")
    app = build_app(run, clock=lambda: 0.0, animate=False)
    async with app.run_test(size=(120, 35)) as pilot:
        mid_run(run)  # /test is critical (94%), overall ok
        await pilot.pause()
        await pilot.press(*["down"] * 5, "plus")  # test-e2e
        await pilot.pause()
        assert isinstance(app.screen, LimitDialog)
        assert (app.screen.budget.key, app.screen.budget.unit) == ("/test", Unit.TOKENS)
