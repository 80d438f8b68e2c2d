"""The monitor's text pieces: times, budget columns, instance cells (no Textual needed)."""

from __future__ import annotations

import pytest

from budget_core import BudgetLevel, BudgetState, TokenUsage, Unit
from orchestrator.state import BurnView, InstanceStatus, InstanceView
from tui.eventlog import notice_tag
from tui.format import (
    budget_name,
    clock_text,
    cost_cell,
    left_text,
    level_word,
    percent_text,
    rate_text,
    span_text,
    used_text,
)
from tui.instances import instance_cells


def budget(
    used: float, limit: float, unit: Unit = Unit.TOKENS, key: str = "/review"
) -> BudgetState:
    from budget_core import level_for

    return BudgetState(key, unit, limit, used, level_for(used, limit))


def view(
    status: InstanceStatus, usage: TokenUsage, *, final: bool, estimate: bool = False
) -> InstanceView:
    return InstanceView("a1", "/review x", "/review", status, usage, 0.0123, estimate, final, 83.0)


@pytest.mark.parametrize(
    ("seconds", "text"), [(0, "0:00"), (7.9, "0:07"), (754, "12:34"), (3723, "1:02:03")]
)
def test_clock_text(seconds: float, text: str) -> None:
    assert clock_text(seconds) == text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.2, "1s"), (45, "45s"), (192, "3m12s"), (3900, "1h05m"), (400_000, ">99h")],
)
def test_span_text(seconds: float, text: str) -> None:
    assert span_text(seconds) == text


def test_budget_columns_for_tokens_and_dollars() -> None:
    tokens = budget(56_000, 50_000)
    assert (budget_name(tokens), used_text(tokens), percent_text(tokens)) == (
        "/review",
        "56K/50K",
        "112%",
    )
    assert level_word(tokens) == "EXCEEDED"
    usd = budget(0.21, 0.5, Unit.USD)
    assert (budget_name(usd), used_text(usd), level_word(usd)) == (
        "/review $",
        "$0.2100/$0.5000",
        "OK",
    )


def test_burn_and_time_left() -> None:
    burn = BurnView("/review", 12_600, 52)
    assert rate_text(burn) == "12.6K/min"
    assert rate_text(None) == rate_text(BurnView("/review", 0, None)) == "idle"
    assert left_text(budget(39_000, 50_000), burn) == "52s left"
    assert left_text(budget(56_000, 50_000), burn) == "used up"
    assert left_text(budget(0.2, 0.5, Unit.USD), burn) == ""  # a token rate says nothing of $


def test_instance_cells_mark_live_counts_and_estimates() -> None:
    usage = TokenUsage(1_000, 200, 30, 4_000)
    live = instance_cells(view(InstanceStatus.RUNNING, usage, final=False, estimate=True))
    assert (live["total"], live["cache_r"], live["cost"], live["time"]) == (
        "5.2K*",
        "4K*",
        "~$0.0123",
        "1:23",
    )
    final = instance_cells(view(InstanceStatus.SUCCEEDED, usage, final=True))
    assert (final["total"], final["cost"]) == ("5.2K", "$0.0123")
    pending = instance_cells(view(InstanceStatus.PENDING, TokenUsage(), final=False))
    assert pending["total"] == pending["cost"] == pending["time"] == "-"


def test_level_notices_are_tagged_with_the_level_word() -> None:
    from orchestrator.state import Notice, NoticeKind

    assert notice_tag(Notice(1, NoticeKind.LEVEL, "x", BudgetLevel.CRITICAL)) == "CRITICAL"
    assert notice_tag(Notice(1, NoticeKind.BLOCK, "x")) == "BLOCKED"
    assert cost_cell(view(InstanceStatus.RUNNING, TokenUsage(), final=False)) == "$0.0123"


def test_long_names_end_in_an_ellipsis_and_numbers_align_right() -> None:
    from tui.instances import COLUMNS, _aligned

    name, total = COLUMNS[0], next(c for c in COLUMNS if c.key == "total")
    assert _aligned("a-very-long-instance-name", name) == "a-very-long-i…"
    assert _aligned("5.2K*", total) == "  5.2K*"


def test_an_instance_cancelled_before_launch_shows_no_numbers() -> None:
    never_ran = InstanceView(
        "a1", "/review x", "/review", InstanceStatus.CANCELLED, TokenUsage(), 0.0, True, False, 0.0
    )
    cells = instance_cells(never_ran)
    assert cells["total"] == cells["cost"] == cells["time"] == "-"
