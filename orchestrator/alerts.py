"""Delivering alerts: ``--alert-command`` (the event's JSON on its stdin) and
``--alert-webhook`` (the same JSON POSTed), on a thread of their own.

The run only puts an event in a bounded queue (``submit`` never blocks, a full queue drops
and says so once), so a slow or hanging endpoint never holds up reading or enforcement.
Each delivery has a timeout; a quick failure (an HTTP 5xx or 429, a refused connection, a
non-zero exit) is tried again, at most ``ATTEMPTS`` times; a failed alert is one warning
line. At the end ``close`` delivers what is pending within a bounded wait, then kills the
command still running: like an instance, it runs in a process group of its own, dies with
the orchestrator (parent death signal), and what it left behind (``setsid``) is found by its
``INSTANCE_ENV`` token and killed.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shlex
import signal
import subprocess
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass

from orchestrator import __version__
from orchestrator.alert_events import AlertEvent
from orchestrator.descendants import INSTANCE_ENV, kill_all, strays
from orchestrator.process import _die_with_parent

ATTEMPTS = 3
BACKOFF_S = (0.5, 1.5)  # before the 2nd and the 3rd attempt
MAX_PENDING = 256
MAX_FAILURE_LINES = 5  # per destination; later failures are counted, then summed up once
STDERR_TAIL = 4096


@dataclass(frozen=True, slots=True)
class AlertTargets:
    command: tuple[str, ...] | None = None
    webhook: str | None = None
    timeout_s: float = 10.0

    @property
    def any(self) -> bool:
        return bool(self.command) or bool(self.webhook)


@dataclass(frozen=True, slots=True)
class _Outcome:
    error: str | None  # None: delivered
    retry: bool = False  # worth another attempt


def redact_url(url: str) -> str:
    """``https://hooks.slack.com/...``: a webhook's path and query are its secret."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    with contextlib.suppress(ValueError):
        if parts.port is not None:
            host += f":{parts.port}"
    hidden = "/..." if parts.path not in ("", "/") or parts.query else ""
    return f"{parts.scheme}://{host}{hidden}"


