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


def read_result(data: dict[str, Any]) -> ResultFigures:
    """Tokens are the sum of ``modelUsage`` over models (the whole run, subagents included),
    else ``usage`` (the main loop only) when ``modelUsage`` is missing or all zero."""
    models = _model_figures(data.get("modelUsage"))
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
    return ResultFigures(*figures, total_cost_usd=usd(data.get("total_cost_usd")))


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
