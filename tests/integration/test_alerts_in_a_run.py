"""Alerts, GitHub Actions and metrics in real runs of the ``orchestrator`` command: what
reaches a webhook on 127.0.0.1 and an alert command, a faked GitHub Actions environment's
files, the metrics file during and after the run; and a hanging alert endpoint never delaying
a budget stop (its latency measured with and without one)."""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from harness import Runner, Sim, instance, process_exists, wait_until
from prometheus_client.parser import text_string_to_metric_families

PYTHON = sys.executable


class Hook:
    """A webhook on 127.0.0.1 that records what it is sent, when; ``hang``: never answers."""

    def __init__(self, hang: bool = False) -> None:
        self.received: list[tuple[float, dict[str, Any]]] = []
        self.release = threading.Event()
        hook = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                hook.received.append((time.time(), json.loads(body)))
                if hang:
                    hook.release.wait(60)
                    return
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hook() -> Iterator[Hook]:
    made = Hook()
    yield made
    made.close()


@pytest.fixture
def hanging_hook() -> Iterator[Hook]:
    made = Hook(hang=True)
    yield made
    made.close()


def recorder(folder: Path) -> tuple[Path, Path, Path]:
    """An alert command that appends its stdin to a file, and leaves a process behind that
    escapes its process group (setsid): the run must kill it."""
    out, pids = folder / "stdin.jsonl", folder / "left-behind"
    script = folder / "record-alert"
    script.write_text(
        f"#!/bin/sh\ncat >> {out}\nsetsid sleep 600 </dev/null >/dev/null 2>&1 &\n"
        f"echo $! >> {pids}\n"
    )
    script.chmod(0o755)
    return script, out, pids


# Sequential: a crosses /a's budget and is stopped; b (/b) runs; c (/a) is blocked; d fails.
INSTANCES = [
    instance("a", "/a one", Sim(calls=4, delay=0.02)),
    instance("b", "/b two", Sim(calls=1)),
    instance("c", "/a three", Sim(calls=1)),
    instance("d", "/d four", Sim(calls=1, fail="crash")),
]
BLOCK = ("--budget-enforcement-mode=block", "--command-budget=/a=10k", "--max-concurrent=1")


def test_a_run_alerts_its_crossings_stop_block_failure_and_end(
    runner: Runner, hook: Hook, tmp_path: Path
) -> None:
    script, out, pids = recorder(tmp_path)
    config = runner.config(INSTANCES)
    result = runner.run(
        f"--config={config}",
        *BLOCK,
        "--alert-at=50,100",
        f"--alert-command={script}",
        f"--alert-webhook={hook.url}",
    )
    assert result.returncode == 1, result.stdout + result.stderr  # d failed
    assert "alert" not in result.stderr  # every alert delivered: no warning
    sent = [body for _, body in hook.received]
    recorded = [json.loads(line) for line in out.read_text().splitlines()]
    assert recorded == sent  # the same JSON, both ways
    kinds = [
        (e["event"], e.get("threshold_percent"), e.get("instance", {}).get("name")) for e in sent
    ]
    assert kinds == [
        ("threshold", 50, None),
        ("threshold", 100, None),
        ("budget_stop", None, "a"),
        ("blocked", None, "c"),
        ("failed", None, "d"),
        ("run_end", None, None),
    ]
    assert all(e["text"].startswith("[orchestrator@") for e in sent)
    stop = sent[2]["instance"]
    assert stop["tokens"] == result.instance("a")["tokens"]  # the counted figures, exactly
    end = sent[-1]
    assert end["exit_code"] == 1 and end["status"] == "failed"
    assert result.summary is not None
    assert end["totals"]["tokens"] == result.summary["totals"]["tokens"]
    assert end["instances"] == {"stopped_by_budget": 1, "succeeded": 1, "blocked": 1, "failed": 1}
    # What the alert command left behind outside its group did not outlive the run.
    for pid in map(int, pids.read_text().split()):
        assert not process_exists(pid), f"pid {pid} outlived the run"


