"""The fake Messages API, checked against the real Claude Code CLI (no orchestrator involved).

Each test runs `claude -p --output-format stream-json --verbose --include-partial-messages --
PROMPT` against the fake and checks that the CLI reports exactly the usage the fake sent.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from claude_cli import CliEnvFactory, CliRun, finish_claude, run_claude, start_claude
from fake_api import FakeAnthropicAPI, Usage, refused_port

pytestmark = pytest.mark.e2e

# Error runs take 1-5 s here (hang: 2 x API_TIMEOUT_MS); with the CLI's default retries and
# timeout they would take minutes. The margin is for slow, loaded CI machines.
ERROR_RUN_LIMIT_S = 20


def model_usage(result: dict[str, Any]) -> Usage:
    """The run's authoritative totals: modelUsage summed over models."""
    total = Usage()
    for m in (result.get("modelUsage") or {}).values():
        total += Usage(
            m["inputTokens"],
            m["outputTokens"],
            m["cacheCreationInputTokens"],
            m["cacheReadInputTokens"],
        )
    return total


def live_usage(lines: list[dict[str, Any]]) -> Usage:
    """Count stream events as a live client must: one entry per message_start; message_delta's
    output_tokens overwrites the output of the message started last."""
    messages: list[Usage] = []
    for line in lines:
        if line.get("type") != "stream_event":
            continue
        event = line["event"]
        if event.get("type") == "message_start":
            messages.append(Usage.from_api(event["message"]["usage"]))
        elif event.get("type") == "message_delta" and messages:
            output = event["usage"]["output_tokens"]
            messages[-1] = dataclasses.replace(messages[-1], output=output)
    return sum(messages, Usage())


def explain(run: CliRun, fake: FakeAnthropicAPI) -> str:
    """Context for assertion failures: the fake's request log and the CLI's output."""
    requests = "\n".join(fake.request_summaries())
    return f"requests:\n{requests}\nstderr:\n{run.stderr}\nstdout:\n{run.raw_stdout[-3000:]}"


def assert_success(run: CliRun, fake: FakeAnthropicAPI, expected: Usage) -> None:
    context = explain(run, fake)
    assert run.returncode == 0, context
    assert run.result is not None, context
    assert run.result["is_error"] is False, context
    assert Usage.from_api(run.result["usage"]) == expected, context
    assert model_usage(run.result) == expected, context
    assert live_usage(run.lines) == expected, context


def test_text_scenario_usage_is_reported_exactly(
    claude_bin: Path, fake_api: FakeAnthropicAPI, cli_env: CliEnvFactory, cli_workdir: Path
) -> None:
    scenario = fake_api.add_scenario(
        "a1", "text", input=1000, output=300, cache_creation=20, cache_read=500, deltas=5
    )
    run = run_claude(claude_bin, "SCENARIO:a1 say hi", cli_env(fake_api.base_url), cli_workdir)

    assert_success(run, fake_api, Usage(1000, 300, 20, 500))
    assert fake_api.sent("a1") == scenario.expected_total() == Usage(1000, 300, 20, 500)
    assert run.result is not None and run.result["num_turns"] == 1
    assert run.result["result"] == scenario.text
    assert len(run.stream_events("content_block_delta")) == 5
    # The CLI probes the server, then makes one streaming call per turn.
    calls = sorted((r.method, r.path, r.query, r.stream) for r in fake_api.requests)
    assert calls == [("HEAD", "/", "", None), ("POST", "/v1/messages", "beta=true", True)]
    assert fake_api.requests_for("a1")[0].model == "claude-opus-4-8"


