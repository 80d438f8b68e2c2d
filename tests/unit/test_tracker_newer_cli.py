"""UsageTracker on the shapes of the newest CLIs (shared stream-json notes, "Across CLI
versions"): the CLI's own budget stop, several results per process, ``api_message_id`` on
stream events, thinking tokens and the new ``modelUsage`` fields. Lines hand-written from
the notes, in the CLI's compact separators."""

from __future__ import annotations

import json
from typing import Any

import pytest

from budget_core import ZERO, TokenUsage, UsageTracker, line_may_carry_usage
from tests.unit.test_tracker import (
    OPUS,
    SESSION,
    api_usage,
    assistant,
    dumps,
    feed_all,
    init,
    model_usage_entry,
    result,
    text_delta,
)

OPUS_5_5 = "claude-opus-5-5"
HAIKU = "claude-haiku-4-5-20251001"
MILLION = 1_000_000


def event(kind: str, msg_id: str | None, body: dict[str, Any], lane: str | None = None) -> bytes:
    """A 2.1.332 ``stream_event``: ``api_message_id`` names the call of every event."""
    obj: dict[str, Any] = {"type": "stream_event"}
    if msg_id is not None:
        obj["api_message_id"] = msg_id
    obj["event"] = {"type": kind, **body}
    obj["session_id"] = SESSION
    obj["parent_tool_use_id"] = lane
    return dumps(obj)


def start(
    msg_id: str, usage: dict[str, Any], model: str = OPUS_5_5, lane: str | None = None
) -> bytes:
    message = {"model": model, "id": msg_id, "type": "message", "role": "assistant", "content": []}
    return event("message_start", msg_id, {"message": {**message, "usage": usage}}, lane)


def delta(msg_id: str | None, usage: dict[str, Any], lane: str | None = None) -> bytes:
    return event(
        "message_delta", msg_id, {"delta": {"stop_reason": "end_turn"}, "usage": usage}, lane
    )


def block_delta(msg_id: str, text: str = "abc") -> bytes:
    body = {"index": 0, "delta": {"type": "text_delta", "text": text}}
    return event("content_block_delta", msg_id, body)


def new_entry(
    input: int = 0,
    output: int | None = 0,
    cache_creation: int = 0,
    cache_read: int = 0,
    *,
    cost: float | None = None,
    thinking: int | None = None,
    five_min: int | None = None,
    one_hour: int | None = None,
    canonical: str | None = None,
) -> dict[str, Any]:
    entry = model_usage_entry(input, output, cache_creation, cache_read, cost=cost)
    if thinking is not None:
        entry["thinkingTokens"] = thinking
    if five_min is not None:
        entry["cacheCreationEphemeral5mInputTokens"] = five_min
    if one_hour is not None:
        entry["cacheCreationEphemeral1hInputTokens"] = one_hour
    if canonical is not None:
        entry["canonicalModel"] = canonical
    entry["provider"] = "firstParty"
    entry["costBasis"] = "list_price"
    return entry


def newer_result(
    index: int,
    model_usage: dict[str, Any],
    since_last: dict[str, Any],
    *,
    total_cost_usd: float | None = None,
    usage: dict[str, Any] | None = None,
    subtype: str = "success",
    is_error: bool = False,
    begun: list[str] | None = None,
) -> bytes:
    """A 2.1.332 result line: it does not start with ``"type"``."""
    obj: dict[str, Any] = {
        "result_index": index,
        "type": "result",
        "subtype": subtype,
        "is_error": is_error,
        "result": "done",
        "session_id": SESSION,
    }
    if total_cost_usd is not None:
        obj["total_cost_usd"] = total_cost_usd
    obj["usage"] = usage if usage is not None else api_usage()
    obj["modelUsage"] = model_usage
    obj["model_usage_since_last_result"] = since_last
    obj["begun_message_ids"] = begun or []
    obj["queued_turn_count"] = 0
    return dumps(obj)


# -- the CLI's own --max-budget-usd ----------------------------------------------------------


