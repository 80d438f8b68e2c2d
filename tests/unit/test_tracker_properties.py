"""Properties of UsageTracker and BudgetManager over fixture files and generated transcripts."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from budget_core import OVERALL, BudgetManager, TokenUsage, UsageTracker, line_may_carry_usage
from tests import fixture_sets

GENERATED = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
PER_FIXTURE = settings(max_examples=25, deadline=None)


# Real transcripts: the project's own, and the shared set where it exists.
FIXTURE_PARAMS = [
    pytest.param(path, id=f"{fixture_sets.label(path.parent)}/{path.name}")
    for path in fixture_sets.files()
]


# -- a tiny line splitter, as a reader of a pipe would have ---------------------------------


def reassemble(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Lines (without their newline) out of arbitrary byte chunks."""
    pending = b""
    for chunk in chunks:
        pending += chunk
        *complete, pending = pending.split(b"\n")
        yield from complete
    if pending:
        yield pending


def cut(data: bytes, positions: Iterable[int]) -> list[bytes]:
    points = sorted({p % (len(data) + 1) for p in positions})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in pairwise(bounds)]


def state(tracker: UsageTracker) -> tuple[Any, ...]:
    return (
        tracker.usage,
        tracker.live_usage,
        tracker.is_final,
        tracker.is_error,
        round(tracker.cost_usd, 12),
        tracker.cost_is_estimate,
        tracker.model,
        tracker.session_id,
        tracker.skipped_lines,  # last, so that state(...)[:-1] leaves it out
    )


def feed(lines: Iterable[bytes | str]) -> UsageTracker:
    tracker = UsageTracker()
    for line in lines:
        tracker.feed_line(line)
    return tracker


def is_type(line: bytes | str, kind: str) -> bool:
    try:
        data = json.loads(line)
    except ValueError:
        return False
    return isinstance(data, dict) and data.get("type") == kind


# -- a generated transcript, modelled on the CLI's stream-json ------------------------------


