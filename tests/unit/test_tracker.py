"""UsageTracker: every counting rule of the shared stream-json notes, one test each."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pytest

from budget_core import (
    ZERO,
    TokenUsage,
    UsageTracker,
    default_price_table,
    line_may_carry_usage,
)

OPUS = "claude-opus-4-8"
SONNET = "claude-sonnet-4-5"
SESSION = "sess-1"


# -- line builders, in the CLI's own key order and compact separators ----------------------


def dumps(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def api_usage(
    input: int | None = 0,
    output: int | None = 0,
    cache_creation: int | None = 0,
    cache_read: int | None = 0,
    one_hour: int | None = None,
) -> dict[str, Any]:
    usage: dict[str, Any] = {
        "input_tokens": input,
        "cache_creation_input_tokens": cache_creation,
        "cache_read_input_tokens": cache_read,
        "output_tokens": output,
    }
    if one_hour is not None:
        five = (cache_creation or 0) - one_hour
        usage["cache_creation"] = {
            "ephemeral_5m_input_tokens": five,
            "ephemeral_1h_input_tokens": one_hour,
        }
    return usage


def init(model: str = OPUS, session_id: str = SESSION) -> bytes:
    return dumps({"type": "system", "subtype": "init", "session_id": session_id, "model": model})


def assistant(
    msg_id: str | None,
    usage: dict[str, Any] | None,
    *,
    lane: str | None = None,
    model: str = OPUS,
    block: dict[str, Any] | None = None,
) -> bytes:
    message: dict[str, Any] = {"type": "message", "role": "assistant", "model": model}
    if msg_id is not None:
        message["id"] = msg_id
    message["content"] = [block or {"type": "text", "text": "hello"}]
    if usage is not None:
        message["usage"] = usage
    return dumps(
        {"type": "assistant", "message": message, "parent_tool_use_id": lane, "session_id": SESSION}
    )


def tool_use_block(name: str = "Bash", size: int = 10) -> dict[str, Any]:
    return {"type": "tool_use", "id": "toolu_x", "name": name, "input": {"command": "x" * size}}


def message_start(
    msg_id: str | None, usage: dict[str, Any], *, lane: str | None = None, model: str = OPUS
) -> bytes:
    message: dict[str, Any] = {"model": model, "type": "message", "role": "assistant"}
    if msg_id is not None:
        message["id"] = msg_id
    message["content"] = []
    message["usage"] = usage
    return dumps(
        {
            "type": "stream_event",
            "event": {"type": "message_start", "message": message},
            "session_id": SESSION,
            "parent_tool_use_id": lane,
        }
    )


def message_delta(usage: dict[str, Any] | None, *, lane: str | None = None) -> bytes:
    event: dict[str, Any] = {"type": "message_delta", "delta": {"stop_reason": "end_turn"}}
    if usage is not None:
        event["usage"] = usage
    return dumps(
        {"type": "stream_event", "event": event, "session_id": SESSION, "parent_tool_use_id": lane}
    )


def text_delta(text: str = "abc", *, lane: str | None = None) -> bytes:
    event = {
        "type": "content_block_delta",
        "index": 0,
        "delta": {"type": "text_delta", "text": text},
    }
    return dumps(
        {"type": "stream_event", "event": event, "session_id": SESSION, "parent_tool_use_id": lane}
    )


def model_usage_entry(
    input: int | None = 0,
    output: int | None = 0,
    cache_creation: int | None = 0,
    cache_read: int | None = 0,
    cost: float | None = None,
) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "inputTokens": input,
        "outputTokens": output,
        "cacheReadInputTokens": cache_read,
        "cacheCreationInputTokens": cache_creation,
    }
    if cost is not None:
        entry["costUSD"] = cost
    return entry


_MISSING = object()


def result(
    *,
    subtype: str | None = "success",
    is_error: bool = False,
    usage: Any = _MISSING,
    model_usage: Any = _MISSING,
    total_cost_usd: Any = _MISSING,
    text: str = "done",
) -> bytes:
    obj: dict[str, Any] = {"type": "result"}
    if subtype is not None:
        obj["subtype"] = subtype
    obj["is_error"] = is_error
    obj["result"] = text
    obj["session_id"] = SESSION
    if total_cost_usd is not _MISSING:
        obj["total_cost_usd"] = total_cost_usd
    if usage is not _MISSING:
        obj["usage"] = usage
    if model_usage is not _MISSING:
        obj["modelUsage"] = model_usage
    return dumps(obj)


def feed_all(
    lines: Sequence[bytes | bytearray | str], tracker: UsageTracker | None = None
) -> UsageTracker:
    tracker = tracker or UsageTracker()
    for line in lines:
        tracker.feed_line(line)
    return tracker


def opus_cost(
    input: int = 0, output: int = 0, cw5m: int = 0, cw1h: int = 0, cache_read: int = 0
) -> float:
    """USD at the Opus 4.5+ prices of the shared notes (5 / 25 / 6.25 / 10 / 0.50 per M)."""
    return (input * 5 + output * 25 + cw5m * 6.25 + cw1h * 10 + cache_read * 0.5) / 1_000_000


# -- rule 1: one API call = one (parent_tool_use_id, message.id) ----------------------------


def test_lines_of_one_message_are_counted_once() -> None:
    usage = api_usage(input=100, output=7, cache_creation=200, cache_read=300)
    lines = [
        assistant("msg_1", usage),
        assistant("msg_1", usage, block=tool_use_block()),
        assistant("msg_1", usage, block=tool_use_block("Read")),
        assistant("msg_1", usage, block=tool_use_block("Grep")),
    ]
    tracker = feed_all(lines)
    assert tracker.usage == TokenUsage(100, 7, 200, 300)


def test_different_message_ids_are_different_calls() -> None:
    tracker = feed_all(
        [
            assistant("msg_1", api_usage(input=100, output=1)),
            assistant("msg_2", api_usage(input=50, output=2)),
        ]
    )
    assert tracker.usage == TokenUsage(150, 3, 0, 0)


def test_same_message_id_in_a_subagent_lane_is_a_separate_call() -> None:
    usage = api_usage(input=100, output=5, cache_read=10)
    tracker = feed_all(
        [
            assistant("msg_1", usage, lane=None),
            assistant("msg_1", usage, lane="toolu_task_a"),
            assistant("msg_1", usage, lane="toolu_task_b"),
            assistant("msg_1", usage, lane="toolu_task_a"),
        ]
    )
    assert tracker.usage == TokenUsage(300, 15, 0, 30)


def test_message_start_and_assistant_line_of_one_call_count_once() -> None:
    usage = api_usage(input=10, output=1, cache_creation=20, cache_read=30)
    tracker = feed_all([message_start("msg_1", usage), assistant("msg_1", usage)])
    assert tracker.usage == TokenUsage(10, 1, 20, 30)


# -- input and cache from the first sighting ------------------------------------------------


def test_input_and_cache_come_from_the_first_sighting() -> None:
    tracker = feed_all(
        [
            message_start(
                "msg_1", api_usage(input=2, output=1, cache_creation=1234, cache_read=99)
            ),
            # The CLI's assistant line may carry only part of the usage: it must not replace it.
            assistant("msg_1", api_usage(input=7, output=1, cache_creation=None, cache_read=None)),
        ]
    )
    assert tracker.usage == TokenUsage(2, 1, 1234, 99)


# -- rule 3: exact output from message_delta -------------------------------------------------


def test_message_delta_overwrites_the_start_output_instead_of_adding() -> None:
    tracker = feed_all(
        [
            message_start("msg_1", api_usage(input=2, output=17, cache_read=5)),
            message_delta({"output_tokens": 96}),
        ]
    )
    assert tracker.usage == TokenUsage(2, 96, 0, 5)


def test_repeated_message_delta_is_cumulative_not_added() -> None:
    tracker = feed_all(
        [
            message_start("msg_1", api_usage(input=2, output=1)),
            message_delta({"output_tokens": 50}),
            message_delta({"output_tokens": 96}),
        ]
    )
    assert tracker.usage.output == 96


def test_message_delta_repeating_input_and_cache_adds_nothing_to_them() -> None:
    start = api_usage(input=2, output=1, cache_creation=11300, cache_read=17489)
    tracker = feed_all(
        [
            message_start("msg_1", start),
            message_delta(api_usage(input=2, output=96, cache_creation=11300, cache_read=17489)),
        ]
    )
    assert tracker.usage == TokenUsage(2, 96, 11300, 17489)


def test_message_delta_belongs_to_the_latest_message_start_of_its_lane() -> None:
    tracker = feed_all(
        [
            message_start("msg_a", api_usage(input=1, output=1)),
            message_delta({"output_tokens": 10}),
            message_start("msg_b", api_usage(input=1, output=1)),
            message_delta({"output_tokens": 20}),
        ]
    )
    assert tracker.usage == TokenUsage(2, 30, 0, 0)


def test_message_delta_is_matched_per_lane_when_lanes_interleave() -> None:
    tracker = feed_all(
        [
            message_start("msg_main", api_usage(input=1, output=1)),
            message_start("msg_sub", api_usage(input=1, output=1), lane="toolu_task"),
            message_delta({"output_tokens": 40}),  # main lane
            message_delta({"output_tokens": 7}, lane="toolu_task"),
        ]
    )
    assert tracker.usage.output == 47
    # Had the main delta gone to the subagent's call, a later main delta of 41 would add 41.
    tracker.feed_line(message_delta({"output_tokens": 41}))
    assert tracker.usage.output == 48


def test_message_delta_of_a_lane_without_message_start_is_ignored() -> None:
    tracker = feed_all(
        [
            message_start("msg_1", api_usage(input=1, output=1)),
            message_delta({"output_tokens": 500}, lane="toolu_other"),
        ]
    )
    assert tracker.usage == TokenUsage(1, 1, 0, 0)


def test_message_delta_without_output_or_usage_changes_nothing() -> None:
    tracker = feed_all(
        [
            message_start("msg_1", api_usage(input=1, output=3)),
            message_delta(None),
            message_delta({"input_tokens": 1}),
            message_delta({"output_tokens": None}),
        ]
    )
    assert tracker.usage == TokenUsage(1, 3, 0, 0)


def test_later_placeholder_does_not_undo_exact_output() -> None:
    tracker = feed_all(
        [
            message_start("msg_1", api_usage(input=1, output=1)),
            message_delta({"output_tokens": 96}),
            assistant("msg_1", api_usage(input=1, output=17)),
        ]
    )
    assert tracker.usage.output == 96


def test_message_delta_after_a_synthetic_message_start_does_not_touch_the_previous_call() -> None:
    tracker = feed_all(
        [
            message_start("msg_1", api_usage(input=1, output=1)),
            message_delta({"output_tokens": 5}),
            message_start("msg_fake", api_usage(), model="<synthetic>"),
            message_delta({"output_tokens": 300}),
        ]
    )
    assert tracker.usage == TokenUsage(1, 5, 0, 0)


# -- rule 2: placeholder output without partial messages ------------------------------------


def test_placeholder_output_is_counted_when_there_are_no_partial_messages() -> None:
    tracker = feed_all([init(), assistant("msg_1", api_usage(input=10, output=5))])
    assert tracker.usage == TokenUsage(10, 5, 0, 0)
    assert not tracker.is_final


def test_result_replaces_the_placeholder_with_the_real_output() -> None:
    tracker = feed_all(
        [
            assistant("msg_1", api_usage(input=10, output=5, cache_creation=21570)),
            result(usage=api_usage(input=10, output=25, cache_creation=21570)),
        ]
    )
    assert tracker.usage == TokenUsage(10, 25, 21570, 0)
    assert tracker.live_usage == TokenUsage(10, 5, 21570, 0)


def test_a_later_line_of_a_call_may_raise_its_placeholder_but_never_lower_it() -> None:
    tracker = feed_all(
        [
            assistant("msg_1", api_usage(input=10, output=3)),
            assistant("msg_1", api_usage(input=99, output=9)),
            assistant("msg_1", api_usage(input=10, output=5)),
        ]
    )
    assert tracker.usage == TokenUsage(10, 9, 0, 0)


# -- synthetic lines ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "usage",
    [
        api_usage(input=None, output=None, cache_creation=None, cache_read=None),
        api_usage(input=50, output=50, cache_creation=50, cache_read=50),
        None,
    ],
    ids=["null-usage", "nonzero-usage", "no-usage"],
)
def test_synthetic_assistant_lines_are_ignored(usage: dict[str, Any] | None) -> None:
    tracker = feed_all([assistant("msg_syn", usage, model="<synthetic>")])
    assert tracker.usage == ZERO
    assert tracker.cost_usd == 0
    assert tracker.model is None
    assert tracker.skipped_lines == 0


# -- rule 5: the result line ----------------------------------------------------------------


def test_result_totals_are_the_sum_of_model_usage_over_models() -> None:
    tracker = feed_all(
        [
            assistant("msg_1", api_usage(input=1, output=1)),
            result(
                usage=api_usage(input=1, output=2, cache_creation=3, cache_read=4),
                model_usage={
                    OPUS: model_usage_entry(10, 20, 30, 40),
                    "claude-haiku-4-5": model_usage_entry(1, 2, 3, 4),
                },
                total_cost_usd=0.5,
            ),
        ]
    )
    assert tracker.is_final
    assert tracker.usage == TokenUsage(11, 22, 33, 44)


@pytest.mark.parametrize(
    "model_usage",
    [_MISSING, {}, {OPUS: model_usage_entry(0, 0, 0, 0)}, None],
    ids=["missing", "empty", "all-zero", "null"],
)
def test_result_falls_back_to_result_usage(model_usage: Any) -> None:
    tracker = feed_all(
        [
            result(
                usage=api_usage(input=5, output=6, cache_creation=7, cache_read=8),
                model_usage=model_usage,
            )
        ]
    )
    assert tracker.usage == TokenUsage(5, 6, 7, 8)


def test_model_usage_wins_when_result_usage_is_all_zero() -> None:
    # After a non-streaming retry result.usage can be all zeros while modelUsage is right.
    tracker = feed_all(
        [result(usage=api_usage(), model_usage={OPUS: model_usage_entry(3, 4, 5, 6)})]
    )
    assert tracker.usage == TokenUsage(3, 4, 5, 6)


def test_result_without_any_figures_keeps_the_live_totals() -> None:
    tracker = feed_all([assistant("msg_1", api_usage(input=9, output=2)), result()])
    assert tracker.is_final
    assert tracker.usage == TokenUsage(9, 2, 0, 0)


def test_result_cost_is_total_cost_usd_and_not_an_estimate() -> None:
    tracker = feed_all(
        [
            assistant("msg_1", api_usage(input=1000, output=10)),
            result(
                usage=api_usage(input=1000, output=20),
                model_usage={OPUS: model_usage_entry(1000, 20, cost=9.0)},
                total_cost_usd=0.123456789,
            ),
        ]
    )
    assert tracker.cost_usd == pytest.approx(0.123456789, abs=1e-12)
    assert not tracker.cost_is_estimate


def test_result_cost_falls_back_to_model_usage_cost() -> None:
    tracker = feed_all(
        [
            result(
                model_usage={
                    OPUS: model_usage_entry(10, 1, cost=0.25),
                    SONNET: model_usage_entry(5, 1, cost=0.5),
                }
            )
        ]
    )
    assert tracker.cost_usd == pytest.approx(0.75, abs=1e-12)
    assert not tracker.cost_is_estimate


def test_result_without_any_cost_is_an_estimate_of_the_final_usage() -> None:
    tracker = feed_all(
        [
            init(OPUS),
            result(usage=api_usage(input=1_000_000, output=1_000_000), total_cost_usd=None),
        ]
    )
    assert tracker.is_final
    assert tracker.cost_is_estimate
    assert tracker.cost_usd == pytest.approx(30.0, abs=1e-9)


def test_usage_without_result_line_stays_live() -> None:
    tracker = feed_all(
        [message_start("msg_1", api_usage(input=3, output=1)), message_delta({"output_tokens": 4})]
    )
    assert not tracker.is_final
    assert tracker.usage == tracker.live_usage == TokenUsage(3, 4, 0, 0)
    assert tracker.cost_is_estimate


# -- is_error -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("is_error", "subtype", "expected"),
    [
        (False, "success", False),
        (True, "success", True),
        (False, "error_max_turns", True),
        (False, "error_during_execution", True),
        (True, "error_max_budget_usd", True),
        (False, None, False),
        (True, None, True),
    ],
)
def test_is_error_when_flag_is_true_or_subtype_is_not_success(
    is_error: bool, subtype: str | None, expected: bool
) -> None:
    tracker = feed_all([result(subtype=subtype, is_error=is_error, usage=api_usage())])
    assert tracker.is_error is expected


def test_is_error_is_false_before_any_result() -> None:
    tracker = feed_all([init(), assistant("msg_1", api_usage(input=1))])
    assert tracker.is_error is False


def test_error_text_comes_from_the_result_of_a_failed_run() -> None:
    tracker = feed_all([result(is_error=True, text="Invalid API key", usage=api_usage())])
    assert tracker.error_text == "Invalid API key"
    assert tracker.result_subtype == "success"


# -- rule 7: bad lines and missing numbers ---------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [
        b"[DEBUG] starting up",
        b"Welcome to Claude Code!",
        b'{"type":"assistant","message":{"id":"msg_x","usage":{"input_tokens":5',
        b"{not json at all}",
        b'["a","list"]',
        b"42",
        b"{}}",
        "plain str banner",
    ],
)
def test_unparseable_lines_are_skipped_and_counted(bad: bytes | str) -> None:
    tracker = UsageTracker()
    delta = tracker.feed_line(bad)
    assert delta == ZERO
    assert tracker.skipped_lines == 1
    assert tracker.usage == ZERO


def test_a_json_value_that_is_not_an_object_is_skipped() -> None:
    tracker = UsageTracker()
    tracker.feed_line(b"null")
    tracker.feed_line(b'"string"')
    assert tracker.skipped_lines == 2


def test_bad_lines_do_not_affect_later_lines() -> None:
    lines = [
        init(),
        message_start("msg_1", api_usage(input=10, output=1, cache_read=3)),
        b"garbage in the middle",
        b'{"type":"stream_event","event":{"type":"message_st',
        message_delta({"output_tokens": 44}),
        b"\x00\x01\x02",
        assistant("msg_2", api_usage(input=5, output=2)),
    ]
    tracker = feed_all(lines)
    assert tracker.skipped_lines == 3
    assert tracker.usage == TokenUsage(15, 46, 0, 3)
    assert tracker.model == OPUS
    assert tracker.session_id == SESSION


def test_blank_lines_are_ignored_without_being_counted() -> None:
    tracker = feed_all([b"", b"\n", b"   \r\n", "  "])
    assert tracker.skipped_lines == 0
    assert tracker.usage == ZERO


def test_null_and_missing_numbers_count_as_zero() -> None:
    tracker = feed_all(
        [
            assistant("msg_1", {"input_tokens": None, "output_tokens": 3}),
            assistant("msg_2", {"cache_read_input_tokens": 4}),
            assistant("msg_3", {}),
            assistant("msg_4", None),
            message_start("msg_5", {"input_tokens": 2, "cache_creation_input_tokens": None}),
            message_delta({"output_tokens": None}),
        ]
    )
    assert tracker.usage == TokenUsage(2, 3, 0, 4)
    assert tracker.skipped_lines == 0


@pytest.mark.parametrize("value", ["12", True, -5, float("nan"), [1], {"n": 1}])
def test_non_numeric_or_negative_counts_are_zero(value: Any) -> None:
    tracker = feed_all([assistant("msg_1", {"input_tokens": value, "output_tokens": 2})])
    assert tracker.usage == TokenUsage(0, 2, 0, 0)


def test_float_counts_are_truncated_to_whole_tokens() -> None:
    tracker = feed_all([assistant("msg_1", {"input_tokens": 10.0, "output_tokens": 2.9})])
    assert tracker.usage == TokenUsage(10, 2, 0, 0)


def test_null_numbers_in_the_result_count_as_zero() -> None:
    tracker = feed_all(
        [
            result(
                usage=None,
                model_usage={OPUS: model_usage_entry(input=None, output=5, cache_read=None)},
                total_cost_usd=None,
            )
        ]
    )
    assert tracker.usage == TokenUsage(0, 5, 0, 0)


# -- input forms ----------------------------------------------------------------------------


def _sample_lines() -> list[bytes]:
    return [
        init(),
        message_start("msg_1", api_usage(input=10, output=1, cache_creation=2, cache_read=3)),
        text_delta(),
        assistant("msg_1", api_usage(input=10, output=1, cache_creation=2, cache_read=3)),
        message_delta({"output_tokens": 30}),
        b"not json",
        assistant("msg_2", api_usage(input=5, output=4), lane="toolu_1"),
    ]


@pytest.mark.parametrize(
    "convert",
    [
        lambda b: b,
        lambda b: b.decode(),
        bytearray,
        lambda b: b + b"\n",
        lambda b: b + b"\r\n",
        lambda b: b.decode() + "\n",
        lambda b: b" \t" + b,
    ],
    ids=["bytes", "str", "bytearray", "bytes-lf", "bytes-crlf", "str-lf", "leading-space"],
)
def test_bytes_str_and_line_endings_give_the_same_totals(convert: Any) -> None:
    tracker = feed_all([convert(line) for line in _sample_lines()])
    assert tracker.usage == TokenUsage(15, 34, 2, 3)
    assert tracker.skipped_lines == 1
    assert tracker.session_id == SESSION


def test_lines_in_another_key_order_or_spacing_are_counted_alike() -> None:
    start = {
        "parent_tool_use_id": None,
        "event": {
            "message": {"id": "msg_1", "model": OPUS, "usage": api_usage(input=7, output=1)},
            "type": "message_start",
        },
        "type": "stream_event",
    }
    delta: dict[str, Any] = {"event": {"usage": {"output_tokens": 70}, "type": "message_delta"}}
    delta["type"] = "stream_event"
    tracker = feed_all([json.dumps(start).encode(), json.dumps(delta, indent=None).encode()])
    assert tracker.usage == TokenUsage(7, 70, 0, 0)


def test_invalid_utf8_inside_a_line_does_not_lose_its_usage() -> None:
    line = assistant("msg_1", api_usage(input=12, output=3), block={"type": "text", "text": "MARK"})
    broken = line.replace(b"MARK", b"bad \xff\xfe bytes \xc3")
    tracker = UsageTracker()
    delta = tracker.feed_line(broken)
    assert delta == TokenUsage(12, 3, 0, 0)
    assert tracker.skipped_lines == 0


def test_invalid_utf8_in_a_user_line_is_harmless() -> None:
    tracker = UsageTracker()
    tracker.feed_line(b'{"type":"user","message":{"content":"\xff\xfe"}}')
    tracker.feed_line(b'{"type": "user", "message": {"content": "\xff\xfe"}}')
    tracker.feed_line(assistant("msg_1", api_usage(input=1)))
    assert tracker.usage == TokenUsage(1, 0, 0, 0)
    assert tracker.skipped_lines == 0


def test_very_long_lines_are_handled() -> None:
    huge_result = dumps(
        {
            "type": "user",
            "message": {
                "role": "user",
                "content": [{"type": "tool_result", "content": "x" * 5_000_000}],
            },
        }
    )
    huge_tool_use = assistant(
        "msg_1", api_usage(input=3, output=2), block=tool_use_block("Write", size=3_000_000)
    )
    tracker = feed_all([huge_result, huge_tool_use])
    assert tracker.usage == TokenUsage(3, 2, 0, 0)


def test_other_and_unknown_line_types_are_ignored_without_being_skipped() -> None:
    lines = [
        b'{"type":"rate_limit_event","rate_limit_info":{"status":"allowed"}}',
        b'{"type":"system","subtype":"api_retry","attempt":1,"usage":{"input_tokens":100}}',
        b'{"type":"future_thing","message":{"id":"m","usage":{"input_tokens":100}}}',
        b'{"type":"user","message":{"id":"m","usage":{"input_tokens":100}}}',
        b'{"type": "user", "message": {"id": "m", "usage": {"input_tokens": 100}}}',
        b'{"no_type":true}',
        b'{"type":"stream_event","event":{"type":"content_block_start","index":0}}',
        b'{"type":"stream_event","event":"not an object"}',
        b'{"type":"assistant","message":"not an object"}',
    ]
    tracker = feed_all(lines)
    assert tracker.usage == ZERO
    assert tracker.skipped_lines == 0


# -- feed_line returns the delta ------------------------------------------------------------


def test_feed_line_returns_the_change_in_usage() -> None:
    tracker = UsageTracker()
    steps = [
        (init(), ZERO),
        (message_start("msg_1", api_usage(10, 1, 20, 30)), TokenUsage(10, 1, 20, 30)),
        (text_delta(), ZERO),
        (assistant("msg_1", api_usage(10, 1, 20, 30)), ZERO),
        (message_delta({"output_tokens": 50}), TokenUsage(0, 49, 0, 0)),
        (assistant("msg_2", api_usage(5, 2), lane="toolu_1"), TokenUsage(5, 2, 0, 0)),
        (b"junk", ZERO),
        (
            # The result's 25 cache reads are fewer than the 30 streamed: 30 are kept.
            result(usage=api_usage(1, 1), model_usage={OPUS: model_usage_entry(20, 60, 20, 25)}),
            TokenUsage(5, 8, 0, 0),
        ),
    ]
    for line, expected in steps:
        assert tracker.feed_line(line) == expected, line
    assert tracker.usage == TokenUsage(20, 60, 20, 30)


# -- cost estimates -------------------------------------------------------------------------


def test_cost_before_the_result_is_an_estimate_from_the_price_table() -> None:
    tracker = feed_all(
        [
            init(),
            assistant(
                "msg_1", api_usage(input=1000, output=100, cache_creation=0, cache_read=2000)
            ),
        ]
    )
    assert tracker.cost_is_estimate
    assert tracker.cost_usd == pytest.approx(opus_cost(input=1000, output=100, cache_read=2000))


def test_one_hour_cache_writes_are_priced_apart_from_five_minute_ones() -> None:
    five = feed_all([assistant("m", api_usage(cache_creation=1_000_000, one_hour=0))])
    hour = feed_all([assistant("m", api_usage(cache_creation=1_000_000, one_hour=1_000_000))])
    split = feed_all([assistant("m", api_usage(cache_creation=1_000_000, one_hour=250_000))])
    plain = feed_all([assistant("m", api_usage(cache_creation=1_000_000))])
    assert five.cost_usd == pytest.approx(6.25)
    assert hour.cost_usd == pytest.approx(10.0)
    assert split.cost_usd == pytest.approx(750_000 * 6.25 / 1e6 + 250_000 * 10 / 1e6)
    assert plain.cost_usd == pytest.approx(6.25)  # no split given: all 5-minute writes


def test_estimate_uses_each_calls_own_model() -> None:
    tracker = feed_all(
        [
            init(OPUS),
            assistant("m1", api_usage(input=1_000_000), model=OPUS),
            assistant("m2", api_usage(input=1_000_000), model=SONNET, lane="toolu_1"),
            assistant("m3", api_usage(input=1_000_000), model="claude-haiku-4-5-20251001"),
        ]
    )
    assert tracker.cost_usd == pytest.approx(5.0 + 3.0 + 1.0)
    assert tracker.unknown_models == frozenset()


def test_estimate_follows_exact_output_from_message_delta() -> None:
    tracker = feed_all(
        [
            message_start("m1", api_usage(input=0, output=1)),
            message_delta({"output_tokens": 1_000_000}),
        ]
    )
    assert tracker.cost_usd == pytest.approx(25.0)


def test_unknown_model_is_priced_with_the_default_family_and_listed() -> None:
    tracker = feed_all([assistant("m1", api_usage(input=1_000_000), model="claude-mystery-9")])
    default = default_price_table().default
    assert tracker.cost_usd == pytest.approx(default.input)
    assert tracker.unknown_models == frozenset({"claude-mystery-9"})
    assert tracker.cost_is_estimate


def test_known_models_are_not_listed_as_unknown() -> None:
    tracker = feed_all([assistant("m1", api_usage(input=10), model="claude-opus-4-8[1m]")])
    assert tracker.unknown_models == frozenset()


# -- init and model -------------------------------------------------------------------------


def test_init_line_gives_model_and_session() -> None:
    tracker = feed_all([init("claude-opus-4-8[1m]", "abc-123")])
    assert tracker.model == "claude-opus-4-8[1m]"
    assert tracker.session_id == "abc-123"


def test_model_comes_from_the_first_call_without_an_init_line() -> None:
    tracker = feed_all(
        [
            assistant("m1", api_usage(input=1), model=SONNET),
            assistant("m2", api_usage(), model=OPUS),
        ]
    )
    assert tracker.model == SONNET


def test_calls_without_a_message_id_are_each_counted() -> None:
    tracker = feed_all(
        [
            assistant(None, api_usage(input=3, output=1)),
            assistant(None, api_usage(input=3, output=1)),
        ]
    )
    assert tracker.usage == TokenUsage(6, 2, 0, 0)


def test_lines_seen_counts_every_line() -> None:
    tracker = feed_all([init(), b"junk", b"", text_delta()])
    assert tracker.lines_seen == 4


# -- line_may_carry_usage: what a reader may drop unread -------------------------------------


@pytest.mark.parametrize(
    "line",
    [
        init(),
        assistant("m", api_usage(input=1)),
        message_start("m", api_usage(input=1)),
        message_delta({"output_tokens": 5}),
        result(usage=api_usage()),
        b'  {"type":"assistant"}',
        b'{"type": "user", "message": {}}',  # another spacing: must be parsed to be sure
        b'{"is_error":false,"type":"result"}',
        # No usage, but read whole: subscription windows (budget_core.ratelimit).
        b'{"type":"rate_limit_event","rate_limit_info":{"status":"allowed"}}',
    ],
)
def test_lines_that_may_carry_usage_are_kept(line: bytes) -> None:
    assert line_may_carry_usage(line[:128])


@pytest.mark.parametrize(
    "line",
    [
        text_delta("x" * 500),
        b'{"type":"stream_event","event":{"type":"content_block_start","index":0}}',
        b'{"type":"stream_event","event":{"type":"message_stop"},"session_id":"s"}',
        b'{"type":"user","message":{"role":"user","content":"' + b"y" * 1000 + b'"}}',
        b"[debug] banner",
        b"",
    ],
)
def test_lines_that_cannot_carry_usage_may_be_dropped(line: bytes) -> None:
    assert not line_may_carry_usage(line[:128])
    tracker = UsageTracker()
    assert tracker.feed_line(line) == ZERO
