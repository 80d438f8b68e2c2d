"""rate_limit_event lines: parsed into typed values (never tokens), and the board that turns
them into log lines, the monitor's text, the summary, and the hold of ``--on-rate-limit wait``
(an injected wall clock throughout)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator

import pytest

from budget_core import (
    ZERO,
    RateLimitStatus,
    TokenUsage,
    UsageTracker,
    WindowReading,
    line_may_carry_usage,
    parse_rate_limit_event,
    window_label,
)
from budget_core.ratelimit import RateLimitEvent
from orchestrator.ratelimits import (
    MAX_HOLD_S,
    UNKNOWN_RESET_HOLD_S,
    HoldState,
    OnRateLimit,
    RateLimitBoard,
    hold_text,
    rate_limit_line,
    summary_rate_limits,
)

S = RateLimitStatus
NOW = 1_796_048_400.0  # Mon 2026-11-30 14:20 UTC

# Real lines (the fake API's headers, tests/e2e/test_rate_limit_e2e.py), ids shortened.
REAL_2_1_197_WARNING = (
    '{"type":"rate_limit_event","rate_limit_info":{"status":"allowed_warning",'
    '"resetsAt":1796070524,"rateLimitType":"five_hour","utilization":0.83,'
    '"isUsingOverage":false,"surpassedThreshold":0.8},"uuid":"8417deb4","session_id":"2e8b591e"}'
)
REAL_2_1_332_WARNING = (
    '{"type":"rate_limit_event","rate_limit_info":{"status":"allowed_warning",'
    '"resetsAt":1796070547,"rateLimitType":"five_hour","utilization":0.83,'
    '"isUsingOverage":false,"surpassedThreshold":0.8,"unifiedWindows":{"five_hour":'
    '{"utilization":0.83,"resetsAt":1796070547,"surpassedThreshold":0.8},"seven_day":'
    '{"utilization":0.2,"resetsAt":1796367547}}},"uuid":"5cc4068a","session_id":"325cc7ea"}'
)
REAL_2_1_197_REJECTED = (
    '{"type":"rate_limit_event","rate_limit_info":{"status":"rejected","resetsAt":1796067672,'
    '"rateLimitType":"five_hour","isUsingOverage":false},"uuid":"f8e0cf93","session_id":"2015ad9f"}'
)
REAL_2_1_332_REJECTED = (
    '{"type":"rate_limit_event","rate_limit_info":{"status":"rejected","resetsAt":1796067672,'
    '"rateLimitType":"five_hour","isUsingOverage":false,"unifiedWindows":{"five_hour":'
    '{"utilization":1,"resetsAt":1796067672}}},"uuid":"9aafce9a","session_id":"707af5c1"}'
)
# What a subscription's first answer without any rate-limit header gives.
REAL_PLAIN_ALLOWED = (
    '{"type":"rate_limit_event","rate_limit_info":{"status":"allowed","isUsingOverage":false},'
    '"uuid":"837aacb9","session_id":"08a27c31"}'
)


@pytest.fixture(autouse=True)
def utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def event_of(line: str) -> RateLimitEvent:
    tracker = UsageTracker()
    assert tracker.feed_line(line.encode()) == ZERO
    assert tracker.skipped_lines == 0 and tracker.rate_limit is not None
    return tracker.rate_limit


# -- parsing ---------------------------------------------------------------------------------


def test_real_lines_of_both_clis_become_typed_events() -> None:
    old = event_of(REAL_2_1_197_WARNING)
    assert old.main == WindowReading("five_hour", S.ALLOWED_WARNING, 1796070524.0, 0.83)
    assert old.others == ()
    new = event_of(REAL_2_1_332_WARNING)
    assert new.main == WindowReading("five_hour", S.ALLOWED_WARNING, 1796070547.0, 0.83)
    assert new.others == (WindowReading("seven_day", S.ALLOWED, 1796367547.0, 0.2),)
    assert event_of(REAL_2_1_197_REJECTED).main == WindowReading(
        "five_hour", S.REJECTED, 1796067672.0, None
    )
    # 2.1.332 gives the deciding window's utilization only in unifiedWindows: taken from there.
    assert event_of(REAL_2_1_332_REJECTED).main.utilization == 1.0
    assert event_of(REAL_PLAIN_ALLOWED).main == WindowReading("unspecified", S.ALLOWED, None, None)


def test_a_rate_limit_line_is_never_counted_as_tokens() -> None:
    """Even one carrying usage-like fields, and in the middle of a call."""
    tracker = UsageTracker()
    start = {
        "type": "stream_event",
        "event": {
            "type": "message_start",
            "message": {"id": "m1", "model": "claude-opus-4-8", "usage": {"input_tokens": 100}},
        },
    }
    tracker.feed_line(json.dumps(start))
    sneaky = {
        "type": "rate_limit_event",
        "rate_limit_info": {"status": "allowed_warning", "utilization": 0.5},
        "usage": {"input_tokens": 9999, "output_tokens": 9999},
        "message": {"id": "m2", "usage": {"input_tokens": 9999}},
    }
    assert tracker.feed_line(json.dumps(sneaky)) == ZERO
    assert tracker.feed_line(REAL_2_1_197_REJECTED) == ZERO
    assert tracker.usage == TokenUsage(100, 0, 0, 0)
    assert tracker.rate_limit_events == 2 and tracker.rate_limit is not None
    assert tracker.rate_limit.status is S.REJECTED


def test_rate_limit_lines_are_read_whole_not_dropped() -> None:
    padded = REAL_2_1_332_WARNING.replace('"uuid"', '"pad":"' + "x" * 5000 + '","uuid"')
    assert line_may_carry_usage(padded.encode()[:128])


@pytest.mark.parametrize(
    "line",
    [
        '{"type":"rate_limit_event"}',
        '{"type":"rate_limit_event","rate_limit_info":null}',
        '{"type":"rate_limit_event","rate_limit_info":"rejected"}',
        '{"type":"rate_limit_event","rate_limit_info":{}}',
        '{"type":"rate_limit_event","rate_limit_info":{"status":"throttled"}}',
        '{"type":"rate_limit_event","rate_limit_info":{"status":"REJECTED"}}',
        '{"type":"rate_limit_event","rate_limit_info":{"status":null,"resetsAt":1}}',
        '{"type":"rate_limit_event","rate_limit_info":{"status":["rejected"]}}',
        '{"type":"rate_limit_event","rate_limit_info":{"status":{"a":1}}}',
        '{"type":"rate_limit_event","rate_limit_info":{"status":7}}',
        '{"type":"rate_limit_event","rate_limit_info":{"status":"rejected"',  # cut short
    ],
)
def test_a_line_without_a_known_status_is_skipped_and_counted(line: str) -> None:
    tracker = UsageTracker()
    tracker.feed_line(REAL_2_1_197_WARNING)
    assert tracker.feed_line(line) == ZERO
    assert tracker.skipped_lines == 1
    assert tracker.rate_limit_events == 1  # the earlier event stands
    assert tracker.rate_limit is not None and tracker.rate_limit.status is S.ALLOWED_WARNING


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("resetsAt", "NaN"),
        ("resetsAt", "Infinity"),
        ("resetsAt", "-Infinity"),
        ("resetsAt", '"1796070524"'),
        ("resetsAt", "-5"),
        ("resetsAt", "0"),
        ("resetsAt", "1e300"),
        ("resetsAt", "1" + "0" * 400),
        ("resetsAt", "1796070524000"),  # milliseconds: not a time the CLI writes
        ("resetsAt", "true"),
        ("utilization", "NaN"),
        ("utilization", "Infinity"),
        ("utilization", "1e308"),
        ("utilization", "1" + "0" * 400),
        ("utilization", "-0.1"),
        ("utilization", '"83%"'),
        ("utilization", "false"),
        ("rateLimitType", "42"),
        ("rateLimitType", '""'),
        ("unifiedWindows", '"five_hour"'),
        ("unifiedWindows", '{"seven_day": 3, "": {"utilization": 0.1}}'),
    ],
)
def test_a_field_that_is_garbage_is_unknown_and_the_line_still_counts(
    field: str, value: str
) -> None:
    line = (
        '{"type":"rate_limit_event","rate_limit_info":{"status":"allowed_warning",'
        f'"rateLimitType":"five_hour","resetsAt":1796070524,"utilization":0.5,"{field}":{value}}}}}'
    )
    event = event_of(line)
    assert event.status is S.ALLOWED_WARNING
    main = event.main
    if field == "resetsAt":
        assert main.resets_at is None
    elif field == "utilization":
        assert main.utilization is None
    elif field == "rateLimitType":
        assert main.window == "unspecified"
    else:
        assert event.others == ()
    # Whatever was read, it shows and summarises without an error.
    board = RateLimitBoard(OnRateLimit.WAIT, lambda: NOW)
    board.observe("a", event)
    assert rate_limit_line(board.view())
    json.dumps(summary_rate_limits(board.view()), allow_nan=False)


def test_window_labels() -> None:
    assert [window_label(w) for w in ("five_hour", "seven_day", "seven_day_opus")] == [
        "5h",
        "7d",
        "7d opus",
    ]
    assert window_label("unspecified") == "limit"
    assert window_label("new_window") == "new_window"
    assert window_label("\x1b[2Jevil\n") == "[2Jevil"  # no control character reaches a log
    assert window_label("\x1b") == "?"
    assert parse_rate_limit_event(
        {"rate_limit_info": {"status": "allowed", "rateLimitType": "x" * 500}}
    ) == RateLimitEvent(WindowReading("x" * 40, S.ALLOWED, None, None))


# -- the board: what it says -----------------------------------------------------------------


def test_each_window_is_logged_only_when_its_state_changes() -> None:
    board = RateLimitBoard(OnRateLimit.CONTINUE, lambda: NOW)
    event = event_of(REAL_2_1_332_WARNING)
    notes = board.observe("a", event)
    assert [(n.text, n.warning) for n in notes] == [
        ("5h window 83%, resets 20:29", True),
        ("7d window ok", False),
    ]
    assert board.observe("b", event) == []  # the same state from another instance: quiet
    higher = RateLimitEvent(WindowReading("five_hour", S.ALLOWED_WARNING, 1796070547, 0.91))
    assert [n.text for n in board.observe("b", higher)] == ["5h window 91%, resets 20:29"]
    view = board.view()
    assert rate_limit_line(view) == "5h 91% resets 20:29 · 7d ok"
    assert view.windows[0].reported_by == "b"


def test_a_report_that_names_no_window_shows_only_when_it_matters() -> None:
    board = RateLimitBoard(OnRateLimit.CONTINUE, lambda: NOW)
    board.observe("a", event_of(REAL_PLAIN_ALLOWED))
    assert rate_limit_line(board.view()) == "limit ok"
    board.observe("a", event_of(REAL_2_1_197_WARNING))
    assert rate_limit_line(board.view()) == "5h 83% resets 20:28"


def test_a_reset_on_another_day_names_the_day_and_huge_utilization_stays_short() -> None:
    board = RateLimitBoard(OnRateLimit.CONTINUE, lambda: NOW)
    board.observe(
        "a", RateLimitEvent(WindowReading("seven_day", S.ALLOWED_WARNING, NOW + 2 * 86400, 10.0))
    )
    assert rate_limit_line(board.view()) == "7d >999% resets Wed 14:20"


def test_summary_shape() -> None:
    clock = [NOW]
    board = RateLimitBoard(OnRateLimit.WAIT, lambda: clock[0])
    board.observe("a", event_of(REAL_2_1_332_WARNING))
    board.observe("b", RateLimitEvent(WindowReading("five_hour", S.REJECTED, NOW + 600, None)))
    clock[0] += 100
    data = summary_rate_limits(board.view())
    assert data == {
        "on_rate_limit": "wait",
        "events": 2,
        "windows": {
            "five_hour": {
                "status": "rejected",
                "utilization": None,
                "resets_at": "2026-11-30T14:30:00+00:00",
                "reported_by": "b",
            },
            "seven_day": {
                "status": "allowed",
                "utilization": 0.2,
                "resets_at": "2026-12-04T06:59:07+00:00",
                "reported_by": "a",
            },
        },
        "hold": {
            "state": "holding",
            "until": "2026-11-30T14:30:00+00:00",
            "holds": 1,
            "held_s": 100.0,
        },
    }


# -- the hold ----------------------------------------------------------------------------------


def rejected(resets_at: float | None, window: str = "five_hour") -> RateLimitEvent:
    return RateLimitEvent(WindowReading(window, S.REJECTED, resets_at, None))


def test_hold_states_and_their_transitions() -> None:
    assert HoldState.OPEN.can_become(HoldState.HOLDING)
    assert not HoldState.OPEN.can_become(HoldState.OPEN)
    assert HoldState.HOLDING.can_become(HoldState.OPEN)
    assert HoldState.HOLDING.can_become(HoldState.HOLDING)  # a later reset extends it


def test_continue_never_holds() -> None:
    board = RateLimitBoard(OnRateLimit.CONTINUE, lambda: NOW)
    notes = board.observe("a", rejected(NOW + 600))
    assert [n.text for n in notes] == ["5h window LIMIT, resets 14:30"]
    assert board.state is HoldState.OPEN and board.tick() == []
    assert hold_text(board.view()) is None


def test_wait_holds_until_the_reset_then_releases_with_a_countdown_between() -> None:
    clock = [NOW]
    board = RateLimitBoard(OnRateLimit.WAIT, lambda: clock[0])
    notes = board.observe("a", rejected(NOW + 3600))
    assert [n.text for n in notes] == [
        "5h window LIMIT, resets 15:20",
        "holding new launches until 15:20 (1:00:00 from now): the 5h window resets then",
    ]
    assert board.state is HoldState.HOLDING and notes[1].warning
    assert hold_text(board.view()) == "HOLD 1:00:00 until 15:20"
    clock[0] += 299.5
    assert board.tick() == []
    assert board.view().seconds_left == pytest.approx(3300.5)
    assert hold_text(board.view()) == "HOLD 55:01 until 15:20"  # never rounds down to done
    clock[0] += 1
    assert [n.text for n in board.tick()] == ["launches held: 55:00 left, until 15:20"]
    clock[0] = NOW + 3599.9
    assert [n.text for n in board.tick()] == ["launches held: 0:01 left, until 15:20"]
    assert board.state is HoldState.HOLDING
    clock[0] = NOW + 3600
    assert [n.text for n in board.tick()] == ["5h window reset time reached: launching again"]
    view = board.view()
    assert (view.hold, view.holds, view.held_s) == (HoldState.OPEN, 1, 3600)
    assert view.hold_until is None and view.seconds_left is None
    assert rate_limit_line(view) == "5h reset at 15:20"


def test_a_reset_time_in_the_past_does_not_hold() -> None:
    board = RateLimitBoard(OnRateLimit.WAIT, lambda: NOW)
    notes = board.observe("a", rejected(NOW - 60))
    assert notes[-1].text == "5h window rejected, but its reset time 14:19 has passed"
    assert board.state is HoldState.OPEN
    assert board.observe("a", rejected(NOW)) != [] and board.state is HoldState.OPEN


def test_a_rejection_without_a_reset_time_holds_a_while_then_lets_a_launch_try() -> None:
    clock = [NOW]
    board = RateLimitBoard(OnRateLimit.WAIT, lambda: clock[0])
    notes = board.observe("a", rejected(None))
    assert notes[-1].text.endswith("the 5h window gave no reset time")
    assert board.view().hold_until == NOW + UNKNOWN_RESET_HOLD_S
    clock[0] += UNKNOWN_RESET_HOLD_S
    board.tick()
    assert board.state is HoldState.OPEN


def test_a_reset_far_away_is_capped() -> None:
    board = RateLimitBoard(OnRateLimit.WAIT, lambda: NOW)
    board.observe("a", rejected(NOW + 90 * 86400))
    assert board.view().hold_until == NOW + MAX_HOLD_S


def test_a_later_reset_extends_the_hold_and_an_earlier_one_does_not_shorten_it() -> None:
    board = RateLimitBoard(OnRateLimit.WAIT, lambda: NOW)
    board.observe("a", rejected(NOW + 600))
    assert (
        board.observe("b", rejected(NOW + 300, "seven_day"))[-1].text
        == "7d window LIMIT, resets 14:25"
    )
    assert board.view().hold_until == NOW + 600
    board.observe("c", rejected(NOW + 900, "seven_day"))
    view = board.view()
    assert (view.hold_until, view.hold_window, view.holds) == (NOW + 900, "seven_day", 1)


def test_a_rejection_in_force_is_not_undone_by_a_milder_report_until_its_reset() -> None:
    """An ``allowed`` from another instance may answer a request sent before the limit."""
    clock = [NOW]
    board = RateLimitBoard(OnRateLimit.WAIT, lambda: clock[0])
    board.observe("a", rejected(NOW + 600))
    assert board.observe("b", event_of(REAL_2_1_197_WARNING)) == []
    assert board.view().windows[0].status is S.REJECTED
    assert board.state is HoldState.HOLDING
    clock[0] += 600
    board.tick()
    notes = board.observe("b", event_of(REAL_2_1_197_WARNING))
    assert [n.text for n in notes] == ["5h window 83%, resets 20:28"]


def test_wait_open_returns_on_release_or_stop_and_moves_the_countdown() -> None:
    async def scenario() -> None:
        clock = [NOW]
        board = RateLimitBoard(OnRateLimit.WAIT, lambda: clock[0])
        said: list[str] = []
        polls: list[float] = []
        stopped = asyncio.Event()
        await asyncio.wait_for(
            board.wait_open(stopped, lambda n: said.append(n.text), lambda: None, 0.01), 1
        )  # open: at once
        board.observe("a", rejected(NOW + 3600))
        waiting = asyncio.create_task(
            board.wait_open(stopped, lambda n: said.append(n.text), lambda: polls.append(1), 0.01)
        )
        await asyncio.sleep(0.1)
        assert not waiting.done() and len(polls) >= 3  # polled, countdown refreshed
        clock[0] += 3600  # the injected clock reaches the reset
        await asyncio.wait_for(waiting, 1)
        assert said[-1] == "5h window reset time reached: launching again"
        board.observe("a", rejected(clock[0] + 3600))
        waiting = asyncio.create_task(board.wait_open(stopped, said.append, lambda: None, 10))
        await asyncio.sleep(0.05)
        stopped.set()  # the run is stopping: no more waiting, whatever the clock says
        await asyncio.wait_for(waiting, 1)
        assert board.state is HoldState.HOLDING

    asyncio.run(scenario())
