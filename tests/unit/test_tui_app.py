"""The monitor under Pilot, against the scripted run: keys, quitting, coalescing."""

from __future__ import annotations

import signal

import pytest
from textual.color import Color
from textual.widgets import Label, ProgressBar

from budget_core import OVERALL, TokenUsage
from orchestrator.state import InstanceStatus, StateChanged
from tests.snapshots.scripted import ScriptedRun, demo_run, exceeded_in_warn, mid_run
from tui.app import MonitorApp, build_app
from tui.budgets import BudgetPanel, BudgetRow
from tui.eventlog import EventLog
from tui.header import EnforcementBanner, ModeBadge, Phase, PhaseBadge, StatusLine
from tui.instances import InstanceTable
from tui.screens import ConfirmQuit, HelpScreen

SIZE = (120, 35)


def make(run: ScriptedRun, *, with_run: bool = False) -> MonitorApp:
    return build_app(run, run=run.run if with_run else None, clock=lambda: 0.0, animate=False)


def text_of(label: Label) -> str:
    return str(label.content)


async def test_m_flips_the_mode_and_the_header_shows_it() -> None:
    run = demo_run()
    app = make(run)
    async with app.run_test(size=SIZE) as pilot:
        badge = app.query_one(ModeBadge)
        assert text_of(badge) == "WARN" and badge.has_class("-warn")
        await pilot.press("m")
        assert run.calls == [("set_enforcement_mode", "block")]
        assert text_of(badge) == "BLOCK" and badge.has_class("-block")
        await pilot.press("m")
        assert run.calls[-1] == ("set_enforcement_mode", "warn")
        assert text_of(badge) == "WARN"


async def test_block_shows_the_stopped_instances_and_the_notices() -> None:
    run = demo_run()
    app = make(run)
    async with app.run_test(size=SIZE) as pilot:
        exceeded_in_warn(run)
        await pilot.press("m")
        await pilot.pause()
        table = app.query_one(InstanceTable)
        assert str(table.get_cell("review-api", "status")) == "stopped_by_budget"
        log = "\n".join(line.text for line in app.query_one(EventLog).lines)
        assert "enforcement mode is now BLOCK" in log
        assert "review-api stopped: budget /review exceeded" in log


async def test_q_while_running_asks_and_n_cancels() -> None:
    run = demo_run()
    app = make(run)
    async with app.run_test(size=SIZE) as pilot:
        mid_run(run)
        await pilot.press("q")
        assert isinstance(app.screen, ConfirmQuit)
        await pilot.press("n")
        assert not isinstance(app.screen, ConfirmQuit)
        await pilot.press("q", "escape")
        assert not isinstance(app.screen, ConfirmQuit)
        assert ("stop_all",) not in run.calls
        assert app.is_running


async def test_q_then_y_stops_all_and_exits() -> None:
    run = demo_run()
    app = make(run)
    async with app.run_test(size=SIZE) as pilot:
        mid_run(run)
        await pilot.press("q", "y")
        await pilot.pause()
    assert run.calls == [("stop_all",)]
    assert not app.is_running


async def test_enter_on_the_focused_button_confirms() -> None:
    run = demo_run()
    app = make(run)
    async with app.run_test(size=SIZE) as pilot:
        mid_run(run)
        await pilot.press("q", "enter")
        await pilot.pause()
    assert run.calls == [("stop_all",)]


async def test_quit_waits_for_the_run_and_returns_its_exit_code() -> None:
    run = demo_run()
    app = make(run, with_run=True)
    async with app.run_test(size=SIZE) as pilot:
        mid_run(run)
        await pilot.press("q", "y")
        for _ in range(5):
            await pilot.pause()
    assert run.calls == [("stop_all",)]
    assert app.return_value == 130


async def test_a_finished_run_stays_on_screen_and_q_exits_at_once() -> None:
    run = demo_run()
    app = make(run, with_run=True)
    async with app.run_test(size=SIZE) as pilot:
        run.launch("test-unit")
        run.finish("test-unit", InstanceStatus.FAILED, "exit code 1")
        run.end()
        await pilot.pause()
        await pilot.pause()
        assert app.is_running  # the final state stays until q
        badge = app.query_one(PhaseBadge)
        assert badge.phase is Phase.FINISHED
        assert text_of(badge) == "FINISHED exit 1"
        await pilot.press("q")
        await pilot.pause()
        assert not isinstance(app.screen, ConfirmQuit)
    assert app.return_value == 1
    assert ("stop_all",) not in run.calls