def test_a_budget_stop_on_the_first_call_ends_on_model_usage() -> None:
    # result.usage omits the crossing call: all zero when the first call crosses.
    tracker = feed_all(
        [
            init(OPUS),
            assistant("msg_1", api_usage(input=3000, output=12, cache_creation=500)),
            result(
                subtype="error_max_budget_usd",
                is_error=True,
                text="",
                usage=api_usage(),
                model_usage={OPUS: model_usage_entry(3000, 412, 500, 0, cost=0.029)},
                total_cost_usd=0.029,
            ),
        ]
    )
    assert tracker.usage == TokenUsage(3000, 412, 500, 0)
    assert tracker.stopped_by_cli_budget
    assert tracker.is_error and tracker.is_final
    assert tracker.result_subtype == "error_max_budget_usd"
    assert tracker.discrepancy is None  # usage's zeros are not what the result reports


def test_a_budget_stop_later_takes_model_usage_not_the_usage_without_the_crossing_call() -> None:
    tracker = feed_all(
        [
            result(
                subtype="error_max_budget_usd",
                is_error=True,
                usage=api_usage(input=100, output=50),
                model_usage={OPUS: model_usage_entry(300, 170, 0, 0, cost=0.006)},
                total_cost_usd=0.006,
            )
        ]
    )
    assert tracker.usage == TokenUsage(300, 170, 0, 0)
    assert tracker.stopped_by_cli_budget


def test_a_budget_stop_without_result_text_is_explained_by_its_errors() -> None:
    obj = json.loads(
        result(subtype="error_max_budget_usd", is_error=True, text="", usage=api_usage())
    )
    obj["errors"] = ["Reached maximum budget ($0.02)"]
    tracker = feed_all([dumps(obj)])
    assert tracker.error_text == "Reached maximum budget ($0.02)"


@pytest.mark.parametrize("subtype", ["success", "error_max_turns", "error_during_execution"])
def test_other_results_are_not_budget_stops(subtype: str) -> None:
    assert not feed_all([result(subtype=subtype, usage=api_usage())]).stopped_by_cli_budget
    assert not feed_all([init()]).stopped_by_cli_budget


# -- a result line that does not start with "type" -------------------------------------------


def test_a_result_that_does_not_start_with_type_is_read_and_never_dropped() -> None:
    line = newer_result(
        0, {OPUS_5_5: new_entry(10, 20, 30, 40, cost=0.01)}, {}, total_cost_usd=0.01
    )
    assert not line.startswith(b'{"type"')
    assert line_may_carry_usage(line[:128])
    tracker = feed_all([line])
    assert tracker.is_final
    assert tracker.usage == TokenUsage(10, 20, 30, 40)


# -- several results per process ------------------------------------------------------------


TURN_1 = [
    init(OPUS_5_5),
    start("msg_1", api_usage(input=100, output=1, cache_read=1000)),
    delta("msg_1", {"output_tokens": 50}),
]
RESULT_1 = newer_result(
    0,
    {OPUS_5_5: new_entry(100, 50, 0, 1000, cost=0.0017)},
    {OPUS_5_5: new_entry(100, 50, 0, 1000, cost=0.0017)},
    total_cost_usd=0.0017,  # the table's estimate is 0.0016
)
TURN_2 = [
    start("msg_2", api_usage(input=200, output=1, cache_read=2000)),
    delta("msg_2", {"output_tokens": 80}),
]
RESULT_2 = newer_result(
    1,
    {OPUS_5_5: new_entry(300, 130, 0, 3000, cost=0.0046)},
    {OPUS_5_5: new_entry(200, 80, 0, 2000, cost=0.0029)},
    total_cost_usd=0.0046,  # cumulative: the second turn's estimate is 0.0028
)


def test_calls_after_a_first_result_are_counted_live() -> None:
    tracker = feed_all([*TURN_1, RESULT_1])
    assert tracker.usage == TokenUsage(100, 50, 0, 1000)
    charged = [tracker.feed_line(line) for line in TURN_2]
    assert charged == [TokenUsage(200, 1, 0, 2000), TokenUsage(0, 79, 0, 0)]
    assert tracker.usage == TokenUsage(300, 130, 0, 3000)
    assert tracker.cost_is_estimate  # the second turn is priced by the table until its result


