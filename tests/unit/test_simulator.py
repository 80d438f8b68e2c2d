"""The Claude Code CLI simulator, run as a real subprocess like an orchestrator would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from orchestrator.simulator import (
    Config,
    cost_usd,
    display_model,
    expected_usage,
    parse_config,
)

ROOT = Path(__file__).resolve().parents[2]
SIMULATOR = ROOT / "orchestrator" / "simulator.py"
CLAUDE_ARGS = ["-p", "say hi", "--output-format", "stream-json", "--verbose"]
PARTIAL = "--include-partial-messages"
DEFAULTS = expected_usage(2, 1200, 400, 200, 3000)


def run_sim(
    *args: str,
    partial: bool = True,
    env: dict[str, str] | None = None,
    timeout: float = 10,
    script: bool = False,
) -> subprocess.CompletedProcess[bytes]:
    entry = [str(SIMULATOR)] if script else ["-m", "orchestrator.simulator"]
    argv = [sys.executable, *entry, *CLAUDE_ARGS, *([PARTIAL] if partial else []), *args]
    # A SIM_* variable in the developer's shell must not change what the tests see.
    clean_env = {k: v for k, v in os.environ.items() if not k.startswith("SIM_")}
    return subprocess.run(
        argv,
        cwd=ROOT,
        env={**clean_env, **(env or {})},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=timeout,
        check=False,
    )


def records(stdout: bytes) -> list[dict[str, Any]]:
    """Every line must be one JSON object."""
    return [json.loads(line) for line in stdout.splitlines()]


def parseable(stdout: bytes) -> list[dict[str, Any]]:
    """Only the lines that parse, as a tolerant reader would keep them."""
    kept = []
    for line in stdout.splitlines():
        try:
            kept.append(json.loads(line.decode("utf-8", errors="replace")))
        except json.JSONDecodeError:
            continue
    return kept


def events(recs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [r["event"] for r in recs if r["type"] == "stream_event" and r["event"]["type"] == kind]


def result_totals(result: dict[str, Any]) -> dict[str, int]:
    usage = result["usage"]
    return {
        "input": usage["input_tokens"],
        "output": usage["output_tokens"],
        "cache_creation": usage["cache_creation_input_tokens"],
        "cache_read": usage["cache_read_input_tokens"],
    }


def live_totals(recs: list[dict[str, Any]]) -> dict[str, int]:
    """A minimal correct live counter: one entry per message id, output from message_delta."""
    calls: dict[str, dict[str, int]] = {}
    current = ""

    def entry(msg_id: str, usage: dict[str, Any]) -> dict[str, int]:
        return calls.setdefault(
            msg_id,
            {
                "input": usage.get("input_tokens") or 0,
                "output": usage.get("output_tokens") or 0,
                "cache_creation": usage.get("cache_creation_input_tokens") or 0,
                "cache_read": usage.get("cache_read_input_tokens") or 0,
            },
        )

    for rec in recs:
        if rec["type"] == "stream_event":
            event = rec["event"]
            if event["type"] == "message_start":
                current = event["message"]["id"]
                entry(current, event["message"]["usage"])
            elif event["type"] == "message_delta":
                calls[current]["output"] = event["usage"]["output_tokens"]
        elif rec["type"] == "assistant" and rec["message"]["model"] != "<synthetic>":
            entry(rec["message"]["id"], rec["message"]["usage"])
    keys = ("input", "output", "cache_creation", "cache_read")
    return {k: sum(c[k] for c in calls.values()) for k in keys}


# -- pure helpers ----------------------------------------------------------------------------


def test_expected_usage_multiplies_per_call_numbers() -> None:
    assert expected_usage(3, 10, 20, 30, 40) == {
        "input": 30,
        "output": 60,
        "cache_creation": 90,
        "cache_read": 120,
    }


@pytest.mark.parametrize(
    ("model", "cli_cost"),
    [("claude-opus-4-8", 0.020452), ("claude-sonnet-4-5", 0.0122712)],
)
def test_cost_matches_the_real_cli_for_fixture_numbers(model: str, cli_cost: float) -> None:
    usage = {"input": 1234, "output": 567, "cache_creation": 10, "cache_read": 89}
    assert cost_usd(model, usage) == pytest.approx(cli_cost, abs=1e-12)


def test_display_model_adds_1m_suffix_to_opus_only() -> None:
    assert display_model("claude-opus-4-8") == "claude-opus-4-8[1m]"
    assert display_model("claude-opus-4-8[1m]") == "claude-opus-4-8[1m]"
    assert display_model("claude-sonnet-4-5") == "claude-sonnet-4-5"


def test_parse_config_ignores_claude_flags_and_flags_beat_env() -> None:
    argv = [
        "--verbose",
        "-p",
        "/review 12",
        "--allowedTools",
        "Bash",
        "--allowedTools",
        "Read Write",
        "--permission-mode",
        "acceptEdits",
        "--model",
        "opus",
        "--max-turns",
        "3",
        "--dangerously-skip-permissions",
        "--sim-calls",
        "4",
    ]
    cfg = parse_config(argv, {"SIM_CALLS": "9", "SIM_SEED": "7"})
    assert cfg == Config(prompt="/review 12", permission_mode="acceptEdits", calls=4, seed=7)
    assert parse_config(["hello", "-p"], {}).prompt == "hello"


def test_parse_config_takes_everything_after_dashes_as_the_prompt() -> None:
    # As the orchestrator runs it: options first, then "--" and the prompt, whatever it is.
    head = ["-p", "--output-format", "stream-json", "--verbose", PARTIAL]
    cfg = parse_config(
        [*head, "--allowedTools", "Read", "Grep", "--sim-calls=1", "--", "--help"], {}
    )
    assert (cfg.prompt, cfg.partial, cfg.calls) == ("--help", True, 1)
    # A prompt that looks like a --sim-* flag is a prompt, not a flag.
    cfg = parse_config(["-p", "--verbose", "--", "--sim-calls=3"], {})
    assert (cfg.prompt, cfg.partial, cfg.calls) == ("--sim-calls=3", False, 2)
    assert parse_config(["-p", "--", "-x is a flag?"], {}).prompt == "-x is a flag?"
    # A wrapper may append --sim-* flags after the prompt ("$@" --sim-calls=1).
    cfg = parse_config(["-p", "--", "--sim-calls=3", "--sim-calls=1"], {})
    assert (cfg.prompt, cfg.calls) == ("--sim-calls=3", 1)


@pytest.mark.parametrize("args", [["--version"], ["--version", "--sim-calls=1"]])
def test_version_is_the_one_it_imitates(args: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, str(SIMULATOR), *args], capture_output=True, text=True, timeout=10
    )
    assert (done.returncode, done.stdout) == (0, "2.1.197 (Claude Code simulator)\n")


def test_a_prompt_of_version_is_a_prompt() -> None:
    done = run_sim("--sim-calls=1", "--", "--version", timeout=20)
    assert done.returncode == 0
    assert records(done.stdout)[-1]["type"] == "result"


# -- normal runs -----------------------------------------------------------------------------


def test_default_run_prints_valid_stream_json_with_exact_totals() -> None:
    proc = run_sim()
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.endswith(b"\n")
    recs = records(proc.stdout)
    init, result = recs[0], recs[-1]
    assert (init["type"], init["subtype"]) == ("system", "init")
    assert init["model"] == "claude-opus-4-8[1m]"
    assert init["claude_code_version"] == "2.1.197"
    assert result["type"] == "result"
    assert (result["subtype"], result["is_error"], result["num_turns"]) == ("success", False, 2)
    assert result_totals(result) == DEFAULTS
    assert result["total_cost_usd"] == cost_usd("claude-opus-4-8", DEFAULTS)
    model_usage = result["modelUsage"]["claude-opus-4-8[1m]"]
    assert model_usage["inputTokens"] == DEFAULTS["input"]
    assert model_usage["outputTokens"] == DEFAULTS["output"]
    assert model_usage["cacheCreationInputTokens"] == DEFAULTS["cache_creation"]
    assert model_usage["cacheReadInputTokens"] == DEFAULTS["cache_read"]
    assert model_usage["costUSD"] == result["total_cost_usd"]
    assert live_totals(recs) == DEFAULTS
    # Compact JSON, as the CLI prints it.
    assert b'", "' not in proc.stdout.splitlines()[-1]


@pytest.mark.parametrize("partial", [True, False])
def test_stream_events_only_with_partial_messages(partial: bool) -> None:
    recs = records(run_sim(partial=partial).stdout)
    kinds = {r["type"] for r in recs}
    assert ("stream_event" in kinds) is partial
    has_status = any(r["type"] == "system" and r.get("subtype") == "status" for r in recs)
    assert has_status is partial
    assert {"system", "assistant", "user", "result"} <= kinds


def test_call_structure_tool_use_and_message_delta_output() -> None:
    proc = run_sim("--sim-calls", "3", "--sim-output-tokens", "321", "--sim-deltas", "5")
    recs = records(proc.stdout)
    starts = events(recs, "message_start")
    assert len(starts) == 3
    assert len({s["message"]["id"] for s in starts}) == 3
    assert all(s["message"]["usage"]["output_tokens"] == 1 for s in starts)
    assert [d["usage"]["output_tokens"] for d in events(recs, "message_delta")] == [321] * 3
    text_deltas = [
        d for d in events(recs, "content_block_delta") if d["delta"]["type"] == "text_delta"
    ]
    assert len(text_deltas) == 5 * 3
    assistants = [r for r in recs if r["type"] == "assistant"]
    tool_uses = [a for a in assistants if a["message"]["content"][0]["type"] == "tool_use"]
    assert len(assistants) == 3 + 2  # one line per content block; the last call has no tool
    assert all(a["message"]["usage"]["output_tokens"] == 1 for a in assistants)
    results = [r for r in recs if r["type"] == "user"]
    tool_ids = [t["message"]["content"][0]["id"] for t in tool_uses]
    assert [u["message"]["content"][0]["tool_use_id"] for u in results] == tool_ids
    assert result_totals(recs[-1])["output"] == 963


def test_env_configures_and_flags_win() -> None:
    env = {"SIM_CALLS": "5", "SIM_INPUT_TOKENS": "77", "SIM_MODEL": "claude-sonnet-4-5"}
    recs = records(run_sim("--sim-calls", "1", env=env).stdout)
    result = recs[-1]
    assert result["num_turns"] == 1
    assert result_totals(result) == expected_usage(1, 77, 400, 200, 3000)
    assert list(result["modelUsage"]) == ["claude-sonnet-4-5"]


def test_runs_as_a_script_path() -> None:
    proc = run_sim("--sim-calls", "1", script=True)
    assert proc.returncode == 0, proc.stderr
    assert records(proc.stdout)[-1]["type"] == "result"


def test_same_seed_and_prompt_give_identical_output() -> None:
    first = run_sim("--sim-seed", "42").stdout
    assert first == run_sim("--sim-seed", "42").stdout
    assert first != run_sim("--sim-seed", "43").stdout


# -- failure modes ---------------------------------------------------------------------------


def test_crash_exits_1_without_result_after_half_the_calls() -> None:
    proc = run_sim("--sim-calls", "4", "--sim-fail", "crash")
    assert proc.returncode == 1
    assert b"crash" in proc.stderr
    assert not proc.stdout.endswith(b"\n")  # died mid-line
    complete, _, cut = proc.stdout.rpartition(b"\n")
    with pytest.raises(json.JSONDecodeError):
        json.loads(cut)
    recs = records(complete)
    assert all(r["type"] != "result" for r in recs)
    assert len(events(recs, "message_delta")) == 2
    assert len(events(recs, "message_start")) == 3  # the third call had started


def test_no_result_exits_0_after_all_calls() -> None:
    proc = run_sim("--sim-fail", "no-result")
    assert proc.returncode == 0
    recs = records(proc.stdout)
    assert all(r["type"] != "result" for r in recs)
    assert live_totals(recs) == DEFAULTS


def test_error_result_with_zero_calls_looks_like_cli_err500() -> None:
    proc = run_sim("--sim-calls", "0", "--sim-fail", "error-result", "--sim-error-text", "boom")
    assert proc.returncode == 1
    recs = records(proc.stdout)
    synthetic, result = recs[-2], recs[-1]
    assert synthetic["message"]["model"] == "<synthetic>"
    assert synthetic["message"]["usage"]["input_tokens"] == 0
    assert (result["subtype"], result["is_error"]) == ("success", True)
    assert (result["api_error_status"], result["result"]) == (500, "boom")
    assert result_totals(result) == expected_usage(0, 1, 1, 1, 1)
    assert (result["modelUsage"], result["total_cost_usd"]) == ({}, 0)


def test_error_result_after_calls_keeps_their_usage() -> None:
    proc = run_sim("--sim-fail", "error-result", env={"SIM_CALLS": "2"})
    assert proc.returncode == 1
    result = records(proc.stdout)[-1]
    assert result["is_error"] is True
    assert result["num_turns"] == 3
    assert result_totals(result) == DEFAULTS


def test_huge_line_is_one_line_of_the_requested_size() -> None:
    size = 2_000_000
    proc = run_sim("--sim-fail", "huge-line", "--sim-huge-bytes", str(size))
    assert proc.returncode == 0
    lines = proc.stdout.splitlines()
    huge = [line for line in lines if len(line) > 10_000]
    assert [len(line) for line in huge] == [size]
    assert json.loads(huge[0])["type"] == "user"
    assert result_totals(records(proc.stdout)[-1]) == DEFAULTS


def test_hang_stops_after_the_first_call() -> None:
    with pytest.raises(subprocess.TimeoutExpired) as info:
        run_sim("--sim-fail", "hang", timeout=1.0)
    output = info.value.stdout
    assert isinstance(output, bytes)
    recs = records(output)
    assert len(events(recs, "message_stop")) == 1
    assert all(r["type"] != "result" for r in recs)


def test_garbage_lines_do_not_change_the_counts() -> None:
    proc = run_sim("--sim-fail", "garbage")
    assert proc.returncode == 0
    lines = proc.stdout.splitlines()
    assert any(line.startswith(b"DEBUG:") for line in lines)
    json_like = [line for line in lines if line.startswith(b"{")]
    recs = parseable(proc.stdout)
    assert len(recs) == len(json_like) - 1  # one truncated JSON line
    assert live_totals(recs) == DEFAULTS
    assert result_totals(recs[-1]) == DEFAULTS


def test_stderr_flood_still_finishes() -> None:
    proc = run_sim("--sim-fail", "stderr-flood")
    assert proc.returncode == 0
    assert len(proc.stderr) >= 10_000_000
    assert result_totals(records(proc.stdout)[-1]) == DEFAULTS


def test_exit_nonzero_still_prints_a_successful_result() -> None:
    proc = run_sim("--sim-fail", "exit-nonzero")
    assert proc.returncode == 2
    result = records(proc.stdout)[-1]
    assert (result["subtype"], result["is_error"]) == ("success", False)


def test_invalid_utf8_line() -> None:
    proc = run_sim("--sim-fail", "invalid-utf8")
    assert proc.returncode == 0
    bad = []
    for line in proc.stdout.splitlines():
        try:
            line.decode("utf-8")
        except UnicodeDecodeError:
            bad.append(line)
    assert len(bad) == 1 and b"\xff\xfe" in bad[0]
    assert json.loads(bad[0].decode("utf-8", errors="replace"))["type"] == "user"
    assert result_totals(parseable(proc.stdout)[-1]) == DEFAULTS


def test_null_usage_fields_but_exact_result() -> None:
    proc = run_sim("--sim-fail", "null-usage")
    recs = records(proc.stdout)
    usages = [e["message"]["usage"] for e in events(recs, "message_start")]
    usages += [r["message"]["usage"] for r in recs if r["type"] == "assistant"]
    assert all(u["output_tokens"] is None for u in usages)
    assert live_totals(recs) == DEFAULTS  # message_start carries input and cache numbers
    assert result_totals(recs[-1]) == DEFAULTS


def test_bad_sim_option_is_an_argument_error() -> None:
    proc = run_sim("--sim-fail", "explode")
    assert proc.returncode == 2
    assert b"unknown fail mode" in proc.stderr
    assert proc.stdout == b""