def dumps(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


MODELS = ("claude-opus-4-8", "claude-sonnet-4-5", "claude-haiku-4-5-20251001")
TEXTS = ("hi", "héllo ✓", "日本語のテキスト", "x" * 40, '{"json":"inside"}', "tab\there")


@dataclass(frozen=True)
class Call:
    lane: str | None
    model: str
    input: int
    cache_creation: int
    one_hour: int
    cache_read: int
    placeholder: int
    output: int
    blocks: tuple[str, ...]
    deltas: int
    delta_repeats_usage: bool

    def usage(self, output: int) -> TokenUsage:
        return TokenUsage(self.input, output, self.cache_creation, self.cache_read)


@dataclass(frozen=True)
class Transcript:
    lines: tuple[bytes, ...]
    partial: bool
    calls: tuple[Call, ...]
    has_result: bool

    @property
    def exact(self) -> TokenUsage:
        return sum((c.usage(c.output) for c in self.calls), TokenUsage())

    @property
    def live(self) -> TokenUsage:
        if self.partial:
            return self.exact
        return sum((c.usage(c.placeholder) for c in self.calls), TokenUsage())


counts = st.integers(min_value=0, max_value=50_000)


@st.composite
def calls(draw: st.DrawFn) -> Call:
    cache_creation = draw(counts)
    placeholder = draw(st.integers(min_value=0, max_value=30))
    return Call(
        lane=draw(st.sampled_from([None, None, "toolu_task_a", "toolu_task_b"])),
        model=draw(st.sampled_from(MODELS)),
        input=draw(counts),
        cache_creation=cache_creation,
        one_hour=draw(st.integers(min_value=0, max_value=cache_creation)),
        cache_read=draw(counts),
        placeholder=placeholder,
        output=placeholder + draw(st.integers(min_value=0, max_value=5_000)),
        blocks=tuple(
            draw(
                st.lists(st.sampled_from(["text", "tool_use", "thinking"]), min_size=1, max_size=4)
            )
        ),
        deltas=draw(st.integers(min_value=0, max_value=4)),
        delta_repeats_usage=draw(st.booleans()),
    )


def _api_usage(call: Call, output: int) -> dict[str, Any]:
    return {
        "input_tokens": call.input,
        "cache_creation_input_tokens": call.cache_creation,
        "cache_read_input_tokens": call.cache_read,
        "cache_creation": {
            "ephemeral_5m_input_tokens": call.cache_creation - call.one_hour,
            "ephemeral_1h_input_tokens": call.one_hour,
        },
        "output_tokens": output,
    }


def _block(kind: str, text: str, index: int) -> dict[str, Any]:
    if kind == "tool_use":
        return {"type": "tool_use", "id": f"toolu_{index}", "name": "Bash", "input": {"c": text}}
    if kind == "thinking":
        return {"type": "thinking", "thinking": text, "signature": "sig"}
    return {"type": "text", "text": text}


def _event(event: dict[str, Any], lane: str | None, named: str | None = None) -> bytes:
    line: dict[str, Any] = {"type": "stream_event"}
    if named is not None:  # Claude Code 2.1.332 names the call of every stream event
        line["api_message_id"] = named
    line.update(event=event, session_id="s", parent_tool_use_id=lane)
    return dumps(line)


def call_lines(call: Call, msg_id: str, partial: bool, text: str, named: bool) -> list[bytes]:
    lane = call.lane
    lines: list[bytes] = []
    name = msg_id if named else None
    if partial:
        start = {
            "model": call.model,
            "id": msg_id,
            "type": "message",
            "role": "assistant",
            "content": [],
            "usage": _api_usage(call, call.placeholder),
        }
        lines.append(_event({"type": "message_start", "message": start}, lane, name))
    for index, kind in enumerate(call.blocks):
        if partial:
            block = {"type": "content_block_start", "index": index, "content_block": {"type": kind}}
            lines.append(_event(block, lane, name))
            for _ in range(call.deltas):
                delta = {"type": "text_delta", "text": text}
                lines.append(
                    _event(
                        {"type": "content_block_delta", "index": index, "delta": delta}, lane, name
                    )
                )
        message: dict[str, Any] = {
            "model": call.model,
            "id": msg_id,
            "type": "message",
            "role": "assistant",
            "content": [_block(kind, text, index)],
            "usage": _api_usage(call, call.placeholder),
        }
        lines.append(
            dumps(
                {
                    "type": "assistant",
                    "message": message,
                    "parent_tool_use_id": lane,
                    "session_id": "s",
                }
            )
        )
        if partial:
            lines.append(_event({"type": "content_block_stop", "index": index}, lane, name))
    if partial:
        usage: dict[str, Any] = {"output_tokens": call.output}
        if call.delta_repeats_usage:
            usage = _api_usage(call, call.output)
        lines.append(
            _event(
                {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": usage},
                lane,
                name,
            )
        )
        lines.append(_event({"type": "message_stop"}, lane, name))
    for kind in call.blocks:
        if kind == "tool_use":
            result = {"type": "tool_result", "tool_use_id": "toolu_0", "content": text * 3}
            user = {"role": "user", "content": [result]}
            lines.append(
                dumps(
                    {"type": "user", "message": user, "parent_tool_use_id": lane, "session_id": "s"}
                )
            )
    return lines


def result_line(all_calls: Sequence[Call], is_error: bool) -> bytes:
    model_usage: dict[str, dict[str, Any]] = {}
    for call in all_calls:
        entry = model_usage.setdefault(
            call.model,
            {
                "inputTokens": 0,
                "outputTokens": 0,
                "cacheReadInputTokens": 0,
                "cacheCreationInputTokens": 0,
            },
        )
        entry["inputTokens"] += call.input
        entry["outputTokens"] += call.output
        entry["cacheReadInputTokens"] += call.cache_read
        entry["cacheCreationInputTokens"] += call.cache_creation
    main = [c for c in all_calls if c.lane is None]
    usage = {
        "input_tokens": sum(c.input for c in main),
        "output_tokens": sum(c.output for c in main),
        "cache_creation_input_tokens": sum(c.cache_creation for c in main),
        "cache_read_input_tokens": sum(c.cache_read for c in main),
    }
    return dumps(
        {
            "type": "result",
            "subtype": "success",
            "is_error": is_error,
            "result": "done",
            "session_id": "s",
            "total_cost_usd": 0.5,
            "usage": usage,
            "modelUsage": model_usage,
        }
    )


@st.composite
def transcripts(draw: st.DrawFn) -> Transcript:
    partial = draw(st.booleans())
    named = draw(st.booleans())
    all_calls = draw(st.lists(calls(), max_size=8))
    text = draw(st.sampled_from(TEXTS))
    # Each lane's calls stay in order (ids restart per lane, so lanes reuse message ids);
    # the lanes interleave at random, as subagents running beside the main loop do.
    per_lane: dict[str | None, list[bytes]] = {}
    calls_in_lane: dict[str | None, int] = {}
    for call in all_calls:
        number = calls_in_lane[call.lane] = calls_in_lane.get(call.lane, 0) + 1
        per_lane.setdefault(call.lane, []).extend(
            call_lines(call, f"msg_{number}", partial, text, named)
        )
    rnd = draw(st.randoms(use_true_random=False))
    queues = [list(reversed(v)) for v in per_lane.values()]
    body: list[bytes] = []
    while queues:
        queue = rnd.choice(queues)
        body.append(queue.pop())
        if not queue:
            queues.remove(queue)
    for _ in range(draw(st.integers(min_value=0, max_value=2))):
        body.insert(rnd.randrange(len(body) + 1), b"[debug] not json \xe2\x9c\x93")
    init = dumps({"type": "system", "subtype": "init", "session_id": "s", "model": MODELS[0]})
    lines = [init, *body]
    has_result = draw(st.booleans())
    if has_result:
        lines.append(result_line(all_calls, is_error=draw(st.booleans())))
    return Transcript(tuple(lines), partial, tuple(all_calls), has_result)


# -- properties of generated transcripts -----------------------------------------------------


@GENERATED
@given(transcripts())
def test_generated_transcript_gives_the_expected_live_and_final_totals(t: Transcript) -> None:
    tracker = UsageTracker()
    for line in t.lines:
        if is_type(line, "result"):
            assert tracker.usage == t.live
        tracker.feed_line(line)
    assert tracker.live_usage == t.live
    assert tracker.usage == (t.exact if t.has_result else t.live)
    assert tracker.is_final is t.has_result


@GENERATED
@given(transcripts(), st.lists(st.integers(min_value=0), max_size=40))
def test_any_chunking_of_a_generated_transcript_gives_the_same_totals(
    t: Transcript, positions: list[int]
) -> None:
    data = b"".join(line + b"\n" for line in t.lines)
    by_line = feed(line.decode() for line in t.lines)
    by_chunk = feed(reassemble(cut(data, positions)))
    assert state(by_chunk) == state(by_line)


@GENERATED
@given(transcripts(), st.data())
def test_a_repeated_assistant_line_changes_nothing(t: Transcript, data: st.DataObject) -> None:
    assistant_at = [i for i, line in enumerate(t.lines) if is_type(line, "assistant")]
    if not assistant_at:
        return
    i = data.draw(st.sampled_from(assistant_at))
    j = data.draw(st.integers(min_value=i + 1, max_value=len(t.lines)))
    repeated = [*t.lines[:j], t.lines[i], *t.lines[j:]]
    assert state(feed(repeated)) == state(feed(t.lines))


@GENERATED
@given(transcripts())
def test_live_totals_never_decrease_before_the_result(t: Transcript) -> None:
    tracker = UsageTracker()
    previous = tracker.usage
    for line in t.lines:
        if is_type(line, "result"):
            break
        tracker.feed_line(line)
        now = tracker.usage
        assert now.input >= previous.input
        assert now.output >= previous.output
        assert now.cache_creation >= previous.cache_creation
        assert now.cache_read >= previous.cache_read
        previous = now


@GENERATED
@given(transcripts())
def test_sum_of_returned_deltas_is_the_final_usage(t: Transcript) -> None:
    tracker = UsageTracker()
    total = TokenUsage()
    for line in t.lines:
        total += tracker.feed_line(line)
    assert total == tracker.usage


# -- results below and above the stream: budgets never go down ------------------------------

FIGURES = st.builds(TokenUsage, *[st.integers(min_value=0, max_value=3_000)] * 4)


def _api(u: TokenUsage) -> dict[str, int]:
    return {
        "input_tokens": u.input,
        "cache_creation_input_tokens": u.cache_creation,
        "cache_read_input_tokens": u.cache_read,
        "output_tokens": u.output,
    }


@st.composite
def usage_lines(draw: st.DrawFn) -> tuple[bytes, TokenUsage | None]:
    """A line that carries usage, and the figures it reports if it is a result line; the
    figures are random, so a result is often below the stream in some kinds, above in others."""
    figures = draw(FIGURES)
    lane = draw(st.sampled_from([None, "toolu_a"]))
    msg_id = draw(st.sampled_from(["msg_1", "msg_2", "msg_3"]))
    model = draw(st.sampled_from(MODELS))
    kind = draw(st.sampled_from(["assistant", "start", "delta", "result"]))
    if kind == "assistant":
        message = {"id": msg_id, "model": model, "usage": _api(figures)}
        return dumps({"type": "assistant", "message": message, "parent_tool_use_id": lane}), None
    if kind in ("start", "delta"):
        line: dict[str, Any] = {"type": "stream_event"}
        named = draw(st.sampled_from([None, msg_id, "msg_9"]))  # 2.1.332's api_message_id
        if named is not None:
            line["api_message_id"] = named
        if kind == "start":
            message = {"id": msg_id, "model": model, "usage": _api(figures)}
            line["event"] = {"type": "message_start", "message": message}
        else:
            line["event"] = {"type": "message_delta", "usage": {"output_tokens": figures.output}}
        line["parent_tool_use_id"] = lane
        return dumps(line), None
    result: dict[str, Any] = {
        "type": "result",
        "subtype": draw(st.sampled_from(["success", "error_max_budget_usd"])),
        "is_error": False,
    }
    cost = draw(st.none() | st.floats(min_value=0, max_value=0.5))
    if cost is not None:
        result["total_cost_usd"] = cost
    if draw(st.booleans()):
        result["usage"] = _api(figures)
    else:
        result["modelUsage"] = {
            model: {
                "inputTokens": figures.input,
                "outputTokens": figures.output,
                "cacheReadInputTokens": figures.cache_read,
                "cacheCreationInputTokens": figures.cache_creation,
            }
        }
    return dumps(result), figures


def _at_least(a: TokenUsage, b: TokenUsage) -> bool:
    return all(x >= y for x, y in zip(dataclasses.astuple(a), dataclasses.astuple(b), strict=True))


@GENERATED
@given(st.lists(usage_lines(), max_size=25))
def test_no_line_ever_lowers_usage_or_cost(steps: list[tuple[bytes, TokenUsage | None]]) -> None:
    tracker = UsageTracker()
    total = TokenUsage()
    cost = 0.0
    at_result = (tracker.usage, tracker.live_usage)
    for line, reported in steps:
        delta = tracker.feed_line(line)
        assert _at_least(delta, TokenUsage()), (line, delta)
        assert tracker.cost_usd >= cost or math.isclose(tracker.cost_usd, cost, rel_tol=1e-9)
        total, cost = total + delta, tracker.cost_usd
        assert total == tracker.usage
        assert _at_least(tracker.usage, tracker.live_usage)
        if reported is not None:
            assert _at_least(tracker.usage, reported)  # the larger of each kind is kept
            assert tracker.cost_usd >= (tracker.cli_cost_usd or 0.0)
            at_result = (tracker.usage, tracker.live_usage)
        else:  # whatever the stream shows after a result is counted on top of it
            usage, live = tracker.usage, tracker.live_usage
            assert usage - at_result[0] == live - at_result[1]


def _kept(lines: Iterable[bytes]) -> list[bytes]:
    return [line for line in lines if line_may_carry_usage(line[:128])]


@GENERATED
@given(transcripts())
def test_dropping_lines_that_cannot_carry_usage_changes_no_figure(t: Transcript) -> None:
    # Not skipped_lines: a reader that drops non-JSON lines unread cannot count them.
    assert state(feed(_kept(t.lines)))[:-1] == state(feed(t.lines))[:-1]


# -- properties over the real fixture files (ours, and the shared set) ------------------------


@pytest.mark.parametrize("path", FIXTURE_PARAMS)
@PER_FIXTURE
@given(positions=st.lists(st.integers(min_value=0), max_size=60))
def test_any_chunking_of_a_fixture_gives_the_same_totals(path: Path, positions: list[int]) -> None:
    data = path.read_bytes()
    by_line = feed(data.splitlines())
    by_chunk = feed(reassemble(cut(data, positions)))
    assert state(by_chunk) == state(by_line)


@pytest.mark.parametrize("path", FIXTURE_PARAMS)
@PER_FIXTURE
@given(data=st.data())
def test_a_repeated_assistant_line_of_a_fixture_changes_nothing(
    path: Path, data: st.DataObject
) -> None:
    lines = path.read_bytes().splitlines()
    assistant_at = [i for i, line in enumerate(lines) if is_type(line, "assistant")]
    if not assistant_at:
        return
    i = data.draw(st.sampled_from(assistant_at))
    j = data.draw(st.integers(min_value=i + 1, max_value=len(lines)))
    repeated = [*lines[:j], lines[i], *lines[j:]]
    assert state(feed(repeated)) == state(feed(lines))


@pytest.mark.parametrize("path", FIXTURE_PARAMS)
def test_dropping_fixture_lines_that_cannot_carry_usage_changes_no_figure(path: Path) -> None:
    lines = path.read_bytes().splitlines()
    assert state(feed(_kept(lines)))[:-1] == state(feed(lines))[:-1]


@pytest.mark.parametrize("path", FIXTURE_PARAMS)
def test_fixture_deltas_sum_to_usage_and_live_never_decreases(path: Path) -> None:
    tracker = UsageTracker()
    total = previous = TokenUsage()
    seen_result = False
    for line in path.read_bytes().splitlines():
        seen_result = seen_result or is_type(line, "result")
        total += tracker.feed_line(line)
        if not seen_result:
            now = tracker.usage
            assert min(now.input - previous.input, now.output - previous.output) >= 0
            assert (
                min(
                    now.cache_creation - previous.cache_creation,
                    now.cache_read - previous.cache_read,
                )
                >= 0
            )
            previous = now
    assert total == tracker.usage


# -- budget snapshots -------------------------------------------------------------------------

charges = st.lists(
    st.tuples(
        st.sampled_from(["/a", "/b", "/c", OVERALL]),
        st.builds(TokenUsage, counts, counts, counts, counts),
        st.floats(min_value=0, max_value=5, allow_nan=False),
        st.sampled_from(["warn", "block", None]),
    ),
    max_size=15,
)


def _frozen_view(snapshot: Any) -> tuple[Any, ...]:
    return (
        snapshot.mode,
        tuple(dataclasses.astuple(b) for b in snapshot.budgets),
        tuple((k, dataclasses.astuple(v)) for k, v in snapshot.spend.items()),
        dataclasses.astuple(snapshot.total),
    )


@GENERATED
@given(charges, st.integers(min_value=0, max_value=15))
def test_budget_snapshots_are_immutable(
    steps: list[tuple[str, TokenUsage, float, Any]], taken_at: int
) -> None:
    manager = BudgetManager()
    manager.set_budget("/a", tokens=100_000, usd=3.0)
    manager.set_budget("/b", tokens=50_000)
    manager.set_overall(tokens=300_000, usd=10.0)
    snapshot = manager.snapshot()
    view = _frozen_view(snapshot)
    for index, (key, usage, cost, mode) in enumerate(steps):
        if index == taken_at:
            snapshot = manager.snapshot()
            view = _frozen_view(snapshot)
        manager.charge(key, f"i{index}", usage, cost)
        if mode is not None:
            manager.set_mode(mode)
    assert _frozen_view(snapshot) == view
    with pytest.raises(dataclasses.FrozenInstanceError):
        snapshot.mode = "block"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        snapshot.total = snapshot.total  # type: ignore[misc]
    for budget in snapshot.budgets:
        with pytest.raises(dataclasses.FrozenInstanceError):
            budget.used = -1  # type: ignore[misc]
    with pytest.raises(TypeError):
        snapshot.spend["/z"] = snapshot.total  # type: ignore[index]
    assert _frozen_view(snapshot) == view
