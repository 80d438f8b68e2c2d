"""Budget specs as users type them, and the plain-text renderings of numbers and bars."""

from __future__ import annotations

import dataclasses

import pytest

from budget_core import (
    BudgetSpec,
    Unit,
    format_percent,
    format_tokens,
    format_usd,
    parse_budget_spec,
    parse_limit,
    render_bar,
)

# -- parse_limit / parse_budget_spec --------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("50000", 50_000),
        ("50k", 50_000),
        ("50K", 50_000),
        ("1.5M", 1_500_000),
        ("1.5m", 1_500_000),
        ("2_000", 2_000),
        ("1_000_000", 1_000_000),
        ("1.5k", 1_500),
        (".5k", 500),
        ("2B", 2_000_000_000),
        (" 7 ", 7),
        ("1", 1),
    ],
)
def test_parse_limit_accepts_token_counts(text: str, expected: int) -> None:
    value = parse_limit(text)
    assert value == expected
    assert isinstance(value, int)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("2.50", 2.5), ("$2.50", 2.5), ("$0.01", 0.01), ("10", 10.0), (".5", 0.5)],
)
def test_parse_limit_accepts_usd(text: str, expected: float) -> None:
    assert parse_limit(text, Unit.USD) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("text", "unit", "named"),
    [
        ("", Unit.TOKENS, "empty"),
        ("   ", Unit.TOKENS, "empty"),
        ("0", Unit.TOKENS, "'0' is zero"),
        ("0k", Unit.TOKENS, "'0k' is zero"),
        ("0.00", Unit.USD, "'0.00' is zero"),
        ("-5", Unit.TOKENS, "'-5' is negative"),
        ("-2.50", Unit.USD, "'-2.50' is negative"),
        ("abc", Unit.TOKENS, "'abc' is not a number"),
        ("5x", Unit.TOKENS, "'5x' is not a number"),
        ("1e5", Unit.TOKENS, "'1e5' is not a number"),
        ("1__0", Unit.TOKENS, "'1__0'"),
        ("1_", Unit.TOKENS, "'1_'"),
        ("nan", Unit.TOKENS, "'nan'"),
        ("inf", Unit.USD, "'inf'"),
        ("1.5", Unit.TOKENS, "'1.5' is not a whole number"),
        ("$5", Unit.TOKENS, "'$5'"),
        ("$", Unit.USD, "empty"),
        ("two dollars", Unit.USD, "'two dollars' is not a plain amount like 5, 2.50"),
    ],
)
def test_parse_limit_rejects_bad_limits_naming_them(text: str, unit: Unit, named: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_limit(text, unit)
    assert named in str(info.value)


def test_parse_budget_spec_gives_key_and_limit() -> None:
    assert parse_budget_spec("/analyze=50k") == BudgetSpec("/analyze", 50_000, Unit.TOKENS)
    assert parse_budget_spec(" /review = 1.5M ") == BudgetSpec("/review", 1_500_000, Unit.TOKENS)
    assert parse_budget_spec("/fix=2_000") == BudgetSpec("/fix", 2_000, Unit.TOKENS)
    assert parse_budget_spec("my-task=50000") == BudgetSpec("my-task", 50_000, Unit.TOKENS)


def test_parse_budget_spec_for_usd() -> None:
    spec = parse_budget_spec("/review=$2.50", Unit.USD)
    assert spec.key == "/review"
    assert spec.limit == pytest.approx(2.5)
    assert spec.unit is Unit.USD


def test_parse_budget_spec_splits_at_the_first_equals_sign() -> None:
    # A key never holds '=', so "/a==5" is the key /a with the limit "=5", which is refused.
    with pytest.raises(ValueError, match="limit '=5' is not a number"):
        parse_budget_spec("/a==5")


@pytest.mark.parametrize(
    ("spec", "named"),
    [
        ("=50k", "no key"),
        ("  =50k", "no key"),
        ("/analyze", "KEY=LIMIT"),
        ("/analyze=", "empty"),
        ("/analyze=0", "'0' is zero"),
        ("/analyze=-10k", "'-10k' is negative"),
        ("/analyze=lots", "'lots' is not a number"),
        ("/analyze=1.5", "'1.5' is not a whole number"),
    ],
)
def test_parse_budget_spec_rejects_bad_specs_naming_the_bad_part(spec: str, named: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_budget_spec(spec)
    message = str(info.value)
    assert named in message
    assert repr(spec) in message  # the whole spec is quoted too, so the user finds it


def test_budget_spec_is_frozen() -> None:
    spec = parse_budget_spec("/a=5")
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.limit = 6  # type: ignore[misc]


# -- format_tokens --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("count", "text"),
    [
        (0, "0"),
        (7, "7"),
        (950, "950"),
        (999, "999"),
        (1_000, "1K"),
        (1_234, "1.2K"),
        (45_600, "45.6K"),
        (99_949, "99.9K"),
        (123_000, "123K"),
        (999_499, "999K"),
        (999_999, "1M"),
        (1_000_000, "1M"),
        (3_400_000, "3.4M"),
        (3_456_789, "3.5M"),
        (12_345_678_901, "12.3B"),
        (-1_500, "-1.5K"),
    ],
)
def test_format_tokens(count: int, text: str) -> None:
    assert format_tokens(count) == text


# -- format_usd / format_percent ------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "text"),
    [(0, "$0.0000"), (0.01234, "$0.0123"), (1, "$1.00"), (12.345, "$12.35"), (1234.5, "$1,234.50")],
)
def test_format_usd(amount: float, text: str) -> None:
    assert format_usd(amount) == text


@pytest.mark.parametrize(
    ("used", "limit", "text"), [(50, 200, "25%"), (2, 3, "67%"), (150, 100, "150%"), (1, 0, "inf%")]
)
def test_format_percent(used: float, limit: float, text: str) -> None:
    assert format_percent(used, limit) == text


# -- render_bar -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("used", "limit", "bar"),
    [
        (0, 100, "[--------------------]"),
        (50, 100, "[##########----------]"),
        (70, 100, "[##############------]"),
        (99, 100, "[###################-]"),
        (100, 100, "[####################]"),
        (101, 100, "[###################!]"),
        (10_000, 100, "[###################!]"),
        (-5, 100, "[--------------------]"),
        (1, 0, "[###################!]"),
    ],
)
def test_render_bar(used: float, limit: float, bar: str) -> None:
    assert render_bar(used, limit) == bar


@pytest.mark.parametrize("width", [1, 2, 5, 20, 57])
@pytest.mark.parametrize("used", [0, 1, 33, 50, 99, 100, 101, 500])
def test_render_bar_keeps_its_width_and_is_plain_ascii(width: int, used: int) -> None:
    bar = render_bar(used, 100, width)
    assert len(bar) == width + 2
    assert bar.isascii()
    assert bar[0] == "[" and bar[-1] == "]"
    assert set(bar[1:-1]) <= {"#", "-", "!"}
    assert ("!" in bar) is (used > 100)
    if used > 100:
        assert bar[-2] == "!"


def test_render_bar_fill_never_shrinks_as_use_grows() -> None:
    filled = [render_bar(u, 100, 20).count("#") for u in range(101)]
    assert filled == sorted(filled)
    assert filled[0] == 0 and filled[-1] == 20


def test_render_bar_rejects_a_width_below_one() -> None:
    with pytest.raises(ValueError, match="width"):
        render_bar(1, 2, 0)


@pytest.mark.parametrize(("amount", "text"), [(-0.5, "-$0.5000"), (-12.5, "-$12.50")])
def test_format_usd_puts_the_sign_before_the_dollar(amount, text):
    assert format_usd(amount) == text
