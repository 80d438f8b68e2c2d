"""TokenUsage: an immutable value with a total, arithmetic and a dict form."""

from __future__ import annotations

import dataclasses

import pytest

from budget_core import ZERO, TokenUsage


def test_total_adds_all_four_buckets() -> None:
    usage = TokenUsage(input=1, output=20, cache_creation=300, cache_read=4000)
    assert usage.total == 4321


def test_defaults_are_zero_and_zero_constant_matches() -> None:
    assert TokenUsage() == ZERO
    assert ZERO.total == 0
    assert (ZERO.input, ZERO.output, ZERO.cache_creation, ZERO.cache_read) == (0, 0, 0, 0)


def test_addition_is_per_bucket() -> None:
    a = TokenUsage(1, 2, 3, 4)
    b = TokenUsage(10, 20, 30, 40)
    assert a + b == TokenUsage(11, 22, 33, 44)
    assert a + ZERO == a


def test_subtraction_is_per_bucket_and_may_go_negative() -> None:
    a = TokenUsage(11, 22, 33, 44)
    b = TokenUsage(1, 2, 3, 50)
    assert a - b == TokenUsage(10, 20, 30, -6)
    assert (a - b) + b == a


def test_truthiness_is_false_only_when_every_bucket_is_zero() -> None:
    assert not ZERO
    assert TokenUsage(input=1)
    assert TokenUsage(output=1)
    assert TokenUsage(cache_creation=1)
    assert TokenUsage(cache_read=1)
    # A delta that cancels out in total is still a change.
    assert TokenUsage(input=5, output=-5)


def test_as_dict_has_every_bucket_and_the_total() -> None:
    assert TokenUsage(1, 2, 3, 4).as_dict() == {
        "input": 1,
        "output": 2,
        "cache_creation": 3,
        "cache_read": 4,
        "total": 10,
    }


def test_token_usage_is_frozen() -> None:
    usage = TokenUsage(1, 2, 3, 4)
    with pytest.raises(dataclasses.FrozenInstanceError):
        usage.input = 5  # type: ignore[misc]
    assert usage.input == 1


def test_token_usage_is_hashable_and_compares_by_value() -> None:
    assert {TokenUsage(1, 2, 3, 4), TokenUsage(1, 2, 3, 4)} == {TokenUsage(1, 2, 3, 4)}
    assert TokenUsage(1, 2, 3, 4) != TokenUsage(1, 2, 4, 3)
