"""Resume and cooperative limits end to end: the real CLI against the fake Messages API.

What the CLIs report on a resumed session was found with each version (see
``budget_core.result.SessionBefore``): 2.1.332 gives ``modelUsage`` and ``total_cost_usd`` for
the whole session, 2.0.0 (and 2.1.197, 1.0.108) for the process only. Either way the resumed
run counts what its process added, and the two runs together what the API sent.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import pytest
from claude_cli import NEWEST_CLI_VERSION, CliEnvFactory
from fake_api import FakeAnthropicAPI, Usage
from orch_helpers import ORCHESTRATOR, TeeClaude, run_orchestrator, tokens

SLOW_TEXT = "Working on it, one small piece at a time. " * 3


def _minus(a: Usage, b: Usage) -> Usage:
    return a + (-b)


def _resume(
    run_dir: Path, env: dict[str, str], *flags: str, timeout_s: float = 90
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    summary = run_dir / "resumed.json"
    proc = subprocess.run(
        [str(ORCHESTRATOR), "resume", *flags, "--summary-json", str(summary)],
        cwd=run_dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    data = json.loads(summary.read_text()) if summary.exists() else {}
    return proc, data


@pytest.mark.parametrize("version", ["2.0.0", NEWEST_CLI_VERSION])
def test_a_stopped_instance_resumed_with_a_higher_limit_counts_each_token_once(
    version: str,
    claude_installs: dict[str, tuple[Path | None, str]],
    fake_api: FakeAnthropicAPI,
    cli_env: CliEnvFactory,
    tmp_path: Path,
) -> None:
    real, reason = claude_installs[version]
    if real is None:
        pytest.skip(f"Claude Code CLI {version} unavailable: {reason}")
    tee = TeeClaude.around(real, tmp_path / "tee")
    turns = [Usage(1000, 50, 10, 200), Usage(2000, 80, 20, 400), Usage(3000, 120, 30, 600)]
    fake_api.add_scenario(
        "rs", "slow", usages=turns, turns=2, text=SLOW_TEXT, deltas=6, delay_s=0.05
    )
    env = cli_env(fake_api.base_url)
    ledger = tmp_path / "ledger.sqlite3"
    instance = {"name": "w1", "prompt": "SCENARIO:rs go", "allowed_tools": ["Bash"]}
    instance["budget_key"] = "work"
    run_dir = tmp_path / "run"
    first = run_orchestrator(
        tee.path,
        [instance],
        env,
        run_dir,
        "--ledger",
        str(ledger),
        "--budget-enforcement-mode",
        "block",
        "--command-budget",
        "work=2000",
    )
    context = first.explain(fake_api)
    assert first.returncode == 3, context
    entry = first.instance("w1")
    assert entry["status"] == "stopped_by_budget", context
    sent_first = fake_api.sent("rs")
    side_first = fake_api.side_sent
    # Stopped mid-call: everything it printed is counted. 2.1.332 goes on reading the call in
    # flight after SIGTERM without printing its message_delta, so that call's output may be
    # missing from the stream (and from every figure the CLI gives): nothing else may be.
    counted = Usage(**{k: v for k, v in entry["tokens"].items() if k != "total"})
    assert counted + Usage(output=sent_first.output - counted.output) == sent_first, context
    assert sent_first.output - counted.output in (0, turns[1].output - 1), context
    run_id = first.summary["run_id"]
    assert f"orchestrator resume {run_id} --command-budget work=4000" in first.stdout, context
    requests_before = len(fake_api.requests)

    proc, resumed = _resume(
        run_dir, env, run_id, "--command-budget", "work=1000000", "--ledger", str(ledger)
    )
    context = f"{proc.stdout}\n{proc.stderr}\n" + "\n".join(fake_api.request_summaries())
    assert proc.returncode == 0, context
    entry = resumed["instances"][0]
    assert entry["status"] == "succeeded", context
    # The resumed request carried the earlier conversation: the first prompt, the assistant's
    # tool call and its result, then the resume prompt.
    asked = [r for r in fake_api.requests[requests_before:] if not r.side_call]
    assert asked, context
    texts = asked[0].user_texts()
    assert "SCENARIO:rs go" in texts and texts[-1] == "Continue where you left off.", texts
    assert texts.index("SCENARIO:rs go") < len(texts) - 1, texts
    roles = [m["role"] for m in asked[0].body["messages"]]
    assert roles.count("assistant") >= 1, roles
    # The resumed run counts what its process added: what the API sent it (2.0.0 also
    # reports its hidden side calls in the result, so those are in its figures).
    added = _minus(fake_api.sent("rs"), sent_first) + _minus(fake_api.side_sent, side_first)
    assert entry["tokens"] == tokens(added), context
    pid = int(proc.stdout.split("w1: launched (work), pid ")[1].split()[0])
    argv = tee.argv(pid)
    # The session the first process ran (its init line), continued with --resume.
    first_init = next(line for line in tee.lines(first.pid("w1")) if line.get("subtype") == "init")
    assert argv[argv.index("--resume") + 1] == first_init["session_id"] == entry["resumed_session"]
    assert argv[-1] == "Continue where you left off."
    result = tee.result(pid)
    if "model_usage_since_last_result" in result:
        # 2.1.332 reports the session's figures, and (the first process having printed no
        # result) "since the last result" spans both processes: only the result's usage and
        # the stream are this process's, so the cost is the price table's estimate.
        whole = sum(m["inputTokens"] for m in result["modelUsage"].values())
        assert whole > entry["tokens"]["input"], "the cumulative figure was not the test's"
        assert (entry["final"], entry["cost_is_estimate"]) == (True, True), context
        assert entry["cost_usd"] > 0
    else:
        assert entry["cost_usd"] == pytest.approx(result["total_cost_usd"], rel=1e-9), context
        assert (entry["final"], entry["cost_is_estimate"]) == (True, False), context
    # The run-window budget went on counting the first run's spend.
    assert resumed["budgets"][-1]["used_before_run"] == counted.total, resumed["budgets"]
    # The ledger: the new run says where it came from; both runs' charges are what was sent.
    db = sqlite3.connect(ledger)
    (resumed_from,) = db.execute(
        "SELECT resumed_from FROM runs WHERE id = ?", (resumed["run_id"],)
    ).fetchone()
    assert resumed_from == run_id
    row = db.execute(
        "SELECT SUM(input), SUM(output), SUM(cache_creation), SUM(cache_read) FROM charges"
    ).fetchone()
    assert Usage(*row) == counted + added, context


def test_the_cli_given_max_budget_usd_stops_itself_with_exact_figures(
    claude_installs: dict[str, tuple[Path | None, str]],
    fake_api: FakeAnthropicAPI,
    cli_env: CliEnvFactory,
    tmp_path: Path,
) -> None:
    real, reason = claude_installs[NEWEST_CLI_VERSION]
    if real is None:
        pytest.skip(f"Claude Code CLI {NEWEST_CLI_VERSION} unavailable: {reason}")
    tee = TeeClaude.around(real, tmp_path / "tee")
    turns = [Usage(20000, 400, 0, 0), Usage(20000, 400, 0, 0)]
    fake_api.add_scenario("mb", "tool", usages=turns, text="done")
    instance = {"name": "m1", "prompt": "SCENARIO:mb run echo hi", "allowed_tools": ["Bash"]}
    run = run_orchestrator(
        tee.path,
        [instance],
        cli_env(fake_api.base_url),
        tmp_path / "run",
        "--ledger",
        "none",
        "--budget-enforcement-mode",
        "block",
        "--overall-cost-budget",
        "0.05",
    )
    context = run.explain(fake_api)
    pid = run.pid("m1")
    argv = tee.argv(pid)
    assert argv[argv.index("--max-budget-usd") + 1] == "0.050000", argv
    result = tee.result(pid)
    assert result["subtype"] == "error_max_budget_usd", context
    entry = run.instance("m1")
    assert entry["status"] == "stopped_by_budget", context
    assert entry["stopped_by_cli"] is True, context
    # Exact: the CLI's own final figures, which are what the API sent.
    assert (entry["final"], entry["cost_is_estimate"]) == (True, False), context
    assert entry["tokens"] == tokens(fake_api.sent("mb")), context
    assert entry["cost_usd"] == round(result["total_cost_usd"], 10), context
    # It finished the call that crossed and ran no further tool: at most one call over.
    calls = [r for r in fake_api.requests_for("mb") if r.status == 200]
    assert len(calls) == 1, context
    assert run.budget("overall")["used"] > 0.05


def test_resuming_after_the_clis_own_budget_stop_counts_its_exact_own_figures(
    claude_installs: dict[str, tuple[Path | None, str]],
    fake_api: FakeAnthropicAPI,
    cli_env: CliEnvFactory,
    tmp_path: Path,
) -> None:
    """2.1.332 stopped itself at its --max-budget-usd (a result line: the session settled);
    resumed, it reports the whole session's modelUsage and cost: the run counts only what
    the resumed process added, at the CLI's own exact cost."""
    real, reason = claude_installs[NEWEST_CLI_VERSION]
    if real is None:
        pytest.skip(f"Claude Code CLI {NEWEST_CLI_VERSION} unavailable: {reason}")
    tee = TeeClaude.around(real, tmp_path / "tee")
    turns = [Usage(20000, 400, 0, 0), Usage(3000, 300, 30, 600), Usage(4000, 200, 40, 800)]
    fake_api.add_scenario("cb", "tool", usages=turns, text="done")
    env = cli_env(fake_api.base_url)
    ledger = tmp_path / "ledger.sqlite3"
    instance = {"name": "c1", "prompt": "SCENARIO:cb run echo hi", "allowed_tools": ["Bash"]}
    run_dir = tmp_path / "run"
    first = run_orchestrator(
        tee.path,
        [instance],
        env,
        run_dir,
        "--ledger",
        str(ledger),
        "--budget-enforcement-mode",
        "block",
        "--overall-cost-budget",
        "0.05",
    )
    context = first.explain(fake_api)
    assert first.instance("c1")["stopped_by_cli"] is True, context
    sent_first = fake_api.sent("cb")
    assert first.instance("c1")["tokens"] == tokens(sent_first), context

    proc, resumed = _resume(run_dir, env, "--overall-cost-budget", "100", "--ledger", str(ledger))
    context = f"{proc.stdout}\n{proc.stderr}\n" + "\n".join(fake_api.request_summaries())
    assert proc.returncode == 0, context
    entry = resumed["instances"][0]
    added = _minus(fake_api.sent("cb"), sent_first)
    assert entry["tokens"] == tokens(added), context
    result = tee.result(int(proc.stdout.split("c1: launched (c1), pid ")[1].split()[0]))
    whole = sum(m["inputTokens"] for m in result["modelUsage"].values())
    assert whole == sent_first.input + added.input  # the CLI's figure is the session's
    own = sum(m["costUSD"] for m in result["model_usage_since_last_result"].values())
    assert entry["cost_usd"] == pytest.approx(own, rel=1e-9), context
    assert (entry["final"], entry["cost_is_estimate"]) == (True, False), context
