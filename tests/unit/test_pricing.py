"""Price table: the bundled prices, model matching, costs with the cache-write split, overrides."""

from __future__ import annotations

import json
from typing import Any

import pytest

from budget_core import ModelPrices, PriceTable, TokenUsage, UsageTracker, default_price_table

MILLION = 1_000_000


def prices_of(model: str | None) -> tuple[float, float, float, float, float]:
    family, _ = default_price_table().lookup(model)
    return (
        family.input,
        family.output,
        family.cache_write_5m,
        family.cache_write_1h,
        family.cache_read,
    )


# -- the bundled table matches the shared notes ---------------------------------------------


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("claude-opus-4-5", (5, 25, 6.25, 10, 0.5)),
        ("claude-opus-4-5-20251101", (5, 25, 6.25, 10, 0.5)),
        ("claude-opus-4-8", (5, 25, 6.25, 10, 0.5)),
        ("claude-opus-4-8[1m]", (5, 25, 6.25, 10, 0.5)),
        ("claude-opus-5", (5, 25, 6.25, 10, 0.5)),
        ("claude-opus-5-20260101", (5, 25, 6.25, 10, 0.5)),
        ("claude-opus-5-5", (4, 20, 5, 8, 0.2)),
        ("claude-opus-5-5[1m]", (4, 20, 5, 8, 0.2)),
        ("claude-opus-5-5-20270301", (4, 20, 5, 8, 0.2)),
        ("claude-sonnet-4-5", (3, 15, 3.75, 6, 0.3)),
        ("claude-sonnet-4-20250514", (3, 15, 3.75, 6, 0.3)),
        ("claude-haiku-4-5-20251001", (1, 5, 1.25, 2, 0.1)),
        ("claude-opus-4-1-20250805", (15, 75, 18.75, 30, 1.5)),
        ("claude-opus-4-20250514", (15, 75, 18.75, 30, 1.5)),
        ("CLAUDE-SONNET-4-5", (3, 15, 3.75, 6, 0.3)),
    ],
)
def test_bundled_prices_per_family(model: str, expected: tuple[float, ...]) -> None:
    assert prices_of(model) == expected
    assert default_price_table().lookup(model)[1] is True


@pytest.mark.parametrize("model", [None, "", "claude-mystery-9", "gpt-4o"])
def test_unknown_models_get_the_default_family(model: str | None) -> None:
    table = default_price_table()
    family, known = table.lookup(model)
    assert family is table.default
    assert known is False
    assert table.default.name == "opus-4.5+"


def test_default_table_is_loaded_once() -> None:
    assert default_price_table() is default_price_table()


# -- costs ----------------------------------------------------------------------------------


def test_cost_prices_each_bucket() -> None:
    opus = default_price_table().lookup("claude-opus-4-8")[0]
    usage = TokenUsage(input=MILLION, output=2 * MILLION, cache_creation=0, cache_read=4 * MILLION)
    assert opus.cost(usage) == pytest.approx(5 + 50 + 2)


def test_cache_writes_split_into_five_minute_and_one_hour() -> None:
    sonnet = default_price_table().lookup("claude-sonnet-4-5")[0]
    usage = TokenUsage(cache_creation=3 * MILLION)
    assert sonnet.cost(usage) == pytest.approx(3 * 3.75)
    assert sonnet.cost(usage, cache_write_1h=3 * MILLION) == pytest.approx(3 * 6)
    assert sonnet.cost(usage, cache_write_1h=MILLION) == pytest.approx(2 * 3.75 + 6)


def test_one_hour_writes_are_clamped_to_the_cache_writes_there_are() -> None:
    haiku = default_price_table().lookup("claude-haiku-4-5")[0]
    usage = TokenUsage(cache_creation=MILLION)
    assert haiku.cost(usage, cache_write_1h=5 * MILLION) == pytest.approx(2.0)
    assert haiku.cost(usage, cache_write_1h=-7) == pytest.approx(1.25)


def test_cost_of_cli_fixture_usage_matches_the_clis_own_figures() -> None:
    # cli-text.jsonl and cli-sonnet.jsonl: the CLI reported 0.020452 and 0.0122712.
    usage = TokenUsage(input=1234, output=567, cache_creation=10, cache_read=89)
    table = default_price_table()
    assert table.lookup("claude-opus-4-8")[0].cost(usage) == pytest.approx(0.020452, abs=1e-12)
    assert table.lookup("claude-sonnet-4-5")[0].cost(usage) == pytest.approx(0.0122712, abs=1e-12)


