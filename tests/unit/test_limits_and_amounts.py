"""Limits at their edges (budget keys, ranges, what a USD limit may look like) and amounts
that are very small or very large, as every report prints them."""

from __future__ import annotations

import pytest

from budget_core import (
    MAX_TOKENS,
    MAX_USD,
    BudgetLevel,
    BudgetState,
    Unit,
    check_budget_key,
    format_budget_amounts,
    format_percent,
    format_tokens,
    format_usd,
    parse_budget_spec,
    parse_limit,
)

# -- budget keys -------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["/analyze", "review-auth", "docs_1", "/a.b:c", "тест"])
def test_good_budget_keys(key: str) -> None:
    assert check_budget_key(key) == key


@pytest.mark.parametrize(
    ("key", "problem"),
    [
        ("", "the budget key is empty"),
        ("/a=", "budget key '/a=' contains '='"),
        ("/a b", "budget key '/a b' contains whitespace"),
        ("/a\u3000b", "contains whitespace"),  # ideographic space
        ("/a\tb", "contains a control character (U+0009)"),
        ("/a\nb", "contains a control character (U+000A)"),
        ("/a\x1b[31m", "contains a control character (U+001B)"),
        ("/a\u200bb", "contains an unprintable character (U+200B)"),  # zero-width space
        ("overall", "'overall' is the key of the overall budget, not of a command"),
    ],
)
def test_bad_budget_keys(key: str, problem: str) -> None:
    with pytest.raises(ValueError) as info:
        check_budget_key(key)
    assert problem in str(info.value)


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ("/a b=10k", "budget '/a b=10k': budget key '/a b' contains whitespace"),
        ("/a==5", "budget '/a==5': limit '=5' is not a number"),
        ("/a\x00=5", "contains a control character (U+0000)"),
        ("overall=5k", "key of the overall budget"),
    ],
)
def test_budget_specs_with_bad_keys(spec: str, problem: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_budget_spec(spec)
    assert problem in str(info.value)


# -- limits: ranges and spellings --------------------------------------------------------------


def test_token_limits_stop_at_ten_to_the_fifteen() -> None:
    assert MAX_TOKENS == 10**15
    assert parse_limit("1000000000000000") == 10**15
    assert parse_limit("1_000_000B") == 10**15
    for text in ("1000000000000001", "1000001B", "9" * 400):
        with pytest.raises(ValueError, match="over the largest token budget, 10\\^15"):
            parse_limit(text)


@pytest.mark.parametrize("text", ["5k", "1.5M", "2b", "1e3", "1E3", "1_000", "5.", "$5k", "inf"])
def test_usd_limits_are_plain_amounts(text: str) -> None:
    with pytest.raises(ValueError, match=r"is not a plain amount like 5, 2\.50 or \$2\.50"):
        parse_limit(text, Unit.USD)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("5", 5.0), ("2.50", 2.5), ("$2.50", 2.5), ("0.0000001", 1e-7), ("1000000000", 1e9)],
)
def test_usd_limits_accepted(text: str, expected: float) -> None:
    assert parse_limit(text, Unit.USD) == expected


def test_usd_limits_stop_at_a_billion_and_above_zero() -> None:
    assert MAX_USD == 1_000_000_000
    with pytest.raises(ValueError, match="over the largest cost budget, \\$1,000,000,000"):
        parse_limit("1000000000.01", Unit.USD)
    with pytest.raises(ValueError, match="too small to hold"):
        parse_limit("0." + "0" * 400 + "1", Unit.USD)  # > 0, but 0.0 as a float


# -- amounts as they print ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "text"),
    [
        (1e-7, "$1.0e-07"),
        (0.0000123, "$1.2e-05"),
        (0.00004999, "$5.0e-05"),
        (0.00005, "$0.0001"),
        (0.99999, "$1.00"),
        (999_999.99, "$1M"),
        (1_500_000, "$1.5M"),
        (1e9, "$1B"),
        (-1e-7, "-$1.0e-07"),
    ],
)
def test_format_usd_at_the_edges(amount: float, text: str) -> None:
    assert format_usd(amount) == text


@pytest.mark.parametrize("amount", [1e-12, 3e-9, 1e-7, 4.9e-5])
def test_a_small_amount_never_reads_as_zero(amount: float) -> None:
    assert format_usd(amount) not in ("$0.0000", "$0.00")


@pytest.mark.parametrize(
    ("count", "text"),
    [
        (999_000_000_000, "999B"),
        (10**12, "1T"),
        (1_234_000_000_000, "1.2T"),
        (10**15, "1000T"),
        (999_999_999_999_999, "1000T"),
    ],
)
def test_format_tokens_up_to_the_largest_limit(count: int, text: str) -> None:
    assert format_tokens(count) == text


@pytest.mark.parametrize(
    ("used", "limit", "text"),
    [(999, 100, "999%"), (999.6, 100, ">999%"), (0.01, 1e-7, ">999%"), (10**15, 1, ">999%")],
)
def test_format_percent_keeps_its_width(used: float, limit: float, text: str) -> None:
    assert format_percent(used, limit) == text
    assert len(text) <= 5


def test_budget_amounts_of_extreme_limits() -> None:
    tiny = BudgetState("/a", Unit.USD, 1e-7, 0.0, BudgetLevel.OK)
    huge = BudgetState("overall", Unit.TOKENS, 10**15, 1_234_000_000_000, BudgetLevel.OK)
    assert format_budget_amounts(tiny) == "$0.0000/$1.0e-07"
    assert format_budget_amounts(huge) == "1.2T/1000T tokens"
