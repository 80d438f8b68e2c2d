"""BudgetManager: limits per key and overall, levels, crossings, launch decisions, snapshots."""

from __future__ import annotations

import dataclasses
import re
from types import MappingProxyType

import pytest

from budget_core import (
    OVERALL,
    BudgetEvent,
    BudgetLevel,
    BudgetManager,
    KeySpend,
    LaunchAction,
    LevelCrossed,
    ModeChanged,
    SpendChanged,
    TokenUsage,
    Unit,
    level_for,
)


def tokens(n: int) -> TokenUsage:
    return TokenUsage(input=n)


def recorder(manager: BudgetManager) -> list[BudgetEvent]:
    events: list[BudgetEvent] = []
    manager.subscribe(events.append)
    return events


def crossings(events: list[BudgetEvent]) -> list[LevelCrossed]:
    return [e for e in events if isinstance(e, LevelCrossed)]


# -- levels ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("used", "expected"),
    [
        (0, BudgetLevel.OK),
        (69, BudgetLevel.OK),
        (70, BudgetLevel.WARNING),
        (89, BudgetLevel.WARNING),
        (90, BudgetLevel.CRITICAL),
        (99, BudgetLevel.CRITICAL),
        (100, BudgetLevel.EXCEEDED),
        (250, BudgetLevel.EXCEEDED),
    ],
)
def test_level_boundaries_of_a_token_budget(used: int, expected: BudgetLevel) -> None:
    assert level_for(used, 100) is expected
    manager = BudgetManager()
    manager.set_budget("/a", tokens=100)
    manager.charge("/a", "i1", tokens(used))
    (state,) = manager.snapshot().for_key("/a")
    assert state.level is expected


@pytest.mark.parametrize(
    ("used", "limit", "expected"),
    [
        (62_999, 70_000, BudgetLevel.WARNING),
        (63_000, 70_000, BudgetLevel.CRITICAL),  # exactly 90%
        (48_999, 70_000, BudgetLevel.OK),
        (49_000, 70_000, BudgetLevel.WARNING),  # exactly 70%
        (69_999, 70_000, BudgetLevel.CRITICAL),
        (70_000, 70_000, BudgetLevel.EXCEEDED),
        (0.7, 1.0, BudgetLevel.WARNING),
        (0.9, 1.0, BudgetLevel.CRITICAL),
        (0.69, 1.0, BudgetLevel.OK),
        (1.0, 1.0, BudgetLevel.EXCEEDED),
        (0, 0, BudgetLevel.EXCEEDED),
    ],
)
def test_level_boundaries_are_exact(used: float, limit: float, expected: BudgetLevel) -> None:
    assert level_for(used, limit) is expected


def test_levels_are_ordered_by_rank() -> None:
    ranks = [level.rank for level in BudgetLevel]
    assert ranks == sorted(ranks) == [0, 1, 2, 3]
    assert [level.value for level in BudgetLevel] == ["ok", "warning", "critical", "exceeded"]


# -- set_budget and charge ------------------------------------------------------------------


def test_charge_charges_the_key_and_the_overall_total() -> None:
    manager = BudgetManager()
    manager.set_budget("/a", tokens=1000)
    manager.set_budget("/b", tokens=1000)
    manager.set_overall(tokens=5000)
    manager.charge("/a", "a1", TokenUsage(100, 20, 3, 4), 0.5)
    manager.charge("/b", "b1", tokens(200), 0.25)
    snap = manager.snapshot()
    (a,) = snap.for_key("/a")
    (b,) = snap.for_key("/b")
    (overall,) = snap.for_key(OVERALL)
    assert a.used == 127
    assert b.used == 200
    assert overall.used == 327
    assert snap.spend["/a"] == KeySpend(TokenUsage(100, 20, 3, 4), 0.5)
    assert snap.total == KeySpend(TokenUsage(300, 20, 3, 4), 0.75)


def test_a_token_budget_counts_the_total_of_all_four_buckets() -> None:
    manager = BudgetManager()
    manager.set_budget("/a", tokens=100)
    manager.charge("/a", "i", TokenUsage(input=10, output=20, cache_creation=30, cache_read=40))
    assert manager.snapshot().for_key("/a")[0].used == 100
    assert manager.snapshot().for_key("/a")[0].level is BudgetLevel.EXCEEDED


