"""Exact token usage of one Claude Code process, from its ``stream-json`` stdout lines.

The counting rules are those of ``docs/stream-json.md`` (shared): one API call is one
``(parent_tool_use_id, message.id)``; input and cache numbers come from its first sighting;
output comes from ``message_delta`` when partial messages are on, else from the placeholder
on ``assistant`` lines; the ``result`` line is authoritative for the whole run.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from budget_core.pricing import PriceTable, default_price_table
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
    '{"type":"rate_limit_event",',
)
_NO_USAGE_PREFIXES_BYTES = tuple(p.encode() for p in _NO_USAGE_PREFIXES_STR)
_SYNTHETIC_MODEL = "<synthetic>"


def line_may_carry_usage(head: bytes) -> bool:
    """Whether a line starting with ``head`` (its first 128 bytes or more) can carry usage.

    Lets a reader drop the body of a huge tool-result or non-JSON line as it streams by.
    """
    stripped = head.lstrip()
    return stripped[:1] == b"{" and not stripped.startswith(_NO_USAGE_PREFIXES_BYTES)


# No API call comes near this many tokens; a larger number is corrupt output, and would
# overflow float arithmetic (cost, budget fractions) if it were counted.
_MAX_COUNT = 10**15


def _count(value: object) -> int:
    """A token count from JSON: null, missing, negative, absurdly large or not a number is 0."""
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return value if 0 < value <= _MAX_COUNT else 0
    if isinstance(value, float) and math.isfinite(value) and 0 < value <= _MAX_COUNT:
        return int(value)
    return 0


def _usd(value: object) -> float | None:
    """A cost from JSON, or None unless it is a finite number >= 0."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        usd = float(value)
    except OverflowError:  # an integer too large for a float
        return None
    return usd if math.isfinite(usd) and usd >= 0 else None


def _api_usage(raw: object) -> tuple[TokenUsage, int]:
    """Usage from an API ``usage`` object, and how many cache writes were 1-hour ones."""
    if not isinstance(raw, dict):
        return ZERO, 0
    usage = TokenUsage(
        input=_count(raw.get("input_tokens")),
        output=_count(raw.get("output_tokens")),
        cache_creation=_count(raw.get("cache_creation_input_tokens")),
        cache_read=_count(raw.get("cache_read_input_tokens")),
    )
    split = raw.get("cache_creation")
    one_hour = _count(split.get("ephemeral_1h_input_tokens")) if isinstance(split, dict) else 0
    return usage, one_hour


def _model_usage_total(raw: object) -> TokenUsage | None:
    """Sum of ``result.modelUsage`` over models, or None when it is absent."""
    if not isinstance(raw, dict):
        return None
    total = ZERO
    for entry in raw.values():
        if isinstance(entry, dict):
            total += TokenUsage(
                input=_count(entry.get("inputTokens")),
                output=_count(entry.get("outputTokens")),
                cache_creation=_count(entry.get("cacheCreationInputTokens")),
                cache_read=_count(entry.get("cacheReadInputTokens")),
            )
    return total


def _model_usage_cost(raw: object) -> float | None:
    if not isinstance(raw, dict):
        return None
    costs = [_usd(e.get("costUSD")) for e in raw.values() if isinstance(e, dict)]
    numbers = [c for c in costs if c is not None]
    return sum(numbers) if numbers else None


def _lane(value: object) -> _Lane:
    return value if value is None or isinstance(value, str) else str(value)


@dataclass(slots=True)
class _Call:
    """One API call as counted so far."""

    model: str | None
    usage: TokenUsage
    cache_write_1h: int
    cost: float


