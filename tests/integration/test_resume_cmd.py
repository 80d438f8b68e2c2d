"""``orchestrator resume`` from the command line, with simulator instances and a real
SQLite ledger: what is continued, with which session and budgets, and the one-line errors."""

from __future__ import annotations

import dataclasses
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.pg_server import PgSchema, TcpProxy

ROOT = Path(__file__).resolve().parents[2]
SIMULATOR = ROOT / "orchestrator" / "simulator.py"


def logging_claude(folder: Path) -> Path:
    """The simulator behind a script that appends each instance's argv (one per line)."""
    path = folder / "claude"
    path.write_text(
        "#!/bin/sh\n"
        f'[ "$*" = --version ] && exec "{sys.executable}" "{SIMULATOR}" --version\n'
        f'printf "%s\\n" "$*" >> "{folder}/argv.log"\n'
        f'exec "{sys.executable}" "{SIMULATOR}" "$@"\n'
    )
    path.chmod(0o755)
    return path


def orchestrator(
    cwd: Path, *args: str, env: dict[str, str] | None = None
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    summary = cwd / "summary.json"
    summary.unlink(missing_ok=True)
    env = {**os.environ, "ORCHESTRATOR_LEDGER": str(cwd / "ledger.sqlite3"), **(env or {})}
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "orchestrator"), *args, "--summary-json", str(summary)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    data = json.loads(summary.read_text()) if summary.exists() else {}
    return proc, data


def test_resume_continues_what_a_budget_stopped_and_counts_the_first_runs_spend(
    tmp_path: Path,
) -> None:
    claude = logging_claude(tmp_path)
    calls = ["--sim-calls", "6", "--sim-delay", "0.01"]
    config = {
        "instances": [
            {"name": "done", "prompt": "/ok a", "claude_args": ["--sim-calls", "1"]},
            {"name": "big", "prompt": "/big a", "claude_args": calls},
            {"name": "later", "prompt": "/big b", "claude_args": calls},
        ]
    }
    (tmp_path / "jobs.json").write_text(json.dumps(config))
    common = ["--status-report-interval", "0", "--claude-bin", str(claude)]
    first, one = orchestrator(
        tmp_path,
        "--config",
        "jobs.json",  # relative: resume reads it in the run's folder
        "--command-budget",
        "/big=5k",
        "--budget-enforcement-mode",
        "block",
        "--max-concurrent",
        "1",
        *common,
    )
    assert first.returncode == 3, first.stdout + first.stderr
    statuses = {i["name"]: i["status"] for i in one["instances"]}
    assert statuses == {"done": "succeeded", "big": "stopped_by_budget", "later": "blocked"}
    run_id = one["run_id"]
    assert f"orchestrator resume {run_id} --command-budget /big=10000" in first.stdout
    spent = next(b for b in one["budgets"] if b["key"] == "/big")["used"]

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    os.link(tmp_path / "ledger.sqlite3", elsewhere / "ledger.sqlite3")
    for suffix in ("-wal", "-shm"):
        if (tmp_path / f"ledger.sqlite3{suffix}").exists():
            os.link(tmp_path / f"ledger.sqlite3{suffix}", elsewhere / f"ledger.sqlite3{suffix}")
    resumed, two = orchestrator(
        elsewhere, "resume", "--command-budget", "/big=1M", "--resume-prompt", "go on", *common
    )
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert [i["name"] for i in two["instances"]] == ["big", "later"]  # not 'done'
    big, later = two["instances"]
    session = big["resumed_session"]
    assert session and later["resumed_session"] is None  # 'later' never started: afresh
    argv = (tmp_path / "argv.log").read_text().splitlines()
    assert f"--resume {session}" in argv[-2] and argv[-2].endswith("-- go on")
    assert "--resume" not in argv[-1] and argv[-1].endswith("-- /big b")
    budget = next(b for b in two["budgets"] if b["key"] == "/big")
    assert budget["used_before_run"] == spent  # the run-window budget went on counting
    db = sqlite3.connect(elsewhere / "ledger.sqlite3")
    assert db.execute(
        "SELECT resumed_from FROM runs WHERE id = ?", (two["run_id"],)
    ).fetchone() == (run_id,)

    # Everything succeeded now: resuming the resumed run (last) finds nothing to do.
    again, _ = orchestrator(elsewhere, "resume", *common)
    assert again.returncode == 2
    assert again.stderr.strip() == (
        f"orchestrator resume: error: run {two['run_id']} has nothing to resume: every "
        "instance succeeded"
    )


