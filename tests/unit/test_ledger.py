"""The SQLite ledger on real files in temporary folders (never the user's)."""

from __future__ import annotations

import io
import json
import os
import random
import sqlite3
import subprocess
import threading
import time
from datetime import datetime
from functools import partial
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from budget_core import TokenUsage, Unit, line_may_carry_usage
from orchestrator import simulator
from orchestrator.config import BudgetConfig, InstanceSpec, RunConfig
from orchestrator.ledger import (
    Charge,
    LedgerError,
    RunRecord,
    WindowQuery,
    open_ledger,
    redact_url,
    resolve_ledger_url,
)
from orchestrator.ledger import sqlite as sqlite_ledger
from orchestrator.ledger.session import RunLedger
from orchestrator.ledger.sqlite import SqliteLedger
from orchestrator.lines import LineAssembler
from orchestrator.run import Orchestrator

T0 = datetime.fromisoformat("2026-11-30T10:00:00").timestamp()


def record(run_id: str, started: float = T0, labels: dict[str, str] | None = None) -> RunRecord:
    return RunRecord(run_id, started, "host", "user", "/w/proj", ("orchestrator",), "block",
                     labels or {})  # fmt: skip


def charge(run: str, inst: str, seq: int, at: float, key: str = "/x", tokens: int = 100,
           cost: float = 0.01, model: str = "m") -> Charge:  # fmt: skip
    return Charge(run, inst, seq, at, key, model, TokenUsage(input=tokens), cost, False)


@pytest.fixture
def ledger(tmp_path: Path) -> SqliteLedger:
    db = SqliteLedger(tmp_path / "sub" / "ledger.sqlite3")
    db.open_run(record("r1"))
    db.open_run(record("r2", labels={"team": "infra"}))
    return db


def test_a_charge_written_twice_counts_once(ledger: SqliteLedger) -> None:
    c = charge("r1", "a", 1, T0)
    ledger.write([c, c], [])
    ledger.write([c, charge("r1", "a", 2, T0 + 1)], [])  # a retry with one new charge
    rows = ledger.usage(T0 - 10, T0 + 10, "instance", T0)
    assert [(r.group, r.usage.total, r.cost_usd) for r in rows] == [("r1/a", 200, 0.02)]
    spend = ledger.window_spend("other", [WindowQuery("/x", Unit.TOKENS, T0 - 10)])
    assert spend[0].others == 200


def test_window_spend_splits_others_from_this_runs_aged_out_spend(ledger: SqliteLedger) -> None:
    ledger.write(
        [
            charge("r1", "a", 1, T0 - 7200, tokens=1),  # before the window
            charge("r1", "a", 2, T0, tokens=10),
            charge("r2", "b", 1, T0 - 7200, tokens=100),  # this run's, aged out
            charge("r2", "b", 2, T0, tokens=1000),
            charge("r1", "c", 1, T0, key="/y", tokens=10_000, cost=2.5),
        ],
        [],
    )
    start = T0 - 3600
    queries = [
        WindowQuery("/x", Unit.TOKENS, start),
        WindowQuery(None, Unit.TOKENS, start),
        WindowQuery(None, Unit.USD, start),
    ]
    spends = ledger.window_spend("r2", queries)
    assert [(s.others, s.own_before) for s in spends] == [
        (10, 100),
        (10_010, 100),
        (pytest.approx(2.51), pytest.approx(0.01)),
    ]


def test_usage_groups_and_sums_exactly(ledger: SqliteLedger) -> None:
    ledger.write(
        [
            charge("r1", "a", 1, T0, tokens=7, model="opus"),
            charge("r1", "a", 2, T0 + 86400, tokens=11, model="opus"),
            charge("r2", "b", 1, T0 + 86400, key="/y", tokens=13, model="haiku"),
        ],
        [],
    )
    since, until = T0 - 3600, T0 + 2 * 86400

    def groups(by: str) -> dict[str, tuple[int, int, int]]:
        rows = ledger.usage(since, until, by, T0)
        return {r.group: (r.usage.total, r.runs, r.instances) for r in rows}

    assert groups("day") == {"2026-11-30": (7, 1, 1), "2026-12-01": (24, 2, 2)}
    assert groups("week") == {"2026-W49": (31, 2, 2)}
    assert groups("month") == {"2026-11": (7, 1, 1), "2026-12": (24, 2, 2)}
    assert groups("command") == {"/x": (18, 1, 1), "/y": (13, 1, 1)}
    assert groups("model") == {"opus": (18, 1, 1), "haiku": (13, 1, 1)}
    assert groups("label:team") == {"(none)": (18, 1, 1), "infra": (13, 1, 1)}
    assert groups("label:missing") == {"(none)": (31, 2, 2)}