def test_usd_and_token_budgets_on_one_key_are_separate() -> None:
    manager = BudgetManager()
    manager.set_budget("/a", tokens=1000, usd=1.0)
    manager.charge("/a", "i", tokens(100), cost_delta=0.95)
    states = {s.unit: s for s in manager.snapshot().for_key("/a")}
    assert states[Unit.TOKENS].level is BudgetLevel.OK
    assert states[Unit.USD].level is BudgetLevel.CRITICAL
    assert states[Unit.USD].used == pytest.approx(0.95)


def test_overall_budget_via_key_or_method_is_the_same_budget() -> None:
    one = BudgetManager()
    one.set_budget(OVERALL, tokens=100)
    two = BudgetManager()
    two.set_overall(tokens=100)
    for manager in (one, two):
        manager.charge("/x", "i", tokens(95))
        (state,) = manager.snapshot().for_key(OVERALL)
        assert state.is_overall
        assert state.level is BudgetLevel.CRITICAL


def test_charging_overall_directly_counts_once() -> None:
    manager = BudgetManager()
    manager.set_overall(tokens=100)
    manager.charge(OVERALL, "i", tokens(60))
    assert manager.snapshot().for_key(OVERALL)[0].used == 60


def test_spend_on_keys_without_a_budget_is_still_kept() -> None:
    manager = BudgetManager()
    manager.charge("/free", "i", tokens(7), 0.01)
    snap = manager.snapshot()
    assert snap.budgets == ()
    assert snap.spend["/free"].usage == tokens(7)
    assert snap.total.usage == tokens(7)


def test_setting_a_budget_after_spend_takes_the_level_from_spend() -> None:
    manager = BudgetManager()
    manager.charge("/a", "i", tokens(80))
    manager.set_budget("/a", tokens=100)
    assert manager.snapshot().for_key("/a")[0].level is BudgetLevel.WARNING


def test_snapshot_orders_overall_first_then_keys_as_set() -> None:
    manager = BudgetManager()
    manager.set_budget("/b", tokens=10)
    manager.set_budget("/a", tokens=10)
    manager.set_overall(tokens=10)
    assert [b.key for b in manager.snapshot().budgets] == [OVERALL, "/b", "/a"]
    assert manager.keys == (OVERALL, "/b", "/a")
    assert manager.has_budget("/a")
    assert not manager.has_budget("/c")


@pytest.mark.parametrize(
    ("tokens_limit", "usd_limit"),
    [(0, None), (-5, None), (None, 0.0), (None, -1.0), (True, None), ("100", None)],
)
def test_set_budget_rejects_limits_that_are_not_positive_numbers(
    tokens_limit: object, usd_limit: object
) -> None:
    manager = BudgetManager()
    with pytest.raises(ValueError, match="/a"):
        manager.set_budget("/a", tokens=tokens_limit, usd=usd_limit)  # type: ignore[arg-type]
    assert manager.snapshot().budgets == ()


def test_set_budget_rejects_an_empty_key() -> None:
    with pytest.raises(ValueError, match="key"):
        BudgetManager().set_budget("", tokens=10)


def test_state_fraction_and_remaining() -> None:
    manager = BudgetManager()
    manager.set_budget("/a", tokens=200)
    manager.charge("/a", "i", tokens(50))
    (state,) = manager.snapshot().for_key("/a")
    assert state.fraction == 0.25
    assert state.remaining == 150
    manager.charge("/a", "i", tokens(500))
    (state,) = manager.snapshot().for_key("/a")
    assert state.remaining == 0


def test_zero_charge_emits_nothing() -> None:
    manager = BudgetManager()
    events = recorder(manager)
    assert manager.charge("/a", "i", TokenUsage(), 0.0) == []
    assert events == []


# -- level crossings ------------------------------------------------------------------------


def test_each_crossing_is_told_once() -> None:
    manager = BudgetManager()
    manager.set_budget("/a", tokens=100)
    events = recorder(manager)
    steps = [(69, None), (1, BudgetLevel.WARNING), (5, None), (14, None)]
    steps += [(1, BudgetLevel.CRITICAL), (9, None), (1, BudgetLevel.EXCEEDED), (50, None)]
    for amount, expected in steps:
        returned = manager.charge("/a", "i", tokens(amount))
        told = crossings(events)
        events.clear()
        if expected is None:
            assert returned == [] and told == [], amount
        else:
            assert [c.budget.level for c in returned] == [expected]
            assert told == returned