def test_tool_scenario_sums_usage_over_turns(
    claude_bin: Path, fake_api: FakeAnthropicAPI, cli_env: CliEnvFactory, cli_workdir: Path
) -> None:
    turns = [Usage(1500, 40, 100, 0), Usage(1800, 250, 7, 1600)]
    scenario = fake_api.add_scenario("t1", "tool", usages=turns, text="It printed hi.")
    run = run_claude(
        claude_bin,
        "SCENARIO:t1 run echo hi",
        cli_env(fake_api.base_url),
        cli_workdir,
        extra=["--allowedTools", "Bash"],
    )

    expected = turns[0] + turns[1]
    assert_success(run, fake_api, expected)
    assert fake_api.sent("t1") == scenario.expected_total() == expected
    assert run.result is not None and run.result["num_turns"] == 2
    tool_results = [
        block
        for line in run.of_type("user")
        for block in line["message"]["content"]
        if block.get("type") == "tool_result"
    ]
    assert [(b["content"], b["is_error"]) for b in tool_results] == [("hi", False)]
    requests = fake_api.requests_for("t1")
    assert [r.turn for r in requests] == [0, 1]
    assert '"tool_result"' in json.dumps(requests[1].body["messages"])


def test_parallel_clis_each_get_their_own_scenario(
    claude_bin: Path, fake_api: FakeAnthropicAPI, cli_env: CliEnvFactory, tmp_path: Path
) -> None:
    fake_api.add_scenario("p1", "text", input=111, output=11, cache_creation=1, cache_read=1000)
    fake_api.add_scenario("p2", "tool", usages=[Usage(222, 22, 2, 2000), Usage(333, 33, 3, 3000)])
    fake_api.add_scenario("p3", "text", input=444, output=44, cache_creation=4, cache_read=4000)
    expected = {
        "p1": Usage(111, 11, 1, 1000),
        "p2": Usage(555, 55, 5, 5000),
        "p3": Usage(444, 44, 4, 4000),
    }

    started = time.monotonic()
    procs = {}
    for name in expected:
        workdir = tmp_path / f"work-{name}"
        workdir.mkdir()
        env = cli_env(fake_api.base_url)
        extra = ["--allowedTools", "Bash"]
        procs[name] = start_claude(claude_bin, f"SCENARIO:{name} go", env, workdir, extra)
    runs = {name: finish_claude(proc, started) for name, proc in procs.items()}

    for name, run in runs.items():
        assert_success(run, fake_api, expected[name])
        assert fake_api.sent(name) == expected[name]
    print(f"3 parallel CLIs: {max(r.elapsed_s for r in runs.values()):.2f}s")


@pytest.mark.parametrize(
    ("scenario", "status", "message"),
    [
        ("err500", 500, "API Error: 500 fake internal error"),
        ("err429", 429, "API Error: Request rejected (429) · fake rate limit"),
        ("err401", 401, "Invalid API key"),
        ("hang", None, "Request timed out"),
        ("refused", None, "Unable to connect to API (ConnectionRefused)"),
    ],
)
def test_error_scenarios_end_with_an_error_result_and_zero_usage(
    claude_bin: Path,
    fake_api: FakeAnthropicAPI,
    cli_env: CliEnvFactory,
    cli_workdir: Path,
    scenario: str,
    status: int | None,
    message: str,
) -> None:
    with refused_port() as port:  # bound, not listening: connections to it are refused
        base_url = f"http://127.0.0.1:{port}" if scenario == "refused" else fake_api.base_url
        env = cli_env(base_url, max_retries=1, timeout_ms=2000)  # a hang costs 2 x 2 s
        run = run_claude(claude_bin, f"SCENARIO:{scenario} hi", env, cli_workdir)
    duration_ms = (run.result or {}).get("duration_ms")
    print(f"{scenario}: exit {run.returncode} after {run.elapsed_s:.2f}s (CLI: {duration_ms} ms)")

    context = explain(run, fake_api)
    assert run.returncode == 1, context
    result = run.result
    assert result is not None, context
    assert result["is_error"] is True, context
    assert result["api_error_status"] == status, context
    assert message in result["result"], context
    assert Usage.from_api(result["usage"]) == Usage(), context
    assert model_usage(result) == Usage(), context
    assert run.elapsed_s < ERROR_RUN_LIMIT_S, context
    # One retry (max_retries=1), announced on stdout as a system/api_retry line.
    retries = [line for line in run.of_type("system") if line.get("subtype") == "api_retry"]
    assert [r["error_status"] for r in retries] == [status], context
    if scenario != "refused":
        assert len(fake_api.requests_for(scenario)) == 2, context


