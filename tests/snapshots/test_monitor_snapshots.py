"""Screenshots of the monitor at 120x35, 80x24 and 60x15, driven by the scripted run.

Regenerate with ``pytest tests/snapshots --snapshot-update`` and look at every image before
accepting it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from textual.pilot import Pilot

from budget_core import TokenUsage
from orchestrator.state import InstanceStatus
from tests.snapshots.scripted import (
    ScriptedRun,
    demo_run,
    exceeded_in_warn,
    mid_run,
    paused_by_budget,
    windowed_run,
    windows_half_spent_and_exceeded,
)
from tui.app import MonitorApp, build_app

SIZES = pytest.mark.parametrize(
    "size", [(120, 35), (80, 24), (60, 15)], ids=["120x35", "80x24", "60x15"]
)
Step = Callable[[ScriptedRun], None]
Before = Callable[[Pilot[Any]], Awaitable[None]]


def monitor(
    step: Step | None = None, run_factory: Callable[[], ScriptedRun] = demo_run
) -> tuple[MonitorApp, Before]:
    """The app on a fresh demo run, and a ``run_before`` that plays ``step`` once mounted."""
    run = run_factory()
    app = build_app(run, clock=lambda: 0.0, animate=False)

    async def before(pilot: Pilot[Any]) -> None:
        if step is not None:
            step(run)  # after mount, so the app hears every notice, as with a real run
        await pilot.pause()
        app.sync()  # do not wait for the refresh timer: the picture must not depend on timing

    return app, before


@SIZES
def test_at_start(snap_compare: Any, size: tuple[int, int]) -> None:
    app, before = monitor()
    assert snap_compare(app, terminal_size=size, run_before=before)


@SIZES
def test_mid_run_green_yellow_red(snap_compare: Any, size: tuple[int, int]) -> None:
    app, before = monitor(mid_run)
    assert snap_compare(app, terminal_size=size, run_before=before)


@SIZES
def test_exceeded_in_warn_mode(snap_compare: Any, size: tuple[int, int]) -> None:
    app, before = monitor(exceeded_in_warn)
    assert snap_compare(app, terminal_size=size, run_before=before)


@SIZES
def test_block_after_pressing_m(snap_compare: Any, size: tuple[int, int]) -> None:
    app, before = monitor(exceeded_in_warn)
    assert snap_compare(app, press=["m"], terminal_size=size, run_before=before)


@SIZES
def test_quit_confirmation(snap_compare: Any, size: tuple[int, int]) -> None:
    app, before = monitor(mid_run)
    assert snap_compare(app, press=["q"], terminal_size=size, run_before=before)


@pytest.mark.parametrize("size", [(120, 35), (60, 15)], ids=["120x35", "60x15"])
def test_windowed_bars_show_spend_before_the_run_then_this_runs(
    snap_compare: Any, size: tuple[int, int]
) -> None:
    """/review today: half spent before the run (dim green), this run's after it (green);
    /test in the last 5h: exceeded, both parts red, ``!`` last; the rest as before."""
    app, before = monitor(windows_half_spent_and_exceeded, windowed_run)
    assert snap_compare(app, terminal_size=size, run_before=before)


def test_help(snap_compare: Any) -> None:
    app, before = monitor(mid_run)
    assert snap_compare(app, press=["question_mark"], terminal_size=(80, 24), run_before=before)


def test_finished_without_enforcement(snap_compare: Any) -> None:
    def failed_then_finished(run: ScriptedRun) -> None:
        mid_run(run)
        run.fail_enforcement("a budget callback raised")
        run.launch("analyze-docs")
        run.tick(20)
        run.charge("analyze-docs", TokenUsage(20_000, 9_000, 3_000, 22_000), 0.2040)
        for name in ("analyze-src", "analyze-docs", "review-api", "review-ui"):
            run.finish(name)
        run.finish("test-e2e", InstanceStatus.FAILED, "exit code 1")
        run.end()

    app, before = monitor(failed_then_finished)
    assert snap_compare(app, terminal_size=(120, 35), run_before=before)


TO_TEST_E2E = ["down"] * 5  # the cursor from the first row to test-e2e


def test_plus_asks_the_selected_instances_budget_its_new_limit(snap_compare: Any) -> None:
    """test-e2e stopped by /test (109%): ``+`` asks /test's new limit, the current one
    in the field (typing replaces it)."""
    app, before = monitor(paused_by_budget, lambda: demo_run("block"))
    press = [*TO_TEST_E2E, "plus"]
    assert snap_compare(app, press=press, terminal_size=(80, 24), run_before=before)


@pytest.mark.parametrize("size", [(120, 35), (60, 15)], ids=["120x35", "60x15"])
def test_a_raised_limit_then_r_resumes_the_stopped_instance(
    snap_compare: Any, size: tuple[int, int]
) -> None:
    """/test raised to 40K (55%, OK again), then ``r``: test-e2e is resuming."""
    app, before = monitor(paused_by_budget, lambda: demo_run("block"))
    press = [*TO_TEST_E2E, "plus", "4", "0", "k", "enter", "r"]
    assert snap_compare(app, press=press, terminal_size=size, run_before=before)
