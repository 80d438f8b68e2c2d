"""The PostgreSQL ledger itself, against the real server: migration, idempotent charges, the
windows' totals returned by the writing transaction, reports equal to SQLite's, a crashed
run, NOTIFY, the journal of an outage, and no password in any message."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import psycopg
import pytest

from budget_core import TokenUsage, Unit
from orchestrator.ledger import Charge, InstanceRecord, LedgerError, RunRecord, WindowQuery
from orchestrator.ledger.base import LedgerUnreachable
from orchestrator.ledger.journal import Journal, replay_orphans
from orchestrator.ledger.postgres import MIGRATIONS, SCHEMA_VERSION, PostgresLedger
from orchestrator.ledger.sqlite import SqliteLedger
from orchestrator.ledger.urls import open_ledger, redact_url
from tests.pg_server import PgSchema, TcpProxy

NOW = time.time()


def run(run_id: str, started: float = NOW) -> RunRecord:
    return RunRecord(run_id, started, "host", "user", "/w", ("orchestrator",), "block")


def charge(run_id: str, seq: int, at: float, key: str = "/x", tokens: int = 100) -> Charge:
    usage = TokenUsage(tokens // 4, tokens // 4, tokens // 4, tokens - 3 * (tokens // 4))
    return Charge(run_id, "i1", seq, at, key, "m", usage, tokens / 1e5, seq % 2 == 1)


def open_pg(schema: PgSchema) -> PostgresLedger:
    ledger = open_ledger(schema.url)
    assert isinstance(ledger, PostgresLedger)
    return ledger


def test_charges_are_idempotent_and_the_write_returns_the_windows_totals(
    pg_schema: PgSchema,
) -> None:
    ledger, other = open_pg(pg_schema), open_pg(pg_schema)
    ledger.open_run(run("a"))
    other.open_run(run("b"))
    day = WindowQuery("/x", Unit.TOKENS, NOW - 3600)
    overall = WindowQuery(None, Unit.USD, NOW - 3600)
    # Another run spent 300 tokens; this run's writes see them in what the write returns.
    other.write([charge("b", s, NOW - 10) for s in (1, 2, 3)], [])
    sums = ledger.write_and_sum([charge("a", 1, NOW)], [], None, "a", [day, overall])
    assert sums[0].others == 300 and sums[0].own_before == 0
    assert sums[1].others == pytest.approx(0.003)
    # The same charges again (a retry, a replay): nothing counted twice, counters included.
    again = ledger.write_and_sum(
        [charge("a", 1, NOW), charge("a", 2, NOW)], [], None, "b", [day, overall]
    )
    assert again[0].others == 200  # run a's two charges, seen from run b
    other.write([charge("b", s, NOW - 10) for s in (1, 2, 3)], [])
    assert ledger.window_spend("a", [day])[0].others == 300
    with pg_schema.connect() as conn:
        assert conn.execute("SELECT COUNT(*), SUM(tokens) FROM spend_1m").fetchone() == (
            conn.execute(
                "SELECT COUNT(DISTINCT floor(ts / 60)), SUM(input + output +"
                " cache_creation + cache_read) FROM charges"
            ).fetchone()
        )
        assert conn.execute("SELECT SUM(tokens) FROM spend_1m").fetchone() == (500,)
    ledger.close()
    other.close()


def test_a_rolling_window_counts_from_its_exact_start(pg_schema: PgSchema) -> None:
    """Whole minutes from the counters, the minute the window starts in from the charges:
    a charge one second before the start is out, one at the start is in."""
    ledger = open_pg(pg_schema)
    ledger.open_run(run("a"))
    start = (NOW // 60) * 60 - 600 + 17.5  # mid-minute
    ledger.write(
        [
            charge("b", 1, start - 1, tokens=1000),
            charge("b", 2, start, tokens=200),
            charge("b", 3, start + 50, tokens=30),  # same minute as the start, later
            charge("b", 4, NOW, tokens=4),
            charge("a", 1, start - 5, tokens=7000),  # this run's, aged out of the window
            charge("a", 2, start + 1, tokens=60000),  # this run's, inside
        ],
        [],
    )
    (spend,) = ledger.window_spend("a", [WindowQuery("/x", Unit.TOKENS, start)])
    assert (spend.others, spend.own_before) == (234, 7000)
    (cost,) = ledger.window_spend("a", [WindowQuery(None, Unit.USD, start)])
    assert cost.others == pytest.approx(0.00234)
    ledger.close()


def test_migration_from_version_1_keeps_the_spend_and_a_newer_ledger_is_refused(
    pg_schema: PgSchema,
) -> None:
    with pg_schema.connect() as conn:  # a ledger as version 1 left it
        conn.execute("CREATE TABLE ledger_meta (key TEXT PRIMARY KEY, value TEXT)")
        conn.execute(MIGRATIONS[0][1])
        conn.execute("INSERT INTO ledger_meta VALUES ('schema_version', '1')")
        conn.execute(
            "INSERT INTO charges VALUES ('old', 'i', 1, %s, '/x', 'm', 10, 20, 30, 40, 0.5, false)",
            (NOW - 30,),
        )
    ledger = open_pg(pg_schema)
    assert ledger.schema_version() == SCHEMA_VERSION == 2
    (spend,) = ledger.window_spend("new", [WindowQuery("/x", Unit.TOKENS, NOW - 3600)])
    assert spend.others == 100
    (row,) = ledger.usage(NOW - 3600, NOW + 1, "command", NOW)
    assert (row.usage.total, row.cost_usd) == (100, 0.5)
    ledger.close()
    # Two orchestrators opening a fresh schema together: one migrates, neither fails.
    with pg_schema.connect() as conn:
        conn.execute("UPDATE ledger_meta SET value = '3'")
    with pytest.raises(LedgerError, match=r"written by a newer orchestrator \(schema 3; this"):
        open_pg(pg_schema)


def test_two_orchestrators_opening_a_new_schema_together_both_succeed(
    pg_schema: PgSchema,
) -> None:
    errors: list[BaseException] = []

    def open_one() -> None:
        try:
            open_pg(pg_schema).close()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert open_pg(pg_schema).schema_version() == SCHEMA_VERSION


def test_reports_match_the_sqlite_ledger_and_a_silent_run_is_crashed(
    pg_schema: PgSchema, tmp_path: Path
) -> None:
    pg = open_pg(pg_schema)
    lite = SqliteLedger(tmp_path / "l.sqlite3")
    charges = [
        charge(r, s, NOW - 86400 * d - s, key=k)
        for r, k, d in (("r1", "/x", 0), ("r2", "/y", 1), ("r3", "/x", 3))
        for s in range(1, 6)
    ]
    record = InstanceRecord(
        "r1",
        "i1",
        "/x a",
        "/x",
        "running",
        TokenUsage(1, 2, 3, 4),
        0.1,
        False,
        True,
        NOW - 100,
        None,
        None,
    )
    for ledger in (pg, lite):
        for r in ("r1", "r2", "r3"):
            ledger.open_run(RunRecord(r, NOW - 100, "h", "u", "/w", (), "warn", {"team": r[1]}))
        ledger.write(charges, [record], ("r1", NOW - 5))
        ledger.close_run("r2", NOW - 1, 0)
    for by in ("day", "week", "month", "command", "model", "run", "instance", "label:team"):
        ours = pg.usage(NOW - 10 * 86400, NOW + 1, by, NOW)
        theirs = lite.usage(NOW - 10 * 86400, NOW + 1, by, NOW)
        assert sorted(ours, key=repr) == sorted(theirs, key=repr), by
        assert ours, by
    # r3 never closed and its heartbeat is its start: crashed after 30 s; its spend counts.
    assert pg.run_status("r1", NOW) == "running"
    assert pg.run_status("r1", NOW + 26) == "crashed"
    assert pg.run_status("r2", NOW + 1000) == "ended"
    runs = {row.group: row for row in pg.usage(NOW - 10 * 86400, NOW + 1, "run", NOW)}
    assert runs["r3"].status == "crashed" and runs["r3"].usage.total == 500
    pg.close()
    lite.close()


def test_no_password_in_any_error(pg_schema: PgSchema) -> None:
    secret = "Pa55-w0rd-zz"
    closed_port = TcpProxy()
    closed_port.cut()
    try:
        bad = [
            pg_schema.url_via("127.0.0.1", closed_port.port, "root", secret),  # refused
            f"postgresql://root:{secret}@127.0.0.1:5432/test?schema=nope_{secret[:2]}",
            f"postgresql://root:{secret}@127.0.0.1:5432/test?sslmode=bogus&schema=x",
            f"postgresql://root:{secret}@127.0.0.1:5432/test?schema=a-b",
            f"postgresql://root@127.0.0.1:5432/test?password={secret}&port=zz",
            f"postgresql://root:{secret}@[::1:5432/test",
            # libpq's own parse error quotes the password as written (a bad % escape)
            f"postgresql://root:{secret}%zz@127.0.0.1:5432/test",
            f"postgresql://root:%40{secret}%g@127.0.0.1:5432/test",
        ]
        for url in bad:
            with pytest.raises(LedgerError) as caught:
                open_ledger(url)
            text = str(caught.value)
            assert secret not in text and "\n" not in text, text
        with pytest.raises(LedgerUnreachable):
            open_ledger(bad[0])
    finally:
        closed_port.close()
    assert redact_url(f"postgresql://u:{secret}@h/db?schema=s") == "postgresql://u@h/db?schema=s"


def test_notify_reaches_another_orchestrator_at_once(pg_schema: PgSchema) -> None:
    writer, reader = open_pg(pg_schema), open_pg(pg_schema)
    heard = threading.Event()
    calls = []

    def on_change() -> None:
        calls.append(time.monotonic())
        if len(calls) > 1:  # the first call is on connecting
            heard.set()

    stop = reader.listen("reader", on_change)
    try:
        deadline = time.monotonic() + 10
        while not calls and time.monotonic() < deadline:
            time.sleep(0.01)
        writer.write([charge("reader", 1, NOW)], [])  # its own run: not news to it
        time.sleep(0.3)
        assert len(calls) == 1
        sent = time.monotonic()
        writer.write([charge("w", 1, NOW)], [])
        assert heard.wait(10)
        assert calls[-1] - sent < 1.0
    finally:
        stop()
    writer.close()
    reader.close()


def test_a_journal_left_by_a_run_is_written_once_by_the_next(
    pg_schema: PgSchema, tmp_path: Path
) -> None:
    ledger = open_pg(pg_schema)
    ledger.open_run(run("gone"))
    journal = Journal(tmp_path / "journal", "gone", ledger.ledger_id)
    first = [charge("gone", s, NOW) for s in (1, 2, 3)]
    ledger.write(first[:1], [])  # written, but the run never heard (the link broke on commit)
    journal.append(first, [])
    journal.append([charge("gone", 4, NOW)], [], ("gone", NOW + 1, 3))
    # Held by a live run: not touched.
    assert replay_orphans(tmp_path / "journal", ledger, ledger.ledger_id) == []
    journal.close()
    other = Journal(tmp_path / "journal", "elsewhere", "postgresql://other/db")
    other.append([charge("elsewhere", 1, NOW)], [])
    other.close()
    assert replay_orphans(tmp_path / "journal", ledger, ledger.ledger_id) == [("gone", 4)]
    assert replay_orphans(tmp_path / "journal", ledger, ledger.ledger_id) == []
    (row,) = ledger.usage(NOW - 10, NOW + 10, "run", NOW)
    assert (row.group, row.usage.total, row.status) == ("gone", 400, "ended")
    assert not journal.path.exists()
    assert (tmp_path / "journal" / "elsewhere.sqlite3").exists()  # another ledger's
    ledger.close()


def test_the_role_of_docs_fleet_md_can_do_all_a_run_needs(pg_schema: PgSchema) -> None:
    """The least-privilege role of docs/fleet.md: its GRANTs, verbatim, are enough."""
    open_pg(pg_schema).close()  # the owner migrates
    role = f"{pg_schema.name}_ci"
    grants = _doc_grants(pg_schema.name, role)
    with pg_schema.connect() as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN PASSWORD 'x'")
        try:
            for statement in grants:
                conn.execute(statement)
            url = pg_schema.url_via("127.0.0.1", 5432, role, "x")
            ledger = open_pg(PgSchema(pg_schema.name, url))
            ledger.open_run(run("ci"))
            sums = ledger.write_and_sum(
                [charge("ci", 1, NOW)],
                [],
                ("ci", NOW),
                "ci",
                [WindowQuery("/x", Unit.TOKENS, NOW - 60)],
            )
            assert sums[0].own_before == 0
            ledger.close_run("ci", NOW, 0)
            assert ledger.usage(NOW - 60, NOW + 1, "run", NOW)[0].status == "ended"
            with pytest.raises(LedgerError, match="permission denied"):
                ledger._guarded(lambda c: c.execute("DELETE FROM charges"))
            ledger.close()
        finally:
            conn.execute(f"DROP OWNED BY {role}")
            conn.execute(f"DROP ROLE {role}")


def _doc_grants(schema: str, role: str) -> list[str]:
    text = (Path(__file__).parents[2] / "docs" / "fleet.md").read_text()
    block = text.split("```sql grants")[1].split("```")[0]
    statements = [s.strip() for s in block.split(";") if s.strip()]
    return [
        s.replace("orchestrator_ci", role)
        .replace("orchestrator.", f"{schema}.")
        .replace("SCHEMA orchestrator", f"SCHEMA {schema}")
        .replace("DATABASE ci_budgets", "DATABASE test")
        for s in statements
        if not s.startswith("--")
    ]


def test_a_lost_connection_is_reopened_on_the_next_call(pg_schema: PgSchema) -> None:
    proxy = TcpProxy()
    try:
        ledger = open_pg(PgSchema(pg_schema.name, pg_schema.url_via("127.0.0.1", proxy.port)))
        ledger.write([charge("a", 1, NOW)], [])
        proxy.cut()
        with pytest.raises(LedgerUnreachable):
            ledger.write([charge("a", 2, NOW)], [])
        with pytest.raises(LedgerUnreachable):
            ledger.write([charge("a", 2, NOW)], [])
        proxy.restore()
        ledger.write([charge("a", 2, NOW)], [])
        assert ledger.usage(NOW - 1, NOW + 1, "run", NOW)[0].usage.total == 200
        ledger.close()
    finally:
        proxy.close()
    with pytest.raises(psycopg.Error):
        psycopg.connect(f"postgresql://127.0.0.1:{proxy.port}/test", connect_timeout=2)


def test_a_server_that_answers_nothing_fails_the_call_in_time(
    pg_schema: PgSchema, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A link that hangs open (no reset, no close) must not hang the run's writer."""
    monkeypatch.setattr("orchestrator.ledger.postgres.CALL_TIMEOUT_S", 1.0)
    proxy = TcpProxy()
    try:
        ledger = open_pg(PgSchema(pg_schema.name, pg_schema.url_via("127.0.0.1", proxy.port)))
        ledger.write([charge("a", 1, NOW)], [])
        proxy.freeze()
        began = time.monotonic()
        with pytest.raises(LedgerUnreachable, match="no answer in 1s"):
            ledger.write([charge("a", 2, NOW)], [])
        assert time.monotonic() - began < 3
        proxy.restore()
        ledger.write([charge("a", 2, NOW)], [])
        assert ledger.usage(NOW - 1, NOW + 1, "run", NOW)[0].usage.total == 200
        ledger.close()
    finally:
        proxy.close()
