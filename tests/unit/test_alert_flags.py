"""The alert, GitHub Actions and metrics flags, checked before anything starts: each bad
value is one ConfigError naming the flag and what is wrong."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from orchestrator.cli import build_parser
from orchestrator.config import ConfigError
from orchestrator.integration_options import IntegrationOptions, options_from_args


def options(*argv: str, environ: dict[str, str] | None = None) -> IntegrationOptions:
    args = build_parser().parse_args(["/a go", *argv])
    return options_from_args(args, [("the config file", "/nonexistent/config.json")], environ or {})


def refused(*argv: str, environ: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        options(*argv, environ=environ)
    return str(info.value)


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("ftp://example.com/x", "the URL must start with http:// or https://"),
        ("example.com/hook", "the URL must start with http:// or https://"),
        ("file:///etc/passwd", "the URL must start with http:// or https://"),
        ("http://", "the URL names no host"),
        ("https://h:99999/x", "Port out of range"),
        ("https://h/a b", "the URL holds whitespace"),
        ("https://h/\x1b[31m", "the URL holds"),
    ],
)
def test_a_bad_webhook_url(url: str, problem: str) -> None:
    message = refused(f"--alert-webhook={url}")
    assert message.startswith("--alert-webhook") and problem in message, message
    assert "\n" not in message


def test_a_good_webhook_url() -> None:
    assert options("--alert-webhook=https://hooks.example.com/T/B/x?y=1").alerts.webhook


def test_the_webhook_from_the_environment_and_the_flag_first() -> None:
    env = {"ORCHESTRATOR_ALERT_WEBHOOK": "https://hooks.example.com/secret"}
    assert options(environ=env).alerts.webhook == "https://hooks.example.com/secret"
    flag = options("--alert-webhook=http://127.0.0.1:9/x", environ=env)
    assert flag.alerts.webhook == "http://127.0.0.1:9/x"
    bad = refused(environ={"ORCHESTRATOR_ALERT_WEBHOOK": "hooks.example.com"})
    assert bad.startswith("ORCHESTRATOR_ALERT_WEBHOOK 'hooks.example.com': the URL must start")
    assert options(environ={"ORCHESTRATOR_ALERT_WEBHOOK": ""}).alerts.webhook is None


@pytest.mark.parametrize(
    ("command", "problem"),
    [
        ("", "--alert-command: the command is empty"),
        ("   ", "--alert-command: the command is empty"),
        ("'unclosed", "cannot split it: No closing quotation"),
        ("no-such-alert-command --x", "--alert-command: 'no-such-alert-command' not found on PATH"),
        ("/etc/passwd", "--alert-command: /etc/passwd is not an executable file"),
        ("/", "--alert-command: / is not an executable file"),
    ],
)
def test_a_bad_alert_command(command: str, problem: str) -> None:
    assert problem in refused(f"--alert-command={command}")


def test_an_alert_command_is_split_without_a_shell_and_found_on_path() -> None:
    targets = options("--alert-command=sh -c 'echo $HOME; cat' \"two words\"").alerts
    assert targets.command is not None
    assert os.path.isabs(targets.command[0]) and targets.command[0].endswith("/sh")
    assert targets.command[1:] == ("-c", "echo $HOME; cat", "two words")


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("nan", "'nan' must be a percentage above 0 and at most 1000"),
        ("inf", "'inf' must be a percentage above 0"),
        ("0", "'0' must be a percentage above 0"),
        ("-5", "'-5' must be a percentage above 0"),
        ("1000.5", "'1000.5' must be a percentage above 0 and at most 1000"),
        ("50,,80", "an empty percentage"),
        ("50,", "an empty percentage"),
        ("fifty", "'fifty' is not a number"),
    ],
)
def test_bad_percentages(value: str, problem: str) -> None:
    message = refused("--alert-command=true", f"--alert-at={value}")
    assert message.startswith("--alert-at") and problem in message, message


def test_percentages_are_sorted_and_deduplicated() -> None:
    assert options("--alert-command=true", "--alert-at=100, 50%,80,50").thresholds == (50, 80, 100)
    assert options("--alert-command=true").thresholds == (70, 90, 100)


def test_alert_at_alone_has_nothing_to_alert_outside_github_actions() -> None:
    assert "nothing to alert" in refused("--alert-at=50")
    github = options("--alert-at=50", environ={"GITHUB_ACTIONS": "true"})
    assert github.github and github.thresholds == (50,)


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", "601", "soon"])
def test_a_bad_alert_timeout(value: str) -> None:
    assert refused("--alert-command=true", f"--alert-timeout={value}").startswith("--alert-timeout")


def test_bad_metrics_paths(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    cases = {
        str(tmp_path / "missing" / "run.prom"): "does not exist",
        str(tmp_path): "is a directory",
        str(fifo): "is a FIFO",
        "/dev/null": "is a character device",
        "": "the path is empty",
    }
    for path, problem in cases.items():
        message = refused(f"--metrics-file={path}")
        assert message.startswith("--metrics-file: cannot write there: ") and problem in message
    same = str(tmp_path / "out.json")
    assert "is also the --summary-json file" in refused(
        f"--metrics-file={same}", f"--summary-json={same}"
    )


def test_github_actions_only_when_the_variable_is_exactly_true() -> None:
    assert options(environ={"GITHUB_ACTIONS": "true"}).github
    assert not options(environ={"GITHUB_ACTIONS": "1"}).github
    assert not options().any  # nothing asked: the run has no such subscriber at all


def test_the_help_lists_the_flags() -> None:
    text = build_parser().format_help()
    for flag in ("--alert-command", "--alert-webhook", "--alert-at", "--alert-timeout"):
        assert flag in text
    assert "--metrics-file" in text


def test_a_webhook_is_named_in_messages_without_its_secret_parts() -> None:
    from orchestrator.alerts import redact_url

    assert redact_url("https://user:pw@hooks.slack.com/services/T/B/X") == (
        "https://hooks.slack.com/..."
    )
    assert redact_url("http://[::1]:8080/x?token=1") == "http://[::1]:8080/..."
    assert redact_url("https://h.example") == "https://h.example"
