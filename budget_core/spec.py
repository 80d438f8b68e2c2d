"""Budget specs as users type them: ``/analyze=50k``, ``1.5M``, ``2_000``, ``/review=2.50``."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from budget_core.budgets import Unit
from budget_core.windows import RUN, Window, parse_window

_SUFFIXES = {"": 1, "k": 1_000, "m": 1_000_000, "b": 1_000_000_000}
_ALLOWED_TOKENS = "a number like 50000, 50k, 1.5M or 2_000"
_ALLOWED_USD = "a number like 2.50 or $2.50"
_NUMBER = re.compile(r"^([0-9][0-9_]*(?:\.[0-9_]+)?|\.[0-9_]+)([kmb]?)$", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class BudgetSpec:
    key: str
    limit: float
    unit: Unit
    window: Window = RUN


def parse_limit(text: str, unit: Unit = Unit.TOKENS) -> float:
    """A limit > 0: tokens are whole numbers (``50k``, ``1.5M``, ``2_000``), USD may be ``$2.50``.

    Raises ``ValueError`` with a message that names the bad part.
    """
    raw = text.strip()
    body = raw[1:] if unit is Unit.USD and raw.startswith("$") else raw
    if not body:
        raise ValueError("the limit is empty")
    if body.startswith("-"):
        raise ValueError(f"limit {raw!r} is negative; a budget must be > 0")
    match = _NUMBER.match(body)
    if match is None or "__" in body or body.endswith("_"):
        allowed = (
            "a number like 2.50 or $2.50"
            if unit is Unit.USD
            else "a number like 50000, 50k, 1.5M or 2_000"
        )
        raise ValueError(f"limit {raw!r} is not {allowed}")
    digits, suffix = match.group(1).replace("_", ""), match.group(2).lower()
    try:
        value = Decimal(digits) * _SUFFIXES[suffix]
    except InvalidOperation:
        raise ValueError(f"limit {raw!r} is not a number") from None
    if value <= 0:
        raise ValueError(f"limit {raw!r} is zero; a budget must be > 0")
    if unit is Unit.TOKENS:
        if value != value.to_integral_value():
            raise ValueError(f"limit {raw!r} is not a whole number of tokens")
        return int(value)
    result = float(value)
    if not math.isfinite(result):
        raise ValueError(f"limit {raw!r} is too large")
    return result


def parse_windowed_limit(text: str, unit: Unit = Unit.TOKENS) -> tuple[float, Window]:
    """``LIMIT`` or ``LIMIT/WINDOW`` (``2M/day``, ``50/5h``); a bare limit is per run."""
    limit_text, slash, window_text = text.partition("/")
    window = parse_window(window_text) if slash else RUN
    return parse_limit(limit_text, unit), window


def parse_budget_spec(spec: str, unit: Unit = Unit.TOKENS) -> BudgetSpec:
    """``KEY=LIMIT`` -> the key and its limit; raises ``ValueError`` naming the bad part."""
    if "=" not in spec:
        raise ValueError(f"budget {spec!r} must look like KEY=LIMIT, e.g. /analyze=50k")
    key, _, limit_text = spec.rpartition("=")
    key = key.strip()
    if not key:
        raise ValueError(f"budget {spec!r} has no key before '=' (e.g. /analyze=50k)")
    try:
        limit, window = parse_windowed_limit(limit_text, unit)
    except ValueError as exc:
        raise ValueError(f"budget {spec!r}: {exc}") from None
    return BudgetSpec(key, limit, unit, window)
