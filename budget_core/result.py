"""What a ``result`` line reports, and how that can disagree with what the stream showed."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from budget_core.formatting import format_usd
from budget_core.stream_values import api_usage, count, usd
from budget_core.usage import ZERO, TokenUsage

KINDS = ("input", "output", "cache_creation", "cache_read")


def larger(a: TokenUsage, b: TokenUsage) -> TokenUsage:
    """The larger figure of each kind."""
    return TokenUsage(
        max(a.input, b.input),
        max(a.output, b.output),
        max(a.cache_creation, b.cache_creation),
        max(a.cache_read, b.cache_read),
    )


@dataclass(frozen=True, slots=True)
class ModelFigures:
    """One entry of ``result.modelUsage``."""

    model: str  # its ``canonicalModel`` when given (what it is priced as), else its key
    usage: TokenUsage
    cache_write_1h: int
    cost_usd: float | None  # ``costUSD``


@dataclass(frozen=True, slots=True)
class ResultFigures:
    """The figures of one result line, by the shared notes' rule 5."""

    usage: TokenUsage | None  # the tokens it reports; None when it reports none
    models: tuple[ModelFigures, ...]  # the entries ``usage`` is the sum of; () if not modelUsage
    total_cost_usd: float | None


@dataclass(frozen=True, slots=True)
class SessionBefore:
    """What a resumed session had spent before this process, by the CLI's own figures.

    Claude Code 2.1.332 reports ``modelUsage`` and ``total_cost_usd`` for the whole session
    on a process started with ``--resume`` (2.1.197, 2.0.0 and 1.0.108 report this process
    only: checked with each against the fake Messages API). Its result lines also carry
    ``model_usage_since_last_result``, which at a process's first result covers this process
    alone; the difference is the session's earlier spend, taken off every result after."""

    models: dict[str, tuple[TokenUsage, float]]  # model -> (tokens, costUSD) before
    cost_usd: float


# The session's earlier spend is not known: its last process ended without a result line, so
# "since the last result" spans it too (only the calls its transcript kept: checked with
# 2.1.332). Then only ``usage`` (this process's main loop) and the stream are this process's.
UNKNOWN_BEFORE = SessionBefore({}, -1.0)


def session_before(data: dict[str, Any], earlier_settled: bool = True) -> SessionBefore | None:
    """From a process's first result line: the session's spend before it, or None (a new
    session, or a CLI that reports its figures per process). ``earlier_settled``: the
    session's previous process ended with a result line."""
    since = _model_figures(data.get("model_usage_since_last_result"))
    whole = _model_figures(data.get("modelUsage"))
    if since is None or whole is None:
        return None
    now = _by_model(whole)
    added = _by_model(since)
    if now == added and earlier_settled:
        return None  # nothing before this process
    if not earlier_settled:
        return UNKNOWN_BEFORE
    models = {}
    for model, (usage, cost) in now.items():
        new_usage, new_cost = added.get(model, (ZERO, 0.0))
        models[model] = (_minus(usage, new_usage), max(cost - new_cost, 0.0))
    total = usd(data.get("total_cost_usd"))
    whole_cost = total if total is not None else sum(c for _, c in now.values())
    cost_before = max(whole_cost - sum(c for _, c in added.values()), 0.0)
    return SessionBefore(models, cost_before)


def _by_model(figures: tuple[ModelFigures, ...]) -> dict[str, tuple[TokenUsage, float]]:
    out: dict[str, tuple[TokenUsage, float]] = {}
    for m in figures:
        usage, cost = out.get(m.model, (ZERO, 0.0))
        out[m.model] = (usage + m.usage, cost + (m.cost_usd or 0.0))
    return out


def _minus(a: TokenUsage, b: TokenUsage) -> TokenUsage:
    return TokenUsage(
        max(a.input - b.input, 0),
        max(a.output - b.output, 0),
        max(a.cache_creation - b.cache_creation, 0),
        max(a.cache_read - b.cache_read, 0),
    )


def _without(models: tuple[ModelFigures, ...], before: SessionBefore) -> tuple[ModelFigures, ...]:
    out = []
    for m in models:
        usage, cost = before.models.get(m.model, (ZERO, 0.0))
        own = None if m.cost_usd is None else max(m.cost_usd - cost, 0.0)
        # One entry per model is the CLI's form: what is taken off one is not taken again.
        before.models.pop(m.model, None)
        out.append(ModelFigures(m.model, _minus(m.usage, usage), m.cache_write_1h, own))
    return tuple(out)


