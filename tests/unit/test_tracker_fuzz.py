"""Fuzzing UsageTracker: arbitrary bytes and mutated transcripts (real and simulated).

Whatever it is fed, the tracker must never raise (the orchestrator calls it from a pipe
callback: an exception there would drop the rest of a chunk), its totals and cost must never
go down, result lines included, and the deltas it returns must add up to its usage.
"""

from __future__ import annotations

import io
import json
import math
import re
from functools import cache
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from budget_core import TokenUsage, UsageTracker
from orchestrator.simulator import Config
from orchestrator.simulator import run as simulate
from tests import fixture_sets

FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
FIELDS = ("input", "output", "cache_creation", "cache_read")


def check(lines: list[bytes]) -> UsageTracker:
    """Feed ``lines``; assert the invariants after every one of them."""
    tracker = UsageTracker()
    summed = TokenUsage()
    before, cost_before = tracker.usage, tracker.cost_usd
    for line in lines:
        was_final = tracker.is_final
        delta = tracker.feed_line(line)
        summed += delta
        after = tracker.usage
        assert summed == after, f"deltas add up to {summed}, usage is {after}"
        for field in FIELDS:  # before and after a result line: budgets never go down
            assert getattr(after, field) >= getattr(before, field), f"{field} went down"
        assert tracker.cost_usd >= cost_before or math.isclose(
            tracker.cost_usd, cost_before, rel_tol=1e-9
        ), "cost went down by more than float rounding"
        if was_final:
            assert tracker.is_final
        for field in FIELDS:
            assert getattr(after, field) >= 0
        assert math.isfinite(tracker.cost_usd) and tracker.cost_usd >= 0
        before, cost_before = after, tracker.cost_usd
    return tracker


# -- transcripts to mutate -------------------------------------------------------------------


@cache
def simulated_transcripts() -> tuple[tuple[bytes, ...], ...]:
    """Simulator runs made in this process: they need nothing outside the repository."""
    runs = []
    for fail in ("none", "garbage", "null-usage", "invalid-utf8", "crash", "error-result"):
        cfg = Config(prompt="/fuzz", partial=True, calls=3, deltas=3, fail=fail)
        out = io.BytesIO()
        simulate(cfg, out, io.BytesIO())
        runs.append(tuple(out.getvalue().split(b"\n")))
    out = io.BytesIO()  # no partial messages: output comes from assistant placeholders
    simulate(Config(prompt="/fuzz", calls=2), out, io.BytesIO())
    runs.append(tuple(out.getvalue().split(b"\n")))
    return tuple(runs)


@cache
def fixture_transcripts() -> tuple[tuple[bytes, ...], ...]:
    """Real transcripts: the project's own, and the shared set where it exists."""
    return tuple(tuple(f.read_bytes().split(b"\n")) for f in fixture_sets.files())


# Values a mutation may put in place of a number: each has broken a counter somewhere.
ODD_NUMBERS = [
    b"null",
    b"-1",
    b"0",
    b"1.5",
    b"1e308",
    b"-1e308",
    b"NaN",
    b"Infinity",
    b"true",
    b'"12"',
    b"[]",
    b"{}",
    b"9" * 400,
    b"123456789012345678901234567890",
]
NUMBER = re.compile(rb"(?<=[:\[,])-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")


@st.composite
def mutated(draw: st.DrawFn, transcripts: tuple[tuple[bytes, ...], ...]) -> list[bytes]:
    lines = list(draw(st.sampled_from(transcripts)))
    for _ in range(draw(st.integers(1, 6))):
        if not lines:
            break
        i = draw(st.integers(0, len(lines) - 1))
        line = lines[i]
        op = draw(
            st.sampled_from(
                ["delete", "duplicate", "swap", "truncate", "insert", "flip", "number", "join"]
            )
        )
        if op == "delete":
            del lines[i]
        elif op == "duplicate":
            lines.insert(draw(st.integers(0, len(lines))), line)
        elif op == "swap" and i + 1 < len(lines):
            lines[i], lines[i + 1] = lines[i + 1], line
        elif op == "truncate":
            lines[i] = line[: draw(st.integers(0, max(len(line) - 1, 0)))]
        elif op == "insert":
            lines.insert(i, draw(st.binary(max_size=40)))
        elif op == "flip" and line:
            at = draw(st.integers(0, len(line) - 1))
            lines[i] = line[:at] + bytes([draw(st.integers(0, 255))]) + line[at + 1 :]
        elif op == "number":
            spots = list(NUMBER.finditer(line))
            if spots:
                spot = draw(st.sampled_from(spots))
                value = draw(st.sampled_from(ODD_NUMBERS))
                lines[i] = line[: spot.start()] + value + line[spot.end() :]
        elif op == "join" and i + 1 < len(lines):
            lines[i : i + 2] = [line + lines[i + 1]]
    return lines


# -- the properties --------------------------------------------------------------------------