class UsageTracker:
    """Live, then final, token usage of one Claude Code process.

    Feed it every stdout line in order. ``feed_line`` returns the change in ``usage`` that
    the line caused, so whoever charges budgets charges every token exactly once.
    """

    def __init__(self, prices: PriceTable | None = None) -> None:
        self._prices = prices if prices is not None else default_price_table()
        self._calls: dict[_CallKey, _Call] = {}
        self._latest_in_lane: dict[_Lane, _CallKey | None] = {}
        self._anonymous_calls = 0
        self._live = ZERO
        self._live_cost = 0.0
        self._final: TokenUsage | None = None
        self._final_cost: float | None = None
        self._final_cost_is_estimate = True
        self._is_error = False
        self._unknown_models: set[str] = set()
        self.model: str | None = None
        self.session_id: str | None = None
        self.error_text: str | None = None
        self.result_subtype: str | None = None
        self.lines_seen = 0
        self.skipped_lines = 0

    # -- what callers read ---------------------------------------------------------------

    @property
    def usage(self) -> TokenUsage:
        """The CLI's final figures after a result line; live counts before."""
        return self._final if self._final is not None else self._live

    @property
    def live_usage(self) -> TokenUsage:
        """What the stream itself showed, whatever the result line said."""
        return self._live

    @property
    def is_final(self) -> bool:
        return self._final is not None

    @property
    def is_error(self) -> bool:
        return self._is_error

    @property
    def cost_usd(self) -> float:
        return self._final_cost if self._final_cost is not None else self._live_cost

    @property
    def cost_is_estimate(self) -> bool:
        return self._final_cost is None or self._final_cost_is_estimate

    @property
    def unknown_models(self) -> frozenset[str]:
        """Models priced with the default family because the price table lacks them."""
        return frozenset(self._unknown_models)

    # -- feeding -------------------------------------------------------------------------

    def feed_line(self, line: Line) -> TokenUsage:
        """Apply one stdout line; return how much ``usage`` changed (often zero)."""
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
        after = self.usage
        return ZERO if after is before else after - before

    def _parse(self, line: Line) -> dict[str, Any] | None:
        if isinstance(line, str):
            if line.startswith(_NO_USAGE_PREFIXES_STR):
                return None
        elif line.startswith(_NO_USAGE_PREFIXES_BYTES):
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

    def _on_assistant(self, data: dict[str, Any]) -> None:
        message = data.get("message")
        if isinstance(message, dict):
            self._sight(_lane(data.get("parent_tool_use_id")), message)

    def _on_stream_event(self, data: dict[str, Any]) -> None:
        event = data.get("event")
        if not isinstance(event, dict):
            return
        lane = _lane(data.get("parent_tool_use_id"))
        kind = event.get("type")
        if kind == "message_start":
            message = event.get("message")
            # A later message_delta belongs to this message, even one that is not counted
            # (<synthetic>): it must never fall back to the lane's previous call.
            self._latest_in_lane[lane] = (
                self._sight(lane, message) if isinstance(message, dict) else None
            )
        elif kind == "message_delta":
            # message_delta has no message id: it belongs to the lane's latest message_start.
            key = self._latest_in_lane.get(lane)
            usage = event.get("usage")
            if (
                key is not None
                and isinstance(usage, dict)
                and usage.get("output_tokens") is not None
            ):
                self._set_exact_output(key, _count(usage["output_tokens"]))

    def _on_result(self, data: dict[str, Any]) -> None:
        subtype = data.get("subtype")
        self.result_subtype = subtype if isinstance(subtype, str) else None
        self._is_error = data.get("is_error") is True or (
            subtype is not None and subtype != "success"
        )
        if self._is_error:
            text = data.get("result")
            self.error_text = text if isinstance(text, str) and text else f"result: {subtype}"
        model_usage = _model_usage_total(data.get("modelUsage"))
        plain_usage, _ = _api_usage(data.get("usage"))
        if model_usage:
            final = model_usage
        elif isinstance(data.get("usage"), dict):
            final = plain_usage
        elif model_usage is not None:
            final = model_usage
        else:
            final = self._live  # the result carries no figures: nothing better to end on
        self._final = final
        total_cost = _usd(data.get("total_cost_usd"))
        if total_cost is not None:
            self._final_cost, self._final_cost_is_estimate = total_cost, False
            return
        per_model = _model_usage_cost(data.get("modelUsage"))
        if per_model is not None:
            self._final_cost, self._final_cost_is_estimate = per_model, False
        else:
            self._final_cost = self._estimate(self.model, final, 0)
            self._final_cost_is_estimate = True

    # -- per-call bookkeeping ------------------------------------------------------------

    def _sight(self, lane: _Lane, message: dict[str, Any]) -> _CallKey | None:
        """Count an API call the first time it is seen; later sightings only refine output."""
        model = message.get("model")
        if model == _SYNTHETIC_MODEL:
            return None  # a line the CLI makes up for errors: no API call behind it
        model = model if isinstance(model, str) else None
        message_id = message.get("id")
        if isinstance(message_id, str):
            key: _CallKey = (lane, message_id)
        else:
            # Without an id nothing can be deduplicated: count the line as its own call.
            self._anonymous_calls += 1
            key = (lane, f"\0anonymous-{self._anonymous_calls}")
        call = self._calls.get(key)
        if call is None:
            usage, one_hour = _api_usage(message.get("usage"))
            call = _Call(model or self.model, ZERO, one_hour, 0.0)
            self._calls[key] = call
            self._update(call, usage)
            if self.model is None and model:
                self.model = model
        else:
            raw = message.get("usage")
            if isinstance(raw, dict):
                placeholder = _count(raw.get("output_tokens"))
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

    def _estimate(self, model: str | None, usage: TokenUsage, cache_write_1h: int) -> float:
        prices, known = self._prices.lookup(model)
        if not known and usage:
            self._unknown_models.add(model or "unknown")
        return prices.cost(usage, cache_write_1h)