async def test_a_run_that_raises_closes_the_app_and_keeps_the_error() -> None:
    async def broken() -> int:
        raise RuntimeError("orchestrator bug")

    app = build_app(demo_run(), run=broken, clock=lambda: 0.0, animate=False)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        await pilot.pause()
    assert isinstance(app.run_error, RuntimeError)
    assert app.return_value is None  # no exit code from a run that raised


async def test_ctrl_c_interrupts_the_run_and_closes_with_its_exit_code() -> None:
    run = demo_run()
    app = make(run, with_run=True)
    async with app.run_test(size=SIZE) as pilot:
        mid_run(run)
        await pilot.press("ctrl+c")  # not Textual's "press ctrl+q to quit" notice
        for _ in range(5):
            await pilot.pause()
    assert run.calls == [("interrupt", "SIGINT")]
    assert app.return_value == 130


async def test_ctrl_c_in_the_quit_dialog_interrupts_too() -> None:
    run = demo_run()
    app = make(run, with_run=True)
    async with app.run_test(size=SIZE) as pilot:
        mid_run(run)
        await pilot.press("q")
        assert isinstance(app.screen, ConfirmQuit)
        await pilot.press("ctrl+c")
        for _ in range(5):
            await pilot.pause()
    assert run.calls == [("interrupt", "SIGINT")]
    assert app.return_value == 130


async def test_a_signal_before_the_monitor_is_up_still_interrupts() -> None:
    run = demo_run()
    app = make(run, with_run=True)
    app.interrupt(signal.SIGTERM)  # as the command's signal handler would, at any time
    async with app.run_test(size=SIZE) as pilot:
        for _ in range(5):
            await pilot.pause()
    assert run.calls == [("interrupt", "SIGTERM")]
    assert app.return_value == 130


async def test_ctrl_c_after_the_run_ended_just_closes_with_the_runs_code() -> None:
    run = demo_run()
    app = make(run, with_run=True)
    async with app.run_test(size=SIZE) as pilot:
        run.launch("test-unit")
        run.finish("test-unit", InstanceStatus.FAILED, "exit code 1")
        run.end()
        await pilot.pause()
        await pilot.pause()
        await pilot.press("ctrl+c")
        await pilot.pause()
    assert app.return_value == 1
    assert not any(call[0] == "interrupt" for call in run.calls)


async def test_question_mark_opens_the_help_and_escape_closes_it() -> None:
    app = make(demo_run())
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        shown = " ".join(text_of(label) for label in app.screen.query(".help-text").results(Label))
        assert "flip enforcement between WARN and BLOCK" in shown
        assert "quit" in shown
        await pilot.press("escape")
        assert not isinstance(app.screen, HelpScreen)


async def test_the_help_scrolls_where_the_terminal_is_too_short_for_it() -> None:
    app = make(demo_run())
    async with app.run_test(size=(60, 15)) as pilot:
        await pilot.press("question_mark")
        dialog = app.screen.query_one("#help-dialog")
        assert dialog.max_scroll_y > 0  # more than fits
        await pilot.press(*["down"] * 30)
        assert dialog.scroll_y == dialog.max_scroll_y  # and all of it can be read
        await pilot.press("escape")
        assert not isinstance(app.screen, HelpScreen)


async def test_s_stops_the_selected_instance() -> None:
    run = demo_run()
    app = make(run)
    async with app.run_test(size=SIZE) as pilot:
        mid_run(run)
        await pilot.pause()
        app.sync()
        await pilot.press("down", "down", "s")  # analyze-src, analyze-docs, review-api
        assert run.calls == [("stop_instance", "review-api")]
        await pilot.press("down", "down", "s")  # test-unit has already succeeded
        assert run.calls == [("stop_instance", "review-api")]


async def test_every_binding_has_an_id_and_a_description() -> None:
    from textual.binding import Binding

    from tui.screens import ConfirmQuit, HelpScreen

    for owner in (MonitorApp, ConfirmQuit, HelpScreen):
        for binding in owner.BINDINGS:
            assert isinstance(binding, Binding)
            assert binding.id and binding.description, binding


async def test_state_changes_are_coalesced() -> None:
    run = demo_run()
    app = make(run)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        before = run.snapshot_calls
        run.launch("analyze-src")
        for _ in range(10_000):
            run.charge("analyze-src", TokenUsage(output=1), 0.0)  # StateChanged each
        for _ in range(10_000):
            run._emit(StateChanged())
        await pilot.pause(0.35)
        assert run.snapshot_calls - before <= 5
        table = app.query_one(InstanceTable)
        assert str(table.get_cell("analyze-src", "total")).strip() == "10K*"


