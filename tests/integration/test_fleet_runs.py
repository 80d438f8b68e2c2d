"""Real orchestrator processes on the PostgreSQL ledger: 4 runs x 8 instances on one daily
budget, the link to the server cut for 5 s mid-run, a run killed mid-way, and a URL's
password, which nothing prints."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from harness import ORCHESTRATOR, FakeClaude, MakeFakeClaude, Runner, Sim, clean_env, instance

from budget_core import UsageTracker
from orchestrator.ledger.journal import journal_folder
from tests.pg_server import PgSchema, TcpProxy

CALL = sum(Sim().usage(1).values()) - Sim().usage(1)["total"]  # tokens of one call (4,800)


def runner_in(tmp_path: Path, name: str, claude: FakeClaude) -> Runner:
    workdir = tmp_path / name
    workdir.mkdir()
    return Runner(workdir, claude)


def usage_json(url: str, *args: str) -> list[dict[str, Any]]:
    done = subprocess.run(
        [str(ORCHESTRATOR), "usage", "--json", "--since=2d", *args],
        env=clean_env({"ORCHESTRATOR_LEDGER": url}),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    rows: list[dict[str, Any]] = json.loads(done.stdout)
    return rows


def printed(claude: FakeClaude) -> dict[str, int]:
    """Tokens each launched process printed, by prompt (a fresh count of its stdout)."""
    return {
        launch.prompt: claude.counted(launch.prompt).usage.total for launch in claude.launches()
    }


def test_four_orchestrators_hold_one_daily_budget(
    tmp_path: Path, make_fake_claude: MakeFakeClaude, pg_schema: PgSchema
) -> None:
    limit = 400_000
    claude = make_fake_claude()
    # A call streams ~15 lines 50 ms apart (0.75 s): longer than the fleet takes to react,
    # so an instance running at the crossing starts at most one more call before its stop.
    sim = Sim(calls=20, delay=0.05, deltas=8)
    runners = [runner_in(tmp_path, f"run{n}", claude) for n in range(4)]
    procs = []
    for n, runner in enumerate(runners):
        config = runner.config([instance(f"i{n}{k}", f"/x job {n}{k}", sim) for k in range(8)])
        procs.append(
            runner.start(
                f"--config={config}",
                f"--ledger={pg_schema.url}",
                f"--command-budget=/x={limit}/day",
                "--budget-enforcement-mode=block",
                "--max-concurrent=8",
            )
        )
    results = [runner.finish(proc) for runner, proc in zip(runners, procs, strict=True)]
    for result in results:
        assert result.returncode == 3, result.stdout + result.stderr
        assert "Traceback" not in result.stderr
    counted = printed(claude)
    assert len(counted) == 32  # every instance was launched before the crossing
    (row,) = usage_json(pg_schema.url, "--by=command")
    # Exact: the ledger holds what the 32 processes printed, nothing lost, nothing twice.
    assert row["total"] == sum(counted.values())
    assert row["total"] == sum(r.summary["totals"]["tokens"]["total"] for r in results)  # type: ignore[index]
    by_instance = {
        r["group"].split("/", 1)[1]: r["total"] for r in usage_json(pg_schema.url, "--by=instance")
    }
    assert by_instance == {f"i{p.split()[-1]}": t for p, t in counted.items()}
    # The overshoot: at most one call per instance in flight.
    assert limit <= row["total"] <= limit + 32 * CALL, row["total"]
    # The crossing: the charge that took the ledger's total past the limit.
    with pg_schema.connect() as conn:
        charges = conn.execute(
            "SELECT ts, input + output + cache_creation + cache_read FROM charges ORDER BY ts"
        ).fetchall()
        instances = conn.execute("SELECT name, status, started, ended FROM instances").fetchall()
    total, crossed_at = 0, None
    for ts, tokens in charges:
        total += tokens
        if total >= limit:
            crossed_at = ts
            break
    assert crossed_at is not None
    running = [i for i in instances if i[2] < crossed_at and (i[3] is None or i[3] > crossed_at)]
    assert len(running) >= 24, instances  # most were running at the crossing
    for name, status, _, ended in running:
        assert status == "stopped_by_budget", (name, status)
        assert ended - crossed_at <= 1.0, (name, ended - crossed_at)
    claude.assert_no_process_left()


def test_a_cut_link_loses_nothing_counts_nothing_twice_and_launches_nothing(
    tmp_path: Path, make_fake_claude: MakeFakeClaude, pg_schema: PgSchema
) -> None:
    proxy = TcpProxy()
    url = pg_schema.url_via("127.0.0.1", proxy.port)
    claude = make_fake_claude()
    sim = Sim(calls=8, delay=0.025, deltas=8)  # ~3 s per instance
    runners = [runner_in(tmp_path, f"run{n}", claude) for n in range(2)]
    try:
        procs = []
        for n, runner in enumerate(runners):
            config = runner.config([instance(f"i{n}{k}", f"/x job {n}{k}", sim) for k in range(6)])
            procs.append(
                runner.start(
                    f"--config={config}",
                    f"--ledger={url}",
                    "--command-budget=/x=100M/day",
                    "--budget-enforcement-mode=block",
                    "--max-concurrent=2",
                )
            )
        claude.wait_for_launches(4, timeout=20)
        for launch in claude.launches()[:4]:
            claude.wait_for_tokens(launch.prompt)
        cut_at = time.time()
        proxy.cut()
        time.sleep(5)
        restored_at = time.time()
        proxy.restore()
        results = [
            runner.finish(proc, timeout=90) for runner, proc in zip(runners, procs, strict=True)
        ]
    finally:
        proxy.close()
    for result in results:
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.lines_with("the ledger went away"), result.stdout
        assert result.lines_with("no launch until it is back"), result.stdout
        assert result.lines_with("the ledger is back after"), result.stdout
    # No launch while it was cut: none decided after the runs heard of it (their next
    # write, within 50 ms; 300 ms of slack for a loaded machine) and before it was back.
    launched = [json.loads(p.read_text())["at_ns"] / 1e9 for p in claude.record.glob("*.json")]
    assert len(launched) == 12
    during = [t for t in launched if cut_at + 0.3 < t < restored_at]
    assert during == [], [t - cut_at for t in during]
    assert any(t > restored_at for t in launched)  # they waited, then went on
    counted = printed(claude)
    rows = {r["group"]: r for r in usage_json(pg_schema.url, "--by=run")}
    assert sum(r["total"] for r in rows.values()) == sum(counted.values())
    for result in results:
        run_id = result.summary["run_id"]  # type: ignore[index]
        mine = {i["name"] for i in result.summary["instances"]}  # type: ignore[index]
        mine_printed = sum(t for p, t in counted.items() if f"i{p.split()[-1]}" in mine)
        assert result.summary["totals"]["tokens"]["total"] == mine_printed  # type: ignore[index]
        assert rows[run_id]["total"] == mine_printed
        assert rows[run_id]["status"] == "ended"
        assert not list(journal_folder(os.environ).glob(f"{run_id}*.sqlite3"))
    with pg_schema.connect() as conn:  # every charge once, in sequence, per instance
        gaps = conn.execute(
            "SELECT instance, COUNT(*), MAX(seq) FROM charges GROUP BY 1"
            " HAVING COUNT(*) <> MAX(seq)"
        ).fetchall()
    assert gaps == []


def test_a_killed_run_keeps_its_spend_and_shows_crashed(
    tmp_path: Path, make_fake_claude: MakeFakeClaude, pg_schema: PgSchema
) -> None:
    claude = make_fake_claude()
    runner = runner_in(tmp_path, "run", claude)
    config = runner.config([instance("long", "/x long", Sim(calls=500, delay=0.005))])
    proc = runner.start(f"--config={config}", f"--ledger={pg_schema.url}")
    try:
        (launch,) = claude.wait_for_launches(1)
        claude.wait_for_tokens("/x long")
        time.sleep(0.3)
        os.killpg(launch.pid, signal.SIGSTOP)  # freeze it; 200 ms to record what it printed
        time.sleep(0.2)
        proc.kill()
        proc.wait(timeout=10)
    finally:
        os.killpg(launch.pid, signal.SIGKILL)
        proc.communicate()
    (row,) = usage_json(pg_schema.url, "--by=run")
    assert row["total"] == claude.counted("/x long").usage.total > 0
    assert row["status"] == "running"
    with pg_schema.connect() as conn:  # 31 s later
        conn.execute("UPDATE runs SET heartbeat = heartbeat - 31")
    (row,) = usage_json(pg_schema.url, "--by=run")
    assert row["status"] == "crashed"
    assert row["total"] == claude.counted("/x long").usage.total


def test_a_password_in_the_url_is_never_printed(
    tmp_path: Path, runner: Runner, pg_schema: PgSchema
) -> None:
    secret = "s3cr3t-Pw"
    url = pg_schema.url_via("127.0.0.1", 5432, "root", secret)  # trust auth takes any
    seen: list[str] = []
    config = runner.config([instance("a", "/x a", Sim())])
    for extra, env in (
        ([f"--ledger={url}"], None),
        (["--ledger", url, "--dry-run"], None),
        ([], {"ORCHESTRATOR_LEDGER": url}),
    ):
        result = runner.run(f"--config={config}", "--command-budget=/x=1M/day", *extra, env=env)
        assert result.returncode == 0, result.stderr
        seen += [result.stdout, result.stderr]
        if result.summary is not None:
            seen.append(json.dumps(result.summary))
            assert result.summary["ledger"] == pg_schema.url_via("127.0.0.1", 5432, "root")
    # Unreachable, a missing schema, a malformed URL: the errors name the URL without it.
    closed = TcpProxy()
    closed.cut()
    try:
        for bad in (
            pg_schema.url_via("127.0.0.1", closed.port, "root", secret),
            url + "&sslmode=nonsense",
        ):
            result = runner.run(
                f"--config={config}",
                "--command-budget=/x=1M/day",
                "--budget-enforcement-mode=block",
                f"--ledger={bad}",
            )
            assert result.returncode == 2, result.stdout + result.stderr
            assert "cannot enforce /x=1M/day without the ledger" in result.stderr
            seen += [result.stdout, result.stderr]
            usage = subprocess.run(
                [str(ORCHESTRATOR), "usage", f"--ledger={bad}"],
                env=clean_env(),
                capture_output=True,
                text=True,
                timeout=30,
            )
            assert usage.returncode == 1 and usage.stderr.count("\n") == 1, usage.stderr
            seen += [usage.stdout, usage.stderr]
    finally:
        closed.close()
    usage = subprocess.run(
        [str(ORCHESTRATOR), "usage", "--by=run", f"--ledger={url}"],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert usage.returncode == 0
    seen += [usage.stdout, usage.stderr]
    with pg_schema.connect() as conn:
        seen += [str(row) for row in conn.execute("SELECT * FROM runs")]
    assert len(seen) > 10
    for text in seen:
        assert secret not in text, text


def test_a_run_that_ends_while_the_server_is_away_leaves_its_charges_to_the_next(
    tmp_path: Path, make_fake_claude: MakeFakeClaude, pg_schema: PgSchema
) -> None:
    proxy = TcpProxy()
    claude = make_fake_claude()
    runner = runner_in(tmp_path, "run", claude)
    config = runner.config([instance("a", "/x a", Sim(calls=6, delay=0.02))])
    try:
        proc = runner.start(
            f"--config={config}", f"--ledger={pg_schema.url_via('127.0.0.1', proxy.port)}"
        )
        claude.wait_for_launches(1)
        proxy.cut()
        first = runner.finish(proc)
    finally:
        proxy.close()
    # Every instance succeeded, but the ledger lacks their spend: exit 1, and where it is.
    assert first.returncode == 1, first.stdout + first.stderr
    assert (
        "charge(s) kept in" in first.stderr
        and "the next run on this ledger writes them" in first.stderr
    )
    run_id = first.summary["run_id"]  # type: ignore[index]
    assert list(journal_folder(os.environ).glob(f"{run_id}.sqlite3"))
    second = runner.run(f"--config={config}", f"--ledger={pg_schema.url}")
    assert second.returncode == 0, second.stderr
    assert f"that run {run_id} journaled while the ledger was away" in second.stderr
    assert not list(journal_folder(os.environ).glob(f"{run_id}.*"))
    rows = {r["group"]: r for r in usage_json(pg_schema.url, "--by=run")}
    assert rows[run_id]["total"] == first.summary["totals"]["tokens"]["total"] > 0  # type: ignore[index]
    assert rows[run_id]["status"] == "ended"
    launches = claude.launches()
    assert len(launches) == 2
    assert sum(r["total"] for r in rows.values()) == sum(
        len(claude.stdout_of(launch)) and _count(claude.stdout_of(launch)) for launch in launches
    )


def _count(data: bytes) -> int:
    tracker = UsageTracker()
    for line in data.splitlines():
        tracker.feed_line(line)
    return tracker.usage.total


def test_ledger_unreachable_open_launches_while_it_is_away(
    tmp_path: Path, make_fake_claude: MakeFakeClaude, pg_schema: PgSchema
) -> None:
    proxy = TcpProxy()
    claude = make_fake_claude()
    runner = runner_in(tmp_path, "run", claude)
    sim = Sim(calls=10, delay=0.02)  # ~1 s each: the last still runs when the link is back
    config = runner.config([instance(f"i{k}", f"/x job {k}", sim) for k in range(2)])
    try:
        proc = runner.start(
            f"--config={config}",
            f"--ledger={pg_schema.url_via('127.0.0.1', proxy.port)}",
            "--command-budget=/x=100M/day",
            "--budget-enforcement-mode=block",
            "--max-concurrent=1",
            "--ledger-unreachable=open",
        )
        claude.wait_for_launches(1)
        cut_at = time.time()
        proxy.cut()
        claude.wait_for_launches(2, timeout=30)
        restored_at = time.time()
        proxy.restore()
        result = runner.finish(proc)
    finally:
        proxy.close()
    assert result.returncode == 0, result.stdout + result.stderr
    went = result.lines_with("the ledger went away")
    assert went and "no launch until" not in went[0]
    launched = sorted(
        json.loads(p.read_text())["at_ns"] / 1e9 for p in claude.record.glob("*.json")
    )
    assert cut_at < launched[1] < restored_at  # launched while it was away
    (row,) = usage_json(pg_schema.url, "--by=run")
    assert row["total"] == sum(printed(claude).values()) == 2 * sim.usage()["total"]
