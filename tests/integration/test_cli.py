"""The command-line contract of the installed ``orchestrator``: exit status 2 for bad usage
(nothing launched), --dry-run, colour, --claude-bin problems, the summary JSON schema and
the bundled demo.

Exit statuses are covered across the suite: 0 and 1 in test_run.py, 3 in
test_enforcement.py, 130 and 143 in test_signals.py, 2 here.
"""

from __future__ import annotations

import errno
import json
import os
import pty
import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest
from harness import ORCHESTRATOR, RUN_TIMEOUT_S, Result, Runner, Sim, clean_env, instance

ANSI = re.compile(r"\x1b\[")


def assert_one_error_line(result: Result, *fragments: str) -> None:
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("orchestrator: error: ")
    for fragment in fragments:
        assert fragment in lines[0]
    assert result.stdout == ""


# -- exit status 2: nothing launched -------------------------------------------------------

BAD_CONFIGS: dict[str, tuple[str, str]] = {
    # id: (file content, a fragment the error must name)
    "malformed JSON": ('{"instances": [', "malformed JSON"),
    "unknown instance key": ('{"instances": [{"command": "/a", "colour": "red"}]}', "'colour'"),
    "no instances": ('{"instances": []}', "'instances'"),
    "bad budget": (
        '{"instances": [{"command": "/a"}], "budget": {"command_budgets": {"/a": -1}}}',
        "command_budgets./a",
    ),
    "bad mode": (
        '{"instances": [{"command": "/a"}], "budget": {"enforcement_mode": "stop"}}',
        "'stop'",
    ),
}


@pytest.mark.parametrize(("content", "fragment"), BAD_CONFIGS.values(), ids=BAD_CONFIGS.keys())
def test_a_bad_config_file_is_one_error_line_and_exit_2(
    runner: Runner, content: str, fragment: str
) -> None:
    config = runner.workdir / "bad.json"
    config.write_text(content)

    result = runner.run("--config", str(config))

    assert_one_error_line(result, str(config), fragment)
    assert runner.claude.launches() == []
    assert result.summary is None


BAD_USAGE: dict[str, tuple[list[str], str]] = {
    # id: (arguments, a fragment the error must name)
    "unknown flag": (["/a", "--bogus"], "--bogus"),
    "zero concurrency": (["/a", "--max-concurrent", "0"], "--max-concurrent"),
    "zero timeout": (["/a", "--timeout", "0"], "--timeout"),
    "negative budget": (["/a", "--command-budget", "/a=-5"], "/a=-5"),
    "budget without key": (["/a", "--command-budget", "=5k"], "=5k"),
    "bad cost budget": (["/a", "--overall-cost-budget", "lots"], "lots"),
    "bad mode": (["/a", "--budget-enforcement-mode", "stop"], "stop"),
    "nothing to run": ([], "nothing to run"),
    "command and config": (["/a", "--config", "c.json"], "not both"),
    "missing config": (["--config", "missing.json"], "missing.json"),
    "missing workspace": (["/a", "--workspace", "nowhere"], "nowhere"),
    "unwritable summary": (["/a", "--summary-json", "no/such/dir/s.json"], "no/such/dir"),
}


@pytest.mark.parametrize(("args", "fragment"), BAD_USAGE.values(), ids=BAD_USAGE.keys())
def test_bad_usage_is_one_error_line_and_exit_2(
    runner: Runner, args: list[str], fragment: str
) -> None:
    result = runner.run(*args, summary="--summary-json" not in args)

    assert_one_error_line(result, fragment)
    assert runner.claude.launches() == []


def _not_executable(tmp: Path) -> str:
    path = tmp / "claude-not-executable"
    path.write_text("#!/bin/sh\n")
    return str(path)


CLAUDE_BIN_PROBLEMS = {
    "missing": (lambda tmp: str(tmp / "no-such-claude"), "does not exist"),
    "not executable": (_not_executable, "is not executable"),
    "a directory": (lambda tmp: str(tmp), "is not executable"),
    "not on PATH": (lambda tmp: "no-such-claude-anywhere", "not found on PATH"),
}


