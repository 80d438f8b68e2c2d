"""Every stream-json fixture, fed line by line as bytes, gives its MANIFEST's figures.

The project's own fixtures (tests/fixtures/stream-json, printed by the real CLI against the
tests' fake API: tests/fixtures/record.py) always run; the shared set (the repo's sibling
../shared, with public transcripts) is an extra check where it exists.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from budget_core import TokenUsage, UsageTracker
from tests.fixture_sets import OWN, SHARED, folders, label, manifest

EXPECTED_FIXTURE_COUNT = {OWN: 18, SHARED: 17}


def _cases() -> list[Any]:
    return [
        pytest.param(folder, name, id=f"{label(folder)}/{name}")
        for folder in folders()
        for name in sorted(manifest(folder))
    ]


def _is_result_line(line: bytes) -> bool:
    try:
        data = json.loads(line)
    except ValueError:
        return False
    return isinstance(data, dict) and data.get("type") == "result"


def _as_usage(expected: dict[str, int]) -> TokenUsage:
    return TokenUsage(
        input=expected["input"],
        output=expected["output"],
        cache_creation=expected["cache_creation"],
        cache_read=expected["cache_read"],
    )


@pytest.mark.parametrize("folder", [pytest.param(f, id=label(f)) for f in folders()])
def test_manifest_lists_every_fixture_file(folder: Path) -> None:
    names = set(manifest(folder))
    assert len(names) == EXPECTED_FIXTURE_COUNT[folder]
    on_disk = {p.name for p in folder.glob("*.jsonl")}
    assert names == on_disk


@pytest.mark.parametrize(("folder", "name"), _cases())
def test_fixture_conforms_to_manifest(folder: Path, name: str) -> None:
    expected = manifest(folder)[name]
    tracker = UsageTracker()
    live_before_result: TokenUsage | None = None
    for line in (folder / name).read_bytes().splitlines(keepends=True):
        if live_before_result is None and _is_result_line(line):
            live_before_result = tracker.usage
        tracker.feed_line(line)

    if expected["final"] is not None:
        assert tracker.usage == _as_usage(expected["final"])
        assert tracker.is_final
    if expected["live_before_result"] is not None:
        assert live_before_result == _as_usage(expected["live_before_result"])
    if expected["cost_usd"] is None:
        assert tracker.cost_is_estimate
    else:
        assert tracker.cli_cost_usd == pytest.approx(expected["cost_usd"], abs=1e-9)
        found = tracker.discrepancy
        if found is not None and found.cost_kept_from_stream:
            # The stream's estimate was higher (public-03: the CLI priced 1-hour cache writes
            # at the 5-minute rate): a budget never goes down, so the estimate is kept.
            assert tracker.cost_usd == found.stream_cost_usd > expected["cost_usd"]
            assert tracker.cost_is_estimate
        else:
            assert tracker.cost_usd == pytest.approx(expected["cost_usd"], abs=1e-9)
            assert not tracker.cost_is_estimate
    assert tracker.is_error is expected["is_error"]
    assert tracker.skipped_lines == 0  # every fixture line is well-formed JSON
