"""Budget windows: calendar boundaries in local time (TZ honoured, DST included) and rolling
windows, with an injected clock (the times are given, never read)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime

import pytest

from budget_core import BudgetLevel, BudgetManager, Unit, Window, parse_window
from budget_core.spec import parse_budget_spec, parse_windowed_limit
from budget_core.usage import TokenUsage
from budget_core.windows import calendar_buckets


@pytest.fixture
def paris(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TZ", "Europe/Paris")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def at(text: str) -> float:
    """Local wall-clock time -> POSIX seconds."""
    return datetime.fromisoformat(text).timestamp()


def local(ts: float | None) -> str:
    assert ts is not None
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def test_day_rolls_over_at_local_midnight(paris: None) -> None:
    day = Window("day")
    before, after = at("2026-03-10T23:59:59"), at("2026-03-11T00:00:01")
    assert local(day.start(before)) == "2026-03-10 00:00:00"
    assert local(day.end(before)) == "2026-03-11 00:00:00"
    assert local(day.start(after)) == "2026-03-11 00:00:00"
    # Local, not UTC: Paris midnight is 23:00 UTC in winter.
    assert day.start(after) == datetime.fromisoformat("2026-03-10T23:00:00+00:00").timestamp()


def test_week_starts_on_monday(paris: None) -> None:
    week = Window("week")
    sunday_night = at("2026-11-29T23:30:00")  # a Sunday
    assert local(week.start(sunday_night)) == "2026-11-23 00:00:00"  # the Monday before
    assert local(week.end(sunday_night)) == "2026-11-30 00:00:00"
    monday = at("2026-11-30T00:00:00")
    assert week.start(monday) == monday


def test_month_end_and_year_end(paris: None) -> None:
    month = Window("month")
    assert local(month.start(at("2026-01-31T23:59:59"))) == "2026-01-01 00:00:00"
    assert local(month.start(at("2026-02-01T00:00:00"))) == "2026-02-01 00:00:00"
    assert local(month.end(at("2026-02-28T12:00:00"))) == "2026-03-01 00:00:00"
    assert local(month.end(at("2026-12-31T23:00:00"))) == "2027-01-01 00:00:00"


def test_rolling_window_ages_out_spend() -> None:
    five_h = Window("5h")
    now = 1_800_000_000.0
    assert five_h.start(now) == now - 5 * 3600
    assert Window("90m").start(now) == now - 90 * 60
    assert Window("7d").start(now) == now - 7 * 86400
    # A charge at `now` counts until 5 h later, then has aged out.
    spent_at = now
    assert five_h.start(now + 5 * 3600 - 1) <= spent_at  # type: ignore[operator]
    assert five_h.start(now + 5 * 3600 + 1) > spent_at  # type: ignore[operator]


def test_a_day_across_the_spring_dst_change_has_23_hours(paris: None) -> None:
    # 2026-03-29: Paris clocks go from 02:00 to 03:00.
    noon = at("2026-03-29T12:00:00")
    day = Window("day")
    start, end = day.start(noon), day.end(noon)
    assert start is not None and end is not None
    assert end - start == 23 * 3600
    assert local(start) == "2026-03-29 00:00:00"
    # Hours stay real hours: 03:30 is in the hour that began at 03:00 (the one after 01:59).
    hour = Window("hour")
    assert local(hour.start(at("2026-03-29T03:30:00"))) == "2026-03-29 03:00:00"
    assert hour.start(at("2026-03-29T03:30:00")) - hour.start(at("2026-03-29T01:30:00")) == 3600  # type: ignore[operator]


def test_a_day_across_the_autumn_dst_change_has_25_hours(paris: None) -> None:
    noon = at("2026-10-25T12:00:00")
    start, end = Window("day").start(noon), Window("day").end(noon)
    assert start is not None and end is not None
    assert end - start == 25 * 3600
    buckets = calendar_buckets("day", at("2026-10-24T12:00:00"), at("2026-10-26T12:00:00"))
    assert [round((e - s) / 3600) for s, e in buckets] == [24, 25, 24]


def test_tz_is_honoured(monkeypatch: pytest.MonkeyPatch) -> None:
    now = datetime.fromisoformat("2026-06-01T03:00:00+00:00").timestamp()
    starts = {}
    for tz in ("UTC", "America/New_York"):
        monkeypatch.setenv("TZ", tz)
        time.tzset()
        starts[tz] = Window("day").start(now)
    monkeypatch.undo()
    time.tzset()
    # 03:00 UTC is still the evening before in New York (EDT, UTC-4): its day began 28 h ago.
    assert starts["UTC"] == now - 3 * 3600
    assert starts["America/New_York"] == now - 3 * 3600 - 20 * 3600


def test_labels() -> None:
    assert Window("day").label == "today"
    assert Window("week").label == "this week"
    assert Window("5h").label == "last 5h"
    assert Window("90m").label == "last 90min"
    assert Window("run").label == "this run"


@pytest.mark.parametrize("text", ["fortnight", "0h", "5", "h", "5s", "-5h", "5.5h", ""])
def test_bad_windows_name_what_is_allowed(text: str) -> None:
    with pytest.raises(ValueError, match=r"is not one of run, hour, day, week, month"):
        parse_window(text)


def test_windowed_limits_and_specs() -> None:
    assert parse_windowed_limit("2M/day") == (2_000_000, Window("day"))
    assert parse_windowed_limit("50/5h", Unit.USD) == (50.0, Window("5h"))
    assert parse_windowed_limit("1.5M") == (1_500_000, Window("run"))
    spec = parse_budget_spec("/review=2M/day")
    assert (spec.key, spec.limit, spec.window) == ("/review", 2_000_000, Window("day"))
    with pytest.raises(ValueError, match=r"budget '/review=2M/daily'.*window 'daily'"):
        parse_budget_spec("/review=2M/daily")
    with pytest.raises(ValueError, match=r"limit 'x'"):
        parse_budget_spec("/review=x/day")


def test_spend_from_elsewhere_moves_levels_both_ways() -> None:
    manager = BudgetManager("block")
    manager.set_budget("/x", tokens=1000, tokens_window=Window("5h"))
    events: list[object] = []
    manager.subscribe(events.append)
    manager.charge("/x", "a", TokenUsage(input=100))
    crossed = manager.set_outside("/x", Unit.TOKENS, 950)
    assert [c.budget.level for c in crossed] == [BudgetLevel.EXCEEDED]
    state = manager.snapshot().budgets[0]
    assert (state.used, state.outside, state.window) == (1050, 950, Window("5h"))
    assert manager.decide_launch("/x").action == "block"
    # The rolling window lets old spend age out: the budget frees up, a falling crossing.
    crossed = manager.set_outside("/x", Unit.TOKENS, 0)
    assert [(c.previous, c.budget.level) for c in crossed] == [
        (BudgetLevel.EXCEEDED, BudgetLevel.OK)
    ]
    assert manager.decide_launch("/x").allowed
    assert [b.key for b in manager.windowed()] == ["/x"]


def test_replacing_a_limit_keeps_the_window_and_its_outside_spend() -> None:
    manager = BudgetManager()
    manager.set_budget("/x", tokens=1000, tokens_window=Window("day"))
    manager.set_outside("/x", Unit.TOKENS, 800)
    manager.set_budget("/x", tokens=700)  # e.g. from the monitor
    state = manager.snapshot().budgets[0]
    assert (state.window, state.used, state.level) == (Window("day"), 800, BudgetLevel.EXCEEDED)


def test_a_windowed_bar_draws_earlier_spend_then_this_runs() -> None:
    from budget_core import render_window_bar

    assert render_window_bar(30, 70, 100) == "[######========------]"
    assert render_window_bar(0, 0, 100) == "[--------------------]"
    assert render_window_bar(50, 50, 100) == "[##########----------]"
    # Past the limit: full, `!` last, the earlier part still in proportion.
    assert render_window_bar(120, 150, 100) == "[###############====!]"
    # This run's spend that aged out of a rolling window makes `before` negative: no `#`.
    assert render_window_bar(-5, 20, 100) == "[====----------------]"


def test_a_headless_line_says_the_window() -> None:
    from budget_core.budgets import BudgetState
    from orchestrator.palette import Palette
    from orchestrator.report import budget_line

    state = BudgetState("/review", Unit.TOKENS, 2_000_000, 1_400_000, BudgetLevel.WARNING,
                        Window("day"), 900_000)  # fmt: skip
    line = budget_line(state, Palette(False), 7)
    assert line.split() == [
        "/review", "[#########=====------]", "70%", "1.4M/2M", "tokens", "today", "WARNING"
    ]  # fmt: skip
    usd = BudgetState("overall", Unit.USD, 50, 31, BudgetLevel.OK, Window("week"), 0)
    assert "$31.00/$50.00 this week" in budget_line(usd, Palette(False), 11)
