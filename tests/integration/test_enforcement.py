"""Budget enforcement in whole runs: block mode refuses launches and stops running
instances; warn mode logs each level crossed once and lets everything finish."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from harness import MakeFakeClaude, Runner, Sim, instance

# 10,000 tokens per call; 9,401 of them arrive with a call's first line.
BIG_CALLS = Sim(input=3000, output=600, cache_creation=400, cache_read=6000)


def test_block_mode_does_not_launch_into_an_exceeded_budget(runner: Runner) -> None:
    config = runner.config(
        [
            instance("first", "/x one", replace(BIG_CALLS, calls=2)),  # 20k against a 15k budget
            instance("second", "/x two", Sim()),
            instance("other", "/y three", Sim()),  # another key: not blocked
        ],
        {"command_budgets": {"/x": 15_000}, "enforcement_mode": "block"},
    )

    result = runner.run("--config", str(config), "--max-concurrent", "1")

    assert result.returncode == 3, result.stdout + result.stderr
    assert result.summary is not None
    assert result.summary["exit_code"] == 3
    assert result.summary["enforcement_mode"] == "block"
    assert result.instance("first")["status"] == "stopped_by_budget"
    second = result.instance("second")
    assert second["status"] == "blocked"
    assert "/x" in second["error"]
    assert second["exit_code"] is None
    assert second["final"] is False
    assert second["tokens"]["total"] == 0
    assert result.instance("other")["status"] == "succeeded"
    assert [launch.prompt for launch in runner.claude.launches()] == ["/x one", "/y three"]
    assert len(result.lines_with("BLOCK", "second: not launched")) == 1
    assert "Exit status 3" in result.stdout
    runner.claude.assert_no_process_left()


def test_block_mode_stops_a_running_instance_once_its_budget_is_exceeded(
    tmp_path: Path, make_fake_claude: MakeFakeClaude
) -> None:
    # On SIGTERM the fake claude prints two more calls' worth of lines before it exits.
    runner = Runner(tmp_path, make_fake_claude(linger_lines=24))
    limit = 35_000
    slow = replace(BIG_CALLS, calls=10, delay=0.01, deltas=1)  # 100k if it ran to the end
    config = runner.config(
        [
            instance("spender", "/x spend", slow),
            instance("bystander", "/y watch", Sim(calls=6, delay=0.01, deltas=1)),
        ],
        {"command_budgets": {"/x": limit}},
    )

    result = runner.run("--config", str(config), "--budget-enforcement-mode=block")

    assert result.returncode == 3, result.stdout + result.stderr
    spender = result.instance("spender")
    assert spender["status"] == "stopped_by_budget"
    assert "/x" in spender["error"]
    assert spender["final"] is False
    assert spender["exit_code"] == 143  # it lingered after SIGTERM, then exited
    tokens = spender["tokens"]
    assert tokens["total"] == sum(v for k, v in tokens.items() if k != "total")
    assert limit <= tokens["total"] < slow.usage()["total"]
    # Everything it printed is counted, also after the stop, and nothing else.
    assert tokens == runner.claude.counted("/x spend").usage.as_dict()
    assert result.budget("/x")["used"] == tokens["total"]
    assert result.budget("/x")["level"] == "exceeded"
    # Only instances charged to the exceeded budget are stopped.
    bystander = result.instance("bystander")
    assert bystander["status"] == "succeeded"
    assert bystander["tokens"] == Sim(calls=6).usage()
    assert len(result.lines_with("STOP", "spender: stopping")) == 1
    runner.claude.assert_no_process_left()


def test_warn_mode_logs_each_crossing_once_and_lets_every_instance_finish(
    runner: Runner,
) -> None:
    # 1,600 tokens per call in small steps; 16k per instance, 48k in all.
    sim = Sim(calls=10, input=500, output=100, cache_creation=0, cache_read=1000)
    config = runner.config(
        [instance(f"w{n}", f"/w part {n}", sim) for n in (1, 2, 3)],
        # /w: 30k is exceeded during w2, so w3 is launched into an exceeded budget.
        {"overall_budget": 40_000, "command_budgets": {"/w": 30_000}},
    )

    result = runner.run("--config", str(config), "--max-concurrent=1")

    assert result.returncode == 0, result.stdout + result.stderr
    for name in ("w1", "w2", "w3"):
        assert result.instance(name)["status"] == "succeeded"
        assert result.instance(name)["tokens"] == sim.usage()
    for key in ("/w", "overall"):
        for level in ("WARNING", "CRITICAL", "EXCEEDED"):
            crossings = result.lines_with(f"budget {key} ", f"is {level}")
            assert len(crossings) == 1, f"{key} {level}: {crossings}\n{result.stdout}"
        assert result.budget(key)["level"] == "exceeded"
    assert result.budget("/w")["used"] == 3 * sim.usage()["total"]
    # The launch into the exceeded budget is allowed, with a warning that says so.
    assert len(result.lines_with("w3:", "exceeded")) == 1
    assert not result.lines_with("BLOCK")
    assert not result.lines_with("STOP")
    assert result.summary is not None
    assert result.summary["enforcement_mode"] == "warn"
    runner.claude.assert_no_process_left()
