"""budget_core: exact token accounting and budgets for Claude Code runs, with no I/O."""

from budget_core.budgets import (
    MODES,
    OVERALL,
    BudgetEvent,
    BudgetManager,
    BudgetSnapshot,
    BudgetState,
    Decision,
    KeySpend,
    LaunchAction,
    LevelCrossed,
    Mode,
    ModeChanged,
    SpendChanged,
    Unit,
)
from budget_core.burn import BurnRate
from budget_core.formatting import (
    format_budget_amounts,
    format_clock,
    format_percent,
    format_tokens,
    format_usd,
    render_bar,
    render_window_bar,
    window_bar_cells,
)
from budget_core.levels import BudgetLevel, level_for
from budget_core.pricing import ModelPrices, PriceTable, default_price_table
from budget_core.ratelimit import (
    RateLimitEvent,
    RateLimitStatus,
    WindowReading,
    parse_rate_limit_event,
    window_label,
)
from budget_core.result import UsageDiscrepancy
from budget_core.spec import (
    MAX_TOKENS,
    MAX_USD,
    BudgetSpec,
    check_budget_key,
    parse_budget_spec,
    parse_limit,
    parse_windowed_limit,
    unprintable_character,
)
from budget_core.tracker import UsageTracker, line_may_carry_usage
from budget_core.usage import ZERO, TokenUsage
from budget_core.windows import RUN, Window, parse_window

__all__ = [
    "MAX_TOKENS",
    "MAX_USD",
    "MODES",
    "OVERALL",
    "RUN",
    "ZERO",
    "BudgetEvent",
    "BudgetLevel",
    "BudgetManager",
    "BudgetSnapshot",
    "BudgetSpec",
    "BudgetState",
    "BurnRate",
    "Decision",
    "KeySpend",
    "LaunchAction",
    "LevelCrossed",
    "Mode",
    "ModeChanged",
    "ModelPrices",
    "PriceTable",
    "RateLimitEvent",
    "RateLimitStatus",
    "SpendChanged",
    "TokenUsage",
    "Unit",
    "UsageDiscrepancy",
    "UsageTracker",
    "Window",
    "WindowReading",
    "check_budget_key",
    "default_price_table",
    "format_budget_amounts",
    "format_clock",
    "format_percent",
    "format_tokens",
    "format_usd",
    "level_for",
    "line_may_carry_usage",
    "parse_budget_spec",
    "parse_limit",
    "parse_rate_limit_event",
    "parse_window",
    "parse_windowed_limit",
    "render_bar",
    "render_window_bar",
    "unprintable_character",
    "window_bar_cells",
    "window_label",
]
