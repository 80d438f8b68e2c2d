"""Budget specs as users type them: ``/analyze=50k``, ``1.5M``, ``2_000``, ``/review=2.50``."""

from __future__ import annotations

import math
import re
import unicodedata
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from budget_core.budgets import OVERALL, Unit
from budget_core.windows import RUN, Window, parse_window

# The largest limits: tokens as the tracker's largest count (10**15), USD a billion dollars.
# Past them a limit is a typo, and the figures would no longer read in a bar or a table.
MAX_TOKENS = 10**15
MAX_USD = 1_000_000_000

_SUFFIXES = {"": 1, "k": 1_000, "m": 1_000_000, "b": 1_000_000_000}
_ALLOWED_TOKENS = "a number like 50000, 50k, 1.5M or 2_000"
_ALLOWED_USD = "a plain amount like 5, 2.50 or $2.50 (no k/M suffix, no exponent)"
_TOKENS = re.compile(r"^([0-9][0-9_]*(?:\.[0-9_]+)?|\.[0-9_]+)([kmb]?)$", re.IGNORECASE)
_USD = re.compile(r"^([0-9]+(?:\.[0-9]+)?|\.[0-9]+)$")
# Characters that break a log line or a table, or hide what a name says: controls (newline,
# tab, ESC), invisible format characters (bidi overrides), lone surrogates, line separators.
_UNPRINTABLE = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


@dataclass(frozen=True, slots=True)
class BudgetSpec:
    key: str
    limit: float
    unit: Unit
    window: Window = RUN


def unprintable_character(text: str) -> str | None:
    """``"a control character (U+000A)"`` for the first character that would break a log
    line or a table, or None."""
    for char in text:
        category = unicodedata.category(char)
        if category in _UNPRINTABLE:
            kind = "a control character" if category == "Cc" else "an unprintable character"
            return f"{kind} (U+{ord(char):04X})"
    return None


def check_budget_key(key: str) -> str:
    """``key`` if it can name a budget: not empty, no ``=`` (``KEY=LIMIT`` splits there), no
    whitespace or unprintable characters, not ``overall``. Raises ``ValueError`` saying why."""
    if not key:
        raise ValueError("the budget key is empty")
    if key == OVERALL:
        raise ValueError(f"{OVERALL!r} is the key of the overall budget, not of a command")
    if "=" in key:
        raise ValueError(f"budget key {key!r} contains '='")
    if problem := unprintable_character(key):
        raise ValueError(f"budget key {key!r} contains {problem}")
    if any(char.isspace() for char in key):
        raise ValueError(f"budget key {key!r} contains whitespace")
    return key


def parse_limit(text: str, unit: Unit = Unit.TOKENS) -> float:
    """A limit > 0: tokens are whole numbers (``50k``, ``1.5M``, ``2_000``) up to 10**15, USD
    plain amounts (``5``, ``2.50``, ``$2.50``) up to a billion.

    Raises ``ValueError`` with a message that names the bad part.
    """
    raw = text.strip()
    body = raw[1:] if unit is Unit.USD and raw.startswith("$") else raw
    if not body:
        raise ValueError("the limit is empty")
    if body.startswith("-"):
        raise ValueError(f"limit {raw!r} is negative; a budget must be > 0")
    if unit is Unit.USD:
        return _usd(raw, body)
    match = _TOKENS.match(body)
    if match is None or "__" in body or body.endswith("_"):
        raise ValueError(f"limit {raw!r} is not {_ALLOWED_TOKENS}")
    digits, suffix = match.group(1).replace("_", ""), match.group(2).lower()
    try:
        value = Decimal(digits) * _SUFFIXES[suffix]
    except InvalidOperation:
        raise ValueError(f"limit {raw!r} is not a number") from None
    if value <= 0:
        raise ValueError(f"limit {raw!r} is zero; a budget must be > 0")
    if value != value.to_integral_value():
        raise ValueError(f"limit {raw!r} is not a whole number of tokens")
    if value > MAX_TOKENS:
        raise ValueError(f"limit {raw!r} is over the largest token budget, 10^15")
    return int(value)


def _usd(raw: str, body: str) -> float:
    if _USD.match(body) is None:
        raise ValueError(f"limit {raw!r} is not {_ALLOWED_USD}")
    value = Decimal(body)
    if value <= 0:
        raise ValueError(f"limit {raw!r} is zero; a budget must be > 0")
    if value > MAX_USD:
        raise ValueError(f"limit {raw!r} is over the largest cost budget, ${MAX_USD:,}")
    result = float(value)
    if not math.isfinite(result) or result <= 0:
        raise ValueError(f"limit {raw!r} is too small to hold")
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
    key, _, limit_text = spec.partition("=")
    key = key.strip()
    if not key:
        raise ValueError(f"budget {spec!r} has no key before '=' (e.g. /analyze=50k)")
    try:
        check_budget_key(key)
        limit, window = parse_windowed_limit(limit_text, unit)
    except ValueError as exc:
        raise ValueError(f"budget {spec!r}: {exc}") from None
    return BudgetSpec(key, limit, unit, window)