def test_a_run_that_stopped_beating_and_never_closed_is_crashed(ledger: SqliteLedger) -> None:
    ledger.write([charge("r1", "a", 1, T0), charge("r2", "b", 1, T0)], [], ("r2", T0))
    ledger.close_run("r1", T0 + 5, 0)
    statuses = {r.group: r.status for r in ledger.usage(T0 - 1, T0 + 1, "run", T0 + 10)}
    assert statuses == {"r1": "ended", "r2": "running"}
    later = {r.group: r.status for r in ledger.usage(T0 - 1, T0 + 1, "run", T0 + 31)}
    assert later == {"r1": "ended", "r2": "crashed"}
    assert later and sum(r.usage.total for r in ledger.usage(T0 - 1, T0 + 1, "run", T0)) == 200


def test_a_newer_schema_is_refused_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "l.sqlite3"
    SqliteLedger(path).close()
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA user_version = 99")
    with pytest.raises(LedgerError) as info:
        SqliteLedger(path)
    assert str(info.value) == (
        f"ledger {path} was written by a newer orchestrator (schema 99; this one reads up to "
        "1): upgrade, or use another --ledger"
    )


def test_a_corrupt_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "l.sqlite3"
    path.write_bytes(b"this is not a database at all" * 200)
    with pytest.raises(LedgerError, match=r"^ledger .*l\.sqlite3 is corrupt or not a SQLite"):
        SqliteLedger(path)