@pytest.mark.parametrize(
    ("make_path", "fragment"), CLAUDE_BIN_PROBLEMS.values(), ids=CLAUDE_BIN_PROBLEMS.keys()
)
@pytest.mark.parametrize("source", ["flag", "environment"])
def test_an_unusable_claude_bin_is_one_error_line_and_exit_2(
    runner: Runner, tmp_path: Path, make_path: Any, fragment: str, source: str
) -> None:
    path = make_path(tmp_path)
    if source == "flag":
        result = runner.run("/a", f"--claude-bin={path}", claude_bin=False)
    else:
        env = {"ORCHESTRATOR_CLAUDE_BIN": path}
        result = runner.run("/a", claude_bin=False, env=env)

    assert_one_error_line(result, path, fragment)
    if fragment != "not found on PATH":
        assert ("--claude-bin" if source == "flag" else "ORCHESTRATOR_CLAUDE_BIN") in result.stderr


# -- --dry-run, --help, --version ----------------------------------------------------------


def test_dry_run_prints_every_argv_and_the_budgets_and_launches_nothing(runner: Runner) -> None:
    config = runner.config(
        [
            instance(
                "an",
                "/analyze src",
                permission_mode="plan",
                allowed_tools=["Read", "Grep"],
                model="claude-sonnet-4-5",
            ),
            {"name": "plain", "prompt": "say hi", "max_tokens_per_command": 5000},
        ],
        {"overall_budget": 400_000, "command_budgets": {"/analyze": 200_000}},
    )

    result = runner.run(
        "--config",
        str(config),
        "--dry-run",
        "--claude-arg=--sim-calls=1",
        "--command-cost-budget=/analyze=2.50",
        "--budget-enforcement-mode=block",
    )

    assert result.returncode == 0, result.stdout + result.stderr
    claude = str(runner.claude.path)
    analyze_argv = [
        claude, "-p", "--output-format", "stream-json", "--verbose",
        "--include-partial-messages", "--permission-mode", "plan",
        "--allowedTools", "Read", "Grep", "--model", "claude-sonnet-4-5",
        # Block mode, a USD budget, a CLI that takes it: the cooperative limit, all of $2.50.
        *Sim().args(), "--sim-calls=1", "--max-budget-usd", "2.500000", "--", "/analyze src",
    ]  # fmt: skip
    plain_argv = [
        claude, "-p", "--output-format", "stream-json", "--verbose",
        "--include-partial-messages", "--sim-calls=1", "--", "say hi",
    ]  # fmt: skip
    assert len(result.lines_with(shlex.join(analyze_argv))) == 1, result.stdout
    assert len(result.lines_with(shlex.join(plain_argv))) == 1, result.stdout
    assert "BLOCK" in result.stdout
    assert len(result.lines_with("overall", "400,000 tokens")) == 1
    assert len(result.lines_with("/analyze", "200,000 tokens")) == 1
    assert len(result.lines_with("/analyze", "$2.50")) == 1
    assert len(result.lines_with("plain", "5,000 tokens")) == 1  # max_tokens_per_command
    assert runner.claude.launches() == []
    assert result.summary is None


def test_dry_run_needs_no_installed_claude(runner: Runner) -> None:
    result = runner.run("/a", "--dry-run", "--claude-bin=/opt/nowhere/claude", claude_bin=False)

    assert result.returncode == 0, result.stderr
    assert "/opt/nowhere/claude -p --output-format stream-json" in result.stdout
    assert result.stdout.rstrip().endswith("budgets: none")
    assert "-- /a" in result.stdout
    # It says, in one line, that a real run would not find the executable.
    [warning] = result.stderr.splitlines()
    assert warning.startswith("orchestrator: warning: claude executable /opt/nowhere/claude")
    assert "does not exist" in warning


def test_help_and_version(runner: Runner) -> None:
    help_result = runner.run("--help", claude_bin=False, summary=False)
    assert help_result.returncode == 0
    assert "cache_read" in help_result.stdout  # says what a token budget counts
    assert "--budget-enforcement-mode" in help_result.stdout
    version = runner.run("--version", claude_bin=False, summary=False)
    assert version.returncode == 0
    assert re.fullmatch(r"orchestrator \d+\.\d+\.\d+\n", version.stdout)


# -- colour --------------------------------------------------------------------------------