def test_broken_stream_is_retried_without_streaming(
    claude_bin: Path, fake_api: FakeAnthropicAPI, cli_env: CliEnvFactory, cli_workdir: Path
) -> None:
    fake_api.add_scenario("b1", "broken", input=321, output=45, cache_creation=6, cache_read=78)
    run = run_claude(claude_bin, "SCENARIO:b1 hi", cli_env(fake_api.base_url), cli_workdir)

    context = explain(run, fake_api)
    assert run.returncode == 0, context
    assert run.result is not None and run.result["is_error"] is False, context
    assert model_usage(run.result) == Usage(321, 45, 6, 78), context
    # CLI 2.1.197 reports all zeros in result.usage after such a retry; modelUsage is right.
    assert [r.stream for r in fake_api.requests_for("b1")] == [True, False]
    # The dropped stream's message_start was sent too: live counts over-count here.
    assert fake_api.sent("b1") == Usage(642, 46, 12, 156)


def test_slow_scenario_killed_mid_stream_matches_what_was_sent(
    claude_bin: Path, fake_api: FakeAnthropicAPI, cli_env: CliEnvFactory, cli_workdir: Path
) -> None:
    turns = [Usage(700, 90, 30, 0), Usage(900, 400, 0, 800)]
    fake_api.add_scenario("s1", "slow", usages=turns, turns=2, deltas=20, delay_s=0.05)
    proc = start_claude(
        claude_bin,
        "SCENARIO:s1 go",
        cli_env(fake_api.base_url),
        cli_workdir,
        ["--allowedTools", "Bash"],
    )
    assert proc.stderr is not None
    threading.Thread(target=proc.stderr.read, daemon=True).start()  # keep stderr drained
    watchdog = threading.Timer(30, proc.kill)  # a silent CLI must not block the read forever
    watchdog.start()
    try:
        lines = read_until_message_start(proc, count=2)
    finally:
        proc.kill()
        watchdog.cancel()
    proc.wait(timeout=10)

    # Turn 1 finished (exact output 90); turn 2 had only started (preliminary output 1).
    expected = turns[0] + Usage(900, 1, 0, 800)
    assert live_usage(lines) == expected
    assert fake_api.sent("s1") == expected
    assert not any(line.get("type") == "result" for line in lines)


def read_until_message_start(proc: subprocess.Popen[str], count: int) -> list[dict[str, Any]]:
    """Read stdout lines until the `count`-th message_start stream event (or EOF)."""
    assert proc.stdout is not None
    lines: list[dict[str, Any]] = []
    starts = 0
    for raw in proc.stdout:
        if raw.startswith("{"):
            lines.append(json.loads(raw))
            starts += (lines[-1].get("event") or {}).get("type") == "message_start"
        if starts == count:
            break
    return lines


# ---- the fake alone (no CLI needed) -------------------------------------------------------------


