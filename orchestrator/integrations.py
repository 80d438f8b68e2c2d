"""Alerts, GitHub Actions and metrics: the subscriber that feeds them from the run (their
flags: ``integration_options``).

The subscriber only reads: at each notice (a crossing, a block, a stop, an end; rare) and on a
timer on the run's own loop it takes a snapshot, finds what is new (``AlertWatch``) and hands
it on: to the alert thread's queue, to the log (GitHub annotations), to the metrics thread.
Nothing it does waits on a process, a socket or a disk; on the per-line path (a
``StateChanged``) it only looks at two flags.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import secrets
import signal
import sys
import threading

from orchestrator import github_actions
from orchestrator.alert_events import DEFAULT_THRESHOLDS, AlertEvent, AlertWatch
from orchestrator.alerts import AlertSender
from orchestrator.integration_options import IntegrationOptions
from orchestrator.metrics import MetricsWriter
from orchestrator.output import say
from orchestrator.run import Orchestrator
from orchestrator.state import Notice, NoticeKind, RunEvent, RunSnapshot

log = logging.getLogger("orchestrator")

CHECK_INTERVAL_S = 0.25  # percentages that are not level thresholds: noticed this soon


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
