"""Exact token usage of one Claude Code process, from its ``stream-json`` stdout lines.

The counting rules are those of ``docs/stream-json.md`` (shared): one API call is one
``(parent_tool_use_id, message.id)``; input and cache numbers come from its first sighting;
output comes from ``message_delta`` when partial messages are on, else from the placeholder
on ``assistant`` lines; a ``result`` line gives the CLI's own figures for the whole run, but a
budget never goes down: of its figures and what was already counted, the larger of each kind
is kept (``UsageTracker.discrepancy`` says when the result was the smaller).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from budget_core.pricing import ModelPrices, PriceTable, default_price_table
from budget_core.ratelimit import RateLimitEvent, parse_rate_limit_event
from budget_core.result import (
    ResultFigures,
    SessionBefore,
    UsageDiscrepancy,
    larger,
    read_result,
    session_before,
)
from budget_core.stream_values import api_usage, count
from budget_core.usage import ZERO, TokenUsage

Line = bytes | bytearray | str
_Lane = str | None
_CallKey = tuple[_Lane, str]

# Lines that can never carry usage. Checking the CLI's own key order is enough to skip
# the bulk of a run (text deltas, tool results of any size) without parsing it; a line
# written in another key order is simply parsed, so this is never wrong, only slower.
_NO_USAGE_PREFIXES_STR = (
    '{"type":"stream_event","event":{"type":"content_block_',
    '{"type":"stream_event","event":{"type":"message_stop"',
    '{"type":"user",',
)
_NO_USAGE_PREFIXES_BYTES = tuple(p.encode() for p in _NO_USAGE_PREFIXES_STR)
# Claude Code 2.1.332 names the call of every stream event (``api_message_id``). Written
# right after the type, it would hide the event's type from the prefixes above; the pattern
# accepts only an id of plain characters, so it cannot be fooled by a string's contents.
_NAMED_EVENT_STR = '{"type":"stream_event","api_message_id":"'
_NAMED_EVENT_BYTES = _NAMED_EVENT_STR.encode()
_NAMED_NO_USAGE = r'"[A-Za-z0-9_-]*","event":\{"type":"(?:content_block_|message_stop")'
_NAMED_NO_USAGE_STR = re.compile(re.escape(_NAMED_EVENT_STR[:-1]) + _NAMED_NO_USAGE)
_NAMED_NO_USAGE_BYTES = re.compile(_NAMED_NO_USAGE_STR.pattern.encode())
_SYNTHETIC_MODEL = "<synthetic>"
_BUDGET_STOP = "error_max_budget_usd"
_PER_MILLION = 1_000_000


def line_may_carry_usage(head: bytes) -> bool:
    """Whether a line starting with ``head`` (its first 128 bytes or more) can carry usage
    (or another value the tracker reads, such as a ``rate_limit_event``).

    Lets a reader drop the body of a huge tool-result or non-JSON line as it streams by.
    """
    stripped = head.lstrip()
    return (
        stripped[:1] == b"{"
        and not stripped.startswith(_NO_USAGE_PREFIXES_BYTES)
        and not (stripped.startswith(_NAMED_EVENT_BYTES) and _NAMED_NO_USAGE_BYTES.match(stripped))
    )


def _lane(value: object) -> _Lane:
    return value if value is None or isinstance(value, str) else str(value)


@dataclass(slots=True)
class _Call:
    """One API call as counted so far."""

    model: str | None
    usage: TokenUsage
    cache_write_1h: int
    cost: float


@dataclass(frozen=True, slots=True)
class _Settled:
    """What the latest result line left counted, and the live figures at that moment: the
    tokens and cost the stream shows after it are added on top."""

    usage: TokenUsage
    cost: float
    cost_is_estimate: bool
    live: TokenUsage
    live_cost: float


class UsageTracker:
    """Live, then final, token usage of one Claude Code process.

    Feed it every stdout line in order. ``feed_line`` returns the change in ``usage`` that
    the line caused, so whoever charges budgets charges every token exactly once; no kind of
    it is ever negative. ``cost_usd`` never goes down either, but for float rounding (a
    relative 1e-9 at most) when it becomes the CLI's own figure for the calls it estimated.

    A process may print several result lines (Claude Code 2.1.332 runs queued turns after a
    first result; ``result_index`` numbers them). Their ``modelUsage`` and ``total_cost_usd``
    are taken as cumulative for the process: the notes report ``total_cost_usd`` cumulative
    per session, and the same lines carry ``model_usage_since_last_result`` beside
    ``modelUsage``, which would be pointless if ``modelUsage`` were per result. Calls streamed
    after a result are counted live on top of it; at the next result the larger of its
    figures and the running count is kept, per kind, so nothing is counted twice. Taking the
    larger is also safe if a result's figures were per result after all: nothing goes down and
    the live count covers the turn. ``begun_message_ids`` and ``queued_turn_count`` are not
    needed for that: a call begun before a result and finished after it was counted live at
    its ``message_start`` and grows by its own ``message_delta``.

    A process continuing a session (``resumed``) counts only what it added: 2.1.332 reports
    the whole session's ``modelUsage`` and ``total_cost_usd`` there, and the session's earlier
    spend (``result.session_before``) is taken off every result line of the process.
    """

    def __init__(
        self, prices: PriceTable | None = None, resumed: bool = False, settled: bool = True
    ) -> None:
        self.resumed = resumed  # the process continues a session (--resume)
        self._earlier_settled = settled  # ... whose last process printed a result line
        self._prices = prices if prices is not None else default_price_table()
        self._price_of: dict[str | None, tuple[ModelPrices, bool]] = {}
        self._calls: dict[_CallKey, _Call] = {}
        self._latest_in_lane: dict[_Lane, _CallKey | None] = {}
        self._anonymous_calls = 0
        self._live = ZERO
        self._live_cost = 0.0
        self._settled: _Settled | None = None
        self._before: SessionBefore | None = None  # a resumed session's earlier spend
        self._cli_cost: float | None = None
        self._discrepancy: UsageDiscrepancy | None = None
        self._is_error = False
        self._unknown_models: set[str] = set()
        self.model: str | None = None
        self.session_id: str | None = None
        self.error_text: str | None = None
        self.result_subtype: str | None = None
        self.lines_seen = 0
        self.skipped_lines = 0
        # The latest subscription-window report (never tokens), and how many were read: a
        # reader compares the count to see a new one without looking at the event.
        self.rate_limit: RateLimitEvent | None = None
        self.rate_limit_events = 0

    # -- what callers read ---------------------------------------------------------------

    @property
    def usage(self) -> TokenUsage:
        """Live counts before a result line; after one, its figures (or the larger count of
        each kind) plus what the stream showed since."""
        settled = self._settled
        if settled is None:
            return self._live
        if self._live is settled.live:
            return settled.usage
        return settled.usage + (self._live - settled.live)

    @property
    def live_usage(self) -> TokenUsage:
        """What the stream itself showed, whatever the result line said."""
        return self._live

    @property
    def is_final(self) -> bool:
        """A result line was seen."""
        return self._settled is not None

    @property
    def is_error(self) -> bool:
        return self._is_error

    @property
    def stopped_by_cli_budget(self) -> bool:
        """The latest result is the CLI's own ``--max-budget-usd`` stop."""
        return self.result_subtype == _BUDGET_STOP

    @property
    def discrepancy(self) -> UsageDiscrepancy | None:
        """The latest result line that reported less than the stream had shown, if any
        (a later result that agrees does not clear it: what was kept is still kept)."""
        return self._discrepancy

    @property
    def cost_usd(self) -> float:
        settled = self._settled
        if settled is None:
            return self._live_cost
        return settled.cost + (self._live_cost - settled.live_cost)

    @property
    def cli_cost_usd(self) -> float | None:
        """The CLI's own cost at the latest result line (``total_cost_usd``, else the sum of
        ``costUSD``); ``cost_usd`` is never below it, but may be above (see ``discrepancy``)."""
        return self._cli_cost

    @property
    def cost_is_estimate(self) -> bool:
        """Whether any of ``cost_usd`` is from the price table rather than the CLI."""
        settled = self._settled
        return (
            settled is None
            or settled.cost_is_estimate
            or self._live_cost != settled.live_cost
            or self._live != settled.live
        )

    @property
    def unknown_models(self) -> frozenset[str]:
        """Models priced with the default family because the price table lacks them."""
        return frozenset(self._unknown_models)

    # -- feeding -------------------------------------------------------------------------

    def feed_line(self, line: Line) -> TokenUsage:
        """Apply one stdout line; return how much ``usage`` changed (often zero, never less)."""
        self.lines_seen += 1
        before = self.usage
        data = self._parse(line)
        if data is not None:
            kind = data.get("type")
            if kind == "stream_event":
                self._on_stream_event(data)
            elif kind == "assistant":
                self._on_assistant(data)
            elif kind == "result":
                self._on_result(data)
            elif kind == "system":
                self._on_system(data)
            elif kind == "rate_limit_event":
                self._on_rate_limit(data)
        after = self.usage
        return ZERO if after is before else after - before

    def _parse(self, line: Line) -> dict[str, Any] | None:
        if isinstance(line, str):
            if line.startswith(_NO_USAGE_PREFIXES_STR) or (
                line.startswith(_NAMED_EVENT_STR) and _NAMED_NO_USAGE_STR.match(line)
            ):
                return None
        elif line.startswith(_NO_USAGE_PREFIXES_BYTES) or (
            line.startswith(_NAMED_EVENT_BYTES) and _NAMED_NO_USAGE_BYTES.match(line)
        ):
            return None
        if line[:1] not in ("{", b"{"):
            line = line.strip()
            if not line:
                return None  # a blank line is not output worth counting as skipped
            if line[:1] not in ("{", b"{"):
                self.skipped_lines += 1
                return None
        try:
            try:
                data = json.loads(line)
            except UnicodeDecodeError:
                # Invalid UTF-8 inside a string value must not cost the line its usage.
                assert not isinstance(line, str)
                data = json.loads(bytes(line).decode("utf-8", errors="replace"))
        except (ValueError, RecursionError):
            self.skipped_lines += 1
            return None
        if not isinstance(data, dict):
            self.skipped_lines += 1
            return None
        return data

    def _on_system(self, data: dict[str, Any]) -> None:
        if data.get("subtype") == "init":
            if isinstance(data.get("session_id"), str):
                self.session_id = data["session_id"]
            if isinstance(data.get("model"), str):
                self.model = data["model"]

    def _on_rate_limit(self, data: dict[str, Any]) -> None:
        event = parse_rate_limit_event(data)
        if event is None:
            self.skipped_lines += 1  # no status we know: nothing read from it
            return
        self.rate_limit = event
        self.rate_limit_events += 1

    def _on_assistant(self, data: dict[str, Any]) -> None:
        message = data.get("message")
        if isinstance(message, dict):
            self._sight(_lane(data.get("parent_tool_use_id")), message, None)

    def _on_stream_event(self, data: dict[str, Any]) -> None:
        event = data.get("event")
        if not isinstance(event, dict):
            return
        lane = _lane(data.get("parent_tool_use_id"))
        named = data.get("api_message_id")
        named = named if isinstance(named, str) else None
        kind = event.get("type")
        if kind == "message_start":
            message = event.get("message")
            # A later message_delta belongs to this message, even one that is not counted
            # (<synthetic>): it must never fall back to the lane's previous call.
            self._latest_in_lane[lane] = (
                self._sight(lane, message, named) if isinstance(message, dict) else None
            )
        elif kind == "message_delta":
            # A named delta belongs to the call it names (several may be in flight in one
            # lane); an unnamed one to the lane's latest message_start. A delta for a call
            # never seen is not guessed at.
            key = (lane, named) if named is not None else self._latest_in_lane.get(lane)
            usage = event.get("usage")
            if (
                key is not None
                and isinstance(usage, dict)
                and usage.get("output_tokens") is not None
            ):
                self._set_exact_output(key, count(usage["output_tokens"]))

    def _on_result(self, data: dict[str, Any]) -> None:
        subtype = data.get("subtype")
        self.result_subtype = subtype if isinstance(subtype, str) else None
        self._is_error = data.get("is_error") is True or (
            subtype is not None and subtype != "success"
        )
        self.error_text = _error_text(data, subtype) if self._is_error else None
        if self.resumed and self._settled is None:  # the first result of a resumed process
            self._before = session_before(data, self._earlier_settled)
        figures = read_result(data, self._before)
        counted, counted_cost = self.usage, self.cost_usd
        reported = figures.usage if figures.usage is not None else counted
        cost, from_cli = self._result_cost(figures, counted, counted_cost)
        self._cli_cost = cost if from_cli else None
        # Only the run-wide figures (modelUsage) can contradict the stream: ``usage`` alone
        # covers the main loop (on 1.0.x the last call), so it falls short by design.
        claimed = reported if figures.models else larger(counted, reported)
        check = UsageDiscrepancy(counted, claimed, counted_cost, cost if from_cli else None)
        if check.found:
            self._discrepancy = check
        # The CLI's own cost stands unless the stream's estimate was higher by more than
        # float rounding (the same calls summed in another order): shown exactly, it agrees
        # with the CLI's; the larger is kept only when the two really differ.
        cli_stands = from_cli and not check.cost_kept_from_stream
        self._settled = _Settled(
            usage=larger(counted, reported),
            cost=cost if cli_stands else max(cost, counted_cost),
            cost_is_estimate=not cli_stands,
            live=self._live,
            live_cost=self._live_cost,
        )

    def _result_cost(
        self, figures: ResultFigures, counted: TokenUsage, counted_cost: float
    ) -> tuple[float, bool]:
        """The run's cost by a result line, and whether it is the CLI's own figure.

        ``total_cost_usd``, else each model's ``costUSD``. Without them, the estimate is
        priced per call and model, as the live one was: each ``modelUsage`` entry at its own
        model's rates (a model without ``costUSD`` among some with it too). With only
        ``usage``, the live estimate is kept, plus the tokens the result reports beyond the
        count, priced at the average rate of that kind over the calls counted (each at its
        own model: mostly output the placeholders missed), or at the init model's rate for a
        kind no call had. The caller keeps the live estimate when it is the larger.
        """
        if figures.total_cost_usd is not None:
            return figures.total_cost_usd, True
        models = figures.models
        if models:
            cost = sum(
                m.cost_usd
                if m.cost_usd is not None
                else self._estimate(m.model, m.usage, m.cache_write_1h)
                for m in models
            )
            reported = [m.cost_usd is not None for m in models]
            return cost, any(reported) and all(
                r or not m.usage for r, m in zip(reported, models, strict=True)
            )
        if figures.usage is None:
            return counted_cost, False
        return counted_cost + self._price_beyond(counted, figures.usage), False

    def _price_beyond(self, counted: TokenUsage, reported: TokenUsage) -> float:
        """What the tokens ``reported`` has beyond ``counted`` cost, kind by kind, at the
        average rate of that kind over the calls counted (see ``_result_cost``)."""
        extra = [max(r - c, 0) for r, c in zip(_kinds(reported), _kinds(counted), strict=True)]
        if not any(extra):
            return 0.0
        tokens = [0, 0, 0, 0]
        dollars = [0.0, 0.0, 0.0, 0.0]
        for call in self._calls.values():
            prices, _ = self._lookup(call.model)
            u = call.usage
            one_hour = min(call.cache_write_1h, u.cache_creation)
            for i, (n, usd_each) in enumerate(
                (
                    (u.input, prices.input),
                    (u.output, prices.output),
                    (u.cache_creation - one_hour, prices.cache_write_5m),
                    (one_hour, prices.cache_write_1h),
                    (u.cache_read, prices.cache_read),
                )
            ):
                kind = i if i < 3 else i - 1  # both cache-write buckets are cache_creation
                tokens[kind] += n
                dollars[kind] += n * usd_each
        priced = sum(e * d / t for e, d, t in zip(extra, dollars, tokens, strict=True) if t)
        unpriced = TokenUsage(*(e if not t else 0 for e, t in zip(extra, tokens, strict=True)))
        return priced / _PER_MILLION + self._estimate(self.model, unpriced, 0)

    # -- per-call bookkeeping ------------------------------------------------------------

    def _sight(self, lane: _Lane, message: dict[str, Any], named: str | None) -> _CallKey | None:
        """Count an API call the first time it is seen; later sightings only refine output."""
        model = message.get("model")
        if model == _SYNTHETIC_MODEL:
            return None  # a line the CLI makes up for errors: no API call behind it
        model = model if isinstance(model, str) else None
        message_id = message.get("id")
        if not isinstance(message_id, str):
            message_id = named
        if message_id is not None:
            key: _CallKey = (lane, message_id)
        else:
            # Without an id nothing can be deduplicated: count the line as its own call.
            self._anonymous_calls += 1
            key = (lane, f"\0anonymous-{self._anonymous_calls}")
        call = self._calls.get(key)
        if call is None:
            usage, one_hour = api_usage(message.get("usage"))
            call = _Call(model or self.model, ZERO, one_hour, 0.0)
            self._calls[key] = call
            self._update(call, usage)
            if self.model is None and model:
                self.model = model
        else:
            raw = message.get("usage")
            if isinstance(raw, dict):
                placeholder = count(raw.get("output_tokens"))
                if placeholder > call.usage.output:
                    self._set_output(call, placeholder)
        return key

    def _set_exact_output(self, key: _CallKey, output: int) -> None:
        call = self._calls.get(key)
        # Output only grows within a call: a placeholder is never above the exact count,
        # so taking the larger keeps live totals monotonic without losing a token.
        if call is not None and output > call.usage.output:
            self._set_output(call, output)

    def _set_output(self, call: _Call, output: int) -> None:
        u = call.usage
        self._update(call, TokenUsage(u.input, output, u.cache_creation, u.cache_read))

    def _update(self, call: _Call, usage: TokenUsage) -> None:
        cost = self._estimate(call.model, usage, call.cache_write_1h)
        self._live = self._live + (usage - call.usage)
        self._live_cost += cost - call.cost
        call.usage, call.cost = usage, cost

    def _lookup(self, model: str | None) -> tuple[ModelPrices, bool]:
        found = self._price_of.get(model)
        if found is None:
            found = self._price_of[model] = self._prices.lookup(model)
        return found

    def _estimate(self, model: str | None, usage: TokenUsage, cache_write_1h: int) -> float:
        prices, known = self._lookup(model)
        if not known and usage:
            self._unknown_models.add(model or "unknown")
        return prices.cost(usage, cache_write_1h)


def _error_text(data: dict[str, Any], subtype: object) -> str:
    """The result's text, else its ``errors`` (a budget stop: "Reached maximum budget ($X)")."""
    text = data.get("result")
    if isinstance(text, str) and text:
        return text
    errors = data.get("errors")
    if isinstance(errors, list):
        found = "; ".join(e for e in errors if isinstance(e, str) and e)
        if found:
            return found
    return f"result: {subtype}"


def _kinds(usage: TokenUsage) -> tuple[int, int, int, int]:
    return usage.input, usage.output, usage.cache_creation, usage.cache_read