def test_a_second_cumulative_result_does_not_count_the_second_turn_twice() -> None:
    tracker = UsageTracker()
    total = sum((tracker.feed_line(line) for line in [*TURN_1, RESULT_1, *TURN_2, RESULT_2]), ZERO)
    assert tracker.usage == total == TokenUsage(300, 130, 0, 3000)
    assert tracker.cost_usd == pytest.approx(0.0046, abs=1e-12)  # total_cost_usd is cumulative
    assert not tracker.cost_is_estimate
    assert tracker.discrepancy is None


def test_a_second_result_adds_what_the_stream_missed_since_the_first() -> None:
    turn_2_placeholders = [assistant("msg_2", api_usage(input=200, output=3, cache_read=2000))]
    tracker = feed_all([*TURN_1, RESULT_1, *turn_2_placeholders, RESULT_2])
    assert tracker.usage == TokenUsage(300, 130, 0, 3000)


def test_a_second_result_below_the_counted_figures_keeps_them() -> None:
    low = newer_result(1, {OPUS_5_5: new_entry(100, 50, 0, 1000, cost=0.0017)}, {})
    tracker = UsageTracker()
    charged = [tracker.feed_line(line) for line in [*TURN_1, RESULT_1, *TURN_2, low]]
    assert tracker.usage == TokenUsage(300, 130, 0, 3000)
    assert all(min(d.input, d.output, d.cache_creation, d.cache_read) >= 0 for d in charged)
    assert tracker.discrepancy is not None
    assert tracker.discrepancy.kinds == ("input", "output", "cache_read")


def test_a_call_begun_before_a_result_and_finished_after_it_is_counted_once() -> None:
    tracker = feed_all(
        [
            *TURN_1,
            start("msg_2", api_usage(input=200, output=1, cache_read=2000)),
            RESULT_1,  # msg_2 has begun but not finished: not in the result's figures
            delta("msg_2", {"output_tokens": 80}),
            RESULT_2,
        ]
    )
    assert tracker.usage == TokenUsage(300, 130, 0, 3000)


# -- api_message_id names the call of a message_delta ----------------------------------------


def test_message_delta_goes_to_the_call_its_api_message_id_names() -> None:
    # Two calls in flight in one lane: a delta for the first must not go to the latest start.
    tracker = feed_all(
        [
            start("msg_a", api_usage(input=1, output=1)),
            start("msg_b", api_usage(input=1, output=1)),
            delta("msg_a", {"output_tokens": 500}),
            delta("msg_b", {"output_tokens": 20}),
        ]
    )
    assert tracker.usage == TokenUsage(2, 520, 0, 0)


def test_message_delta_naming_an_unknown_call_is_ignored() -> None:
    tracker = feed_all(
        [start("msg_a", api_usage(input=1, output=1)), delta("msg_zz", {"output_tokens": 500})]
    )
    assert tracker.usage == TokenUsage(1, 1, 0, 0)


def test_message_delta_without_api_message_id_still_goes_to_the_lanes_latest_call() -> None:
    tracker = feed_all(
        [start("msg_a", api_usage(input=1, output=1)), delta(None, {"output_tokens": 30})]
    )
    assert tracker.usage == TokenUsage(1, 30, 0, 0)


def test_content_block_events_with_api_message_id_may_be_dropped_unread() -> None:
    line = block_delta("msg_01ABCDEFGHIJKLMNOPQRSTUV", "x" * 300)
    assert not line_may_carry_usage(line[:128])
    assert not line_may_carry_usage(event("message_stop", "msg_1", {})[:128])
    assert line_may_carry_usage(delta("msg_1", {"output_tokens": 5})[:128])
    assert line_may_carry_usage(start("msg_1", api_usage(input=1))[:128])


@pytest.mark.parametrize(
    "line",
    [
        # An id that is not a plain token, or another key before "event": parse to be sure.
        b'{"type":"stream_event","api_message_id":"m\\"x","event":{"type":"message_delta"}}',
        b'{"type":"stream_event","api_message_id":"m","uuid":"u","event":{"type":"message_delta"}}',
        b'{"type":"stream_event","api_message_id":7,"event":{"type":"message_delta"}}',
    ],
)
def test_unusual_stream_events_with_api_message_id_are_kept(line: bytes) -> None:
    assert line_may_carry_usage(line[:128])


