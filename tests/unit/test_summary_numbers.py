"""The final summary's numbers: costs without float noise in the JSON, and the lines the
tracker skipped, per instance in the JSON and as a note under the table."""

from __future__ import annotations

from budget_core import BudgetManager, TokenUsage
from orchestrator.palette import Palette
from orchestrator.report import summary_report
from orchestrator.state import InstanceStatus, InstanceView, RunSnapshot
from orchestrator.summary import summary_dict


def view(name: str, cost: float, skipped: int = 0) -> InstanceView:
    return InstanceView(
        name=name,
        command=f"/{name}",
        budget_key=f"/{name}",
        status=InstanceStatus.SUCCEEDED,
        usage=TokenUsage(input=10, output=5),
        cost_usd=cost,
        cost_is_estimate=False,
        final=True,
        elapsed_s=1.0,
        skipped_lines=skipped,
    )


def snapshot(*instances: InstanceView, manager: BudgetManager | None = None) -> RunSnapshot:
    budgets = (manager or BudgetManager()).snapshot()
    return RunSnapshot("warn", 2.0, instances, budgets, (), True, True)


def test_json_costs_are_rounded_to_ten_places() -> None:
    manager = BudgetManager()
    manager.set_budget("/a", usd=0.1)
    manager.charge("/a", "a", TokenUsage(input=1), 0.1)
    manager.charge("/a", "b", TokenUsage(input=1), 0.2)  # 0.30000000000000004
    data = summary_dict(snapshot(view("a", 0.1), view("b", 0.2), manager=manager), 0)

    assert 0.1 + 0.2 != 0.3  # the noise is real
    assert data["totals"]["cost_usd"] == 0.3
    [budget] = data["budgets"]
    assert budget["used"] == 0.3 and budget["limit"] == 0.1
    one = summary_dict(snapshot(view("a", 0.026514999999999997)), 0)
    assert one["instances"][0]["cost_usd"] == 0.026515


def test_skipped_lines_are_in_the_json_and_under_the_table() -> None:
    snap = snapshot(view("a", 0.0, skipped=3), view("b", 0.0), view("c", 0.0, skipped=1200))
    data = summary_dict(snap, 0)
    assert [i["skipped_lines"] for i in data["instances"]] == [3, 0, 1200]

    table = summary_report(snap, 0, Palette(False)).splitlines()
    notes = [line for line in table if "lines skipped" in line]
    assert notes == ["  lines skipped (not stream-json, nothing counted from them): a 3, c 1,200"]


def test_no_skipped_lines_no_note() -> None:
    table = summary_report(snapshot(view("a", 0.0)), 0, Palette(False))
    assert "skipped" not in table
