"""What is worth an alert: each --alert-at percentage once per crossing (a jump over several
is one event, at the highest), exactly at the boundary, again after a rolling window let it
fall; instances' ends once; the run's end with its figures. Also GitHub's escaping and
summary, and the metrics parsed back with prometheus-client's own parser."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from budget_core import BudgetManager, TokenUsage, Unit
from orchestrator.alert_events import AlertKind, AlertWatch, run_status
from orchestrator.github_actions import (
    annotation,
    escape_data,
    escape_property,
    outputs,
    step_summary,
)
from orchestrator.metrics import MetricsWriter, write_metrics
from orchestrator.state import InstanceStatus, InstanceView, RunSnapshot

S = InstanceStatus


def view(
    name: str,
    status: InstanceStatus = S.RUNNING,
    tokens: int = 0,
    cost: float = 0.0,
    key: str = "/a",
    error: str | None = None,
) -> InstanceView:
    return InstanceView(
        name=name,
        command=f"{key} go",
        budget_key=key,
        status=status,
        usage=TokenUsage(input=tokens, output=1 if tokens else 0),
        cost_usd=cost,
        cost_is_estimate=False,
        final=status is S.SUCCEEDED,
        elapsed_s=3.0,
        error=error,
        model="claude-sonnet-4-5" if tokens else None,
    )


def snap(manager: BudgetManager, *instances: InstanceView, mode: str = "block") -> RunSnapshot:
    return RunSnapshot(mode, 2.0, instances, manager.snapshot(), (), True, False)  # type: ignore[arg-type]


def charge(manager: BudgetManager, tokens: int, key: str = "/a") -> None:
    manager.charge(key, "i", TokenUsage(input=tokens))


def test_each_percentage_once_and_a_jump_is_one_event_at_the_highest() -> None:
    manager = BudgetManager("block")
    manager.set_budget("/a", tokens=1000)
    watch = AlertWatch((50, 80, 90, 100))
    assert watch.check(snap(manager)) == []
    charge(manager, 499)
    assert watch.check(snap(manager)) == []
    charge(manager, 1)  # exactly 50%
    [event] = watch.check(snap(manager))
    assert event.kind is AlertKind.THRESHOLD
    assert event.data["threshold_percent"] == 50
    assert event.data["budget"] == {
        "key": "/a",
        "unit": "tokens",
        "limit": 1000,
        "used": 500,
        "percent": 50.0,
        "level": "ok",
        "window": "run",
    }
    assert watch.check(snap(manager)) == []  # told once
    charge(manager, 600)  # 110%: past 80, 90 and 100 at once
    [event] = watch.check(snap(manager))
    assert event.data["threshold_percent"] == 100
    assert event.severity == "error"
    assert "EXCEEDED" in event.text and "block mode" in event.text
    assert event.data["text"].endswith(event.text)
    assert watch.check(snap(manager)) == []


def test_the_default_thresholds_are_the_levels_exact_at_ninety_percent() -> None:
    manager = BudgetManager()
    manager.set_budget("/a", tokens=70_000)
    watch = AlertWatch()
    assert watch.thresholds == (70, 90, 100)
    charge(manager, 62_999)
    assert [e.data["threshold_percent"] for e in watch.check(snap(manager))] == [70]
    charge(manager, 1)  # 63,000 of 70,000: exactly 90%
    [event] = watch.check(snap(manager))
    assert event.data["threshold_percent"] == 90 and event.data["budget"]["level"] == "critical"


def test_a_window_that_ages_out_alerts_again_on_the_next_rise() -> None:
    manager = BudgetManager()
    manager.set_budget("/a", usd=10.0)
    watch = AlertWatch((50,))
    manager.set_outside("/a", Unit.USD, 6.0)  # other runs' spend in the window
    [event] = watch.check(snap(manager))
    assert event.data["budget"]["unit"] == "usd" and event.data["budget"]["used"] == 6.0
    manager.set_outside("/a", Unit.USD, 1.0)  # a rolling window let it go
    assert watch.check(snap(manager)) == []
    manager.set_outside("/a", Unit.USD, 5.0)
    assert len(watch.check(snap(manager))) == 1


def test_instances_ends_once_each_by_position_not_name() -> None:
    manager = BudgetManager("block")
    watch = AlertWatch()
    running = [view("x"), view("x"), view("y")]
    assert watch.check(snap(manager, *running)) == []
    ended = [
        view("x", S.STOPPED_BY_BUDGET, 5000, 0.5, error="budget /a (tokens) exceeded"),
        view("x", S.BLOCKED, error="budget exceeded: /a (tokens)"),
        view("y", S.SUCCEEDED, 10),
    ]
    events = watch.check(snap(manager, *ended))
    assert [e.kind for e in events] == [AlertKind.BUDGET_STOP, AlertKind.BLOCKED]
    stop = events[0].data["instance"]
    assert stop["status"] == "stopped_by_budget" and stop["tokens"]["total"] == 5001
    assert stop["model"] == "claude-sonnet-4-5"
    assert watch.check(snap(manager, *ended)) == []
    failed = watch.check(snap(manager, *ended[:2], view("y", S.TIMED_OUT, error="timed out")))
    # (y cannot go from succeeded to timed_out in a real run; the watch just follows status)
    assert [e.kind for e in failed] == [AlertKind.FAILED]


def test_the_run_end_carries_exit_status_totals_and_budgets() -> None:
    manager = BudgetManager()
    manager.set_budget("/a", tokens=100)
    charge(manager, 150)
    watch = AlertWatch()
    snapshot = snap(manager, view("a", S.SUCCEEDED, 149, 0.25), view("b", S.FAILED, error="x"))
    event = watch.run_end(snapshot, 1, None)
    assert event.kind is AlertKind.RUN_END
    data = event.data
    assert data["exit_code"] == 1 and data["status"] == "failed"
    assert data["instances"] == {"succeeded": 1, "failed": 1}
    assert data["totals"]["tokens"]["total"] == 150 and data["totals"]["cost_usd"] == 0.25
    assert data["budgets"][0]["level"] == "exceeded"
    assert "exit status 1" in data["text"]
    assert [run_status(c) for c in (0, 1, 3, 130, 141)] == [
        "succeeded",
        "failed",
        "budget_stopped",
        "interrupted",
        "interrupted",
    ]


# -- GitHub Actions -----------------------------------------------------------------------


def test_workflow_command_escaping_follows_the_runner() -> None:
    assert escape_data("50% done\r\nnext") == "50%25 done%0D%0Anext"
    assert escape_property("a:b,c%\n") == "a%3Ab%2Cc%25%0A"
    manager = BudgetManager()
    manager.set_budget("/x,y:z", tokens=10)
    charge(manager, 10, "/x,y:z")
    [event] = AlertWatch().check(snap(manager))
    line = annotation(event)
    assert line is not None and line.startswith("::error title=Budget /x%2Cy%3Az at 100%25::")
    assert "\n" not in line and "(100%25)" in line


def test_step_summary_escapes_names_and_has_bars_instances_and_totals() -> None:
    manager = BudgetManager()
    manager.set_budget("/a", tokens=1000)
    manager.set_overall(usd=2.0)
    manager.charge("/a", "i", TokenUsage(input=700), 1.5)
    snapshot = snap(
        manager,
        view("pipe|name_$1", S.SUCCEEDED, 400, 1.0),
        view("b", S.STOPPED_BY_BUDGET, 299, 0.5, error="budget /a (tokens) exceeded"),
    )
    text = step_summary(snapshot, 3)
    assert "**Exit status 3: budget enforcement blocked or stopped an instance**" in text
    overall = "| overall (\\$) | `[###############-----]` 75% | \\$1.50/\\$2.00 | **WARNING** |"
    assert overall in text
    assert "| /a | `[##############------]` 70% | 700/1K tokens | **WARNING** |" in text
    assert "| pipe\\|name\\_\\$1 | /a | succeeded | 400 | 1 |" in text
    assert "| **total** | | | 699 | 2 | 0 | 0 | **701** | **\\$1.50** |" in text
    assert "- b: budget /a \\(tokens\\) exceeded" not in text  # parentheses are not escaped
    assert "- b: budget /a (tokens) exceeded" in text
    assert outputs(snapshot, 3) == (
        "total_tokens=701\ncost_usd=1.5\nexit_code=3\nstatus=budget_stopped\n"
    )


# -- metrics ----------------------------------------------------------------------------


def parsed(path: Path) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    samples = {}
    for family in text_string_to_metric_families(path.read_text()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def test_the_metrics_file_parses_back_with_every_family(tmp_path: Path) -> None:
    manager = BudgetManager("block")
    manager.set_budget("/a", tokens=1000)
    manager.charge("/a", "a", TokenUsage(input=950, output=10), 0.125)
    snapshot = snap(
        manager,
        view("a", S.RUNNING, 950, 0.125),
        view("b", S.BLOCKED, key="/a"),
        view("c", S.PENDING, key="/c"),
    )
    path = tmp_path / "run.prom"
    write_metrics(str(path), snapshot)
    samples = parsed(path)
    a = (("budget", "/a"), ("instance", "a"))
    model = (("model", "claude-sonnet-4-5"),)
    assert samples[("orchestrator_tokens_total", (*a, ("kind", "input"), *model))] == 950
    assert samples[("orchestrator_tokens_total", (*a, ("kind", "output"), *model))] == 1
    assert samples[("orchestrator_cost_usd_total", (*a, *model))] == 0.125
    budget = (("budget", "/a"), ("unit", "tokens"), ("window", "run"))
    assert samples[("orchestrator_budget_used", budget)] == 960
    assert samples[("orchestrator_budget_limit", budget)] == 1000
    assert samples[("orchestrator_budget_level", budget)] == 2  # critical
    assert samples[("orchestrator_budget_used_ratio", budget)] == pytest.approx(0.96)
    statuses = {k[1][0][1]: v for k, v in samples.items() if k[0] == "orchestrator_instances"}
    assert statuses == {str(s): (1 if s in (S.RUNNING, S.BLOCKED, S.PENDING) else 0) for s in S}
    assert samples[("orchestrator_enforcement_mode", (("mode", "block"),))] == 1
    assert samples[("orchestrator_run_finished", ())] == 0
    assert ("orchestrator_run_exit_code", ()) not in samples
    write_metrics(str(path), snapshot, exit_code=3)
    assert parsed(path)[("orchestrator_run_exit_code", ())] == 3
    assert [p.name for p in tmp_path.iterdir()] == ["run.prom"]  # no temporary file left


def test_a_symlinked_metrics_file_has_its_target_replaced(tmp_path: Path) -> None:
    target = tmp_path / "real.prom"
    target.write_text("")
    link = tmp_path / "link.prom"
    link.symlink_to(target)
    write_metrics(str(link), snap(BudgetManager()))
    assert link.is_symlink() and "orchestrator_run_finished 0.0" in target.read_text()


def test_a_failing_metrics_folder_is_one_warning_then_one_line_when_it_works(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "textfile"
    folder.mkdir()
    lines: list[str] = []
    writer = MetricsWriter(str(folder / "run.prom"), lines.append)
    snapshot = snap(BudgetManager())

    def written(count: int) -> None:
        deadline = time.monotonic() + 10
        while len(lines) < count and time.monotonic() < deadline:
            time.sleep(0.01)

    os.rmdir(folder)
    for _ in range(3):
        writer.submit(snapshot)
        time.sleep(0.05)
    written(1)
    folder.mkdir()
    writer.submit(snapshot)
    written(2)
    assert len(lines) == 2, lines
    assert "cannot write --metrics-file" in lines[0] and "does not exist" in lines[0]
    assert "is written again" in lines[1]
    assert writer.finish(snapshot, 0) is None
    assert "orchestrator_run_exit_code 0.0" in (folder / "run.prom").read_text()


def test_the_final_metrics_write_says_why_it_failed(tmp_path: Path) -> None:
    writer = MetricsWriter(str(tmp_path / "gone" / "run.prom"), print)
    problem = writer.finish(snap(BudgetManager()), 0)
    assert problem is not None and "does not exist" in problem
