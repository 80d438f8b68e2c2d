"""UsageTracker at result lines: budgets never go down, discrepancies, the final cost, several
results per process, and the CLI's own budget stop."""

from __future__ import annotations

import pytest

from budget_core import TokenUsage, UsageDiscrepancy, UsageTracker
from tests.unit.test_tracker import (
    OPUS,
    SONNET,
    api_usage,
    assistant,
    feed_all,
    init,
    message_delta,
    message_start,
    model_usage_entry,
    result,
)

HAIKU = "claude-haiku-4-5-20251001"
MILLION = 1_000_000


def deltas(lines: list[bytes], tracker: UsageTracker | None = None) -> list[TokenUsage]:
    tracker = tracker if tracker is not None else UsageTracker()
    return [tracker.feed_line(line) for line in lines]


def has_negative(usage: TokenUsage) -> bool:
    return min(usage.input, usage.output, usage.cache_creation, usage.cache_read) < 0


# -- a result below the stream never lowers a kind -------------------------------------------


STREAM_1500 = [
    init(),
    message_start("msg_1", api_usage(input=100, output=1, cache_creation=40, cache_read=900)),
    message_delta({"output_tokens": 1500}),
]


def test_a_result_reporting_fewer_tokens_of_a_kind_keeps_the_streamed_figure() -> None:
    # Regression: the result's 1,200 output replaced the 1,500 the stream had shown, and
    # feed_line returned -300 output: a budget charged with it went down.
    below = result(model_usage={OPUS: model_usage_entry(120, 1200, 40, 900)}, total_cost_usd=1.0)
    tracker = UsageTracker()
    charged = [tracker.feed_line(line) for line in [*STREAM_1500, below]]
    assert tracker.usage == TokenUsage(120, 1500, 40, 900)  # the larger figure of each kind
    assert not any(has_negative(d) for d in charged)
    assert sum(charged, TokenUsage()) == tracker.usage
    assert tracker.is_final


def test_an_error_result_with_zero_usage_keeps_what_the_stream_showed() -> None:
    tracker = feed_all(
        [
            assistant("msg_1", api_usage(input=9, output=2)),
            result(subtype="success", is_error=True, usage=api_usage(), model_usage={}),
        ]
    )
    assert tracker.usage == TokenUsage(9, 2, 0, 0)
    assert tracker.is_final and tracker.is_error
    # ``usage`` alone covers the main loop only: its shortfall is no discrepancy to report.
    assert tracker.discrepancy is None


def test_a_result_cost_below_the_streamed_estimate_keeps_the_estimate() -> None:
    streamed = (100 * 5 + 1500 * 25 + 40 * 6.25 + 900 * 0.5) / MILLION
    tracker = feed_all(
        [*STREAM_1500, result(usage=api_usage(100, 1500, 40, 900), total_cost_usd=0.01)]
    )
    assert tracker.cost_usd == pytest.approx(streamed, abs=1e-12)
    assert tracker.cost_is_estimate  # what is kept is the stream's estimate, not the CLI's figure


def test_a_result_cost_equal_to_the_estimate_but_for_rounding_is_the_clis_own_figure() -> None:
    # Four haiku calls whose output streams in steps: the running estimate ends one float
    # step above the CLI's 0.003147 for the same tokens. The CLI's figure is shown exactly.
    lines = [init(HAIKU)]
    for n in range(4):
        lines += [
            message_start(
                f"msg_{n}", api_usage(input=333, output=1, cache_creation=55), model=HAIKU
            ),
            message_delta({"output_tokens": 40}),
            message_delta({"output_tokens": 77}),
        ]
    tracker = feed_all(lines)
    assert tracker.cost_usd != 0.003147 and tracker.cost_usd == pytest.approx(0.003147)
    tracker.feed_line(result(usage=api_usage(1332, 308, 220, 0), total_cost_usd=0.003147))
    assert tracker.cost_usd == 0.003147
    assert not tracker.cost_is_estimate
    assert tracker.discrepancy is None


# -- the discrepancy is reported -------------------------------------------------------------


def test_the_discrepancy_names_each_kind_with_both_figures() -> None:
    below = result(model_usage={OPUS: model_usage_entry(120, 1200, 40, 900)}, total_cost_usd=1.0)
    tracker = feed_all([*STREAM_1500, below])
    found = tracker.discrepancy
    assert isinstance(found, UsageDiscrepancy)
    assert found.kinds == ("output",)
    assert found.stream == TokenUsage(100, 1500, 40, 900)
    assert found.result == TokenUsage(120, 1200, 40, 900)
    assert found.kept == TokenUsage(120, 1500, 40, 900)
    assert (
        found.describe()
        == "result reported 1,200 output tokens, the stream showed 1,500: kept 1,500"
    )


