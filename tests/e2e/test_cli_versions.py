"""The orchestrator with every tested Claude Code version (tests/e2e/claude_cli.py:
TESTED_VERSIONS), each against its own fake Messages API. One version at a time: the older
CLIs are Node programs whose start is mostly CPU, so running them together saves nothing.

Per version, one run of three instances: a prompt that is exactly `--help`, a prompt starting
with `-` that makes a Bash tool call (two turns), and an API error. Each prompt must reach the
fake as the user's message (the `--` before it), and the counts must be exact: per instance,
the tokens the orchestrator ends on are the CLI's own figures for that very process (read back
from a copy of its stdout) and its cost is the CLI's `total_cost_usd`; over the run, they are
what the fake sent.

What the stream does not show: 1.0.x and 2.0.0 make hidden side calls (a small model extracts
file paths from each Bash command; a title for an earlier session in the same HOME and cwd).
The fake answers them apart (requests without tools). 2.0.0 reports them in `modelUsage`, so
they are in its final figures; 1.0.108 prints no `modelUsage` and a `result.usage` of the last
API call only, so there the orchestrator ends on the stream's own counts, and only
`total_cost_usd` includes the side calls. A title call (made when another instance's session
ended first) may also come after its own process's result line: then no figure reports it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from claude_cli import NEWEST_CLI_VERSION, CliEnvFactory
from fake_api import FakeAnthropicAPI, Usage
from orch_helpers import TeeClaude, run_orchestrator, tokens

pytestmark = pytest.mark.e2e

PARTIAL = "--include-partial-messages"
PROMPTS = {"help": "--help", "flag": "-x is a flag? SCENARIO:flag", "err": "SCENARIO:err hi"}
HELP_USAGE = Usage(1111, 222, 33, 4444)
TOOL_TURNS = [Usage(1500, 40, 100, 0), Usage(1800, 250, 7, 1600)]
SIDE_USAGE = Usage(61, 7, 0, 0)


def version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


def model_usage(result: dict[str, Any]) -> dict[str, Usage]:
    """`modelUsage` of a result line per model, without a suffix such as `[1m]` ({} when
    the CLI prints none)."""
    return {
        re.sub(r"\[.*\]$", "", model): Usage(
            m["inputTokens"],
            m["outputTokens"],
            m["cacheCreationInputTokens"],
            m["cacheReadInputTokens"],
        )
        for model, m in (result.get("modelUsage") or {}).items()
    }


def test_each_version_is_counted_exactly_and_takes_dashed_prompts(
    versioned_claude: tuple[str, Path], cli_env: CliEnvFactory, tmp_path: Path
) -> None:
    version, real_claude = versioned_claude
    old = version_tuple(version) < (1, 0, 109)
    claude = TeeClaude.around(real_claude, tmp_path / "tee")
    instances: list[dict[str, Any]] = [
        {"name": "help", "prompt": PROMPTS["help"]},  # no marker: the default scenario
        {"name": "flag", "prompt": PROMPTS["flag"], "allowed_tools": ["Bash"]},
        {"name": "err", "prompt": PROMPTS["err"]},
    ]
    with FakeAnthropicAPI(default_scenario="help", side_usage=SIDE_USAGE) as fake:
        fake.add_scenario("help", "text", usages=[HELP_USAGE], deltas=3)
        fake.add_scenario("flag", "tool", usages=TOOL_TURNS, text="It printed hi.")
        fake.add_scenario("err", "err500")
        env = cli_env(fake.base_url, max_retries=0, timeout_ms=5000)
        run = run_orchestrator(claude.path, instances, env, tmp_path / "run")
    print(f"{version}: {run.timing}; side calls: {len(fake.side_calls)}")
    context = run.explain(fake)

    assert run.returncode == 1, context  # the API error fails its instance only
    if old:
        [warning] = run.stderr.splitlines()
        assert f"is Claude Code {version}, older than 1.0.109" in warning, context
    else:
        assert run.stderr == "", context
    # Each prompt reached the fake as the user's own message (not taken for an option).
    for name in ("help", "flag"):
        assert run.instance(name)["status"] == "succeeded", context
        calls = fake.requests_for(name)
        assert calls and all(PROMPTS[name] in r.user_texts() for r in calls), context
    results = {}
    for name, prompt in PROMPTS.items():
        pid = run.pid(name)
        argv = claude.argv(pid)
        assert argv[-2:] == ["--", prompt], argv
        assert (PARTIAL in argv) is not old, argv
        results[name] = claude.result(pid)
    assert [r.turn for r in fake.requests_for("flag")] == [0, 1], context
    # Per process, the CLI's own figures: its main model's are what the fake streamed to it;
    # any other model's are side calls the stream never showed.
    streamed_by = {"help": HELP_USAGE, "flag": sum(TOOL_TURNS, Usage()), "err": Usage()}
    side_counted = Usage()
    for name, streamed in streamed_by.items():
        entry, result = run.instance(name), results[name]
        assert fake.sent(name) == streamed, context
        assert (entry["final"], entry["cost_is_estimate"]) == (True, False), context
        assert entry["cost_usd"] == round(result["total_cost_usd"], 10), context  # JSON: 10 places
        per_model = model_usage(result)
        if per_model:
            main_model = fake.requests_for(name)[0].model
            assert per_model.pop(main_model, Usage()) == streamed, context
        side = sum(per_model.values(), Usage())  # no modelUsage (1.0.108): none counted
        assert entry["tokens"] == tokens(streamed + side), context
        side_counted += side
    assert [run.instance(name)["status"] for name in PROMPTS] == [
        "succeeded",
        "succeeded",
        "failed",
    ], context
    err = run.instance("err")
    assert results["err"]["is_error"] is True and "500" in err["error"], context

    # Side calls: only the older CLIs make them. The Bash command's path extraction comes
    # before its process's result; a title for another instance's session that ended first
    # can come after the result line of the process making it: no figure reports that one.
    side_calls = len(fake.side_calls)
    assert (side_calls > 0) == (version_tuple(version) < (2, 1, 0)), context
    counted_calls = next(
        (k for k in range(side_calls + 1) if sum([SIDE_USAGE] * k, Usage()) == side_counted),
        None,
    )
    assert counted_calls is not None, f"{side_counted} is not a number of side calls\n{context}"
    if old:
        assert counted_calls == 0, context  # 1.0.108 prints no modelUsage
    elif side_calls:
        assert counted_calls >= 1, context  # at least the path extraction
    total = HELP_USAGE + sum(TOOL_TURNS, Usage()) + side_counted
    assert run.summary["totals"]["tokens"] == tokens(total), context


# Two calls of the newest CLI's default model, 5-minute and 1-hour cache writes.
PRICED = {
    "c5m": Usage(123_456, 7_890, 45_678, 901_234),
    "c1h": Usage(23_456, 890, 145_678, 1_234),
}


def test_newest_cli_default_model_estimate_is_the_clis_own_cost(
    claude_installs: dict[str, tuple[Path | None, str]],
    fake_api: FakeAnthropicAPI,
    cli_env: CliEnvFactory,
    tmp_path: Path,
) -> None:
    """`claude-opus-5-5`, Claude Code 2.1.332's default model: the orchestrator prices it from
    its own table (budget_core/prices.json) exactly as the CLI does. The result lines are
    kept from the orchestrator, so its figures are its live counts and its estimate."""
    path, reason = claude_installs[NEWEST_CLI_VERSION]
    assert path is not None, reason
    claude = TeeClaude.around(path, tmp_path / "tee", drop_results=True)
    for name, usage in PRICED.items():
        fake_api.add_scenario(name, "text", usages=[usage], cache_1h=name == "c1h")
    instances = [{"name": name, "prompt": f"SCENARIO:{name} hi"} for name in PRICED]

    run = run_orchestrator(claude.path, instances, cli_env(fake_api.base_url), tmp_path / "run")

    context = run.explain(fake_api)
    for name, usage in PRICED.items():
        assert fake_api.requests_for(name)[0].model == "claude-opus-5-5", context
        entry, result = run.instance(name), claude.result(run.pid(name))
        assert (entry["final"], entry["cost_is_estimate"]) == (False, True), context
        assert entry["error"] == "no result line", context
        assert entry["tokens"] == tokens(usage) == tokens(fake_api.sent(name)), context
        [(model, figures)] = result["modelUsage"].items()
        assert model == "claude-opus-5-5", context
        assert figures["costUSD"] == result["total_cost_usd"] > 0, context
        assert entry["cost_usd"] == pytest.approx(figures["costUSD"], abs=1e-9), context