def test_a_jump_over_several_levels_is_one_crossing() -> None:
    manager = BudgetManager()
    manager.set_budget("/a", tokens=100)
    (crossing,) = manager.charge("/a", "i", tokens(150))
    assert crossing.previous is BudgetLevel.OK
    assert crossing.budget.level is BudgetLevel.EXCEEDED
    assert crossing.budget.used == 150
    assert crossing.rising


def test_a_negative_correction_crosses_downwards() -> None:
    manager = BudgetManager()
    manager.set_budget("/a", tokens=100)
    manager.charge("/a", "i", tokens(95))
    (crossing,) = manager.charge("/a", "i", TokenUsage(output=-30))
    assert crossing.previous is BudgetLevel.CRITICAL
    assert crossing.budget.level is BudgetLevel.OK
    assert not crossing.rising


def test_key_and_overall_cross_in_one_charge() -> None:
    manager = BudgetManager()
    manager.set_budget("/a", tokens=100)
    manager.set_overall(tokens=1000)
    manager.charge("/b", "i", tokens(650))
    returned = manager.charge("/a", "i", tokens(80))
    assert {(c.budget.key, c.budget.level) for c in returned} == {
        ("/a", BudgetLevel.WARNING),
        (OVERALL, BudgetLevel.WARNING),
    }


def test_charge_tells_spend_changed_before_crossings() -> None:
    manager = BudgetManager()
    manager.set_budget("/a", tokens=10)
    events = recorder(manager)
    manager.charge("/a", "inst-1", tokens(10))
    assert events[0] == SpendChanged("/a", "inst-1")
    assert isinstance(events[1], LevelCrossed)
    assert len(events) == 2


def test_charges_to_another_key_do_not_cross_this_key() -> None:
    manager = BudgetManager()
    manager.set_budget("/a", tokens=10)
    assert manager.charge("/b", "i", tokens(1000)) == []
    assert manager.snapshot().for_key("/a")[0].level is BudgetLevel.OK


# -- launch decisions and mode --------------------------------------------------------------


def test_decide_launch_allows_when_nothing_is_exceeded() -> None:
    manager = BudgetManager(mode="block")
    manager.set_budget("/a", tokens=100)
    manager.charge("/a", "i", tokens(99))
    decision = manager.decide_launch("/a")
    assert decision.action is LaunchAction.ALLOW
    assert decision.allowed
    assert decision.reason is None


def test_decide_launch_warns_in_warn_mode_when_exceeded() -> None:
    manager = BudgetManager(mode="warn")
    manager.set_budget("/a", tokens=100)
    manager.charge("/a", "i", tokens(100))
    decision = manager.decide_launch("/a")
    assert decision.action is LaunchAction.WARN
    assert decision.allowed
    assert decision.reason is not None and "/a" in decision.reason
    assert [b.key for b in decision.exceeded] == ["/a"]


def test_decide_launch_blocks_in_block_mode_when_exceeded() -> None:
    manager = BudgetManager(mode="block")
    manager.set_budget("/a", tokens=100)
    manager.charge("/a", "i", tokens(100))
    decision = manager.decide_launch("/a")
    assert decision.action is LaunchAction.BLOCK
    assert not decision.allowed
    assert decision.reason is not None and "/a" in decision.reason


def test_an_exceeded_overall_budget_blocks_every_key() -> None:
    manager = BudgetManager(mode="block")
    manager.set_overall(usd=1.0)
    manager.charge("/a", "i", tokens(1), cost_delta=1.5)
    decision = manager.decide_launch("/never-charged")
    assert decision.action is LaunchAction.BLOCK
    assert decision.reason is not None and OVERALL in decision.reason


def test_another_keys_exceeded_budget_does_not_block_this_key() -> None:
    manager = BudgetManager(mode="block")
    manager.set_budget("/a", tokens=10)
    manager.set_budget("/b", tokens=10)
    manager.charge("/a", "i", tokens(20))
    assert manager.decide_launch("/b").action is LaunchAction.ALLOW
    assert manager.exceeded_for("/b") == ()
    assert [b.key for b in manager.exceeded_for("/a")] == ["/a"]


def test_set_mode_changes_decisions_and_emits_mode_changed() -> None:
    assert BudgetManager().mode == "warn"
    manager = BudgetManager()
    manager.set_budget("/a", tokens=10)
    manager.charge("/a", "i", tokens(10))
    events = recorder(manager)
    manager.set_mode("block")
    assert manager.mode == "block"
    assert events == [ModeChanged(mode="block", previous="warn")]
    assert manager.decide_launch("/a").action is LaunchAction.BLOCK