def run_on_a_terminal(runner: Runner, *args: str, env: dict[str, str] | None = None) -> str:
    """Run with stdout on a pseudo-terminal (so colour is on unless turned off)."""
    controller, terminal = pty.openpty()
    try:
        proc = subprocess.Popen(
            runner.argv(args),
            cwd=runner.workdir,
            env=clean_env(env),
            stdin=subprocess.DEVNULL,
            stdout=terminal,
            stderr=subprocess.PIPE,
        )
        os.close(terminal)
        output = bytearray()
        while True:
            try:
                chunk = os.read(controller, 65536)
            except OSError as exc:  # EIO: the terminal's other side is closed
                if exc.errno != errno.EIO:
                    raise
                break
            if not chunk:
                break
            output += chunk
        assert proc.wait(timeout=RUN_TIMEOUT_S) == 3, proc.stderr.read() if proc.stderr else ""
        if proc.stderr:
            proc.stderr.close()
    finally:
        os.close(controller)
    return output.decode("utf-8", "replace")


@pytest.fixture
def colourful_config(runner: Runner) -> list[str]:
    """A run that prints every kind of coloured thing: levels, stops, blocks, reports."""
    config = runner.config(
        [instance("a", "/x a", Sim(calls=3)), instance("b", "/x b")],
        {"command_budgets": {"/x": 10_000}, "enforcement_mode": "block"},
    )
    return ["--config", str(config), "--max-concurrent=1", "--status-report-interval=0.01"]


def test_colour_on_a_terminal(runner: Runner, colourful_config: list[str]) -> None:
    output = run_on_a_terminal(runner, *colourful_config)
    assert ANSI.search(output), output
    assert "EXCEEDED" in output  # the level word is there with or without colour
    assert "STATUS" in output


@pytest.mark.parametrize("how", ["--no-color", "NO_COLOR"])
def test_no_colour_when_asked(runner: Runner, colourful_config: list[str], how: str) -> None:
    if how == "NO_COLOR":
        output = run_on_a_terminal(runner, *colourful_config, env={"NO_COLOR": "1"})
    else:
        output = run_on_a_terminal(runner, *colourful_config, how)
    for word in ("EXCEEDED", "BLOCK", "STOP", "STATUS", "Summary"):
        assert word in output
    assert not ANSI.search(output), output


def test_no_colour_when_stdout_is_not_a_terminal(
    runner: Runner, colourful_config: list[str]
) -> None:
    result = runner.run(*colourful_config)
    assert result.returncode == 3
    assert "EXCEEDED" in result.stdout
    assert not ANSI.search(result.stdout + result.stderr)


# -- the summary JSON schema ---------------------------------------------------------------

INSTANCE_KEYS = {
    "name", "command", "budget_key", "status", "exit_code", "final", "tokens",
    "cost_usd", "cost_is_estimate", "duration_s", "error", "discrepancy", "skipped_lines",
    "stopped_by_cli", "max_budget_usd", "resumed_session", "launches",
}  # fmt: skip
TOKEN_KEYS = {"input", "output", "cache_creation", "cache_read", "total"}
BUDGET_KEYS = {"key", "unit", "limit", "used", "fraction", "level"}
BUDGET_KEYS |= {"window", "window_start", "used_before_run"}  # the ledger's (docs/ledger.md)
STATUSES = {"succeeded", "failed", "blocked", "stopped_by_budget", "timed_out", "cancelled"}
LEVELS = {"ok", "warning", "critical", "exceeded"}


def is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def check_tokens(tokens: Any) -> None:
    assert set(tokens) == TOKEN_KEYS
    assert all(is_int(v) and v >= 0 for v in tokens.values())
    assert tokens["total"] == sum(v for k, v in tokens.items() if k != "total")


