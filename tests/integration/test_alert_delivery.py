"""Delivering alerts for real: a webhook received by an HTTP server on 127.0.0.1, a command
that records its stdin, an endpoint that fails (retried, then one warning line) or hangs
(``submit`` never waits; the end waits a bounded time and kills what still runs)."""

from __future__ import annotations

import http.server
import json
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.alert_events import AlertEvent, AlertKind
from orchestrator.alerts import MAX_PENDING, AlertSender, AlertTargets
from tests.integration.faultlib import process_gone, wait_until

PYTHON = sys.executable


class Hook:
    """A webhook endpoint: answers ``status`` (or never answers, with ``hang``)."""

    def __init__(self, status: int = 200, hang: bool = False) -> None:
        self.status, self.hang = status, hang
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        self.release = threading.Event()
        hook = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                hook.requests.append((self.path, dict(self.headers), body))
                if hook.hang:
                    hook.release.wait(30)
                    return
                self.send_response(hook.status)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}/services/T0/SECRET"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def bodies(self) -> list[dict[str, object]]:
        return [json.loads(body) for _, _, body in self.requests]

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hooks() -> Iterator[list[Hook]]:
    made: list[Hook] = []
    yield made
    for hook in made:
        hook.close()


def event(n: int = 0) -> AlertEvent:
    text = f"budget /a reached {n}%"
    data = {"event": "threshold", "text": f"[orchestrator@h] {text}", "n": n}
    return AlertEvent(AlertKind.THRESHOLD, "warning", "Budget /a", text, data)


def recorder(tmp_path: Path) -> tuple[str, Path]:
    """An alert command that appends its stdin to a file, one JSON document a line."""
    out = tmp_path / "stdin.jsonl"
    script = tmp_path / "record.py"
    script.write_text(
        f"import sys\nwith open({str(out)!r}, 'ab') as f:\n    f.write(sys.stdin.buffer.read())\n"
    )
    return f"{PYTHON} {script}", out


def test_the_webhook_and_the_command_get_the_same_json(tmp_path: Path, hooks: list[Hook]) -> None:
    hook = Hook()
    hooks.append(hook)
    command, out = recorder(tmp_path)
    lines: list[str] = []
    sender = AlertSender(AlertTargets(tuple(command.split()), hook.url, 5.0), lines.append)
    sender.submit(event(50))
    sender.submit(event(80))
    sender.close(10.0)
    assert lines == []
    assert hook.bodies() == [event(50).data, event(80).data]
    path, headers, _ = hook.requests[0]
    assert path == "/services/T0/SECRET"
    assert headers["Content-Type"] == "application/json"
    recorded = [json.loads(line) for line in out.read_text().splitlines()]
    assert recorded == hook.bodies()
    assert recorded[0]["text"] == "[orchestrator@h] budget /a reached 50%"


def test_a_failing_webhook_is_retried_then_one_warning_line_without_its_secret(
    hooks: list[Hook],
) -> None:
    hook = Hook(status=500)
    hooks.append(hook)
    lines: list[str] = []
    sender = AlertSender(AlertTargets(webhook=hook.url, timeout_s=5.0), lines.append)
    sender.submit(event())
    wait_until(lambda: len(lines) == 1, 10, "the warning")
    sender.close(5.0)
    assert len(hook.requests) == 3  # ATTEMPTS
    [line] = lines
    assert "alert threshold to webhook http://127.0.0.1:" in line
    assert "failed (3 attempts): HTTP 500" in line
    assert "SECRET" not in line


def test_a_client_error_is_not_retried(hooks: list[Hook]) -> None:
    hook = Hook(status=404)
    hooks.append(hook)
    lines: list[str] = []
    sender = AlertSender(AlertTargets(webhook=hook.url, timeout_s=5.0), lines.append)
    sender.submit(event())
    sender.close(5.0)
    assert len(hook.requests) == 1
    assert len(lines) == 1 and "HTTP 404" in lines[0]