def test_set_mode_to_the_same_mode_emits_nothing() -> None:
    manager = BudgetManager(mode="block")
    events = recorder(manager)
    manager.set_mode("block")
    assert events == []


@pytest.mark.parametrize("bad", ["Block", "stop", "", "warn "])
def test_invalid_modes_are_rejected(bad: str) -> None:
    with pytest.raises(ValueError, match="warn, block"):
        BudgetManager(mode=bad)  # type: ignore[arg-type]
    manager = BudgetManager()
    events = recorder(manager)
    with pytest.raises(ValueError, match=re.escape(repr(bad))):
        manager.set_mode(bad)  # type: ignore[arg-type]
    assert manager.mode == "warn"
    assert events == []


# -- subscribers ----------------------------------------------------------------------------


def test_unsubscribe_stops_events() -> None:
    manager = BudgetManager()
    events: list[BudgetEvent] = []
    unsubscribe = manager.subscribe(events.append)
    manager.charge("/a", "i", tokens(1))
    assert len(events) == 1
    unsubscribe()
    manager.charge("/a", "i", tokens(1))
    manager.set_mode("block")
    assert len(events) == 1


def test_every_subscriber_gets_every_event() -> None:
    manager = BudgetManager()
    first = recorder(manager)
    second = recorder(manager)
    manager.set_mode("block")
    assert first == second == [ModeChanged("block", "warn")]


def test_a_subscriber_may_unsubscribe_while_being_told() -> None:
    manager = BudgetManager()
    seen: list[BudgetEvent] = []
    others: list[BudgetEvent] = []

    def once(event: BudgetEvent) -> None:
        seen.append(event)
        unsubscribe()

    unsubscribe = manager.subscribe(once)
    manager.subscribe(others.append)
    manager.charge("/a", "i", tokens(1))
    manager.charge("/a", "i", tokens(1))
    assert len(seen) == 1
    assert len(others) == 2


# -- snapshots ------------------------------------------------------------------------------


def test_snapshot_is_immutable() -> None:
    manager = BudgetManager()
    manager.set_budget("/a", tokens=100)
    manager.charge("/a", "i", tokens(10), 0.1)
    snap = manager.snapshot()
    with pytest.raises(dataclasses.FrozenInstanceError):
        snap.mode = "block"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        snap.budgets[0].used = 0  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        snap.total.cost_usd = 0  # type: ignore[misc]
    assert isinstance(snap.spend, MappingProxyType)
    with pytest.raises(TypeError):
        snap.spend["/a"] = KeySpend()  # type: ignore[index]
    assert isinstance(snap.budgets, tuple)


def test_later_changes_do_not_alter_an_earlier_snapshot() -> None:
    manager = BudgetManager()
    manager.set_budget("/a", tokens=100)
    manager.charge("/a", "i", tokens(10), 0.1)
    snap = manager.snapshot()
    manager.charge("/a", "i", tokens(90), 0.9)
    manager.charge("/new", "i", tokens(5))
    manager.set_budget("/b", tokens=5)
    manager.set_mode("block")
    assert snap.mode == "warn"
    assert [(b.key, b.used, b.level) for b in snap.budgets] == [("/a", 10, BudgetLevel.OK)]
    assert dict(snap.spend) == {"/a": KeySpend(tokens(10), 0.1)}
    assert snap.total == KeySpend(tokens(10), 0.1)
    assert snap.exceeded == ()
    assert manager.snapshot().exceeded != ()


def test_a_token_limit_that_is_not_whole_is_refused():
    # int(0.5) would be 0: a budget that reads exceeded from the start.
    with pytest.raises(ValueError, match="whole"):
        BudgetManager().set_budget("/a", tokens=0.5)  # type: ignore[arg-type]


def test_a_new_limit_that_changes_a_level_is_a_crossing() -> None:
    from budget_core import LevelCrossed

    manager = BudgetManager("block")
    manager.set_budget("/a", tokens=1000)
    manager.charge("/a", "i", TokenUsage(input=800))
    events: list[object] = []
    manager.subscribe(events.append)
    manager.set_budget("/a", tokens=500)
    (crossing,) = [e for e in events if isinstance(e, LevelCrossed)]
    assert crossing.budget.level == "exceeded" and crossing.previous == "warning"
    assert manager.is_exceeded("/a") and manager.is_exceeded("/a") == bool(
        manager.exceeded_for("/a")
    )
    manager.set_budget("/a", tokens=10_000)
    assert not manager.is_exceeded("/a")