def test_resume_errors_are_one_line(tmp_path: Path) -> None:
    cases = [
        (["resume"], "no ledger at"),
        (["resume", "--ledger", "none"], "nothing to resume from: --ledger none"),
        (["resume", "--config", "x.json"], "unrecognized arguments: --config"),
    ]
    for args, expected in cases:
        proc, _ = orchestrator(tmp_path, *args)
        assert proc.returncode == 2, (args, proc.stderr)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and expected in lines[0], (args, proc.stderr)
    sqlite3.connect(tmp_path / "ledger.sqlite3").close()  # an empty file: not a ledger yet
    (tmp_path / "ledger.sqlite3").unlink()
    claude = logging_claude(tmp_path)
    orchestrator(tmp_path, "/ok x", "--claude-bin", str(claude), "--status-report-interval", "0")
    proc, _ = orchestrator(tmp_path, "resume", "20990101T000000-abcdef")
    assert proc.returncode == 2
    assert proc.stderr.startswith("orchestrator resume: error: no run '20990101T000000-abcdef'")
    proc, _ = orchestrator(tmp_path, "resume", "x" * 10_240)  # not echoed whole
    assert proc.returncode == 2 and len(proc.stderr) < 400 and "(10240 chars)" in proc.stderr


def test_an_instance_gone_from_the_changed_config_is_an_error_not_dropped(
    tmp_path: Path,
) -> None:
    claude = logging_claude(tmp_path)
    calls = ["--sim-calls", "6", "--sim-delay", "0.01"]
    config = {"instances": [{"name": "big", "prompt": "/big a", "claude_args": calls}]}
    (tmp_path / "jobs.json").write_text(json.dumps(config))
    common = ["--status-report-interval", "0", "--claude-bin", str(claude)]
    flags = ["--command-budget", "/big=5k", "--budget-enforcement-mode", "block"]
    first, _ = orchestrator(tmp_path, "--config", "jobs.json", *flags, *common)
    assert first.returncode == 3, first.stderr
    other = {"instances": [{"name": "other", "prompt": "/big b", "claude_args": calls}]}
    (tmp_path / "jobs.json").write_text(json.dumps(other))
    proc, _ = orchestrator(tmp_path, "resume", "--command-budget", "/big=1M", *common)
    assert proc.returncode == 2, proc.stdout
    assert "big not in its configuration any more" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert "/big b" not in (tmp_path / "argv.log").read_text()  # nothing launched


def test_a_run_still_running_is_not_resumed(tmp_path: Path) -> None:
    """Another orchestrator still runs it (a recent heartbeat): resuming would run its
    instances twice at once."""
    import time

    from orchestrator.ledger.base import RunRecord
    from orchestrator.ledger.sqlite import SqliteLedger

    ledger = SqliteLedger(tmp_path / "ledger.sqlite3")
    now = time.time()
    argv = ("orchestrator", "/ok x")
    ledger.open_run(RunRecord("20261130T000000-aaaaaa", now, "h", "u", str(tmp_path), argv, "warn"))
    ledger.close()
    proc, _ = orchestrator(tmp_path, "resume", "20261130T000000-aaaaaa")
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "orchestrator resume: error: run 20261130T000000-aaaaaa is still running (its "
        "heartbeat is recent); resume it once it has ended"
    )


def test_dry_run_shows_the_max_budget_usd_a_launch_would_get(tmp_path: Path) -> None:
    claude = tmp_path / "claude"
    claude.write_text(
        '#!/bin/sh\n[ "$*" = --version ] && echo "2.0.30 (Claude Code)" && exit 0\nexit 1\n'
    )
    claude.chmod(0o755)
    old = tmp_path / "old"
    old.write_text(
        '#!/bin/sh\n[ "$*" = --version ] && echo "2.0.29 (Claude Code)" && exit 0\nexit 1\n'
    )
    old.chmod(0o755)
    base = ["/a x", "--overall-cost-budget", "2.5", "--dry-run"]
    block = [*base, "--budget-enforcement-mode", "block"]
    cases = [
        ([*block, "--claude-bin", str(claude)], True),
        ([*block, "--claude-bin", str(claude), "--no-cooperative-limits"], False),
        ([*base, "--claude-bin", str(claude)], False),  # warn mode: the CLI is not stopped
        ([*block, "--claude-bin", str(old)], False),  # 2.0.29 refuses the option
    ]
    for args, given in cases:
        proc, _ = orchestrator(tmp_path, *args)
        assert proc.returncode == 0, proc.stderr
        assert ("--max-budget-usd 2.500000 --" in proc.stdout) is given, (args, proc.stdout)


