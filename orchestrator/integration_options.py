"""The alert, GitHub Actions and metrics flags, checked before anything starts: each bad
value is one ``ConfigError`` naming the flag (exit 2, nothing launched)."""

from __future__ import annotations

import argparse
import math
import os
import shlex
import shutil
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from budget_core import unprintable_character
from orchestrator import github_actions
from orchestrator.alert_events import DEFAULT_THRESHOLDS, percent_text
from orchestrator.alerts import AlertTargets
from orchestrator.config import ConfigError
from orchestrator.output_file import output_problem

WEBHOOK_ENV = "ORCHESTRATOR_ALERT_WEBHOOK"
MAX_PERCENT = 1000.0
MAX_ALERT_TIMEOUT_S = 600.0
DEFAULT_METRICS_INTERVAL_S = 5.0  # with --status-report-interval 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("alerts, CI and metrics")
    group.add_argument(
        "--alert-command",
        metavar="CMD",
        help="run CMD (split like a shell would, but run without one) for each budget "
        "percentage reached, block, budget stop, failure and the end of the run, the event as "
        "JSON on its stdin, e.g. 'notify-send-budget --channel ops' (default: none)",
    )
    group.add_argument(
        "--alert-webhook",
        metavar="URL",
        help="POST the same JSON (with a 'text' field a chat webhook shows) to an http(s) "
        "URL, e.g. https://hooks.slack.com/services/... (default: $ORCHESTRATOR_ALERT_WEBHOOK, "
        "which keeps the URL, a secret, out of ps and the ledger's record of the command line)",
    )
    group.add_argument(
        "--alert-at",
        metavar="PERCENTS",
        help="the budget percentages that alert, e.g. 50,80,90,100; each above 0 and at "
        f"most {MAX_PERCENT:g} (default: the levels, "
        f"{','.join(percent_text(t)[:-1] for t in DEFAULT_THRESHOLDS)})",
    )
    group.add_argument(
        "--alert-timeout",
        metavar="SECS",
        help="how long one alert may take (a command to exit, a webhook to answer), and how "
        "long the run's end waits for alerts still pending, e.g. 30; at most 600 (default: 10)",
    )
    group.add_argument(
        "--metrics-file",
        metavar="PATH",
        help="write Prometheus metrics there (node_exporter textfile format, replaced "
        "atomically) every --status-report-interval and at the end, e.g. "
        "/var/lib/node_exporter/textfile/orchestrator.prom (default: none)",
    )


@dataclass(frozen=True)
class IntegrationOptions:
    alerts: AlertTargets = field(default_factory=AlertTargets)
    thresholds: tuple[float, ...] = DEFAULT_THRESHOLDS
    metrics_file: str | None = None
    metrics_interval_s: float = DEFAULT_METRICS_INTERVAL_S
    github: bool = False
    metrics_inputs: tuple[tuple[str, str], ...] = field(default=())

    @property
    def any(self) -> bool:
        return self.alerts.any or self.metrics_file is not None or self.github


def options_from_args(
    args: argparse.Namespace,
    inputs: Sequence[tuple[str, str]],
    environ: Mapping[str, str] = os.environ,
) -> IntegrationOptions:
    """The flags, checked: raises ``ConfigError`` naming the flag and what is wrong."""
    command = _command(args.alert_command) if args.alert_command is not None else None
    webhook = None
    if args.alert_webhook is not None:
        webhook = _webhook(args.alert_webhook, "--alert-webhook")
    elif environ.get(WEBHOOK_ENV):  # a secret: kept out of argv (ps, the ledger's run record)
        webhook = _webhook(environ[WEBHOOK_ENV], WEBHOOK_ENV)
    timeout = _timeout(args.alert_timeout) if args.alert_timeout is not None else 10.0
    github = github_actions.is_github_actions(environ)
    thresholds = DEFAULT_THRESHOLDS
    if args.alert_at is not None:
        thresholds = parse_percentages(args.alert_at)
        if command is None and webhook is None and not github:
            raise ConfigError(
                "--alert-at: nothing to alert: give --alert-command or --alert-webhook "
                "(or run in GitHub Actions, where crossings are annotations)"
            )
    metrics_inputs = tuple(inputs)
    if args.metrics_file is not None:
        if args.summary_json is not None:
            if os.path.realpath(args.summary_json) == os.path.realpath(args.metrics_file):
                raise ConfigError(
                    f"--metrics-file {args.metrics_file} is also the --summary-json file"
                )
            metrics_inputs += (("the --summary-json file", args.summary_json),)
        if problem := output_problem(args.metrics_file, metrics_inputs):
            raise ConfigError(f"--metrics-file: cannot write there: {problem}")
    interval = args.status_report_interval or DEFAULT_METRICS_INTERVAL_S
    return IntegrationOptions(
        AlertTargets(command, webhook, timeout),
        thresholds,
        args.metrics_file,
        interval,
        github,
        metrics_inputs,
    )


def parse_percentages(text: str) -> tuple[float, ...]:
    found: list[float] = []
    for item in text.split(","):
        word = item.strip().removesuffix("%")
        if not word:
            raise ConfigError(f"--alert-at {text!r}: an empty percentage (write e.g. 50,80,100)")
        try:
            value = float(word)
        except ValueError:
            raise ConfigError(f"--alert-at: {item.strip()!r} is not a number") from None
        if not math.isfinite(value) or not 0 < value <= MAX_PERCENT:
            raise ConfigError(
                f"--alert-at: {item.strip()!r} must be a percentage above 0 and at most "
                f"{MAX_PERCENT:g}"
            )
        found.append(value)
    return tuple(sorted(set(found)))


def _command(text: str) -> tuple[str, ...]:
    try:
        argv = shlex.split(text)
    except ValueError as exc:
        raise ConfigError(f"--alert-command {text!r}: cannot split it: {exc}") from None
    if not argv:
        raise ConfigError("--alert-command: the command is empty")
    if "\0" in text:
        raise ConfigError("--alert-command: the command holds a NUL byte")
    program = argv[0]
    if os.sep not in program:
        found = shutil.which(program)
        if found is None:
            raise ConfigError(f"--alert-command: {program!r} not found on PATH")
        return (found, *argv[1:])
    if not os.path.isfile(program) or not os.access(program, os.X_OK):
        raise ConfigError(f"--alert-command: {program} is not an executable file")
    return (os.path.abspath(program), *argv[1:])


def _webhook(url: str, where: str) -> str:
    if char := unprintable_character(url):
        raise ConfigError(f"{where}: the URL holds {char}")
    if any(c.isspace() for c in url):
        raise ConfigError(f"{where} {url!r}: the URL holds whitespace")
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ConfigError(f"{where} {url!r}: the URL must start with http:// or https://")
    try:
        parts.port  # noqa: B018 (it raises for a bad port)
    except ValueError as exc:
        raise ConfigError(f"{where} {url!r}: {exc}") from None
    if not parts.hostname:
        raise ConfigError(f"{where} {url!r}: the URL names no host")
    return url


def _timeout(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"--alert-timeout: {text!r} is not a number") from None
    if not math.isfinite(value) or not 0 < value <= MAX_ALERT_TIMEOUT_S:
        raise ConfigError(
            f"--alert-timeout: {text!r} must be above 0 and at most {MAX_ALERT_TIMEOUT_S:g}"
        )
    return value