def read_result(data: dict[str, Any], before: SessionBefore | None = None) -> ResultFigures:
    """Tokens are the sum of ``modelUsage`` over models (the whole run, subagents included),
    else ``usage`` (the main loop only) when ``modelUsage`` is missing or all zero. With
    ``before`` (a resumed session's earlier spend), only what this process added."""
    if before is UNKNOWN_BEFORE:
        plain = data.get("usage")
        return ResultFigures(api_usage(plain)[0] if isinstance(plain, dict) else None, (), None)
    models = _model_figures(data.get("modelUsage"))
    if before is not None and models is not None:
        models = _without(models, SessionBefore(dict(before.models), before.cost_usd))
    models_total = sum((m.usage for m in models or ()), ZERO)
    plain = data.get("usage")
    if models_total:
        figures: tuple[TokenUsage | None, tuple[ModelFigures, ...]] = (models_total, models or ())
    elif isinstance(plain, dict):
        figures = (api_usage(plain)[0], ())
    elif models is not None:
        figures = (ZERO, models)
    else:
        figures = (None, ())
    total_cost = usd(data.get("total_cost_usd"))
    if before is not None and total_cost is not None:
        total_cost = max(total_cost - before.cost_usd, 0.0)
    return ResultFigures(*figures, total_cost_usd=total_cost)


def _model_figures(raw: object) -> tuple[ModelFigures, ...] | None:
    if not isinstance(raw, dict):
        return None
    models = []
    for key, entry in raw.items():
        if not isinstance(entry, dict):
            continue
        five_min = count(entry.get("cacheCreationEphemeral5mInputTokens"))
        one_hour = count(entry.get("cacheCreationEphemeral1hInputTokens"))
        usage = TokenUsage(
            input=count(entry.get("inputTokens")),
            # thinkingTokens is part of outputTokens, as thinking_tokens is of an API call's
            # output_tokens: never added to it, but output is never less than it.
            output=max(count(entry.get("outputTokens")), count(entry.get("thinkingTokens"))),
            cache_creation=max(count(entry.get("cacheCreationInputTokens")), five_min + one_hour),
            cache_read=count(entry.get("cacheReadInputTokens")),
        )
        canonical = entry.get("canonicalModel")
        model = canonical if isinstance(canonical, str) and canonical else str(key)
        models.append(ModelFigures(model, usage, one_hour, usd(entry.get("costUSD"))))
    return tuple(models)


# The CLI's cost and an estimate of the same calls differ in the last bits of a float.
_COST_REL_TOLERANCE = 1e-9


@dataclass(frozen=True, slots=True)
class UsageDiscrepancy:
    """A result line that reported less than the stream had already shown.

    The tracker keeps the larger figure of each kind, and the larger cost: a budget never goes
    down. ``stream`` and ``stream_cost_usd`` are what had been counted when the result line
    came; ``result_cost_usd`` is the CLI's own cost (None when it gave none).
    """

    stream: TokenUsage
    result: TokenUsage
    stream_cost_usd: float
    result_cost_usd: float | None

    @property
    def kinds(self) -> tuple[str, ...]:
        """The kinds of tokens the result reported fewer of."""
        return tuple(k for k in KINDS if getattr(self.result, k) < getattr(self.stream, k))

    @property
    def kept(self) -> TokenUsage:
        return larger(self.stream, self.result)

    @property
    def cost_kept_from_stream(self) -> bool:
        """Whether the CLI's cost was below the stream's estimate (beyond float noise)."""
        reported = self.result_cost_usd
        return (
            reported is not None
            and reported < self.stream_cost_usd
            and not math.isclose(reported, self.stream_cost_usd, rel_tol=_COST_REL_TOLERANCE)
        )

    @property
    def found(self) -> bool:
        return bool(self.kinds) or self.cost_kept_from_stream

    def describe(self) -> str:
        """One line, e.g. ``result reported 1,200 output tokens, the stream showed 1,500:
        kept 1,500``; kinds and the cost, in that order, joined by ``; ``."""
        parts = []
        for kind in self.kinds:
            reported, shown = getattr(self.result, kind), getattr(self.stream, kind)
            parts.append(
                f"result reported {reported:,} {kind} tokens, the stream showed {shown:,}: "
                f"kept {shown:,}"
            )
        if self.cost_kept_from_stream:
            assert self.result_cost_usd is not None
            shown_usd = format_usd(self.stream_cost_usd)
            parts.append(
                f"result reported {format_usd(self.result_cost_usd)}, "
                f"the stream's estimate was {shown_usd}: kept {shown_usd}"
            )
        return "; ".join(parts)