class AlertSender:
    """One worker thread delivering queued events to the command and the webhook."""

    def __init__(
        self, targets: AlertTargets, warn: Callable[[str], None], token: str = "alerts"
    ) -> None:
        self._targets = targets
        self._warn = warn
        self._token = token  # in each command's environment: finds what it left behind
        self._queue: queue.Queue[AlertEvent | None] = queue.Queue(MAX_PENDING)
        self._closing = threading.Event()
        self._deadline: float | None = None
        self._lock = threading.Lock()  # the counts: held for moments (``submit`` takes it)
        self._process_lock = threading.Lock()  # the running command, held while it starts
        self._running: subprocess.Popen[bytes] | None = None
        self._pending = 0  # submitted, not yet delivered or given up
        self._late = 0  # given up because the run's end came first (told as a count)
        self._dropped = 0
        self._failures: dict[str, int] = {}
        command = targets.command or ("",)
        self._command_name = _brief(shlex.join([os.path.basename(command[0]), *command[1:]]))
        self._thread = threading.Thread(target=self._work, name="orchestrator-alerts", daemon=True)
        self._thread.start()

    # -- the run's side ------------------------------------------------------------------

    def submit(self, event: AlertEvent) -> None:
        """Queue ``event``; never blocks (a full queue drops it, and says so once)."""
        if self._closing.is_set():
            return
        with self._lock:
            self._pending += 1
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            with self._lock:
                self._pending -= 1
                self._dropped += 1
                first = self._dropped == 1
            if first:
                self._warn(
                    f"orchestrator: warning: {MAX_PENDING} alerts are waiting to be delivered; "
                    "more are dropped (the endpoint is too slow)"
                )

    def close(self, wait_s: float, abort: threading.Event | None = None) -> None:
        """Deliver what is pending, waiting at most ``wait_s`` (less if ``abort`` is set: a
        Ctrl-C); then stop whatever still runs, and say what was not delivered."""
        started = time.monotonic()
        self._deadline = started + wait_s
        self._closing.set()  # no more backoff pauses: what time is left goes to attempts
        ended, told = False, False
        while self._thread.is_alive():
            if not ended:
                with contextlib.suppress(queue.Full):
                    self._queue.put_nowait(None)  # after what is queued
                    ended = True
            now = time.monotonic()
            if now >= self._deadline or (abort is not None and abort.is_set()):
                self._deadline = now  # the worker tries nothing more
                break
            if not told and now - started >= 1.0:
                told = True
                self._warn(
                    f"orchestrator: waiting at most {self._deadline - now:.0f}s more for "
                    "alerts still pending (Ctrl-C: stop waiting)"
                )
            self._thread.join(min(0.1, self._deadline - now))
        waited = time.monotonic() - started
        if self._thread.is_alive():
            self._kill_running()  # a command that will not end: it may not outlive the run
            self._thread.join(0.5)  # a webhook request cannot be cut short: left behind
        kill_all(strays([self._token]))
        with self._lock:
            late, dropped = self._pending + self._late, self._dropped
        if late:
            self._warn(
                f"orchestrator: warning: {late} alert(s) not delivered: still pending "
                f"{waited:.1f}s after the run ended"
                + (" (--alert-timeout)" if waited >= wait_s else " (stopped waiting)")
            )
        if dropped > 1:
            self._warn(f"orchestrator: warning: {dropped} alerts were dropped (queue full)")
        for where, count in self._failures.items():
            if count > MAX_FAILURE_LINES:
                self._warn(
                    f"orchestrator: warning: {count} alerts to {where} failed in all "
                    f"({count - MAX_FAILURE_LINES} not shown above)"
                )

    # -- the worker ----------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            event = self._queue.get()
            if event is None:
                return
            late = self._time_left() == 0.0 or self._deliver(event)
            with self._lock:
                self._pending -= 1
                self._late += late

    def _time_left(self) -> float | None:
        """Seconds left before ``close`` gives up, or None while the run goes on."""
        if self._deadline is None:
            return None
        return max(self._deadline - time.monotonic(), 0.0)

    def _deliver(self, event: AlertEvent) -> bool:
        """Send ``event`` everywhere; True if the run's end cut a delivery short."""
        payload = (json.dumps(event.data) + "\n").encode()
        targets = self._targets
        late = False
        if targets.command:
            where = f"command {self._command_name}"
            late |= self._attempt(event, where, lambda t: self._run(payload, t))
        if targets.webhook:
            where = f"webhook {redact_url(targets.webhook)}"
            late |= self._attempt(event, where, lambda t: self._post(payload, t))
        return late

    def _attempt(self, event: AlertEvent, where: str, send: Callable[[float], _Outcome]) -> bool:
        """Up to ``ATTEMPTS`` tries; a failure is one warning line. True if the run's end
        cut it short (then it is counted, not told)."""
        outcome = _Outcome("not tried")
        attempts = 0
        for attempts in range(1, ATTEMPTS + 1):
            if self._time_left() == 0.0:
                return True
            left = self._time_left()
            timeout = (
                self._targets.timeout_s if left is None else min(self._targets.timeout_s, left)
            )
            try:
                outcome = send(timeout)
            except Exception as exc:  # a bug here must not end alerting, nor the run
                outcome = _Outcome(f"{type(exc).__name__}: {exc}")
            if outcome.error is None or not outcome.retry or attempts == ATTEMPTS:
                break
            self._closing.wait(BACKOFF_S[min(attempts, len(BACKOFF_S)) - 1])
        if outcome.error is None:
            return False
        if self._time_left() == 0.0:
            return True
        count = self._failures[where] = self._failures.get(where, 0) + 1
        if count <= MAX_FAILURE_LINES:
            tries = f" ({attempts} attempts)" if attempts > 1 else ""
            self._warn(
                f"orchestrator: warning: alert {event.kind} to {where} failed{tries}: "
                f"{outcome.error}"
            )
        return False

    def _run(self, payload: bytes, timeout: float) -> _Outcome:
        argv = self._targets.command
        assert argv
        with tempfile.TemporaryFile() as stderr:
            try:
                with self._process_lock:
                    if self._time_left() == 0.0:
                        return _Outcome("the run ended first")  # close killed the last one
                    process = self._running = subprocess.Popen(
                        list(argv),
                        stdin=subprocess.PIPE,
                        stdout=subprocess.DEVNULL,
                        stderr=stderr,
                        start_new_session=True,  # its own group: stopped whole
                        preexec_fn=_die_with_parent(os.getpid()),
                        env={**os.environ, INSTANCE_ENV: self._token},
                    )
            except OSError as exc:
                return _Outcome(f"cannot run it: {exc.strerror or exc}")
            try:
                process.communicate(payload, timeout=timeout)
            except subprocess.TimeoutExpired:
                _kill_group(process)
                process.wait()
                return _Outcome(f"no exit within {timeout:g}s (killed)")
            finally:
                _kill_group(process)  # what it left running in its group goes with it
                with self._process_lock:
                    self._running = None
                kill_all(strays([self._token]))  # and what left the group
            if process.returncode == 0:
                return _Outcome(None)
            stderr.seek(max(stderr.seek(0, os.SEEK_END) - STDERR_TAIL, 0))
            tail = stderr.read().decode("utf-8", errors="replace")
            last = next((ln.strip() for ln in reversed(tail.splitlines()) if ln.strip()), "")
            code = process.returncode
            status = f"killed by signal {-code}" if code < 0 else f"exit status {code}"
            return _Outcome(status + (f": {last[:300]}" if last else ""), retry=True)

    def _post(self, payload: bytes, timeout: float) -> _Outcome:
        import http.client  # here: a run without a webhook never loads them
        import urllib.error
        import urllib.request

        assert self._targets.webhook
        request = urllib.request.Request(
            self._targets.webhook,
            data=payload,
            method="POST",
            headers={
                "Content-Type": "application/json",
                "User-Agent": f"claude-budget-orchestrator/{__version__}",
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                response.read(65536)
            return _Outcome(None)
        except urllib.error.HTTPError as exc:
            return _Outcome(
                f"HTTP {exc.code} {exc.reason}", retry=exc.code >= 500 or exc.code == 429
            )
        except urllib.error.URLError as exc:
            reason = exc.reason
            if isinstance(reason, TimeoutError):
                return _Outcome(f"no answer within {timeout:g}s")
            text = reason.strerror if isinstance(reason, OSError) and reason.strerror else reason
            return _Outcome(f"cannot connect: {text}", retry=True)
        except TimeoutError:
            return _Outcome(f"no answer within {timeout:g}s")
        except (OSError, http.client.HTTPException) as exc:
            return _Outcome(f"{type(exc).__name__}: {exc}", retry=True)

    def _kill_running(self) -> None:
        with self._process_lock:
            if self._running is not None:
                _kill_group(self._running)


def _brief(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