def test_a_folder_that_cannot_be_made_is_named(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(LedgerError, match=r"^cannot create folder .*file/sub: Not a directory$"):
        SqliteLedger(tmp_path / "file" / "sub" / "l.sqlite3")


def test_a_directory_is_not_a_ledger(tmp_path: Path) -> None:
    with pytest.raises(LedgerError, match=r"^ledger .* is a directory, not a file$"):
        SqliteLedger(tmp_path)


def test_a_locked_ledger_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "l.sqlite3"
    SqliteLedger(path).close()
    monkeypatch.setattr(sqlite_ledger, "BUSY_TIMEOUT_MS", 100)
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        db = SqliteLedger(path)  # opening reads only the header: it works
        with pytest.raises(LedgerError, match=r"^ledger .* is locked by another process"):
            db.open_run(record("r"))
    finally:
        holder.execute("ROLLBACK")


def test_opening_a_new_ledger_waits_for_another_process_creating_it(tmp_path: Path) -> None:
    """Two runs started together on a new ledger: switching the file to WAL fails at once,
    busy handler or not, while the other holds its lock; the opener waits instead."""
    path = tmp_path / "l.sqlite3"
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    holder.execute("CREATE TABLE other_process_setting_up (a)")
    release = threading.Timer(0.3, holder.execute, ("COMMIT",))
    release.start()
    try:
        started = time.monotonic()
        SqliteLedger(path).close()
        assert time.monotonic() - started >= 0.25  # it did wait for the lock
    finally:
        release.join()
        holder.close()


def test_a_read_only_ledger_is_named(tmp_path: Path) -> None:
    path = tmp_path / "l.sqlite3"
    SqliteLedger(path).close()
    if os.geteuid() != 0:
        path.chmod(0o444)
    elif subprocess.run(["chattr", "+i", path], capture_output=True, check=False).returncode:
        pytest.skip("root writes a read-only file, and chattr +i does not work here")
    try:
        db = SqliteLedger(path)
        with pytest.raises(LedgerError) as caught:
            db.open_run(record("r"))
        db.close()
    finally:
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-i", path], check=True)
    assert str(caught.value) == f"ledger {path} is read-only (attempt to write a readonly database)"


def test_urls() -> None:
    env = {"XDG_DATA_HOME": "/data"}
    assert resolve_ledger_url(None, env, None) == "/data/claude-budget-orchestrator/ledger.sqlite3"
    assert resolve_ledger_url(None, {**env, "ORCHESTRATOR_LEDGER": "/e.db"}, None) == "/e.db"
    assert resolve_ledger_url("none", {"ORCHESTRATOR_LEDGER": "/e.db"}, "/t") == "none"
    assert resolve_ledger_url(None, env, "/demo.db") == "/demo.db"
    assert open_ledger("none") is None
    assert redact_url("postgresql://me:s3cret@db:5432/x") == "postgresql://me@db:5432/x"
    with pytest.raises(LedgerError, match="mysql ledgers are not supported"):
        open_ledger("mysql://h/db")


def test_sqlite_url_form(tmp_path: Path) -> None:
    db = open_ledger(f"sqlite:///{tmp_path}/u.sqlite3")
    assert db is not None
    db.close()
    assert (tmp_path / "u.sqlite3").exists()


# -- the sum of an instance's charges is its reported figures -----------------------------

FAILS = ("none", "crash", "no-result", "error-result")


def transcript(calls: int, inp: int, out: int, cw: int, cr: int, fail: str, seed: int) -> bytes:
    cfg = simulator.Config(
        partial=True, calls=calls, input_tokens=inp, output_tokens=out, cache_creation=cw,
        cache_read=cr, fail=fail, seed=seed, huge_bytes=0,
    )  # fmt: skip
    buffer = io.BytesIO()
    simulator.run(cfg, buffer, io.BytesIO())
    return buffer.getvalue()


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 4),
            st.integers(0, 5000),
            st.integers(0, 3000),
            st.integers(0, 2000),
            st.integers(0, 9000),
            st.sampled_from(FAILS),
            st.integers(0, 5),
        ),
        min_size=1,
        max_size=3,
    ),
    st.integers(1, 4096),
)
def test_an_instances_charges_sum_to_its_reported_figures(
    tmp_path_factory: pytest.TempPathFactory,
    runs: list[tuple[int, int, int, int, int, str, int]],
    chunk: int,
) -> None:
    path = tmp_path_factory.mktemp("ledger") / "l.sqlite3"
    specs = tuple(InstanceSpec(f"i{n}", f"/k{n % 2}", f"/k{n % 2}") for n in range(len(runs)))
    config = RunConfig(instances=specs, budgets=BudgetConfig(), claude_cmd=("x",))
    session = RunLedger(SqliteLedger(path), record("run"), [])
    session.open_run()
    orchestrator = Orchestrator(config, ledger=session)
    for inst, params in zip(orchestrator._instances, runs, strict=True):
        data = transcript(*params)
        assembler = LineAssembler(partial(orchestrator._on_line, inst), line_may_carry_usage)
        for i in range(0, len(data), chunk):
            assembler.feed(data[i : i + chunk])
            orchestrator.record_spend()  # as the run does every 25 ms: anywhere in a stream
            if i // chunk % 3 == 2:
                session._flush(False, None)  # as its thread does every 50 ms
        assembler.close()
    orchestrator.record_spend()  # as the run does when it ends
    assert session.finish(orchestrator.instance_records(), 0) is None
    reader = SqliteLedger(path)
    rows = {r.group: r for r in reader.usage(T0 - 10, 4e9, "instance", T0)}
    instances = {
        name: json.loads(json.dumps(row))
        for name, *row in reader._db.execute(
            "SELECT name, input, output, cache_creation, cache_read, cost_usd FROM instances"
        )
    }
    for inst in orchestrator._instances:
        tracker = inst.tracker
        row = rows.get(f"run/{inst.name}")
        if row is None:  # nothing ever counted, nothing recorded
            assert not tracker.usage and not tracker.cost_usd
            continue
        assert row.usage == tracker.usage  # exact, final figures included
        assert row.cost_usd == pytest.approx(tracker.cost_usd, rel=1e-12)
        assert row.cost_is_estimate == tracker.cost_is_estimate
        assert instances[inst.name][:4] == [
            tracker.usage.input, tracker.usage.output,
            tracker.usage.cache_creation, tracker.usage.cache_read,
        ]  # fmt: skip


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.lists(
        st.tuples(st.floats(0, 4 * 3600), st.integers(0, 3), st.integers(1, 10**6)),
        min_size=1,
        max_size=40,
    ),
    st.floats(-600, 4 * 3600),
    st.floats(0, 5 * 3600),
    st.booleans(),
)
def test_a_report_sums_exactly_whatever_the_range_and_however_often_written(
    tmp_path_factory: pytest.TempPathFactory,
    charges: list[tuple[float, int, int]],
    since: float,
    length: float,
    write_twice: bool,
) -> None:
    """Whole quarter hours come from the rollup, the ragged ends from the charges: the sums
    are those of the charges in the range, each counted once."""
    db = SqliteLedger(tmp_path_factory.mktemp("rollup") / "l.sqlite3")
    db.open_run(record("r"))
    rows = [
        charge("r", f"i{k}", seq, T0 + at, key=f"/k{k}", tokens=tokens, cost=tokens / 1e6)
        for seq, (at, k, tokens) in enumerate(charges)
    ]
    db.write(rows, [])
    if write_twice:
        db.write(rows[::-1], [])
    start, end = T0 + since, T0 + since + length + 1
    got = {r.group: (r.usage.total, r.cost_usd) for r in db.usage(start, end, "command", T0)}
    expected: dict[str, list[float]] = {}
    for c in rows:
        if start <= c.at < end:
            sums = expected.setdefault(c.budget_key, [0, 0.0])
            sums[0] += c.usage.total
            sums[1] += c.cost_usd
    assert {k: v[0] for k, v in got.items()} == {k: v[0] for k, v in expected.items()}
    for key, (_, cost) in got.items():
        assert cost == pytest.approx(expected[key][1], rel=1e-9)