def test_github_actions_annotations_summary_and_outputs(runner: Runner, tmp_path: Path) -> None:
    summary, outputs = tmp_path / "step_summary.md", tmp_path / "output.txt"
    outputs.write_text("earlier=1\n")  # appended to, never replaced
    env = {
        "GITHUB_ACTIONS": "true",
        "GITHUB_STEP_SUMMARY": str(summary),
        "GITHUB_OUTPUT": str(outputs),
    }
    result = runner.run(f"--config={runner.config(INSTANCES)}", *BLOCK, env=env)
    assert result.returncode == 1, result.stdout + result.stderr
    annotations = [line for line in result.stdout.splitlines() if line.startswith("::")]
    assert annotations[0].startswith("::warning title=Budget /a at ")  # 70 or 90: timing
    assert any(a.startswith("::error title=Budget /a at 100%25::") for a in annotations)
    assert "::error title=Stopped by budget%3A a::a: stopped by budget" in result.stdout
    assert "::error title=Blocked%3A c::c: not launched" in result.stdout
    assert "::error title=Instance failed%3A d::d: failed" in result.stdout
    assert result.summary is not None
    total = result.summary["totals"]["tokens"]["total"]
    cost = result.summary["totals"]["cost_usd"]
    text = summary.read_text()
    assert text.startswith("### Claude budget orchestrator\n")
    assert "**Exit status 1: an instance failed or timed out**" in text
    assert f"{total:,} tokens" in text
    assert "| /a | `[####################]`" in text or "| /a | `[###################!]`" in text
    for name, status in (("a", "stopped_by_budget"), ("b", "succeeded"), ("c", "blocked")):
        assert f"| {name} | /{name if name != 'c' else 'a'} | {status} |" in text
    assert f"| **{total:,}** |" in text
    lines = outputs.read_text().splitlines()
    assert lines[0] == "earlier=1"
    values = dict(line.split("=", 1) for line in lines[1:])
    assert values == {
        "total_tokens": str(total),
        "cost_usd": values["cost_usd"],
        "exit_code": "1",
        "status": "failed",
    }
    assert float(values["cost_usd"]) == pytest.approx(cost, abs=1e-10)