def test_a_failing_command_says_its_exit_status_and_last_stderr_line(tmp_path: Path) -> None:
    lines: list[str] = []
    argv = (PYTHON, "-c", "import sys; print('first', file=sys.stderr); sys.exit('no route')")
    sender = AlertSender(AlertTargets(command=argv, timeout_s=5.0), lines.append)
    sender.submit(event())
    sender.close(10.0)
    assert len(lines) == 1
    assert "failed (3 attempts): exit status 1: no route" in lines[0]


def test_a_hanging_webhook_never_holds_up_submit_and_the_end_waits_a_bounded_time(
    hooks: list[Hook],
) -> None:
    hook = Hook(hang=True)
    hooks.append(hook)
    lines: list[str] = []
    sender = AlertSender(AlertTargets(webhook=hook.url, timeout_s=30.0), lines.append)
    sender.submit(event(0))
    wait_until(lambda: hook.requests, 10, "the first request")
    slowest = 0.0
    for n in range(1, MAX_PENDING + 20):  # the queue fills up: dropped, never waited for
        started = time.perf_counter()
        sender.submit(event(n))
        slowest = max(slowest, time.perf_counter() - started)
    assert slowest < 0.05, f"submit took {slowest:.3f}s"
    started = time.monotonic()
    sender.close(1.0)
    took = time.monotonic() - started
    assert took < 3.0, f"close took {took:.1f}s"
    assert any("dropped" in line for line in lines), lines
    # the one in flight and every one queued
    assert any(f"{MAX_PENDING + 1} alert(s) not delivered" in line for line in lines), lines


def test_a_command_that_reads_nothing_and_sleeps_is_killed_with_what_it_started(
    tmp_path: Path,
) -> None:
    pids = tmp_path / "pids"
    script = tmp_path / "sleeper.sh"
    # Reads no stdin; starts a child in its process group, then sleeps. (One that leaves the
    # group is found by its token: test_alerts_in_a_run, where the orchestrator is a subreaper.)
    script.write_text(
        f"#!/bin/sh\nsleep 600 &\necho $! >> {pids}\necho $$ >> {pids}\nexec sleep 600\n"
    )
    script.chmod(0o755)
    lines: list[str] = []
    sender = AlertSender(AlertTargets(command=(str(script),), timeout_s=30.0), lines.append)
    sender.submit(event())
    wait_until(lambda: pids.exists() and len(pids.read_text().split()) == 2, 10, "the pids")
    started = time.monotonic()
    sender.close(0.5)
    assert time.monotonic() - started < 3.0
    for pid in map(int, pids.read_text().split()):
        wait_until(lambda pid=pid: process_gone(pid), 5, f"pid {pid} gone")
    assert any("1 alert(s) not delivered" in line for line in lines), lines


def test_a_command_that_times_out_is_killed_and_told(tmp_path: Path) -> None:
    lines: list[str] = []
    argv = (PYTHON, "-c", "import time; time.sleep(600)")
    sender = AlertSender(AlertTargets(command=argv, timeout_s=0.5), lines.append)
    sender.submit(event())
    wait_until(lambda: lines, 10, "the warning")
    sender.close(5.0)
    assert len(lines) == 1 and "no exit within 0.5s (killed)" in lines[0]


def test_a_ctrl_c_stops_the_wait_for_pending_alerts(hooks: list[Hook]) -> None:
    hook = Hook(hang=True)
    hooks.append(hook)
    lines: list[str] = []
    sender = AlertSender(AlertTargets(webhook=hook.url, timeout_s=60.0), lines.append)
    sender.submit(event())
    wait_until(lambda: hook.requests, 10, "the request")
    abort = threading.Event()
    threading.Timer(1.5, abort.set).start()  # what the run's end does on SIGINT / SIGTERM
    started = time.monotonic()
    sender.close(60.0, abort)
    took = time.monotonic() - started
    assert 1.4 < took < 5.0, f"close took {took:.1f}s"
    assert lines[0].startswith("orchestrator: waiting at most ")  # after a second: said
    assert "(Ctrl-C: stop waiting)" in lines[0]
    assert "1 alert(s) not delivered" in lines[-1] and "(stopped waiting)" in lines[-1]