def test_counts_handed_over_between_two_writes_make_one_charge(tmp_path: Path) -> None:
    path = tmp_path / "l.sqlite3"
    session = RunLedger(SqliteLedger(path), record("run"), [], clock=lambda: T0)
    session.open_run()
    for n in (1, 2, 3):  # the loop hands counts over every 25 ms, the thread writes every 50
        session.record_totals("i", "/x", "m", TokenUsage(input=100 * n), 0.5 * n, n < 3)
    session.record_totals("idle", "/x", None, TokenUsage(), 0.0, False)  # nothing spent yet
    assert session.finish([], 0) is None
    db = sqlite3.connect(path)
    assert db.execute(
        "SELECT instance, seq, input, cost_usd, cost_is_estimate FROM charges"
    ).fetchall() == [("i", 1, 300, 1.5, 0)]
    db.close()


def test_polled_window_spend_moves_on_exactly_as_a_fresh_answer(tmp_path: Path) -> None:
    """The poller's sums are moved on by what was written since and by what the window's
    start passed; a fresh connection sums everything: the two must agree, every poll."""
    path = tmp_path / "l.sqlite3"
    writer, poller = SqliteLedger(path), SqliteLedger(path)
    rng = random.Random(7)
    seqs: dict[tuple[str, str], int] = {}
    start = T0
    for step in range(12):
        batch = []
        for _ in range(rng.randrange(0, 30)):
            run, inst = rng.choice(["me", "r2", "r3"]), rng.choice(["a", "b"])
            seq = seqs[run, inst] = seqs.get((run, inst), 0) + 1
            at = start + rng.uniform(-600, 600)  # some late, from before the window's start
            batch.append(charge(run, inst, seq, at, rng.choice(["/x", "/y"]), rng.randrange(500),
                                rng.randrange(100) / 7))  # fmt: skip
        writer.write(batch, [])
        queries = [
            WindowQuery(key, unit, start)
            for key in ("/x", "/y", None)
            for unit in (Unit.TOKENS, Unit.USD)
        ]
        fresh = SqliteLedger(path)
        expected = fresh.window_spend("me", queries)
        fresh.close()
        got = poller.window_spend("me", queries)
        for q, g, e in zip(queries, got, expected, strict=True):
            if q.unit is Unit.TOKENS:
                assert (g.others, g.own_before) == (e.others, e.own_before), (step, q)
            else:
                assert g.others == pytest.approx(e.others, abs=1e-9), (step, q)
                assert g.own_before == pytest.approx(e.own_before, abs=1e-9), (step, q)
        start += rng.choice([0, 0, 90, 400])  # a rolling window slides; a calendar one holds
    writer.close()
    poller.close()