@FUZZ
@given(st.lists(st.binary(max_size=200), max_size=20))
def test_arbitrary_bytes(lines: list[bytes]) -> None:
    check(lines)


@FUZZ
@given(
    st.lists(
        st.builds(
            lambda prefix, junk: prefix + junk,
            st.sampled_from(
                [
                    b"",
                    b"{",
                    b'{"type":"assistant",',
                    b'{"type":"result",',
                    b'{"type":"stream_event"',
                ]
            ),
            st.binary(max_size=60),
        ),
        max_size=20,
    )
)
def test_bytes_that_start_like_real_lines(lines: list[bytes]) -> None:
    check(lines)


# Odd values for any field (a curated list generates much faster than recursive JSON).
ODD_VALUES: list[Any] = [
    None,
    True,
    False,
    -1,
    0,
    1.5,
    -0.5,
    1e308,
    10**400,
    "12",
    "",
    [],
    {},
    {"n": 1},
]
JSON_VALUES: st.SearchStrategy[Any] = (
    st.sampled_from(ODD_VALUES)
    | st.integers(min_value=0, max_value=10**6)
    | st.floats(allow_nan=True, allow_infinity=True)
)
USAGE: st.SearchStrategy[Any] = st.fixed_dictionaries(
    {},
    optional={
        k: JSON_VALUES
        for k in (
            "input_tokens",
            "output_tokens",
            "cache_creation_input_tokens",
            "cache_read_input_tokens",
            "cache_creation",
        )
    },
)


@st.composite
def structured_lines(draw: st.DrawFn) -> bytes:
    """Lines of the right types with wrong, odd or missing fields."""
    message: dict[str, Any] = {
        "id": draw(st.sampled_from(["m1", "m2", None, 5])),
        "model": draw(st.sampled_from(["claude-opus-4-8", "<synthetic>", None, "mystery-9"])),
        "usage": draw(USAGE | JSON_VALUES),
    }
    lane = draw(st.sampled_from([None, "toolu_1", 3]))
    kind = draw(st.sampled_from(["assistant", "start", "delta", "result", "system", "other"]))
    obj: dict[str, Any]
    if kind == "assistant":
        obj = {"type": "assistant", "message": message, "parent_tool_use_id": lane}
    elif kind == "start":
        event = {"type": "message_start", "message": message}
        obj = {"type": "stream_event", "event": event, "parent_tool_use_id": lane}
    elif kind == "delta":
        event = {"type": "message_delta", "usage": draw(USAGE | JSON_VALUES)}
        obj = {"type": "stream_event", "event": event, "parent_tool_use_id": lane}
    elif kind == "result":
        obj = {
            "type": "result",
            "subtype": draw(st.sampled_from(["success", "error_max_turns", None, 1])),
            "is_error": draw(JSON_VALUES),
            "usage": draw(USAGE | JSON_VALUES),
            "total_cost_usd": draw(JSON_VALUES),
            "modelUsage": draw(
                st.dictionaries(
                    st.text(max_size=5),
                    st.fixed_dictionaries(
                        {},
                        optional={
                            k: JSON_VALUES
                            for k in (
                                "inputTokens",
                                "outputTokens",
                                "costUSD",
                                "cacheReadInputTokens",
                            )
                        },
                    )
                    | JSON_VALUES,
                    max_size=2,
                )
                | JSON_VALUES
            ),
            "result": draw(JSON_VALUES),
        }
    elif kind == "system":
        obj = {"type": "system", "subtype": "init", "model": draw(JSON_VALUES)}
    else:
        obj = {"type": draw(st.text(max_size=10)), "usage": draw(USAGE)}
    return json.dumps(obj).encode()


HUGE_INPUT = b'{"type":"assistant","message":{"id":"m","usage":{"input_tokens":%s}}}' % (b"9" * 400)


@FUZZ
@given(st.lists(structured_lines(), max_size=12))
@example([HUGE_INPUT])  # once an OverflowError out of the cost estimate
@example([b'{"type":"result","total_cost_usd":-1.0}'])  # once a negative cost
@example([b'{"type":"result","total_cost_usd":NaN,"modelUsage":{"m":{"costUSD":1e999}}}'])
def test_lines_of_real_types_with_odd_fields(lines: list[bytes]) -> None:
    check(lines)


@FUZZ
@given(mutated(simulated_transcripts()))
def test_mutated_simulator_transcripts(lines: list[bytes]) -> None:
    check(lines)


@FUZZ
@given(st.data())
def test_mutated_real_transcripts(data: st.DataObject) -> None:
    check(data.draw(mutated(fixture_transcripts())))


@pytest.mark.parametrize("index", range(7))
def test_unmutated_simulator_transcripts_pass_the_same_checks(index: int) -> None:
    """The baseline: a clean transcript meets the invariants and ends where it should."""
    tracker = check(list(simulated_transcripts()[index]))
    assert tracker.usage or not tracker.is_final