def test_resume_on_the_fleet_ledger_goes_on_in_the_ledger_it_was_found_in(
    tmp_path: Path, pg_schema: PgSchema
) -> None:
    """The first run reached PostgreSQL through a URL with a password (recorded without it)
    and a link that is gone by the resume; the resume finds the run through another URL and
    its run goes on there, with the first run's spend counted."""
    claude = logging_claude(tmp_path)
    (tmp_path / "jobs.json").write_text(
        json.dumps({"instances": [{"name": "big", "prompt": "/big a"}]})
    )
    common = ["--status-report-interval", "0", "--claude-bin", str(claude)]
    proxy = TcpProxy()
    try:
        via_proxy = pg_schema.url_via("127.0.0.1", proxy.port, "postgres", "s3cret-pw")
        first, one = orchestrator(
            tmp_path,
            *("--config", "jobs.json", "--ledger", via_proxy),
            *("--command-budget", "/big=1k", "--budget-enforcement-mode", "block"),
            *(*common, "--claude-arg=--sim-calls", "--claude-arg=4"),
        )
    finally:
        proxy.close()
    assert first.returncode == 3, first.stdout + first.stderr
    assert one["instances"][0]["status"] == "stopped_by_budget"
    assert "s3cret-pw" not in first.stdout + first.stderr + json.dumps(one)
    spent = next(b for b in one["budgets"] if b["key"] == "/big")["used"]

    env = {"ORCHESTRATOR_LEDGER": pg_schema.url}
    resumed, two = orchestrator(tmp_path, "resume", "--command-budget", "/big=1M", env=env)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert two["instances"][0]["resumed_session"]
    assert two["ledger"] == pg_schema.url
    budget = next(b for b in two["budgets"] if b["key"] == "/big")
    assert budget["used_before_run"] == spent
    with pg_schema.connect() as conn:
        row = conn.execute("SELECT resumed_from FROM runs WHERE id = %s", (two["run_id"],))
        assert row.fetchone() == (one["run_id"],)


def test_the_hint_names_the_ledger_the_run_was_given_and_its_command_works(
    tmp_path: Path,
) -> None:
    """A run on ``--ledger OTHER``: the suggested resume must look there, not in the default
    (the environment's) ledger, where it would find no such run."""
    claude = logging_claude(tmp_path)
    other = tmp_path / "other.sqlite3"
    common = ["--status-report-interval", "0", "--claude-bin", str(claude)]
    first, _ = orchestrator(
        tmp_path,
        "/big a",
        "--claude-arg=--sim-calls=6",
        "--command-budget",
        "/big=5k",
        "--budget-enforcement-mode",
        "block",
        "--ledger",
        str(other),
        *common,
    )
    assert first.returncode == 3, first.stderr
    hint = first.stdout.strip().splitlines()[-1].split()
    assert hint[:2] == ["orchestrator", "resume"] and ["--ledger", str(other)] == hint[-2:]
    again, _ = orchestrator(tmp_path, *hint[1:], "--dry-run", *common)
    assert again.returncode == 0, again.stderr


