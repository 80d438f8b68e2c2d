"""Resume and cooperative limits, unit by unit: a resumed session's figures, the
--max-budget-usd handed over, the limit typed in the monitor, the hint, the merged flags."""

from __future__ import annotations

import argparse
import json

import pytest

from budget_core import OVERALL, BudgetManager, TokenUsage, Unit, UsageTracker, parse_window
from orchestrator.claude_version import VersionCheck
from orchestrator.cooperative import max_budget_args
from orchestrator.resume_cmd import merge

# The result line Claude Code 2.1.332 printed for a process resumed after a first one that
# ended with its own result (3000/300/30/600, $0.01827): modelUsage and total_cost_usd are
# the session's; model_usage_since_last_result is this process's (fake Messages API, trimmed).
RESUMED_2_1_332 = {
    "type": "result",
    "subtype": "success",
    "is_error": False,
    "num_turns": 1,
    "session_id": "becf1ba2-f491-46b1-b171-4d2e2b47d4ab",
    "total_cost_usd": 0.06090000000000001,
    "usage": {
        "input_tokens": 7000,
        "cache_creation_input_tokens": 70,
        "cache_read_input_tokens": 1400,
        "output_tokens": 700,
    },
    "modelUsage": {
        "claude-opus-5-5": {
            "inputTokens": 10000,
            "outputTokens": 1000,
            "cacheReadInputTokens": 2000,
            "cacheCreationInputTokens": 100,
            "costUSD": 0.06090000000000001,
            "canonicalModel": "claude-opus-5-5",
        }
    },
    "result_index": 0,
    "model_usage_since_last_result": {
        "claude-opus-5-5": {
            "inputTokens": 7000,
            "outputTokens": 700,
            "cacheReadInputTokens": 1400,
            "cacheCreationInputTokens": 70,
            "costUSD": 0.04263000000000001,
            "canonicalModel": "claude-opus-5-5",
        }
    },
}
OWN = TokenUsage(7000, 700, 70, 1400)


def test_a_resumed_2_1_332_process_counts_only_what_it_added() -> None:
    tracker = UsageTracker(resumed=True)
    tracker.feed_line(json.dumps(RESUMED_2_1_332))
    assert tracker.usage == OWN
    assert tracker.cost_usd == pytest.approx(0.04263, rel=1e-9)
    assert not tracker.cost_is_estimate


def test_a_second_result_of_the_resumed_process_keeps_the_baseline_off() -> None:
    later = json.loads(json.dumps(RESUMED_2_1_332))
    later["result_index"] = 1
    later["model_usage_since_last_result"] = {}
    later["modelUsage"]["claude-opus-5-5"]["inputTokens"] = 11000
    later["total_cost_usd"] = 0.07
    tracker = UsageTracker(resumed=True)
    tracker.feed_line(json.dumps(RESUMED_2_1_332))
    tracker.feed_line(json.dumps(later))
    assert tracker.usage == TokenUsage(8000, 700, 70, 1400)
    assert tracker.cost_usd == pytest.approx(0.07 - 0.01827, rel=1e-9)


def test_a_fresh_process_takes_the_figures_as_they_are() -> None:
    tracker = UsageTracker()
    tracker.feed_line(json.dumps(RESUMED_2_1_332))
    assert tracker.usage == TokenUsage(10000, 1000, 100, 2000)


def test_after_a_process_without_a_result_only_usage_is_this_processs() -> None:
    """Then "since the last result" spans the earlier process too: its figures cannot be
    told apart, so the result's usage (this process) stands and the cost is estimated."""
    tracker = UsageTracker(resumed=True, settled=False)
    tracker.feed_line(json.dumps(RESUMED_2_1_332))
    assert tracker.usage == OWN
    assert tracker.cost_is_estimate


def test_a_cli_reporting_per_process_is_left_alone_when_resumed() -> None:
    line = {k: v for k, v in RESUMED_2_1_332.items() if k != "model_usage_since_last_result"}
    line["modelUsage"] = RESUMED_2_1_332["model_usage_since_last_result"]
    tracker = UsageTracker(resumed=True)
    tracker.feed_line(json.dumps(line))
    assert tracker.usage == OWN


def _manager() -> BudgetManager:
    manager = BudgetManager("block")
    manager.set_overall(usd=2.0)
    manager.set_budget("/a", usd=0.5, tokens=1000)
    manager.set_budget("/b", tokens=1000)
    return manager


