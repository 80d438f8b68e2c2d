"""End to end: the orchestrator drives the real Claude Code CLI against a local fake Messages API.

Each test runs the `orchestrator` command as a subprocess with `--claude-bin` at the pinned CLI
and checks its `--summary-json` against what the fake API actually sent: token counts must be
exact, costs must be the CLI's own, and failures and budget stops must be reported as such.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from claude_cli import CliEnvFactory, CliRun, finish_claude, start_claude
from fake_api import FakeAnthropicAPI, RequestRecord, Usage, refused_port
from orch_helpers import ZERO_TOKENS, group_is_gone, run_orchestrator, tokens

pytestmark = pytest.mark.e2e

# Per-turn usage of the slow run stopped by its budget, and the budget: turn 1 (1,650 tokens)
# stays under it, turn 2's message_start (input and cache: 4,000 more) crosses it. Turn 2's
# text then takes 6 s (60 deltas, 0.1 s apart) before its message_delta, far more than the stop
# needs (SIGTERM, SIGKILL after 3 s): the fake's delta writes fail first, so it never counts a
# usage the CLI did not print. Counting is exact, not racy, by that design.
SLOW_TURNS = [Usage(1200, 150, 300, 0), Usage(1500, 700, 0, 2500)]
SLOW_BUDGET = 3000


def cli_result(run: CliRun) -> dict[str, Any]:
    """The result line of a successful direct CLI run."""
    assert run.returncode == 0 and run.result is not None, run.stderr
    return run.result


def model_usage_cost(result: dict[str, Any]) -> float:
    """The sum of `costUSD` over the models of a CLI result line."""
    return sum(float(m["costUSD"]) for m in result["modelUsage"].values())


def test_parallel_instances_are_counted_exactly_with_the_clis_own_cost(
    claude_bin: Path,
    fake_api: FakeAnthropicAPI,
    cli_env: CliEnvFactory,
    cli_workdir: Path,
    tmp_path: Path,
) -> None:
    usages = {
        "a1": Usage(1000, 300, 20, 500),
        "a2": Usage(2345, 678, 90, 12000),
        "a3": Usage(50, 7, 0, 0),
    }
    budget_keys = {"a1": "/hi", "a2": "/hi", "a3": "/other"}
    instances = []
    for name, usage in usages.items():
        fake_api.add_scenario(name, "text", usages=[usage], deltas=4)
        # The same usage for the CLI run directly: its result line gives the cost to expect.
        fake_api.add_scenario(f"direct-{name}", "text", usages=[usage])
        prompt = f"SCENARIO:{name} say hi"
        instances.append({"name": name, "prompt": prompt, "budget_key": budget_keys[name]})

    started = time.monotonic()
    direct = {
        name: start_claude(
            claude_bin, f"SCENARIO:direct-{name} hi", cli_env(fake_api.base_url), cli_workdir
        )
        for name in usages
    }
    run = run_orchestrator(
        claude_bin,
        instances,
        cli_env(fake_api.base_url),
        tmp_path / "run",
        "--command-budget",
        "/hi=1M",
        "--overall-token-budget",
        "1M",
    )
    results = {name: finish_claude(proc, started) for name, proc in direct.items()}
    print(f"3 instances: {run.timing}, 3 direct CLI runs alongside")

    context = run.explain(fake_api)
    assert run.returncode == 0, context
    assert run.summary["exit_code"] == 0, context
    for name, usage in usages.items():
        scenario = fake_api.scenario(name)
        assert fake_api.sent(name) == scenario.expected_total() == usage, context
        entry = run.instance(name)
        assert entry["status"] == "succeeded", context
        assert (entry["exit_code"], entry["final"], entry["error"]) == (0, True, None), context
        assert entry["tokens"] == tokens(usage), context
        result = cli_result(results[name])
        assert entry["cost_is_estimate"] is False, context
        # The summary rounds costs to 10 places; the CLI's own figure may carry float noise.
        assert entry["cost_usd"] == round(result["total_cost_usd"], 10), context
        assert entry["cost_usd"] == pytest.approx(model_usage_cost(result)), context
        assert entry["cost_usd"] > 0, context
    total = sum(usages.values(), Usage())
    assert run.summary["totals"]["tokens"] == tokens(total), context
    assert run.budget("/hi")["used"] == (usages["a1"] + usages["a2"]).total, context
    assert run.budget("overall")["used"] == total.total, context


def test_tool_use_run_is_counted_over_both_turns(
    claude_bin: Path, fake_api: FakeAnthropicAPI, cli_env: CliEnvFactory, tmp_path: Path
) -> None:
    turns = [Usage(1500, 40, 100, 0), Usage(1800, 250, 7, 1600)]
    scenario = fake_api.add_scenario("t1", "tool", usages=turns, text="It printed hi.")
    instance = {"name": "t1", "prompt": "SCENARIO:t1 run echo hi", "allowed_tools": ["Bash"]}

    run = run_orchestrator(claude_bin, [instance], cli_env(fake_api.base_url), tmp_path / "run")
    print(f"tool run: {run.timing}")

    context = run.explain(fake_api)
    assert run.returncode == 0, context
    # Both turns were answered: the Bash call, then the text after its result.
    assert [(r.turn, r.status) for r in fake_api.requests_for("t1")] == [(0, 200), (1, 200)]
    assert fake_api.sent("t1") == scenario.expected_total() == turns[0] + turns[1]
    entry = run.instance("t1")
    assert entry["status"] == "succeeded", context
    assert (entry["final"], entry["cost_is_estimate"]) == (True, False), context
    assert entry["tokens"] == tokens(turns[0] + turns[1]), context


def test_block_mode_stops_an_instance_mid_stream_and_counts_what_was_sent(
    claude_bin: Path, fake_api: FakeAnthropicAPI, cli_env: CliEnvFactory, tmp_path: Path
) -> None:
    fake_api.add_scenario(
        "s1",
        "slow",
        usages=SLOW_TURNS,
        turns=2,
        text="A slow answer from the fake API, streamed in small pieces. " * 5,
        deltas=60,
        delay_s=0.1,
    )
    ok_usage = Usage(400, 40, 4, 4000)
    fake_api.add_scenario("ok", "text", usages=[ok_usage])
    instances: list[dict[str, Any]] = [
        {"name": "s1", "prompt": "SCENARIO:s1 go", "allowed_tools": ["Bash"]},
        {"name": "ok", "prompt": "SCENARIO:ok hi"},  # its own budget key: not stopped
    ]

    run = run_orchestrator(
        claude_bin,
        instances,
        cli_env(fake_api.base_url),
        tmp_path / "run",
        "--command-budget",
        f"s1={SLOW_BUDGET}",
        "--budget-enforcement-mode",
        "block",
    )
    print(f"block run: {run.timing}")

    context = run.explain(fake_api)
    assert run.returncode == 3, context
    assert run.summary["exit_code"] == 3, context
    entry = run.instance("s1")
    assert entry["status"] == "stopped_by_budget", context
    assert entry["final"] is False, context
    assert entry["cost_is_estimate"] is True, context
    assert "budget s1" in entry["error"], context
    assert group_is_gone(run.pid("s1")), f"process group {run.pid('s1')} still exists\n{context}"

    # The CLI died while turn 2 was streaming: the fake's next write failed (status 499).
    requests = fake_api.requests_for("s1")
    assert [r.turn for r in requests] == [0, 1], context
    assert wait_for_status(requests[1], 499), context
    # Turn 1 whole (exact output 150), turn 2 up to its message_start (preliminary output 1).
    stopped_at = SLOW_TURNS[0] + Usage(1500, 1, 0, 2500)
    assert fake_api.sent("s1") == stopped_at, context
    assert entry["tokens"] == tokens(stopped_at), context
    assert run.budget("s1")["used"] == stopped_at.total > SLOW_BUDGET, context
    assert run.budget("s1")["level"] == "exceeded", context

    other = run.instance("ok")
    assert (other["status"], other["final"]) == ("succeeded", True), context
    assert other["tokens"] == tokens(ok_usage) == tokens(fake_api.sent("ok")), context


def wait_for_status(request: RequestRecord, status: int, timeout_s: float = 5.0) -> bool:
    """Wait for the fake to give a request its final status (it notices a dead client only
    when its next write fails)."""
    deadline = time.monotonic() + timeout_s
    while request.status != status and time.monotonic() < deadline:
        time.sleep(0.05)
    return request.status == status


# (instance name, fake scenario, text the CLI reports in its error result)
API_ERRORS = [
    ("e500", "err500", "API Error: 500 fake internal error"),
    ("e429", "err429", "API Error: Request rejected (429) · fake rate limit"),
    ("e401", "err401", "Invalid API key"),
    ("hang", "hang", "Request timed out"),
]


def test_api_errors_fail_their_instance_only(
    claude_bin: Path, fake_api: FakeAnthropicAPI, cli_env: CliEnvFactory, tmp_path: Path
) -> None:
    ok_usage = Usage(900, 90, 9, 9000)
    fake_api.add_scenario("ok", "text", usages=[ok_usage])
    instances: list[dict[str, Any]] = [
        {"name": name, "prompt": f"SCENARIO:{kind} hi"} for name, kind, _ in API_ERRORS
    ]
    instances.append({"name": "ok", "prompt": "SCENARIO:ok hi"})
    # One retry and a 2 s API timeout: a hang fails after about 2 x 2 s.
    env = cli_env(fake_api.base_url, max_retries=1, timeout_ms=2000)

    run = run_orchestrator(claude_bin, instances, env, tmp_path / "run")
    print(f"error run: {run.timing}")

    context = run.explain(fake_api)
    assert run.returncode == 1, context
    assert run.summary["exit_code"] == 1, context
    for name, _, message in API_ERRORS:
        assert_failed_with(run.instance(name), message, context)
    ok = run.instance("ok")
    assert (ok["status"], ok["final"], ok["error"]) == ("succeeded", True, None), context
    assert ok["tokens"] == tokens(ok_usage) == tokens(fake_api.sent("ok")), context
    assert run.summary["totals"]["tokens"] == tokens(ok_usage), context


def test_unreachable_api_fails_the_instance(
    claude_bin: Path, cli_env: CliEnvFactory, tmp_path: Path
) -> None:
    with refused_port() as port:  # bound, not listening: connections to it are refused
        env = cli_env(f"http://127.0.0.1:{port}", max_retries=1, timeout_ms=2000)
        instance = {"name": "refused", "prompt": "SCENARIO:text hi"}
        run = run_orchestrator(claude_bin, [instance], env, tmp_path / "run")
    print(f"refused run: {run.timing}")

    context = run.explain()
    assert run.returncode == 1, context
    message = "Unable to connect to API (ConnectionRefused)"
    assert_failed_with(run.instance("refused"), message, context)


def assert_failed_with(entry: dict[str, Any], message: str, context: str) -> None:
    """Failed on the CLI's error result: its text, exit 1, the CLI's (zero) final figures."""
    assert entry["status"] == "failed", context
    assert isinstance(entry["error"], str) and message in entry["error"], context
    assert (entry["exit_code"], entry["final"]) == (1, True), context
    assert entry["tokens"] == ZERO_TOKENS, context
    assert entry["cost_usd"] == 0, context