def test_dropped_content_block_events_count_nothing_when_fed() -> None:
    tracker = feed_all(
        [start("msg_1", api_usage(input=1, output=1)), block_delta("msg_1"), text_delta()]
    )
    assert tracker.usage == TokenUsage(1, 1, 0, 0)
    assert tracker.skipped_lines == 0


# -- thinking tokens are part of output ------------------------------------------------------


def test_thinking_tokens_of_a_message_delta_are_not_added_to_output() -> None:
    details = {"output_tokens": 500, "output_tokens_details": {"thinking_tokens": 300}}
    tracker = feed_all([start("msg_1", api_usage(input=1, output=1)), delta("msg_1", details)])
    assert tracker.usage == TokenUsage(1, 500, 0, 0)


def test_thinking_tokens_of_model_usage_are_not_added_to_output() -> None:
    tracker = feed_all([newer_result(0, {OPUS_5_5: new_entry(1, 500, thinking=300)}, {})])
    assert tracker.usage == TokenUsage(1, 500, 0, 0)


def test_thinking_tokens_without_an_output_figure_are_still_output() -> None:
    tracker = feed_all([newer_result(0, {OPUS_5_5: new_entry(1, None, thinking=300)}, {})])
    assert tracker.usage == TokenUsage(1, 300, 0, 0)


# -- the new modelUsage fields ---------------------------------------------------------------


def test_one_hour_cache_writes_of_model_usage_are_priced_as_such() -> None:
    entry = new_entry(0, 0, MILLION, 0, five_min=MILLION // 4, one_hour=3 * MILLION // 4)
    tracker = feed_all([init(OPUS), newer_result(0, {OPUS: entry}, {})])
    assert tracker.cost_usd == pytest.approx(0.25 * 6.25 + 0.75 * 10)
    assert tracker.cost_is_estimate


def test_cache_write_buckets_count_when_the_total_is_missing() -> None:
    entry = new_entry(0, 0, 0, 0, five_min=100, one_hour=200)
    del entry["cacheCreationInputTokens"]
    tracker = feed_all([newer_result(0, {OPUS: entry}, {})])
    assert tracker.usage == TokenUsage(0, 0, 300, 0)


def test_model_usage_is_priced_at_its_canonical_model() -> None:
    entry = new_entry(MILLION, 0, canonical=HAIKU)
    tracker = feed_all([init(OPUS), newer_result(0, {"fast": entry}, {})])
    assert tracker.cost_usd == pytest.approx(1.0)
    assert tracker.unknown_models == frozenset()


def test_the_newest_default_model_is_priced_at_its_own_rates() -> None:
    tracker = feed_all(
        [
            init(OPUS_5_5),
            start("msg_1", api_usage(input=MILLION, output=1, cache_read=MILLION)),
            delta("msg_1", {"output_tokens": MILLION}),
        ]
    )
    assert tracker.cost_usd == pytest.approx(4 + 20 + 0.2)
    assert tracker.unknown_models == frozenset()


def test_cost_of_model_usage_with_provider_and_cost_basis_is_the_clis() -> None:
    entry = new_entry(10, 20, cost=0.5)
    tracker = feed_all([newer_result(0, {OPUS_5_5: entry}, {})])
    assert tracker.cost_usd == pytest.approx(0.5)
    assert not tracker.cost_is_estimate


def test_new_fields_of_odd_types_are_harmless() -> None:
    entry: dict[str, Any] = {
        **new_entry(10, 20),
        "thinkingTokens": "many",
        "cacheCreationEphemeral1hInputTokens": None,
        "canonicalModel": 5,
        "provider": {},
        "costBasis": [],
    }
    obj = json.loads(newer_result(0, {OPUS_5_5: entry}, {}))
    obj["model_usage_since_last_result"] = "?"
    obj["begun_message_ids"] = None
    tracker = feed_all([dumps(obj)])
    assert tracker.usage == TokenUsage(10, 20, 0, 0)