# -- overriding the table -------------------------------------------------------------------


def _family(name: str, match: list[str], price: float = 1.0, **overrides: Any) -> dict[str, Any]:
    family: dict[str, Any] = {"name": name, "match": match}
    for field in ("input", "output", "cache_write_5m", "cache_write_1h", "cache_read"):
        family[field] = price
    family.update(overrides)
    return family


def test_from_json_builds_a_table_that_matches_in_order() -> None:
    table = PriceTable.from_json(
        json.dumps(
            {
                "default_family": "cheap",
                "families": [
                    _family("special", ["model-x-2"], 7.0),
                    _family("generic", ["model-x"], 3.0),
                    _family("cheap", ["Cheap"], 0.5),
                ],
            }
        )
    )
    assert table.lookup("model-x-2-pro") == (table.families[0], True)
    assert table.lookup("model-x-1")[0].name == "generic"
    assert table.lookup("CHEAP-ONE")[0].name == "cheap"  # match strings are case-insensitive
    assert table.lookup("other") == (table.default, False)
    assert table.default.name == "cheap"


def test_the_longest_matching_string_wins_whatever_the_order() -> None:
    # A generic family listed first must not take the models of a more specific one.
    table = PriceTable.from_json(
        json.dumps(
            {
                "families": [
                    _family("opus-5", ["opus-5"], 5.0),
                    _family("opus-5.5", ["opus-5-5"], 4.0),
                    _family("twin", ["opus-5"], 9.0),
                ]
            }
        )
    )
    assert table.lookup("claude-opus-5-5")[0].name == "opus-5.5"
    assert table.lookup("claude-opus-5")[0].name == "opus-5"  # on a tie, the earlier family


def test_the_newest_default_model_is_not_priced_as_the_generic_opus_5() -> None:
    table = default_price_table()
    assert table.lookup("claude-opus-5-5")[0] is not table.lookup("claude-opus-5")[0]
    assert table.lookup("claude-opus-5-5")[0].name == "opus-5.5"


def test_from_json_default_family_defaults_to_the_first() -> None:
    table = PriceTable.from_json(
        json.dumps({"families": [_family("a", ["a"]), _family("b", ["b"])]})
    )
    assert table.default.name == "a"


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("{not json", "not valid JSON"),
        ("[]", "'families' list"),
        ('{"families": {}}', "'families' list"),
        ('{"families": []}', "no families"),
        ('{"families": ["x"]}', "must be an object"),
        (json.dumps({"families": [{"name": "a", "match": []}]}), "non-empty 'match'"),
        (json.dumps({"families": [{"match": ["a"]}]}), "'name'"),
        (json.dumps({"families": [_family("a", ["a"], input=-1)]}), "'input'"),
        (json.dumps({"families": [_family("a", ["a"], output="5")]}), "'output'"),
        (json.dumps({"families": [_family("a", ["a"], cache_read=True)]}), "'cache_read'"),
        (json.dumps({"families": [_family("a", ["a"], cache_write_1h=None)]}), "'cache_write_1h'"),
        (json.dumps({"default_family": "zz", "families": [_family("a", ["a"])]}), "'zz'"),
    ],
)
def test_from_json_rejects_bad_tables_naming_the_problem(text: str, named: str) -> None:
    with pytest.raises(ValueError) as info:
        PriceTable.from_json(text)
    assert named in str(info.value)


def test_tracker_uses_an_overriding_table() -> None:
    table = PriceTable.from_json(json.dumps({"families": [_family("flat", ["opus"], 2.0)]}))
    tracker = UsageTracker(prices=table)
    line = json.dumps(
        {
            "type": "assistant",
            "message": {
                "id": "m1",
                "model": "claude-opus-4-8",
                "usage": {"input_tokens": MILLION, "output_tokens": MILLION},
            },
        }
    )
    tracker.feed_line(line)
    assert tracker.cost_usd == pytest.approx(4.0)
    assert tracker.cost_is_estimate


def test_model_prices_are_frozen() -> None:
    family = default_price_table().default
    assert isinstance(family, ModelPrices)
    with pytest.raises(AttributeError):
        family.input = 0  # type: ignore[misc]