def test_the_discrepancy_describes_several_kinds_and_the_cost() -> None:
    tracker = feed_all(
        [
            *STREAM_1500,
            result(
                usage=api_usage(100, 1200, 40, 0),
                model_usage={"claude-opus-4-5": model_usage_entry(100, 1200, 40, 0)},
                total_cost_usd=0.01,
            ),
        ]
    )
    found = tracker.discrepancy
    assert found is not None
    assert found.kinds == ("output", "cache_read")
    assert found.describe() == (
        "result reported 1,200 output tokens, the stream showed 1,500: kept 1,500; "
        "result reported 0 cache_read tokens, the stream showed 900: kept 900; "
        "result reported $0.0100, the stream's estimate was $0.0387: kept $0.0387"
    )


def test_there_is_no_discrepancy_when_the_result_reports_at_least_the_stream() -> None:
    tracker = feed_all(
        [
            assistant("msg_1", api_usage(input=10, output=5, cache_creation=21570)),
            result(usage=api_usage(10, 25, 21570, 0), total_cost_usd=0.2),
        ]
    )
    assert tracker.discrepancy is None
    assert tracker.usage == TokenUsage(10, 25, 21570, 0)


def test_no_discrepancy_before_any_result() -> None:
    assert feed_all(STREAM_1500).discrepancy is None


def test_the_discrepancy_is_a_frozen_value() -> None:
    entry = model_usage_entry(100, 1, 40, 900)
    tracker = feed_all([*STREAM_1500, result(model_usage={"claude-opus-4-5": entry})])
    found = tracker.discrepancy
    assert found is not None
    with pytest.raises(AttributeError):
        found.stream = TokenUsage()  # type: ignore[misc]


# -- the final cost estimate is priced per call and model ------------------------------------


def test_final_estimate_prices_each_model_of_model_usage_at_its_own_rates() -> None:
    # Regression: without total_cost_usd/costUSD the final estimate re-priced every token at
    # the init model's rates: a haiku subagent's $0.20 became $1.00.
    tracker = feed_all(
        [
            init(OPUS),
            assistant("msg_1", api_usage(input=200_000, output=1), model=HAIKU, lane="toolu_t"),
            result(model_usage={HAIKU: model_usage_entry(200_000, 0)}),
        ]
    )
    assert tracker.cost_usd == pytest.approx(0.20 + 1 * 5 / MILLION, abs=1e-12)
    assert tracker.cost_is_estimate


def test_final_estimate_from_model_usage_prices_several_models() -> None:
    tracker = feed_all(
        [
            init(OPUS),
            result(
                model_usage={
                    OPUS: model_usage_entry(MILLION, 0),
                    SONNET: model_usage_entry(0, MILLION),
                    HAIKU: model_usage_entry(0, 0, 0, MILLION),
                }
            ),
        ]
    )
    assert tracker.cost_usd == pytest.approx(5 + 15 + 0.1)


def test_final_estimate_from_usage_only_keeps_the_per_call_estimate() -> None:
    # Only result.usage: the calls were priced at their own models while streaming; the
    # output the placeholders missed is priced at the output rate of those calls (haiku).
    tracker = feed_all(
        [
            init(OPUS),
            assistant("msg_1", api_usage(input=MILLION, output=5), model=HAIKU),
            result(usage=api_usage(input=MILLION, output=1005)),
        ]
    )
    assert tracker.cost_usd == pytest.approx(1.0 + 1005 * 5 / MILLION, abs=1e-12)
    assert tracker.cost_is_estimate


def test_final_estimate_from_usage_averages_the_rates_of_the_calls_seen() -> None:
    tracker = feed_all(
        [
            init(OPUS),
            assistant("msg_1", api_usage(input=0, output=500_000), model=OPUS),
            assistant("msg_2", api_usage(input=0, output=500_000), model=HAIKU),
            result(usage=api_usage(input=0, output=2 * MILLION)),
        ]
    )
    live = 0.5 * 25 + 0.5 * 5
    assert tracker.cost_usd == pytest.approx(live + 1 * (25 + 5) / 2)


def test_final_estimate_of_a_kind_no_call_showed_uses_the_init_model() -> None:
    tracker = feed_all([init(SONNET), result(usage=api_usage(input=MILLION))])
    assert tracker.cost_usd == pytest.approx(3.0)


def test_final_estimate_is_never_below_the_streamed_estimate() -> None:
    tracker = feed_all(
        [
            init(OPUS),
            assistant("msg_1", api_usage(input=MILLION), model=OPUS),
            result(model_usage={OPUS: model_usage_entry(10, 0)}),
        ]
    )
    assert tracker.cost_usd == pytest.approx(5.0)
    assert tracker.usage == TokenUsage(MILLION, 0, 0, 0)
