"""A windowed budget's bar in the monitor: two segments, their widths and their shades."""

from __future__ import annotations

import pytest
from textual.color import Color
from textual.widgets import Label, ProgressBar

from budget_core import OVERALL, Unit
from tests.snapshots.scripted import ScriptedRun, windowed_run, windows_half_spent_and_exceeded
from tui.app import MonitorApp, build_app
from tui.budgets import BudgetRow, WindowBar

PARTS = ("earlier", "this-run", "left", "over")


def make(run: ScriptedRun) -> MonitorApp:
    return build_app(run, clock=lambda: 0.0, animate=False)


def row_of(app: MonitorApp, key: str, unit: Unit = Unit.TOKENS) -> BudgetRow:
    return next(r for r in app.query(BudgetRow) if (r.budget.key, r.budget.unit) == (key, unit))


def segments(bar: WindowBar) -> list[tuple[str, int]]:
    """The bar as drawn: (part, cells) in order, each part told by its style."""
    styles = {bar.get_component_rich_style(f"window-bar--{part}"): part for part in PARTS}
    text = bar.render()
    runs: list[tuple[str, int]] = []
    for span in text.spans:
        if span.end > span.start:
            runs.append((styles[span.style], span.end - span.start))  # type: ignore[index]
    assert sum(n for _, n in runs) == len(text.plain) == bar.size.width
    return runs


def colour(bar: WindowBar, part: str) -> Color:
    return Color.from_rich_color(bar.get_component_rich_style(f"window-bar--{part}").color)


@pytest.mark.parametrize("size", [(120, 35), (80, 24), (60, 15)], ids=str)
async def test_a_day_window_half_spent_before_the_run_draws_two_segments(
    size: tuple[int, int],
) -> None:
    """/review: 120K of its 240K today before the run, 39K this run (159K, 66%)."""
    run = windowed_run()
    app = make(run)
    async with app.run_test(size=size) as pilot:
        windows_half_spent_and_exceeded(run)
        await pilot.pause()
        app.sync()
        await pilot.pause()
        bar = row_of(app, "/review").query_one(WindowBar)
        width = bar.size.width
        assert width >= 7  # a bar to read, even at 60 columns
        earlier, filled = 120_000 * width // 240_000, 159_000 * width // 240_000
        assert filled > earlier > 0
        assert segments(bar) == [
            ("earlier", earlier),
            ("this-run", filled - earlier),
            ("left", width - filled),
        ]
        # Two shades of the level's colour: this run's in the colour, the earlier dimmer.
        success = Color.parse(app.theme_variables["success"])
        assert colour(bar, "this-run") == success
        dim = colour(bar, "earlier")
        assert dim != success and dim.brightness < success.brightness
        assert dim.hsl.h == pytest.approx(success.hsl.h, abs=0.02)  # a shade, not grey


async def test_an_exceeded_rolling_window_is_full_red_with_the_over_mark() -> None:
    """/test: 12K of its 20K in the last 5h before the run, 18.8K this run (154%)."""
    run = windowed_run()
    app = make(run)
    async with app.run_test(size=(120, 35)) as pilot:
        windows_half_spent_and_exceeded(run)
        await pilot.pause()
        app.sync()
        await pilot.pause()
        row = row_of(app, "/test")
        assert row.has_class("-exceeded") and str(row.budget.window.label) == "last 5h"
        bar = row.query_one(WindowBar)
        cells = bar.size.width - 1  # the last is the over mark
        earlier = 12_000 * cells // 30_800  # scaled to what was used, so still in proportion
        assert segments(bar) == [("earlier", earlier), ("this-run", cells - earlier), ("over", 1)]
        assert bar.render().plain.endswith("━!")
        error = Color.parse(app.theme_variables["error"])
        assert colour(bar, "this-run") == error == colour(bar, "over")
        assert colour(bar, "earlier").brightness < error.brightness


async def test_the_bar_follows_the_spend_before_the_run_and_the_width() -> None:
    run = windowed_run()
    app = make(run)
    async with app.run_test(size=(120, 35)) as pilot:
        windows_half_spent_and_exceeded(run)
        # A new day: the spend before the run is gone, this run's 39K stays (16%, green).
        run.spent_before("/review", 0)
        await pilot.pause()
        app.sync()
        await pilot.pause()
        bar = row_of(app, "/review").query_one(WindowBar)
        width = bar.size.width
        assert segments(bar) == [
            ("this-run", 39_000 * width // 240_000),
            ("left", width - 39_000 * width // 240_000),
        ]
        await pilot.resize_terminal(60, 15)
        await pilot.pause()
        assert bar.size.width < width
        assert [part for part, _ in segments(bar)] == ["this-run", "left"]


async def test_run_window_budgets_keep_the_progress_bar() -> None:
    run = windowed_run()
    app = make(run)
    async with app.run_test(size=(120, 35)) as pilot:
        windows_half_spent_and_exceeded(run)
        await pilot.pause()
        app.sync()
        for key, unit in ((OVERALL, Unit.TOKENS), ("/analyze", Unit.TOKENS), ("/review", Unit.USD)):
            row = row_of(app, key, unit)
            assert len(row.query(ProgressBar)) == 1 and not row.query(WindowBar)
        for key in ("/review", "/test"):
            row = row_of(app, key)
            assert len(row.query(WindowBar)) == 1 and not row.query(ProgressBar)


@pytest.mark.parametrize("size", [(120, 35), (80, 24), (60, 15)], ids=str)
async def test_the_amounts_say_their_window_uncut(size: tuple[int, int]) -> None:
    run = windowed_run()
    app = make(run)
    async with app.run_test(size=size) as pilot:
        windows_half_spent_and_exceeded(run)
        await pilot.pause()
        app.sync()
        await pilot.pause()
        for key, text in (("/test", "30.8K/20K last 5h"), ("/review", "159K/240K today")):
            used = row_of(app, key).query_one(".used", Label)
            assert str(used.content) == text
            assert used.content_region.width >= len(text)