def test_summary_json_follows_the_schema(runner: Runner) -> None:
    config = runner.config(
        [
            instance("ok", "/a ok", Sim(calls=1)),
            instance("crashes", "/a crash", Sim(calls=2, fail="crash")),
            instance("plain", "say hi", Sim(calls=1, model="claude-haiku-4-5")),
        ],
        {
            "overall_budget": 1_000_000,
            "overall_cost_budget": 50,
            "command_budgets": {"/a": 500_000},
            "command_cost_budgets": {"/a": 10},
        },
    )

    result = runner.run("--config", str(config))

    assert result.returncode == 1, result.stdout + result.stderr
    summary = result.summary
    assert summary is not None
    assert set(summary) == {
        "enforcement_mode", "exit_code", "instances", "budgets", "totals", "run_id", "ledger",
        "rate_limits",
    }  # fmt: skip
    assert summary["rate_limits"]["windows"] == {}  # no CLI reported a window
    assert isinstance(summary["run_id"], str) and isinstance(summary["ledger"], str)
    assert summary["enforcement_mode"] == "warn"
    assert summary["exit_code"] == 1
    assert [i["name"] for i in summary["instances"]] == ["ok", "crashes", "plain"]
    for inst in summary["instances"]:
        assert set(inst) == INSTANCE_KEYS
        for key in ("name", "command", "budget_key"):
            assert isinstance(inst[key], str)
        assert inst["status"] in STATUSES
        assert inst["exit_code"] is None or is_int(inst["exit_code"])
        assert isinstance(inst["final"], bool)
        assert isinstance(inst["cost_is_estimate"], bool)
        check_tokens(inst["tokens"])
        assert is_number(inst["cost_usd"]) and inst["cost_usd"] >= 0
        assert is_number(inst["duration_s"]) and inst["duration_s"] >= 0
        assert inst["error"] is None or isinstance(inst["error"], str)
        assert is_int(inst["skipped_lines"]) and inst["skipped_lines"] >= 0
    assert result.instance("plain")["budget_key"] == "plain"  # a plain prompt: its name
    assert result.instance("crashes")["error"]
    assert result.instance("ok")["error"] is None

    budgets = summary["budgets"]
    assert [(b["key"], b["unit"]) for b in budgets] == [
        ("overall", "tokens"),
        ("overall", "usd"),
        ("/a", "tokens"),
        ("/a", "usd"),
    ]
    for budget in budgets:
        assert set(budget) == BUDGET_KEYS
        assert budget["level"] in LEVELS
        assert isinstance(budget["fraction"], float)
        assert budget["fraction"] == pytest.approx(budget["used"] / budget["limit"])
        if budget["unit"] == "tokens":
            assert is_int(budget["limit"]) and is_int(budget["used"])
        else:
            assert is_number(budget["limit"]) and is_number(budget["used"])
    total = result.budget("overall")["used"]
    assert total == sum(i["tokens"]["total"] for i in summary["instances"])

    assert set(summary["totals"]) == {"tokens", "cost_usd"}
    check_tokens(summary["totals"]["tokens"])
    assert summary["totals"]["tokens"]["total"] == total
    assert is_number(summary["totals"]["cost_usd"])
    assert summary["totals"]["cost_usd"] == pytest.approx(
        sum(i["cost_usd"] for i in summary["instances"])
    )
    assert result.budget("overall", "usd")["used"] == pytest.approx(summary["totals"]["cost_usd"])


# -- the bundled demo ----------------------------------------------------------------------


@pytest.mark.slow
def test_demo_runs_end_to_end_headless(tmp_path: Path) -> None:
    summary_path = tmp_path / "demo.json"
    proc = subprocess.run(
        [str(ORCHESTRATOR), "--demo", f"--summary-json={summary_path}"],
        cwd=tmp_path,
        env=clean_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )

    assert proc.returncode == 3, proc.stdout + proc.stderr  # it shows block mode at work
    assert "Traceback" not in proc.stderr
    assert "Summary" in proc.stdout
    assert "STATUS" in proc.stdout  # periodic reports (every 5 s by default)
    assert not ANSI.search(proc.stdout)
    summary = json.loads(summary_path.read_text())
    statuses = {i["name"]: i["status"] for i in summary["instances"]}
    assert statuses == {
        "analyze-api": "succeeded",
        "refactor-db": "stopped_by_budget",
        "review-auth": "succeeded",
        "analyze-ui": "succeeded",
        "review-api": "succeeded",
        "refactor-ui": "blocked",
    }
    for inst in summary["instances"]:
        if inst["status"] == "succeeded":
            assert inst["final"] is True and inst["cost_is_estimate"] is False
    assert {b["key"]: b["level"] for b in summary["budgets"]}["/refactor"] == "exceeded"
    assert summary["rate_limits"]["windows"]["five_hour"]["status"] == "allowed_warning"
    assert "RATE   5h window 83%, resets" in proc.stdout
