"""A known gap, recorded from the real CLI (tests/fixtures/stream-json): Claude Code 2.1.197
streams none of a subagent's API calls. The subagent's exact usage arrives on the `user` line
that carries the Task tool's result (`tool_use_result.usage`), long before the result line; a
live count that skips `user` lines misses it until the instance ends, so block mode cannot stop
a subagent that overspends."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from budget_core import TokenUsage, UsageTracker

FIXTURE = (
    Path(__file__).resolve().parents[1] / "fixtures" / "stream-json" / "cli-2.1.197-task.jsonl"
)
# What the fake API sent (tests/fixtures/record.py, case "task"): the main loop's first call,
# then the subagent's one call.
MAIN_FIRST_CALL = TokenUsage(input=2100, output=60, cache_creation=300, cache_read=0)
SUBAGENT_CALL = TokenUsage(input=700, output=70, cache_creation=7, cache_read=7000)


def _is_task_result(line: bytes) -> bool:
    data = json.loads(line)
    return data.get("type") == "user" and isinstance(data.get("tool_use_result"), dict)


@pytest.mark.xfail(
    strict=True,
    reason="the tracker skips `user` lines, so a 2.1.197 subagent's usage "
    "(tool_use_result.usage) counts only at the result line",
)
def test_a_subagents_usage_counts_once_its_task_result_reports_it() -> None:
    tracker = UsageTracker()
    lines = FIXTURE.read_bytes().splitlines(keepends=True)
    task_result = next(i for i, line in enumerate(lines) if _is_task_result(line))
    for line in lines[: task_result + 1]:
        tracker.feed_line(line)
    assert tracker.usage == MAIN_FIRST_CALL + SUBAGENT_CALL