def test_the_cli_gets_the_tightest_usd_remainder_rounded_down() -> None:
    manager = _manager()
    manager.charge("/a", "x", TokenUsage(), 0.1234567)
    assert max_budget_args(manager.snapshot(), "/a") == ("--max-budget-usd", "0.376543")
    # /b has no USD budget of its own: the overall one's remainder.
    assert max_budget_args(manager.snapshot(), "/b") == ("--max-budget-usd", "1.876543")
    manager.charge("/b", "y", TokenUsage(), 1.7)  # overall is now the tighter one
    assert max_budget_args(manager.snapshot(), "/a") == ("--max-budget-usd", "0.176543")


def test_no_usd_budget_or_nothing_left_gives_no_limit() -> None:
    manager = BudgetManager("block")
    manager.set_budget("/a", tokens=1000)
    assert max_budget_args(manager.snapshot(), "/a") == ()
    manager.set_overall(usd=1.0)
    manager.charge("/a", "x", TokenUsage(), 1.0)
    assert max_budget_args(manager.snapshot(), "/a") == ()


@pytest.mark.parametrize(
    ("version", "takes_it"), [((2, 0, 29), False), ((2, 0, 30), True), ((2, 1, 332), True)]
)
def test_max_budget_usd_from_2_0_30(version: tuple[int, int, int], takes_it: bool) -> None:
    assert VersionCheck(version).max_budget_usd is takes_it
    assert VersionCheck(None, "garbage").max_budget_usd  # unknown: as a current CLI


def test_resume_flags_replace_the_runs_key_by_key() -> None:
    base = argparse.Namespace(
        command_budget=["/a=10k", "/b=20k"],
        command_cost_budget=[],
        overall_cost_budget="5",
        summary_json="first.json",
        tui=True,
        dry_run=False,
    )
    override = argparse.Namespace(run="last", command_budget=["/b=1M"], overall_cost_budget="9")
    merged = merge(base, override)
    assert merged.command_budget == ["/a=10k", "/b=1M"]
    assert merged.overall_cost_budget == "9"
    assert (merged.summary_json, merged.tui) == (None, False)  # the new run's own choice
    assert not hasattr(merged, "run")


def test_the_window_is_kept_when_the_limit_is_typed() -> None:
    from budget_core.budgets import BudgetState
    from budget_core.levels import BudgetLevel
    from tui.limit_dialog import parse_new_limit

    day = BudgetState("/r", Unit.TOKENS, 1000, 0, BudgetLevel.OK, parse_window("day"))
    assert parse_new_limit(" 2.5M ", day) == 2_500_000
    with pytest.raises(ValueError, match="the window stays day"):
        parse_new_limit("2M/week", day)
    usd = BudgetState(OVERALL, Unit.USD, 1.0, 0, BudgetLevel.OK)
    assert parse_new_limit("$2.50", usd) == 2.5
    for bad in ("", "0", "-1", "1e3", "nan", "5k"):
        with pytest.raises(ValueError):
            parse_new_limit(bad, usd)


def test_the_hint_doubles_each_exceeded_budget_as_a_flag_would_take_it() -> None:
    from budget_core.budgets import BudgetState
    from budget_core.levels import BudgetLevel
    from budget_core.spec import parse_budget_spec, parse_windowed_limit
    from orchestrator.resume_hint import raised_flag

    exceeded = BudgetLevel.EXCEEDED
    cases = [
        (
            BudgetState("/r", Unit.TOKENS, 50_000, 60_000, exceeded),
            ["--command-budget", "/r=100000"],
        ),
        (
            BudgetState("/r", Unit.USD, 0.0005, 1, exceeded, parse_window("day")),
            ["--command-cost-budget", "/r=0.001/day"],
        ),
        (BudgetState(OVERALL, Unit.USD, 2.5, 3, exceeded), ["--overall-cost-budget", "5"]),
        (
            BudgetState(OVERALL, Unit.TOKENS, 1_000, 2_000, exceeded, parse_window("5h")),
            ["--overall-token-budget", "2000/5h"],
        ),
    ]
    for budget, flag in cases:
        assert raised_flag(budget) == flag
        value = flag[1]
        if budget.is_overall:
            limit, _ = parse_windowed_limit(value, budget.unit)
        else:
            limit = parse_budget_spec(value, budget.unit).limit
        assert limit == pytest.approx(budget.limit * 2)
