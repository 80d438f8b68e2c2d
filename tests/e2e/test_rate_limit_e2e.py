"""Subscription windows end to end: the real CLI reads the fake API's rate-limit headers and
prints `rate_limit_event` lines; the tracker reads them (never as tokens) and the orchestrator
shows them, and with `--on-rate-limit wait` holds its next launch until the reset time.

Which CLIs print them (found in their bundles, confirmed here): 2.1.197 and 2.1.332, on a
subscription login only (`CLAUDE_CODE_OAUTH_TOKEN`; with an API key, never); 2.1.332 adds the
other windows (`unifiedWindows`). 1.0.108 and 2.0.0 read some of the headers but print none.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from claude_cli import (
    NEWEST_CLI_VERSION,
    OLD_CLI_VERSION,
    CliEnvFactory,
    finish_claude,
    run_claude,
    start_claude,
)
from fake_api import FakeAnthropicAPI, Usage, unified_rate_limit_headers
from orch_helpers import run_orchestrator, tokens

from budget_core import RateLimitStatus, UsageTracker

pytestmark = pytest.mark.e2e

TEXT_USAGE = Usage(1234, 567, 10, 89)


def _available(installs: dict[str, tuple[Path | None, str]], version: str) -> Path:
    path, reason = installs[version]
    if path is None:
        pytest.fail(f"Claude Code CLI {version} unavailable: {reason}")
    return path


def _warning_headers(now: float) -> dict[str, str]:
    return unified_rate_limit_headers(
        "allowed_warning",
        window="five_hour",
        resets_at=now + 3000,
        utilization=0.83,
        surpassed_threshold=0.8,
        others={"seven_day": (0.2, now + 300_000)},
    )


def _tracked(stdout: str) -> UsageTracker:
    tracker = UsageTracker()
    for line in stdout.splitlines():
        tracker.feed_line(line)
    return tracker


@pytest.mark.parametrize("version", ["2.1.197", NEWEST_CLI_VERSION])
def test_the_cli_prints_a_warning_from_the_unified_headers(
    version: str,
    claude_installs: dict[str, tuple[Path | None, str]],
    fake_api: FakeAnthropicAPI,
    cli_env: CliEnvFactory,
    cli_workdir: Path,
) -> None:
    claude = _available(claude_installs, version)
    now = time.time()
    fake_api.add_scenario(
        "w", "text", **TEXT_USAGE.__dict__, rate_limit_headers=_warning_headers(now)
    )
    env = cli_env(fake_api.base_url, oauth=True)
    run = run_claude(claude, "SCENARIO:w hi", env, cli_workdir)
    assert run.returncode == 0, run.stderr
    (line,) = run.of_type("rate_limit_event")
    info = line["rate_limit_info"]
    assert (info["status"], info["rateLimitType"], info["utilization"]) == (
        "allowed_warning",
        "five_hour",
        0.83,
    )
    tracker = _tracked(run.raw_stdout)
    event = tracker.rate_limit
    assert event is not None and tracker.rate_limit_events == 1
    assert event.main.status is RateLimitStatus.ALLOWED_WARNING
    assert event.main.resets_at == int(now + 3000) and event.main.utilization == 0.83
    # Tokens are the call's, exactly: the rate-limit line added none.
    assert tracker.usage.total == TEXT_USAGE.total == fake_api.sent("w").total
    assert tracker.skipped_lines == 0
    others = {o.window: o.utilization for o in event.others}
    # Only the newest CLI reports the other windows (unifiedWindows).
    assert others == ({"seven_day": 0.2} if version == NEWEST_CLI_VERSION else {})


def test_a_rejection_arrives_with_the_429_and_an_api_key_gets_no_line(
    claude_bin: Path, fake_api: FakeAnthropicAPI, cli_env: CliEnvFactory, cli_workdir: Path
) -> None:
    reset = time.time() + 600
    headers = unified_rate_limit_headers("rejected", window="seven_day", resets_at=reset)
    fake_api.add_scenario("r", "err429", rate_limit_headers=headers)
    fake_api.add_scenario("w", "text", rate_limit_headers=_warning_headers(time.time()))
    started = time.monotonic()
    # Side by side: a subscription refused; an API-key login given a warning's headers.
    refused = start_claude(
        claude_bin, "SCENARIO:r hi", cli_env(fake_api.base_url, oauth=True), cli_workdir
    )
    with_key = start_claude(claude_bin, "SCENARIO:w hi", cli_env(fake_api.base_url), cli_workdir)
    rejected, keyed = finish_claude(refused, started), finish_claude(with_key, started)
    assert rejected.returncode == 1
    event = _tracked(rejected.raw_stdout).rate_limit
    assert event is not None and event.status is RateLimitStatus.REJECTED
    assert (event.main.window, event.main.resets_at) == ("seven_day", int(reset))
    assert keyed.returncode == 0 and not keyed.of_type("rate_limit_event"), keyed.stderr
    assert fake_api.requests_for("w"), "the headers were never sent"


def test_older_clis_print_no_rate_limit_event(
    claude_installs: dict[str, tuple[Path | None, str]],
    fake_api: FakeAnthropicAPI,
    cli_env: CliEnvFactory,
    cli_workdir: Path,
) -> None:
    """2.0.0 reads some of the headers on a subscription, but prints no such line; 1.0.108's
    bundle does not even know the line type."""
    old = _available(claude_installs, OLD_CLI_VERSION)
    bundle = old.parent.parent / "@anthropic-ai" / "claude-code" / "cli.js"
    assert b"anthropic-ratelimit-unified-status" in bundle.read_bytes()
    assert b"rate_limit_event" not in bundle.read_bytes()
    fake_api.add_scenario("w", "text", rate_limit_headers=_warning_headers(time.time()))
    env = cli_env(fake_api.base_url, oauth=True)
    run = run_claude(_available(claude_installs, "2.0.0"), "SCENARIO:w hi", env, cli_workdir)
    assert run.returncode == 0 and run.result is not None, run.stderr
    assert not run.of_type("rate_limit_event")
    assert fake_api.requests_for("w"), "the headers were never sent"


def test_wait_holds_the_next_launch_until_the_real_clis_reset_time(
    claude_bin: Path, fake_api: FakeAnthropicAPI, cli_env: CliEnvFactory, tmp_path: Path
) -> None:
    """r's CLI is refused (5h window rejected, reset 3 s after the answer): w is launched
    only once the reset time has come; its warning is then shown, and the summary has both."""
    resets: list[int] = []

    def rejected() -> dict[str, str]:
        resets.append(int(time.time()) + 3)  # whole seconds: a hold of 2 to 3 s
        return unified_rate_limit_headers("rejected", window="five_hour", resets_at=resets[-1])

    fake_api.add_scenario("r", "err429", rate_limit_headers=rejected)
    fake_api.add_scenario(
        "w", "text", **TEXT_USAGE.__dict__, rate_limit_headers=_warning_headers(time.time())
    )
    instances = [
        {"name": "r", "command": "SCENARIO:r hi"},
        {"name": "w", "command": "SCENARIO:w hi"},
    ]
    env = cli_env(fake_api.base_url, oauth=True)
    run = run_orchestrator(
        claude_bin, instances, env, tmp_path / "run", "--max-concurrent", "1",
        "--on-rate-limit", "wait",
    )  # fmt: skip
    explain = run.explain(fake_api)
    assert run.returncode == 1, explain  # r failed: the CLI's own refusal
    assert run.instance("r")["status"] == "failed"
    assert run.instance("w")["status"] == "succeeded", explain
    assert run.instance("w")["tokens"] == tokens(TEXT_USAGE)
    assert "RATE   5h window LIMIT, resets" in run.stdout, explain
    assert "holding new launches until" in run.stdout, explain
    assert "5h window reset time reached: launching again" in run.stdout, explain
    assert "RATE   5h window 83%, resets" in run.stdout, explain
    (w_request,) = fake_api.requests_for("w")
    (reset,) = resets
    assert time.time() - (time.monotonic() - w_request.at) >= reset, "w ran before the reset"
    limits = run.summary["rate_limits"]
    assert limits["on_rate_limit"] == "wait" and limits["events"] == 2
    assert limits["hold"]["holds"] == 1 and limits["hold"]["state"] == "open"
    assert limits["hold"]["held_s"] > 0
    window = limits["windows"]["five_hour"]
    assert (window["status"], window["utilization"], window["reported_by"]) == (
        "allowed_warning",
        0.83,
        "w",
    )