def test_a_fifo_or_folder_as_github_output_is_a_warning_never_a_hang(
    runner: Runner, tmp_path: Path
) -> None:
    """Opening a FIFO nobody reads blocks for ever (SIGTERM too): the run must still end."""
    fifo, folder = tmp_path / "output.fifo", tmp_path / "summary.d"
    os.mkfifo(fifo)
    folder.mkdir()
    env = {
        "GITHUB_ACTIONS": "true",
        "GITHUB_STEP_SUMMARY": str(folder),
        "GITHUB_OUTPUT": str(fifo),
    }
    one = [instance("a", "/a", Sim(calls=1))]
    result = runner.run(f"--config={runner.config(one)}", env=env, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    warnings = [line for line in result.stderr.splitlines() if "cannot append" in line]
    assert len(warnings) == 2 and f"$GITHUB_OUTPUT ({fifo}): a FIFO" in result.stderr, warnings


def samples(path: Path) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(path.read_text()):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def test_the_metrics_file_is_written_during_the_run_and_at_its_end(runner: Runner) -> None:
    metrics = runner.workdir / "textfile" / "run.prom"
    metrics.parent.mkdir()
    slow = Sim(calls=2, delay=0.05)
    config = runner.config([instance("a", "/a one", slow), instance("b", "/b two")])
    proc = runner.start(
        f"--config={config}",
        "--command-budget=/a=1M",
        f"--metrics-file={metrics}",
        "--status-report-interval=0.1",
    )
    try:
        wait_until(
            lambda: (
                metrics.exists()
                and samples(metrics).get(("orchestrator_instances", (("status", "running"),)))
            ),
            20,
            "a metrics file written while an instance runs",
        )
        during = samples(metrics)
        assert proc.poll() is None
        assert during[("orchestrator_run_finished", ())] == 0
    finally:
        result = runner.finish(proc)
    assert result.returncode == 0, result.stdout + result.stderr
    end = samples(metrics)
    assert end[("orchestrator_run_finished", ())] == 1
    assert end[("orchestrator_run_exit_code", ())] == 0
    [model] = {
        dict(labels)["model"] for name, labels in end if name == "orchestrator_cost_usd_total"
    }
    assert model.startswith(Sim.model)  # as the CLI's init line names it ("...[1m]")
    for name in ("a", "b"):
        tokens = result.instance(name)["tokens"]
        labels = (("budget", f"/{name}"), ("instance", name))
        for kind in ("input", "output", "cache_creation", "cache_read"):
            key = ("orchestrator_tokens_total", (*labels, ("kind", kind), ("model", model)))
            assert end[key] == tokens[kind]
        cost = end[("orchestrator_cost_usd_total", (*labels, ("model", model)))]
        assert cost == pytest.approx(result.instance(name)["cost_usd"], abs=1e-9)
    budget = (("budget", "/a"), ("unit", "tokens"), ("window", "run"))
    assert end[("orchestrator_budget_used", budget)] == result.instance("a")["tokens"]["total"]
    assert end[("orchestrator_budget_limit", budget)] == 1_000_000
    assert end[("orchestrator_instances", (("status", "succeeded"),))] == 2
    assert sorted(p.name for p in metrics.parent.iterdir()) == ["run.prom"]


def test_bad_alert_and_metrics_flags_are_one_line_and_exit_2(
    runner: Runner, tmp_path: Path
) -> None:
    fifo = tmp_path / "fifo.prom"
    os.mkfifo(fifo)
    for flags, expected in (
        (["--alert-webhook=ftp://example.com/x"], "--alert-webhook 'ftp://example.com/x': the URL"),
        ([f"--metrics-file={fifo}"], "is a FIFO"),
    ):
        result = runner.run("/a go", *flags)
        assert result.returncode == 2, (flags, result.stdout, result.stderr)
        assert result.stdout == ""
        [line] = result.stderr.splitlines()
        assert line.startswith("orchestrator: error: ") and expected in line, line
    assert runner.claude.launches() == []
    assert fifo.exists() and not fifo.is_file()  # not replaced


# -- a hanging alert never delays a budget stop ---------------------------------------------

# A fake claude: a 1,000-token API call every 20 ms; it logs the time each line was written
# and the time SIGTERM came.
_CALLER = """\
#!{python}
import json, os, signal, sys, time
if sys.argv[1:] == ["--version"]:
    print("2.1.197 (Claude Code)")
    sys.exit(0)
log = open({log!r}, "a", buffering=1)
def term(*_):
    log.write(f"TERM {{time.time()}}\\n")
    os._exit(143)
signal.signal(signal.SIGTERM, term)
def emit(obj):
    sys.stdout.write(json.dumps(obj) + "\\n")
    sys.stdout.flush()
emit({{"type": "system", "subtype": "init", "session_id": "s", "model": "claude-sonnet-4-5"}})
for n in range(500):
    log.write(f"LINE {{n}} {{time.time()}}\\n")  # just before: SIGTERM may come at once
    emit({{"type": "stream_event", "event": {{"type": "message_start", "message": {{
        "id": f"msg_{{n}}", "model": "claude-sonnet-4-5",
        "usage": {{"input_tokens": 999, "output_tokens": 1}}}}}}}})
    time.sleep(0.02)
"""


def _stop_latency(folder: Path, *alert_flags: str) -> tuple[float, float, float]:
    """Block mode, /a=10k (the 10th line exceeds it), --alert-at 10 (the first line
    alerts): seconds from the exceeding line to SIGTERM; when SIGTERM came; how long the
    whole run took."""
    folder.mkdir()
    log = folder / "calls.log"
    claude = folder / "claude"
    claude.write_text(_CALLER.format(python=PYTHON, log=str(log)))
    claude.chmod(0o755)
    argv = [
        str(Path(PYTHON).parent / "orchestrator"),
        "/a go",
        f"--claude-bin={claude}",
        "--budget-enforcement-mode=block",
        "--command-budget=/a=10k",
        "--status-report-interval=0",
        *alert_flags,
        *(("--alert-at=10", "--alert-timeout=2") if alert_flags else ()),
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ORCHESTRATOR_", "GITHUB"))}
    started = time.monotonic()
    done = subprocess.run(argv, cwd=folder, env=env, capture_output=True, text=True, timeout=60)
    took = time.monotonic() - started
    assert done.returncode == 3, done.stdout + done.stderr
    entries = [line.split() for line in log.read_text().splitlines()]
    lines = {int(e[1]): float(e[2]) for e in entries if e[0] == "LINE"}
    [term] = [float(e[1]) for e in entries if e[0] == "TERM"]
    return term - lines[9], term, took


def test_a_hanging_webhook_or_command_never_delays_a_budget_stop(
    tmp_path: Path, hanging_hook: Hook
) -> None:
    plain, _, _ = _stop_latency(tmp_path / "plain")

    webhook, term_at, took = _stop_latency(
        tmp_path / "webhook", f"--alert-webhook={hanging_hook.url}"
    )
    [(asked_at, body)] = hanging_hook.received[:1]
    assert body["event"] == "threshold"
    assert asked_at < term_at  # it was hanging when the stop came
    assert took < 15, f"the run took {took:.1f}s with a hanging webhook"

    pids = tmp_path / "sleeper-pids"
    sleeper = tmp_path / "sleeper"
    # Reads no stdin; says its pid and when it started.
    sleeper.write_text(f"#!/bin/sh\necho $$ $(date +%s.%N) >> {pids}\nexec sleep 600\n")
    sleeper.chmod(0o755)
    command, term_at, took = _stop_latency(tmp_path / "command", f"--alert-command={sleeper}")
    assert took < 15, f"the run took {took:.1f}s with a hanging command"
    runs = [line.split() for line in pids.read_text().splitlines()]
    assert float(runs[0][1]) < term_at  # the first was hanging when the stop came
    for pid, _ in runs:  # (the next events' ran after its timeout; the end killed the last)
        assert not process_exists(int(pid)), "the alert command outlived the run"

    print(
        f"stop latency: {plain:.3f}s plain, {webhook:.3f}s hanging webhook, "
        f"{command:.3f}s hanging command"
    )
    # A delivery on the run's path would hold the stop for the whole --alert-timeout (2 s).
    assert webhook < 1.0 and command < 1.0, (plain, webhook, command)
