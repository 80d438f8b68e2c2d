"""Names in Chinese, Japanese or with emoji take two terminal cells a character: the final
table, the periodic report and the monitor line them up by display width, not by len()."""

from __future__ import annotations

import re

import pytest
from rich.cells import cell_len

from budget_core import BudgetManager, TokenUsage
from orchestrator.cells import fit, pad
from orchestrator.palette import Palette
from orchestrator.report import progress_report, summary_report
from orchestrator.state import InstanceStatus, InstanceView, RunSnapshot

WIDE_NAMES = ("分析前端代码", "レビュー🚀", "🔥hot-path", "plain", "café-crème")
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def snapshot(names: tuple[str, ...], status: InstanceStatus) -> RunSnapshot:
    manager = BudgetManager()
    manager.set_budget("/分析", tokens=500_000)
    manager.set_budget("/review", tokens=300_000)
    usage = TokenUsage(1_200, 400, 200, 3_000)
    instances = tuple(
        InstanceView(name, "/分析 src", "/分析", status, usage, 0.0187, False, True, 12.0, pid=1)
        for name in names
    )
    return RunSnapshot("warn", 12.0, instances, manager.snapshot(), (), True, False)


def column_at(line: str, text: str) -> int:
    """The terminal column (in cells) where ``text`` starts in ``line``."""
    return cell_len(line[: line.index(text)])


def test_the_final_table_lines_up_wide_names_by_display_width() -> None:
    report = summary_report(snapshot(WIDE_NAMES, InstanceStatus.SUCCEEDED), 0, Palette(False))
    lines = report.splitlines()
    header = lines[1]
    rows = lines[2 : 2 + len(WIDE_NAMES)]
    for title, cell in (("budget", "/分析"), ("status", "succeeded"), ("time", "0:12")):
        assert {column_at(row, cell) for row in rows} == {column_at(header, title)}
    # Every row, the TOTAL row too, has the same width on the screen.
    total_row = lines[2 + len(WIDE_NAMES)]
    assert total_row.lstrip().startswith("TOTAL")
    assert {cell_len(line) for line in [header, *rows, total_row]} == {cell_len(header)}
    # Budget names: the bars start in the same column.
    bars = [line for line in lines if "[" in line and "tokens" in line]
    assert len(bars) == 2
    assert column_at(bars[0], "[") == column_at(bars[1], "[")


def test_the_periodic_report_lines_up_wide_names() -> None:
    report = progress_report(snapshot(WIDE_NAMES, InstanceStatus.RUNNING), Palette(False))
    running = [line for line in report.splitlines() if " running " in line and "tokens" in line]
    assert len(running) == len(WIDE_NAMES)
    assert len({column_at(line, "running") for line in running}) == 1


def test_only_the_status_cell_is_coloured_even_when_a_name_contains_the_status_word() -> None:
    names = ("failed-retry", "a")
    report = summary_report(snapshot(names, InstanceStatus.FAILED), 1, Palette(True))
    row = next(line for line in report.splitlines() if "failed-retry" in line)
    assert "\x1b" not in row[: row.index("failed-retry") + len("failed-retry")]
    assert "\x1b[31mfailed" in row
    # Colour codes take no cells: without them, the rows line up as in plain text.
    plain = summary_report(snapshot(names, InstanceStatus.FAILED), 1, Palette(False))
    assert ANSI.sub("", report) == plain


@pytest.mark.parametrize(
    ("text", "cells", "fitted"),
    [
        ("plain", 5, "plain"),
        ("plain-name", 6, "plain…"),
        ("分析前端代码", 12, "分析前端代码"),
        ("分析前端代码", 7, "分析前…"),
        ("分析前端代码", 6, "分析…"),  # half of 前 would not fit: left out
        ("🔥hot-path", 6, "🔥hot…"),
    ],
)
def test_fit_cuts_by_display_width(text: str, cells: int, fitted: str) -> None:
    assert fit(text, cells) == fitted
    assert cell_len(fit(text, cells)) <= cells


def test_pad_pads_by_display_width() -> None:
    assert pad("分析", 6) == "分析  "
    assert pad("分析", 6, right=True) == "  分析"
    assert pad("分析前端", 4) == "分析前端"  # never cut


def test_monitor_cells_fit_their_columns_by_display_width() -> None:
    from tui.instances import COLUMNS, _aligned

    name, total = COLUMNS[0], next(c for c in COLUMNS if c.key == "total")
    assert _aligned("非常に長い名前のインスタンスです", name) == "非常に長い名…"
    for text in (*WIDE_NAMES, "非常に長い名前のインスタンスです"):
        assert cell_len(_aligned(text, name)) <= name.width
    assert _aligned("１２３", total) == " １２３"  # fullwidth digits: 6 cells, padded to 7


async def test_the_monitor_table_lines_up_wide_names() -> None:
    from tests.snapshots.scripted import ScriptedRun
    from tui.app import build_app
    from tui.instances import InstanceTable

    names = (*WIDE_NAMES, "非常に長い名前のインスタンスです")
    run = ScriptedRun([(n, "/分析 src", "/分析") for n in names], token_budgets={"/分析": 10**6})
    app = build_app(run, clock=lambda: 0.0, animate=False)
    async with app.run_test(size=(120, 35)) as pilot:
        run.launch(*names)
        await pilot.pause()
        app.sync()
        await pilot.pause()
        table = app.query_one(InstanceTable)
        drawn = [table.render_line(y).text for y in range(table.size.height)]
    rows = [line for line in drawn if "/分析" in line]
    assert len(rows) == len(names)
    assert len({column_at(row, "/分析") for row in rows}) == 1
    assert len({column_at(row, "running") for row in rows}) == 1
    assert len({cell_len(row) for row in rows}) == 1
    long = next(row for row in rows if "非常" in row)
    assert "非常に長い名…" in long  # cut where it shows: the ellipsis says there is more
