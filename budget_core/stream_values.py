"""Values out of the CLI's stream-json, read leniently: every numeric field may be null,
missing, of the wrong type or absurd (shared stream-json notes, rule 7)."""

from __future__ import annotations

import math

from budget_core.usage import ZERO, TokenUsage

# No API call comes near this many tokens; a larger number is corrupt output, and would
# overflow float arithmetic (cost, budget fractions) if it were counted.
_MAX_COUNT = 10**15


def count(value: object) -> int:
    """A token count: null, missing, negative, absurdly large or not a number is 0."""
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return value if 0 < value <= _MAX_COUNT else 0
    if isinstance(value, float) and math.isfinite(value) and 0 < value <= _MAX_COUNT:
        return int(value)
    return 0


def usd(value: object) -> float | None:
    """A cost, or None unless it is a finite number >= 0."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        amount = float(value)
    except OverflowError:  # an integer too large for a float
        return None
    return amount if math.isfinite(amount) and amount >= 0 else None


def api_usage(raw: object) -> tuple[TokenUsage, int]:
    """Usage from an API ``usage`` object, and how many cache writes were 1-hour ones.

    ``output_tokens`` already includes ``output_tokens_details.thinking_tokens``.
    """
    if not isinstance(raw, dict):
        return ZERO, 0
    usage = TokenUsage(
        input=count(raw.get("input_tokens")),
        output=count(raw.get("output_tokens")),
        cache_creation=count(raw.get("cache_creation_input_tokens")),
        cache_read=count(raw.get("cache_read_input_tokens")),
    )
    split = raw.get("cache_creation")
    one_hour = count(split.get("ephemeral_1h_input_tokens")) if isinstance(split, dict) else 0
    return usage, one_hour
