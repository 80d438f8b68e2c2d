"""Alerts, GitHub Actions and metrics: their flags, checked before anything starts, and the
subscriber that feeds them from the run.

The subscriber only reads: at each notice (a crossing, a block, a stop, an end; rare) and on a
timer on the run's own loop it takes a snapshot, finds what is new (``AlertWatch``) and hands
it on: to the alert thread's queue, to the log (GitHub annotations), to the metrics thread.
Nothing it does waits on a process, a socket or a disk; the per-line path is untouched (it
does nothing for a ``StateChanged``).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import os
import secrets
import shlex
import shutil
import signal
import sys
import threading
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from budget_core import unprintable_character
from orchestrator import github_actions
from orchestrator.alert_events import DEFAULT_THRESHOLDS, AlertEvent, AlertWatch, percent_text
from orchestrator.alerts import AlertSender, AlertTargets
from orchestrator.config import ConfigError
from orchestrator.metrics import MetricsWriter
from orchestrator.output import say
from orchestrator.output_file import output_problem
from orchestrator.run import Orchestrator
from orchestrator.state import Notice, NoticeKind, RunEvent, RunSnapshot

log = logging.getLogger("orchestrator")

WEBHOOK_ENV = "ORCHESTRATOR_ALERT_WEBHOOK"
MAX_PERCENT = 1000.0
MAX_ALERT_TIMEOUT_S = 600.0
CHECK_INTERVAL_S = 0.25  # percentages that are not level thresholds: noticed this soon
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


# Notices after which an alert may be due: crossings, blocks, stops, failures (not launches,
# successes or mode flips: with 200 instances, a snapshot at each launch would add up).
_TELLING = frozenset(
    {NoticeKind.LEVEL, NoticeKind.BLOCK, NoticeKind.STOP, NoticeKind.FAIL, NoticeKind.ERROR}
)


class Integrations:
    """The run's subscriber for alerts, GitHub Actions and metrics (see the module doc)."""

    def __init__(self, options: IntegrationOptions, orchestrator: Orchestrator) -> None:
        self.options = options
        self._orchestrator = orchestrator
        # The run's thread, and the end (main thread). Reentrant: an annotation written to a
        # stdout that went away interrupts the run, whose notices come back here at once.
        self._lock = threading.RLock()
        self._deferred: list[tuple[str, bool]] | None = None  # (line, to stderr), under --tui
        self._watch = AlertWatch(options.thresholds)
        self._alerts_on = options.alerts.any or options.github
        # The level thresholds are each told by a notice; other percentages need a look on
        # a timer as well (a charge crosses them silently).
        extra = set(options.thresholds) - set(DEFAULT_THRESHOLDS)
        self._poll_thresholds = self._alerts_on and bool(extra)
        self._sender = (
            AlertSender(options.alerts, self._warn, f"{os.getpid()}-alerts-{secrets.token_hex(4)}")
            if options.alerts.any
            else None
        )
        self._metrics = (
            MetricsWriter(options.metrics_file, self._warn, options.metrics_inputs)
            if options.metrics_file is not None
            else None
        )
        self._armed = False
        self._closed = False
        self._last_metrics = -math.inf
        if self._alerts_on or self._metrics is not None:
            orchestrator.subscribe(self._on_event)

    def defer_output(self) -> None:
        """Under the monitor: lines wait for the end (the terminal is the monitor's)."""
        self._deferred = []

    # -- on the run's loop -----------------------------------------------------------------

    def _on_event(self, event: RunEvent) -> None:
        if event.__class__ is Notice and self._alerts_on and event.kind in _TELLING:
            self._check()
        if not self._armed:
            self._arm()

    def _arm(self) -> None:
        """Tick on the loop the events come from (the run's own, also under the monitor)."""
        self._armed = True
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # not from a loop (a failed monitor killing what runs): no timer
        periods = [CHECK_INTERVAL_S] if self._poll_thresholds else []
        if self._metrics is not None:
            periods.append(self.options.metrics_interval_s)
        if not periods:
            return  # the notices say it all
        period = min(periods)
        loop.call_soon(self._tick, loop, period)

    def _tick(self, loop: asyncio.AbstractEventLoop, period: float) -> None:
        if self._closed:
            return
        if self._poll_thresholds:
            self._check()
        now = loop.time()
        if (
            self._metrics is not None
            and now - self._last_metrics >= self.options.metrics_interval_s
        ):
            self._last_metrics = now
            self._metrics.submit(self._orchestrator.snapshot())
        loop.call_later(period, self._tick, loop, period)

    def _check(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._dispatch(self._watch.check(self._orchestrator.snapshot()))

    def _dispatch(self, events: list[AlertEvent]) -> None:
        for event in events:
            if self._sender is not None:
                self._sender.submit(event)
            if self.options.github and (line := github_actions.annotation(event)):
                self._print(line)

    # -- the end (main thread, after the run) --------------------------------------------------

    def finish_metrics(self, exit_code: int) -> str | None:
        """The final metrics, before the exit status is final: why they failed, or None."""
        if self._metrics is None:
            return None
        return self._metrics.finish(self._orchestrator.snapshot(), exit_code)

    def finish(self, exit_code: int, meaning: str | None) -> None:
        """Last crossings and ends, the run's end alert, the GitHub summary and outputs; then
        wait (bounded) for pending alerts."""
        snapshot = self._orchestrator.snapshot()
        with self._lock:
            if self._alerts_on:
                self._dispatch(self._watch.check(snapshot))
            self._closed = True
            if self._sender is not None:
                self._sender.submit(self._watch.run_end(snapshot, exit_code, meaning))
        if self.options.github:
            self._github_files(snapshot, exit_code, meaning)
        if self._sender is not None:
            self._close_sender(self._sender)
        self._flush()

    def _close_sender(self, sender: AlertSender) -> None:
        """Wait for pending alerts; a Ctrl-C (or SIGTERM) stops waiting. The run's own
        handlers are gone by now (its end ignores those signals), so these are set here."""
        abort = threading.Event()
        previous = {}
        try:
            for sig in (signal.SIGINT, signal.SIGTERM):
                previous[sig] = signal.signal(sig, lambda *_: abort.set())
        except ValueError:  # not the main thread: wait without them
            pass
        try:
            sender.close(self.options.alerts.timeout_s, abort)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _github_files(self, snapshot: RunSnapshot, exit_code: int, meaning: str | None) -> None:
        for variable, text in (
            ("GITHUB_STEP_SUMMARY", github_actions.step_summary(snapshot, exit_code, meaning)),
            ("GITHUB_OUTPUT", github_actions.outputs(snapshot, exit_code)),
        ):
            path = os.environ.get(variable)
            if not path:
                continue
            try:
                github_actions.append(path, text)
            except OSError as exc:
                self._warn(
                    f"orchestrator: warning: cannot append to ${variable} ({path}): "
                    f"{exc.strerror or exc}"
                )

    # -- output ---------------------------------------------------------------------------

    def _warn(self, line: str) -> None:
        """From any thread: stderr (thread-safe, unlike the run's log), or kept for later."""
        deferred = self._deferred
        if deferred is not None:
            deferred.append((line, True))
        else:
            say(line, sys.stderr)

    def _print(self, line: str) -> None:
        """A workflow command: the log (stdout), in order with the run's other lines."""
        deferred = self._deferred
        if deferred is not None:
            deferred.append((line, False))
        else:
            log.warning(line)

    def _flush(self) -> None:
        deferred, self._deferred = self._deferred, None
        for line, to_stderr in deferred or ():
            say(line, sys.stderr if to_stderr else sys.stdout)


def attach(
    options: IntegrationOptions, orchestrator: Orchestrator, deferred: bool
) -> Integrations | None:
    if not options.any:
        return None
    integrations = Integrations(options, orchestrator)
    if deferred:
        integrations.defer_output()
    return integrations
