"""Price table for cost estimates before the CLI reports its own ``total_cost_usd``.

The table is data (``prices.json``) so users can override it without touching code.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources

from budget_core.usage import TokenUsage

_PER_MILLION = 1_000_000
_PRICE_FIELDS = ("input", "output", "cache_write_5m", "cache_write_1h", "cache_read")


@dataclass(frozen=True, slots=True)
class ModelPrices:
    """USD per million tokens for one model family."""

    name: str
    match: tuple[str, ...]
    input: float
    output: float
    cache_write_5m: float
    cache_write_1h: float
    cache_read: float

    def cost(self, usage: TokenUsage, cache_write_1h: int = 0) -> float:
        """Cost of ``usage``; ``cache_write_1h`` of its cache writes are 1-hour writes."""
        one_hour = min(max(cache_write_1h, 0), usage.cache_creation)
        five_min = usage.cache_creation - one_hour
        return (
            usage.input * self.input
            + usage.output * self.output
            + five_min * self.cache_write_5m
            + one_hour * self.cache_write_1h
            + usage.cache_read * self.cache_read
        ) / _PER_MILLION


@dataclass(frozen=True, slots=True)
class PriceTable:
    families: tuple[ModelPrices, ...]
    default: ModelPrices

    def lookup(self, model: str | None) -> tuple[ModelPrices, bool]:
        """The family for ``model`` and whether it was recognised (else the default).

        A model matches a family when its name contains one of the family's ``match``
        strings; the longest string that matches wins, whatever the order of the families
        (``claude-opus-5-5`` is ``opus-5-5``'s, not ``opus-5``'s), the earlier family on a tie.
        """
        if model:
            name = model.lower()
            best: ModelPrices | None = None
            longest = 0
            for family in self.families:
                for part in family.match:
                    if len(part) > longest and part in name:
                        best, longest = family, len(part)
            if best is not None:
                return best, True
        return self.default, False

    @classmethod
    def from_json(cls, text: str) -> PriceTable:
        """Build a table from JSON text; raises ``ValueError`` naming what is wrong."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"price table is not valid JSON: {exc}") from None
        if not isinstance(data, dict) or not isinstance(data.get("families"), list):
            raise ValueError("price table needs a 'families' list")
        families = tuple(_parse_family(item) for item in data["families"])
        if not families:
            raise ValueError("price table has no families")
        default_name = data.get("default_family", families[0].name)
        default = next((f for f in families if f.name == default_name), None)
        if default is None:
            raise ValueError(f"price table: default_family {default_name!r} is not a family")
        return cls(families, default)


def _parse_family(item: object) -> ModelPrices:
    if not isinstance(item, dict):
        raise ValueError("price table: each family must be an object")
    name = item.get("name")
    match = item.get("match")
    if not isinstance(name, str) or not isinstance(match, list) or not match:
        raise ValueError("price table: each family needs a 'name' and a non-empty 'match' list")
    prices: dict[str, float] = {}
    for field in _PRICE_FIELDS:
        value = item.get(field)
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise ValueError(f"price table: family {name!r} needs a number >= 0 for {field!r}")
        prices[field] = float(value)
    return ModelPrices(name=name, match=tuple(str(m).lower() for m in match), **prices)


@cache
def default_price_table() -> PriceTable:
    """The table bundled with the package."""
    text = resources.files("budget_core").joinpath("prices.json").read_text(encoding="utf-8")
    return PriceTable.from_json(text)