def test_the_demo_does_not_suggest_resuming_from_its_thrown_away_ledger(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "ORCHESTRATOR_LEDGER"}
    proc = subprocess.run(
        [
            str(Path(sys.executable).parent / "orchestrator"),
            "--demo",
            "--status-report-interval",
            "0",
        ],
        cwd=tmp_path,
        env={**env, "XDG_DATA_HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 3, proc.stderr
    last = proc.stdout.strip().splitlines()[-1]
    assert "thrown away" in last and "orchestrator resume 2" not in proc.stdout, last
    assert "thrown away (give --ledger PATH to keep it), so `orchestrator resume`" in last


def _stopped_run(tmp_path: Path) -> tuple[list[str], str]:
    """A run whose one instance a budget stopped and whose other never started."""
    claude = logging_claude(tmp_path)
    calls = ["--sim-calls", "6", "--sim-delay", "0.01"]
    config = {
        "instances": [
            {"name": "big", "prompt": "/big a", "claude_args": calls},
            {"name": "later", "prompt": "/big b", "claude_args": calls},
        ]
    }
    (tmp_path / "jobs.json").write_text(json.dumps(config))
    common = ["--status-report-interval", "0", "--claude-bin", str(claude)]
    first, one = orchestrator(
        tmp_path,
        *("--config", "jobs.json", "--command-budget", "/big=5k"),
        *("--budget-enforcement-mode", "block", "--max-concurrent", "1", *common),
    )
    assert first.returncode == 3, first.stdout + first.stderr
    (tmp_path / "argv.log").unlink()
    return common, one["run_id"]


def test_two_resumes_of_one_run_started_together_do_its_work_once(tmp_path: Path) -> None:
    common, run_id = _stopped_run(tmp_path)
    env = {**os.environ, "ORCHESTRATOR_LEDGER": str(tmp_path / "ledger.sqlite3")}
    argv = [str(Path(sys.executable).parent / "orchestrator"), "resume", run_id]
    procs = [
        subprocess.Popen(
            [*argv, "--command-budget", "/big=1M", *common],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    results = [(p.wait(60), *p.communicate()) for p in procs]
    codes = sorted(code for code, _, _ in results)
    assert codes == [0, 2], results
    (refused,) = [err for code, _, err in results if code == 2]
    assert f"run {run_id}" in refused and "resume" in refused
    assert len(refused.strip().splitlines()) == 1, refused
    launches = (tmp_path / "argv.log").read_text().splitlines()
    assert len(launches) == 2  # big continued once, later started once

    # Resumed already: the run that resumed it is named, and is the one to go on with.
    again, _ = orchestrator(tmp_path, "resume", run_id, *common)
    assert again.returncode == 2
    assert "was resumed already, by run" in again.stderr
    # The refused duplicate (started last) is not a way round it either.
    last, _ = orchestrator(tmp_path, "resume", "last", *common)
    db = sqlite3.connect(tmp_path / "ledger.sqlite3")
    (newest,) = db.execute("SELECT id FROM runs ORDER BY started DESC LIMIT 1").fetchone()
    (winner,) = db.execute(
        "SELECT id FROM runs WHERE resumed_from = ? ORDER BY started, id LIMIT 1", (run_id,)
    ).fetchone()
    if newest != winner:  # the duplicate was recorded after the winner
        assert last.returncode == 2 and f"resume that one (orchestrator resume {winner})" in (
            last.stderr
        )
    assert len((tmp_path / "argv.log").read_text().splitlines()) == 2


def test_of_two_resumes_recorded_the_first_started_goes_on(tmp_path: Path) -> None:
    """The race itself, without timing: two resume runs recorded, then each checks."""
    import pytest

    from orchestrator.config import ConfigError
    from orchestrator.ledger import open_ledger
    from orchestrator.ledger.session import run_record
    from orchestrator.ledger_cli import _first_resume_or_refuse

    url = str(tmp_path / "ledger.sqlite3")
    ledger = open_ledger(url)
    assert ledger is not None
    original = run_record("A", 1.0, ["orchestrator", "/a"], "block", {})
    ledger.open_run(original)
    for rid, started in (("B", 2.0), ("C", 2.5)):
        record = run_record(rid, started, ["orchestrator", "resume", "A"], "block", {})
        ledger.open_run(dataclasses.replace(record, resumed_from="A"))
    _first_resume_or_refuse(ledger, "B", "A")  # the first: goes on
    with pytest.raises(ConfigError, match="is being resumed already, by run B"):
        _first_resume_or_refuse(open_ledger(url), "C", "A")  # type: ignore[arg-type]
    check = open_ledger(url)
    assert check is not None
    assert check.find_run("C") is not None
    assert check.run_status("C", 3.0) == "ended"  # type: ignore[attr-defined]