def post(url: str, body: dict[str, Any]) -> tuple[int, dict[str, str], dict[str, Any]]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST")
    request.add_header("content-type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, dict(response.headers), json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), json.load(error)


def user_prompt(text: str, tools: bool = True) -> dict[str, Any]:
    """A request body; a conversation's turn has `tools` (the CLI always sends them)."""
    body: dict[str, Any] = {
        "model": "claude-x",
        "max_tokens": 10,
        "messages": [{"role": "user", "content": text}],
    }
    return {**body, "tools": []} if tools else body


def test_fake_answers_without_streaming_and_in_error_format() -> None:
    with FakeAnthropicAPI() as fake:
        fake.add_scenario("j1", "text", input=5, output=6, cache_creation=7, cache_read=8)
        url = f"{fake.base_url}/v1/messages?beta=true"

        status, _, message = post(url, user_prompt("SCENARIO:j1 hi"))
        assert status == 200
        assert message["model"] == "claude-x"
        assert message["content"] == [{"type": "text", "text": "hi from the fake API"}]
        assert Usage.from_api(message["usage"]) == Usage(5, 6, 7, 8)
        assert message["usage"]["cache_creation"] == {
            "ephemeral_5m_input_tokens": 7,
            "ephemeral_1h_input_tokens": 0,
        }
        assert fake.sent("j1") == Usage(5, 6, 7, 8)

        status, headers, error = post(url, user_prompt("SCENARIO:err429 hi"))
        assert (status, headers["retry-after"]) == (429, "0")
        assert error == {
            "type": "error",
            "error": {"type": "rate_limit_error", "message": "fake rate limit"},
        }
        status, _, error = post(url, user_prompt("SCENARIO:nope hi"))
        assert (status, error["error"]["type"]) == (400, "invalid_request_error")
        status, _, counted = post(f"{fake.base_url}/v1/messages/count_tokens", user_prompt("x"))
        assert status == 200 and counted["input_tokens"] > 0
        assert [r.status for r in fake.requests] == [200, 429, 400, 200]


def test_fake_answers_side_calls_apart_from_any_scenario() -> None:
    # Older CLIs make hidden calls without tools (Bash path extraction, session titles);
    # they may carry a scenario's marker (a title quotes the prompt) but are not its turns.
    with FakeAnthropicAPI(side_usage=Usage(9, 8, 7, 6)) as fake:
        fake.add_scenario("t1", "tool", usages=[Usage(5, 6, 7, 8)])
        url = f"{fake.base_url}/v1/messages?beta=true"

        status, _, message = post(url, user_prompt("Title this: SCENARIO:t1 hi", tools=False))
        assert status == 200
        assert message["content"] == [{"type": "text", "text": "Fake side answer"}]
        assert Usage.from_api(message["usage"]) == Usage(9, 8, 7, 6)
        assert fake.side_sent == Usage(9, 8, 7, 6)
        assert fake.sent("t1") == Usage()
        status, _, message = post(url, user_prompt("SCENARIO:t1 hi"))
        assert [block["type"] for block in message["content"]] == ["text", "tool_use"]
        assert fake.sent("t1") == Usage(5, 6, 7, 8)
        assert fake.side_sent == Usage(9, 8, 7, 6)
        assert [(r.side_call, r.scenario) for r in fake.requests] == [(True, None), (False, "t1")]
        assert [r.side_call for r in fake.requests_for("t1")] == [False]
        assert fake.requests[0].user_texts() == ["Title this: SCENARIO:t1 hi"]


def test_fake_task_scenario_starts_a_subagent_of_another_scenario() -> None:
    with FakeAnthropicAPI() as fake:
        fake.add_scenario("m", "task", usages=[Usage(1, 2, 3, 4)], subagent="s")
        fake.add_scenario("s", "text", usages=[Usage(5, 6, 7, 8)], text="sub says hi")
        url = f"{fake.base_url}/v1/messages?beta=true"

        _, _, message = post(url, user_prompt("SCENARIO:m go"))
        text, task = message["content"]
        assert (text["type"], task["name"], message["stop_reason"]) == ("text", "Task", "tool_use")
        # The subagent's own request carries its prompt: the scenario named by `subagent`.
        _, _, answer = post(url, user_prompt(task["input"]["prompt"]))
        assert answer["content"] == [{"type": "text", "text": "sub says hi"}]
        assert (fake.sent("m"), fake.sent("s")) == (Usage(1, 2, 3, 4), Usage(5, 6, 7, 8))


def test_fake_stops_by_itself_after_its_lifetime() -> None:
    fake = FakeAnthropicAPI(max_lifetime_s=0.2).start()
    url = fake.base_url
    time.sleep(0.6)
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(url, timeout=2)
    fake.stop()  # idempotent