async def test_notices_reach_the_log_with_their_time() -> None:
    run = demo_run()
    app = make(run)
    async with app.run_test(size=SIZE) as pilot:
        run.tick(75)
        run.launch("review-api")
        await pilot.pause()
        lines = [line.text for line in app.query_one(EventLog).lines]
        assert any("1:15" in line and "LAUNCH" in line and "review-api" in line for line in lines)


async def test_the_banner_shows_only_when_enforcement_failed() -> None:
    run = demo_run()
    app = make(run)
    async with app.run_test(size=SIZE) as pilot:
        banner = app.query_one(EnforcementBanner)
        assert not banner.has_class("-failed")
        run.fail_enforcement("boom")
        await pilot.pause()
        app.sync()
        assert banner.has_class("-failed") and banner.display


@pytest.mark.parametrize("bar_class", ["bar--bar", "bar--complete"])
async def test_an_exceeded_bar_is_red_not_green(bar_class: str) -> None:
    run = demo_run()
    app = make(run)
    async with app.run_test(size=SIZE) as pilot:
        exceeded_in_warn(run)
        await pilot.pause()
        app.sync()
        await pilot.pause()
        rows = {(row.budget.key, row.budget.unit.value): row for row in app.query(BudgetRow)}
        row = rows[("/review", "tokens")]
        assert row.has_class("-exceeded")
        bar = row.query_one(ProgressBar).query_one("Bar")
        colour = Color.from_rich_color(bar.get_component_rich_style(bar_class).color)
        variables = app.theme_variables
        assert colour == Color.parse(variables["error"])
        assert colour != Color.parse(variables["success"])
        assert rows[(OVERALL, "tokens")].has_class("-ok")


ALL = ("name", "key", "status", "in", "out", "cache_w", "cache_r", "total", "cost", "time")
NO_BREAKDOWN = ("name", "key", "status", "total", "cost", "time")
ESSENTIAL = ("name", "status", "total", "cost")


@pytest.mark.parametrize(
    ("width", "columns"),
    [(60, ESSENTIAL), (66, ESSENTIAL), (80, NO_BREAKDOWN), (111, NO_BREAKDOWN), (112, ALL)],
)
async def test_narrow_tables_leave_out_columns_rather_than_scroll(
    width: int, columns: tuple[str, ...]
) -> None:
    run = demo_run()
    app = make(run)
    async with app.run_test(size=(width, 30)) as pilot:
        mid_run(run)
        await pilot.pause()
        table = app.query_one(InstanceTable)
        assert tuple(c.value for c in table.columns) == columns
        assert table.virtual_size.width <= table.scrollable_content_region.width


@pytest.mark.parametrize("size", [(60, 15), (80, 24), (120, 35)], ids=str)
async def test_the_header_every_instance_row_and_the_worst_budget_are_on_screen(
    size: tuple[int, int],
) -> None:
    run = demo_run()
    app = make(run)
    async with app.run_test(size=size) as pilot:
        exceeded_in_warn(run)
        await pilot.pause()
        app.sync()
        await pilot.pause()
        await pilot.pause()
        screen = app.screen.region
        header = app.query_one(StatusLine)
        assert header.region.y == 0 and header.region.height == 1
        assert "WARN" in text_of(app.query_one(ModeBadge))
        assert screen.contains_region(app.query_one("#elapsed", Label).region)
        table = app.query_one(InstanceTable)
        assert screen.contains_region(table.region)
        assert table.max_scroll_y == 0  # every row shown, none scrolled out of sight
        assert table.row_count == 6
        assert table.scrollable_content_region.height >= 1 + table.row_count
        exceeded = next(r for r in app.query(BudgetRow) if r.has_class("-exceeded"))
        panel = app.query_one(BudgetPanel)
        assert panel.scrollable_content_region.contains_region(exceeded.region)


async def test_keys_still_work_in_a_flood_of_events() -> None:
    run = demo_run()
    app = make(run)
    async with app.run_test(size=SIZE) as pilot:
        run.launch("analyze-src")
        for _ in range(5_000):
            run.changed()
        await pilot.press("m")
        for _ in range(5_000):
            run.changed()
        await pilot.pause()
        assert run.calls == [("set_enforcement_mode", "block")]
        assert str(app.query_one(ModeBadge).content) == "BLOCK"
