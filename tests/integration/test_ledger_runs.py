"""The ledger with real orchestrator processes: a daily budget shared by two runs at once, a
run started once it is spent, SIGKILL mid-run, and the failure rules' exact messages."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from harness import ORCHESTRATOR, FakeClaude, MakeFakeClaude, Runner, Sim, clean_env, instance

from budget_core import TokenUsage
from orchestrator.ledger import Charge, RunRecord
from orchestrator.ledger.sqlite import SqliteLedger

CALL = sum(Sim().usage(1).values()) - Sim().usage(1)["total"]  # tokens of one call (4,800)
LIMIT = 60_000


def runner_in(tmp_path: Path, name: str, claude: FakeClaude) -> Runner:
    workdir = tmp_path / name
    workdir.mkdir()
    return Runner(workdir, claude)


def usage_json(ledger: Path, *args: str) -> list[dict[str, Any]]:
    out = subprocess.run(
        [str(ORCHESTRATOR), "usage", f"--ledger={ledger}", "--json", *args],
        env=clean_env(),
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    rows: list[dict[str, Any]] = json.loads(out)
    return rows


def test_two_runs_share_a_daily_budget_in_block_mode(
    tmp_path: Path, make_fake_claude: MakeFakeClaude
) -> None:
    ledger = tmp_path / "ledger.sqlite3"
    claude = make_fake_claude()
    # 3 instances per run, each call ~15 lines x 10 ms: 6 instances together spend about
    # 6 x 4,800 tokens per 150 ms, far past the limit if nothing stopped them.
    sim = Sim(calls=30, delay=0.01, deltas=8)
    runners = [runner_in(tmp_path, f"run{n}", claude) for n in (1, 2)]
    procs = []
    for n, runner in enumerate(runners):
        config = runner.config([instance(f"i{n}{k}", f"/x job {n}{k}", sim) for k in range(3)])
        procs.append(
            runner.start(
                f"--config={config}",
                f"--ledger={ledger}",
                f"--command-budget=/x={LIMIT}/day",
                "--budget-enforcement-mode=block",
            )
        )
    results = [runner.finish(proc) for runner, proc in zip(runners, procs, strict=True)]
    for result in results:
        assert result.returncode == 3, result.stdout + result.stderr
        statuses = {i["status"] for i in result.summary["instances"]}  # type: ignore[index]
        assert statuses <= {"stopped_by_budget", "blocked"}, statuses
    (row,) = usage_json(ledger, "--by=command")
    spent = row["total"]
    # Nothing lost, nothing twice: the ledger holds exactly what the two runs counted.
    assert spent == sum(r.summary["totals"]["tokens"]["total"] for r in results)  # type: ignore[index]
    # The bound of the contract: the calls in flight (one per instance) plus 500 ms of spend.
    in_flight = 6 * CALL
    half_second = 6 * CALL * (0.5 / (15 * 0.01))
    assert LIMIT <= spent <= LIMIT + in_flight + half_second, spent
    # Each run saw the other's spend: its budget's `used` is the day's, not its own.
    for result in results:
        budget = result.budget("/x")
        assert budget["window"] == "day"
        assert budget["used"] > result.summary["totals"]["tokens"]["total"]  # type: ignore[index]

    # A third run, started now, blocks at once: nothing is launched.
    before = len(claude.launches())
    third = runner_in(tmp_path, "run3", claude)
    config = third.config([instance("late", "/x late", Sim())])
    result = third.run(
        f"--config={config}",
        f"--ledger={ledger}",
        f"--command-budget=/x={LIMIT}/day",
        "--budget-enforcement-mode=block",
    )
    assert result.returncode == 3, result.stdout + result.stderr
    assert result.instance("late")["status"] == "blocked"
    assert result.budget("/x")["used_before_run"] == spent
    assert len(claude.launches()) == before
    assert result.lines_with("late: not launched, budget exceeded: /x (tokens)")


def test_sigkill_mid_run_keeps_every_charge_counted_before_it(
    tmp_path: Path, make_fake_claude: MakeFakeClaude
) -> None:
    ledger = tmp_path / "ledger.sqlite3"
    claude = make_fake_claude()
    runner = runner_in(tmp_path, "run", claude)
    config = runner.config([instance("long", "/x long", Sim(calls=500, delay=0.005))])
    proc = runner.start(f"--config={config}", f"--ledger={ledger}")
    try:
        (launch,) = claude.wait_for_launches(1)
        claude.wait_for_tokens("/x long")
        time.sleep(0.3)
        # Freeze the instance, give the orchestrator 200 ms to count and record what it
        # printed, then kill the orchestrator: the ledger must hold exactly that.
        os.killpg(launch.pid, signal.SIGSTOP)
        time.sleep(0.2)
        proc.kill()
        proc.wait(timeout=10)
    finally:
        os.killpg(launch.pid, signal.SIGKILL)
        proc.communicate()
    printed = claude.counted("/x long").usage
    (row,) = usage_json(ledger, "--by=instance")
    assert printed.total > 0
    assert (row["input"], row["output"], row["cache_creation"], row["cache_read"]) == (
        printed.input,
        printed.output,
        printed.cache_creation,
        printed.cache_read,
    )
    (run,) = usage_json(ledger, "--by=run")
    assert run["status"] == "running"  # not closed; `crashed` once its heartbeat is 30 s old
    db = SqliteLedger(ledger)
    assert db.run_status(run["group"], time.time() + 31) == "crashed"
    db.close()


# -- failure rules ---------------------------------------------------------------------------


def test_block_mode_with_a_windowed_budget_and_no_ledger_exits_2(
    tmp_path: Path, runner: Runner
) -> None:
    (tmp_path / "file").write_text("x")
    bad = tmp_path / "file" / "ledger.sqlite3"
    result = runner.run(
        "/review x",
        f"--ledger={bad}",
        "--command-budget=/review=2M/day",
        "--budget-enforcement-mode=block",
    )
    assert result.returncode == 2
    assert result.stderr == (
        f"orchestrator: error: cannot enforce /review=2M/day without the ledger: "
        f"cannot create ledger {bad}: {tmp_path / 'file'} is not a folder\n"
    )
    assert runner.claude.launches() == []


def test_ledger_none_with_a_windowed_budget_in_block_mode_exits_2(runner: Runner) -> None:
    result = runner.run(
        "/review x", "--ledger=none", "--overall-cost-budget=50/5h",
        "--budget-enforcement-mode=block",
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr == (
        "orchestrator: error: cannot enforce overall=$50.00/5h without the ledger: --ledger none\n"
    )


def test_no_ledger_without_windowed_budgets_warns_once_and_runs(
    tmp_path: Path, runner: Runner
) -> None:
    bad = tmp_path / "corrupt.sqlite3"
    bad.write_bytes(b"garbage" * 1000)
    result = runner.run("/review x", f"--ledger={bad}", "--command-budget=/review=2M")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr == (
        f"orchestrator: warning: ledger {bad} is corrupt or not a SQLite database (file is not "
        "a database); the run goes on with per-run budgets and its spend is not recorded\n"
    )
    assert result.summary is not None and result.summary["ledger"] is None


def test_a_newer_ledger_is_refused_in_one_line(tmp_path: Path, runner: Runner) -> None:
    import sqlite3

    path = tmp_path / "newer.sqlite3"
    SqliteLedger(path).close()
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA user_version = 7")
    result = runner.run(
        "/review x", f"--ledger={path}", "--command-budget=/review=1M/week",
        "--budget-enforcement-mode=block",
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert "was written by a newer orchestrator (schema 7; this one reads up to 1)" in (
        result.stderr
    )


def test_demo_leaves_the_default_ledger_alone(tmp_path: Path) -> None:
    data_home = tmp_path / "xdg"
    proc = subprocess.run(
        [str(ORCHESTRATOR), "--demo", "--quiet", "--status-report-interval=0"],
        env=clean_env({"XDG_DATA_HOME": str(data_home), "SIM_DELAY": "0"}),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode in (0, 1, 3), proc.stderr
    assert not data_home.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--by=hour"], "--by 'hour' is not one of day, week, month, command, model, run"),
        (["--since=last tuesday"], "WHEN 'last tuesday' is not an ISO date or date-time"),
        (["--since=today", "--until=yesterday"], "--until must be later than --since"),
    ],
)
def test_usage_rejects_bad_arguments_in_one_line(
    tmp_path: Path, args: list[str], message: str
) -> None:
    proc = subprocess.run(
        [str(ORCHESTRATOR), "usage", f"--ledger={tmp_path / 'l.sqlite3'}", *args],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("orchestrator usage: error: ") and message in proc.stderr
    assert proc.stderr.count("\n") == 1


def test_run_is_the_explicit_spelling_for_a_prompt_named_like_a_subcommand(
    runner: Runner,
) -> None:
    proc = subprocess.run(
        [str(ORCHESTRATOR), "run", "usage", "--dry-run", f"--claude-bin={runner.claude.path}"],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.rstrip().split("\n")[1].endswith(" -- usage")  # the prompt, last


def test_usage_of_a_long_range_buckets_only_days_with_charges(tmp_path: Path) -> None:
    path = tmp_path / "l.sqlite3"
    db = SqliteLedger(path)
    db.open_run(RunRecord("r", time.time(), "h", "u", "/", (), "warn"))
    db.write([Charge("r", "i", 1, time.time(), "/x", "m", TokenUsage(5, 6, 7, 8), 0.5, False)], [])
    db.close()
    (row,) = usage_json(path, "--since=99999d")
    assert (row["total"], row["cost_usd"], row["runs"], row["instances"]) == (26, 0.5, 1, 1)


# -- a full disk and a read-only ledger, for real (tmpfs, chattr: root only) -------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 8 MB file system (tmpfs) of its own, unmounted afterwards."""
    folder = tmp_path / "disk"
    folder.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(folder)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if mounted.returncode != 0:
        pytest.skip(f"a full disk needs a tmpfs mount (root): {mounted.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=True)


def fill(disk: Path) -> Path:
    """Fill ``disk`` to the last byte; the file to remove to free it again."""
    filler = disk / "filler"
    with filler.open("wb", buffering=0) as out:
        with contextlib.suppress(OSError):  # ENOSPC: full
            while True:
                out.write(b"\0" * 65536)
        with contextlib.suppress(OSError):
            while True:
                out.write(b"\0")
    assert os.statvfs(disk).f_bavail == 0
    return filler


@pytest.mark.parametrize("existing", [False, True], ids=["new", "existing"])
def test_a_full_disk_at_start_in_block_mode_exits_2_naming_it(
    small_disk: Path, runner: Runner, existing: bool
) -> None:
    ledger = small_disk / "ledger.sqlite3"
    if existing:
        SqliteLedger(ledger).close()
    fill(small_disk)
    result = runner.run(
        "/review x", f"--ledger={ledger}", "--command-budget=/review=2M/day",
        "--budget-enforcement-mode=block",
    )  # fmt: skip
    # A new ledger cannot write its schema; an existing one cannot grow its WAL index (SQLite
    # says "disk I/O error" for that): both are named a full disk.
    sqlite_says = "disk I/O error" if existing else "database or disk is full"
    assert result.returncode == 2
    assert result.stderr == (
        "orchestrator: error: cannot enforce /review=2M/day without the ledger: "
        f"ledger {ledger}: the disk is full ({sqlite_says})\n"
    )
    assert runner.claude.launches() == []


def test_a_full_disk_at_start_without_a_windowed_budget_warns_and_runs(
    small_disk: Path, runner: Runner
) -> None:
    ledger = small_disk / "ledger.sqlite3"
    fill(small_disk)
    result = runner.run("/review x", f"--ledger={ledger}", "--command-budget=/review=2M")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr == (
        f"orchestrator: warning: ledger {ledger}: the disk is full (database or disk is full);"
        " the run goes on with per-run budgets and its spend is not recorded\n"
    )
    assert result.instance("review")["tokens"]["total"] == Sim().usage()["total"]


def start_long_run(runner: Runner, ledger: Path) -> tuple[subprocess.Popen[str], list[Sim]]:
    sims = [Sim(calls=120, delay=0.002, deltas=8), Sim(calls=100, delay=0.002, deltas=8)]
    config = runner.config([instance(f"i{n}", f"/x job {n}", sim) for n, sim in enumerate(sims)])
    proc = runner.start(f"--config={config}", f"--ledger={ledger}", "--command-budget=/x=900M/day")
    runner.claude.wait_for_launches(2)
    runner.claude.wait_for_tokens("/x job 0")
    runner.claude.wait_for_tokens("/x job 1")
    time.sleep(0.3)  # their first charges are in the ledger (within 100 ms)
    return proc, sims


def assert_summary_exact(result: Any, runner: Runner, sims: list[Sim]) -> None:
    """Nothing counted is lost: each instance's figures are all that its process printed."""
    for n, sim in enumerate(sims):
        tokens = result.instance(f"i{n}")["tokens"]
        printed = runner.claude.counted(f"/x job {n}").usage.total
        assert tokens["total"] == sim.usage()["total"] == printed


def test_a_write_failure_mid_run_keeps_the_charges_and_writes_them_once_it_works(
    small_disk: Path, runner: Runner
) -> None:
    ledger = small_disk / "ledger.sqlite3"
    proc, sims = start_long_run(runner, ledger)
    filler = fill(small_disk)
    time.sleep(0.6)  # a dozen writes fail meanwhile
    filler.unlink()
    result = runner.finish(proc)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr and result.stderr == ""
    # One warning for the whole outage, one line when it is over.
    failed = result.lines_with("cannot write the ledger")
    assert len(failed) == 1, result.stdout
    assert failed[0].endswith(
        f"cannot write the ledger (ledger {ledger}: the disk is full (database or disk is full));"
        " charges are kept and retried"
    )
    assert len(result.lines_with("the ledger works again; pending charges written")) == 1
    assert_summary_exact(result, runner, sims)
    rows = {r["group"].rsplit("/", 1)[1]: r["total"] for r in usage_json(ledger, "--by=instance")}
    assert rows == {f"i{n}": sim.usage()["total"] for n, sim in enumerate(sims)}
    (run,) = usage_json(ledger, "--by=run")
    assert run["status"] == "ended"


def test_a_write_failure_to_the_end_says_what_was_not_written_and_exits_1(
    small_disk: Path, runner: Runner
) -> None:
    ledger = small_disk / "ledger.sqlite3"
    proc, sims = start_long_run(runner, ledger)
    filler = fill(small_disk)
    result = runner.finish(proc)
    filler.unlink()
    reason = f"ledger {ledger}: the disk is full (database or disk is full)"
    assert len(result.lines_with("cannot write the ledger")) == 1, result.stdout
    (error,) = result.stderr.splitlines()
    assert error.startswith(f"orchestrator: error: ledger: {reason}; ")
    assert error.endswith(" record(s) not written")
    # Every instance succeeded, but the spend is not all recorded: as for the summary JSON.
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.lines_with("every instance succeeded, but the ledger lacks")
    assert_summary_exact(result, runner, sims)  # the run's own figures are complete
    recorded = sum(row["total"] for row in usage_json(ledger, "--by=instance"))
    assert 0 < recorded < sum(sim.usage()["total"] for sim in sims)


def test_an_immutable_ledger_is_read_only_even_for_root(tmp_path: Path, runner: Runner) -> None:
    ledger = tmp_path / "ledger.sqlite3"
    SqliteLedger(ledger).close()
    if subprocess.run(["chattr", "+i", str(ledger)], capture_output=True, check=False).returncode:
        pytest.skip("chattr +i is not available on this file system")
    try:
        result = runner.run(
            "/review x", f"--ledger={ledger}", "--command-budget=/review=2M/day",
            "--budget-enforcement-mode=block",
        )  # fmt: skip
    finally:
        subprocess.run(["chattr", "-i", str(ledger)], check=True)
    assert result.returncode == 2
    assert result.stderr == (
        "orchestrator: error: cannot enforce /review=2M/day without the ledger: "
        f"ledger {ledger} is read-only (attempt to write a readonly database)\n"
    )


def test_usage_costs_read_as_written_in_json_and_csv(tmp_path: Path) -> None:
    path = tmp_path / "l.sqlite3"
    db = SqliteLedger(path)
    db.open_run(RunRecord("r", time.time(), "h", "u", "/", (), "warn"))
    db.write([Charge("r", "i", n, time.time(), "/x", "m", TokenUsage(1, 0, 0, 0), cost, False)
              for n, cost in ((1, 0.1), (2, 0.2))], [])  # fmt: skip
    db.close()
    (row,) = usage_json(path)
    assert row["cost_usd"] == 0.3  # summed exactly, not 0.30000000000000004
    csv_out = subprocess.run(
        [str(ORCHESTRATOR), "usage", f"--ledger={path}", "--csv"],
        env=clean_env(), capture_output=True, text=True, check=True, timeout=30,
    ).stdout  # fmt: skip
    assert csv_out.splitlines()[1].split(",")[6] == "0.3"


def test_ledger_none_from_the_environment_is_named_as_such(runner: Runner, tmp_path: Path) -> None:
    result = runner.run(
        "/review x", "--command-budget=/review=2M/day", "--budget-enforcement-mode=block",
        env={"ORCHESTRATOR_LEDGER": "none"},
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr == (
        "orchestrator: error: cannot enforce /review=2M/day without the ledger:"
        " ORCHESTRATOR_LEDGER=none\n"
    )
    proc = subprocess.run(
        [str(ORCHESTRATOR), "usage"], env=clean_env({"ORCHESTRATOR_LEDGER": "none"}),
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert proc.returncode == 1
    assert proc.stderr == (
        "orchestrator usage: error: ORCHESTRATOR_LEDGER=none: there is no ledger to report on\n"
    )


def test_a_ledger_path_that_is_a_directory_is_named(runner: Runner, tmp_path: Path) -> None:
    result = runner.run("/review x", f"--ledger={tmp_path}")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr == (
        f"orchestrator: warning: ledger {tmp_path} is a directory, not a file; the run goes on"
        " with per-run budgets and its spend is not recorded\n"
    )
