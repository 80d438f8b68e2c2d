"""The SQLite ledger: one file per machine (stdlib ``sqlite3``, WAL, a busy timeout).

Each thread opens its own ``SqliteLedger``; WAL lets readers (other orchestrators polling
their windows, ``orchestrator usage``) go on while one writer commits.
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from budget_core import TokenUsage, Unit
from budget_core.windows import calendar_buckets
from orchestrator.ledger.base import (
    CRASHED_AFTER_S,
    Charge,
    InstanceRecord,
    LedgerError,
    RunRecord,
    UsageRow,
    WindowQuery,
    WindowSpend,
)

T = TypeVar("T")
SCHEMA_VERSION = 1
BUSY_TIMEOUT_MS = 5000
_SCHEMA = """
CREATE TABLE runs (
    id TEXT PRIMARY KEY, started REAL NOT NULL, ended REAL, heartbeat REAL, exit_code INTEGER,
    host TEXT, user TEXT, cwd TEXT, argv TEXT, mode TEXT, labels TEXT NOT NULL DEFAULT '{}',
    resumed_from TEXT
);
CREATE TABLE instances (
    run_id TEXT NOT NULL, name TEXT NOT NULL, command TEXT, budget_key TEXT, session_id TEXT,
    status TEXT, input INTEGER, output INTEGER, cache_creation INTEGER, cache_read INTEGER,
    cost_usd REAL, final INTEGER, cost_is_estimate INTEGER, started REAL, ended REAL,
    error TEXT, PRIMARY KEY (run_id, name)
);
CREATE TABLE charges (
    run_id TEXT NOT NULL, instance TEXT NOT NULL, seq INTEGER NOT NULL, ts REAL NOT NULL,
    budget_key TEXT NOT NULL, model TEXT, input INTEGER NOT NULL, output INTEGER NOT NULL,
    cache_creation INTEGER NOT NULL, cache_read INTEGER NOT NULL, cost_usd REAL NOT NULL,
    cost_is_estimate INTEGER NOT NULL, PRIMARY KEY (run_id, instance, seq)
);
-- Covering indexes: a window's sum and a report's range read no table rows.
CREATE INDEX charges_by_time ON charges (ts, run_id, instance, budget_key, model, input,
    output, cache_creation, cache_read, cost_usd, cost_is_estimate);
CREATE INDEX charges_by_key ON charges (budget_key, ts, run_id, input, output,
    cache_creation, cache_read, cost_usd);
-- The same sums per 15 minutes (every time zone's midnight falls on a quarter hour), kept
-- by a trigger, so a report reads far fewer rows. Only a charge really inserted (not one
-- ignored as written already) adds to them. cost_is_estimate: that of the latest charge.
CREATE TABLE charges_15m (
    bucket INTEGER NOT NULL, run_id TEXT NOT NULL, instance TEXT NOT NULL,
    budget_key TEXT NOT NULL, model TEXT NOT NULL, input INTEGER NOT NULL,
    output INTEGER NOT NULL, cache_creation INTEGER NOT NULL, cache_read INTEGER NOT NULL,
    cost_usd REAL NOT NULL, cost_is_estimate INTEGER NOT NULL, last_seq INTEGER NOT NULL,
    PRIMARY KEY (bucket, run_id, instance, budget_key, model)
);
CREATE TRIGGER charges_roll_up AFTER INSERT ON charges BEGIN
    INSERT INTO charges_15m VALUES (
        CAST(NEW.ts / 900 AS INTEGER) * 900, NEW.run_id, NEW.instance, NEW.budget_key,
        IFNULL(NEW.model, ''), NEW.input, NEW.output, NEW.cache_creation, NEW.cache_read,
        NEW.cost_usd, NEW.cost_is_estimate, NEW.seq
    ) ON CONFLICT DO UPDATE SET
        input = input + excluded.input, output = output + excluded.output,
        cache_creation = cache_creation + excluded.cache_creation,
        cache_read = cache_read + excluded.cache_read, cost_usd = cost_usd + excluded.cost_usd,
        cost_is_estimate = CASE WHEN excluded.last_seq > last_seq
            THEN excluded.cost_is_estimate ELSE cost_is_estimate END,
        last_seq = MAX(last_seq, excluded.last_seq);
END
"""
ROLLUP_S = 900
_GROUP = "GROUP BY run_id, instance, budget_key, model"
# An instance's cost is an estimate when its latest charge says so (a result line with the
# CLI's own cost corrects the estimates before it): SQLite takes the bare column
# cost_is_estimate from the row of MAX(seq).
_FROM_CHARGES = (
    "SELECT run_id, instance, budget_key, IFNULL(model, ''), SUM(input), SUM(output),"
    " SUM(cache_creation), SUM(cache_read), SUM(cost_usd), cost_is_estimate, MAX(seq)"
    f" FROM charges WHERE ts >= ? AND ts < ? {_GROUP}"
)
_FROM_ROLLUP = (
    "SELECT run_id, instance, budget_key, model, SUM(input), SUM(output),"
    " SUM(cache_creation), SUM(cache_read), SUM(cost_usd), cost_is_estimate, MAX(last_seq)"
    f" FROM charges_15m WHERE bucket >= ? AND bucket < ? {_GROUP}"
)
_TOKENS = "input + output + cache_creation + cache_read"


def _is_busy(exc: sqlite3.Error) -> bool:
    text = str(exc)
    return "locked" in text or "busy" in text


class SqliteLedger:
    def __init__(self, path: Path, display: str | None = None) -> None:
        self.path = path
        self.url = display or str(path)
        # window_spend's last answers: (run, key, unit, own) -> (window start, sum, up to rowid)
        self._sums: dict[tuple[str, str | None, Unit, bool], tuple[float, float, int]] = {}
        if path.parent.exists() and not path.parent.is_dir():
            raise LedgerError(f"cannot create ledger {path}: {path.parent} is not a folder")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise LedgerError(
                f"cannot create folder {path.parent}: {exc.strerror or exc}"
            ) from None
        if path.is_dir():
            raise LedgerError(f"ledger {path} is a directory, not a file")
        try:
            self._db = sqlite3.connect(
                path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise LedgerError(self._reason(exc)) from None
        try:
            self._setup_waiting()
        except sqlite3.Error as exc:
            self._db.close()
            raise LedgerError(self._reason(exc)) from None
        except LedgerError:
            self._db.close()
            raise

    def _setup_waiting(self) -> None:
        """``_setup``, waiting up to the busy timeout for another process's lock: switching a
        new file to WAL fails at once, busy handler or not, while another orchestrator
        creates the same ledger (two runs started together)."""
        deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
        while True:
            try:
                return self._setup()
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc) or time.monotonic() > deadline:
                    raise
            time.sleep(0.02)

    def _setup(self) -> None:
        db = self._db
        db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise LedgerError(
                f"ledger {self.url} was written by a newer orchestrator (schema {version}; "
                f"this one reads up to {SCHEMA_VERSION}): upgrade, or use another --ledger"
            )
        if db.execute("PRAGMA journal_mode = WAL").fetchone()[0].lower() != "wal":
            raise LedgerError(f"ledger {self.url}: cannot switch to WAL journal mode")
        db.execute("PRAGMA synchronous = NORMAL")  # durable across a crash of the process
        if version < SCHEMA_VERSION:
            with self._transaction():
                # Read again under the write lock: another process may have just migrated.
                if db.execute("PRAGMA user_version").fetchone()[0] == 0:
                    for statement in _statements(_SCHEMA):  # executescript would commit
                        db.execute(statement)
                    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)

    def _reason(self, exc: sqlite3.Error) -> str:
        text = str(exc)
        if "not a database" in text or "malformed" in text:
            return f"ledger {self.url} is corrupt or not a SQLite database ({text})"
        if "locked" in text or "busy" in text:
            return f"ledger {self.url} is locked by another process ({text})"
        if "readonly" in text or "read-only" in text:
            return f"ledger {self.url} is read-only ({text})"
        if "full" in text or self._disk_is_full(exc):
            return f"ledger {self.url}: the disk is full ({text})"
        if "unable to open" in text:
            return f"cannot open ledger {self.url} ({text})"
        return f"ledger {self.url}: {text}"

    def _disk_is_full(self, exc: sqlite3.Error) -> bool:
        """An I/O error on a full disk: SQLite says "disk I/O error" when it cannot grow the
        WAL index (-shm) of an existing ledger, "disk is full" only for the database itself."""
        if not getattr(exc, "sqlite_errorname", "").startswith("SQLITE_IOERR"):
            return False
        try:
            return os.statvfs(self.path.parent).f_bavail == 0
        except OSError:
            return False

    # -- writing ---------------------------------------------------------------------------

    def open_run(self, run: RunRecord) -> None:
        self._guarded(
            lambda: self._db.execute(
                "INSERT OR IGNORE INTO runs (id, started, heartbeat, host, user, cwd, argv, mode,"
                " labels, resumed_from) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    run.id,
                    run.started,
                    run.started,
                    run.host,
                    run.user,
                    run.cwd,
                    json.dumps(list(run.argv)),
                    run.mode,
                    json.dumps(dict(run.labels), sort_keys=True),
                    run.resumed_from,
                ),
            )
        )

    def write(
        self,
        charges: Sequence[Charge],
        instances: Sequence[InstanceRecord],
        heartbeat: tuple[str, float] | None = None,
    ) -> None:
        def run() -> None:
            with self._transaction():
                self._db.executemany(
                    "INSERT OR IGNORE INTO charges VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [
                        (
                            c.run_id,
                            c.instance,
                            c.seq,
                            c.at,
                            c.budget_key,
                            c.model,
                            c.usage.input,
                            c.usage.output,
                            c.usage.cache_creation,
                            c.usage.cache_read,
                            c.cost_usd,
                            int(c.cost_is_estimate),
                        )
                        for c in charges
                    ],
                )
                self._db.executemany(
                    "INSERT OR REPLACE INTO instances VALUES"
                    " (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [
                        (
                            i.run_id,
                            i.name,
                            i.command,
                            i.budget_key,
                            i.session_id,
                            i.status,
                            i.usage.input,
                            i.usage.output,
                            i.usage.cache_creation,
                            i.usage.cache_read,
                            i.cost_usd,
                            int(i.final),
                            int(i.cost_is_estimate),
                            i.started,
                            i.ended,
                            i.error,
                        )
                        for i in instances
                    ],
                )
                if heartbeat is not None:
                    self._db.execute("UPDATE runs SET heartbeat = ? WHERE id = ?", heartbeat[::-1])

        self._guarded(run)

    def close_run(self, run_id: str, ended: float, exit_code: int) -> None:
        self._guarded(
            lambda: self._db.execute(
                "UPDATE runs SET ended = ?, heartbeat = ?, exit_code = ? WHERE id = ?",
                (ended, ended, exit_code, run_id),
            )
        )

    # -- reading ---------------------------------------------------------------------------

    def window_spend(self, run_id: str, queries: Sequence[WindowQuery]) -> list[WindowSpend]:
        """Polled every 250 ms for the whole run: after the first answer, each sum is moved
        on by the charges written since (by rowid: rowids only grow, there are no deletes)
        and by those the window's start has passed, so a poll reads only what changed, not
        every charge of the window (a day of a busy machine is 100,000s of them)."""

        def run() -> list[WindowSpend]:
            self._db.execute("BEGIN")  # one snapshot for every sum
            try:
                (top,) = self._db.execute("SELECT IFNULL(MAX(rowid), 0) FROM charges").fetchone()
                out = []
                for q in queries:
                    others = self._moved_sum(run_id, q, top, own=False)
                    own = self._moved_sum(run_id, q, top, own=True)
                    if q.unit is Unit.TOKENS:
                        others, own = int(others), int(own)
                    out.append(WindowSpend(others, own))
                return out
            finally:
                if self._db.in_transaction:
                    self._db.execute("COMMIT")

        return self._guarded(run)

    def _moved_sum(self, run_id: str, q: WindowQuery, top: int, own: bool) -> float:
        """Others' spend since ``q.start`` (``own``: this run's before it), up to rowid
        ``top``; from the last answer to the same question when there is one."""
        amount = _TOKENS if q.unit is Unit.TOKENS else "cost_usd"
        who = "run_id = ?" if own else "run_id != ?"
        where, args = (" AND budget_key = ?", [q.key]) if q.key is not None else ("", [])
        side = "ts < ?" if own else "ts >= ?"

        def total(condition: str, *values: object, by_rowid: bool = False) -> float:
            rest = f"{who}{where}"
            if by_rowid:  # "+column": no index on it, so the rowid range is what is read
                rest = rest.replace("run_id", "+run_id").replace("budget_key", "+budget_key")
            (found,) = self._db.execute(
                f"SELECT TOTAL({amount}) FROM charges WHERE {condition} AND {rest}",
                [*values, run_id, *args],
            ).fetchone()
            return float(found)

        slot = (run_id, q.key, q.unit, own)
        known = self._sums.get(slot)
        if known is None or q.start < known[0]:  # first asked (or the clock went back)
            # Along an index: others' by key and time (or time); own by run.
            value = total(f"{side} AND rowid <= ?", q.start, top)
        else:
            start, value, upto = known
            if q.start > start:  # the window moved on: charges in [start, q.start) change side
                passed = total("ts >= ? AND ts < ? AND rowid <= ?", start, q.start, upto)
                value += passed if own else -passed
            value += total(
                f"rowid > ? AND rowid <= ? AND +{side}", upto, top, q.start, by_rowid=True
            )
        self._sums[slot] = (q.start, value, top)
        return value

    def usage(self, since: float, until: float, by: str, now: float) -> list[UsageRow]:
        return self._guarded(lambda: self._usage(since, until, by, now))

    def _usage(self, since: float, until: float, by: str, now: float) -> list[UsageRow]:
        parts: list[tuple[str, tuple[object, ...]]] = []  # (group, one summed row)
        if by in ("day", "week", "month"):
            # Buckets only where there are charges: --since 100000d must not mean 100,000
            # queries (nor a date before year 1).
            first, last = self._db.execute(
                "SELECT MIN(ts), MAX(ts) FROM charges WHERE ts >= ? AND ts < ?", (since, until)
            ).fetchone()
            spans = calendar_buckets(by, first, last + 1e-6) if first is not None else []
            for start, end in spans:
                label = _bucket_label(by, start)
                rows = self._range(max(start, since), min(end, until))
                parts += [(label, row) for row in rows]
        else:
            rows = self._range(since, until)
            labels: dict[str, dict[str, str]] = {}
            if by.startswith("label:"):
                ids = {row[0] for row in rows}
                labels = {
                    rid: json.loads(text)
                    for rid, text in self._db.execute("SELECT id, labels FROM runs")
                    if rid in ids
                }
            for row in rows:
                parts.append((_group_of(by, row, labels), row))
        statuses = self._run_statuses(now) if by == "run" else {}
        return _aggregate(parts, statuses)

    def _range(self, since: float, until: float) -> list[tuple[object, ...]]:
        """Sums per (run, instance, key, model) of the charges in [since, until): whole
        quarter hours from the rollup, the ragged ends from the charges themselves."""
        inner_start = math.ceil(since / ROLLUP_S) * ROLLUP_S
        inner_end = math.floor(until / ROLLUP_S) * ROLLUP_S
        if inner_start >= inner_end:
            return self._db.execute(_FROM_CHARGES, (since, until)).fetchall()
        pieces = [
            self._db.execute(_FROM_CHARGES, (since, inner_start)).fetchall(),
            self._db.execute(_FROM_ROLLUP, (inner_start, inner_end)).fetchall(),
            self._db.execute(_FROM_CHARGES, (inner_end, until)).fetchall(),
        ]
        merged: dict[tuple[object, ...], list[object]] = {}
        for rows in pieces:
            for row in rows:
                found = merged.get(row[:4])
                if found is None:
                    merged[row[:4]] = list(row)
                    continue
                for i in range(4, 9):
                    found[i] = found[i] + row[i]
                if row[10] > found[10]:
                    found[9], found[10] = row[9], row[10]
        return [tuple(row) for row in merged.values()]

    def _run_statuses(self, now: float) -> dict[str, str]:
        statuses = {}
        for rid, ended, heartbeat in self._db.execute("SELECT id, ended, heartbeat FROM runs"):
            if ended is not None:
                statuses[rid] = "ended"
            elif heartbeat is None or now - heartbeat > CRASHED_AFTER_S:
                statuses[rid] = "crashed"
            else:
                statuses[rid] = "running"
        return statuses

    def run_status(self, run_id: str, now: float) -> str | None:
        return self._guarded(lambda: self._run_statuses(now).get(run_id))

    def find_run(self, run_id: str | None) -> RunRecord | None:
        values: tuple[str, ...] = ()
        if run_id is None:
            query = f"SELECT {RUN_COLUMNS} FROM runs ORDER BY started DESC LIMIT 1"
        else:
            query, values = f"SELECT {RUN_COLUMNS} FROM runs WHERE id = ?", (run_id,)
        row = self._guarded(lambda: self._db.execute(query, values).fetchone())
        return None if row is None else run_from_row(row)

    def run_instances(self, run_id: str) -> list[InstanceRecord]:
        rows = self._guarded(
            lambda: self._db.execute(
                f"SELECT {INSTANCE_COLUMNS} FROM instances WHERE run_id = ? ORDER BY rowid",
                (run_id,),
            ).fetchall()
        )
        return [instance_from_row(r) for r in rows]

    def resumes_of(self, run_id: str) -> list[str]:
        rows = self._guarded(
            lambda: self._db.execute(
                "SELECT id FROM runs WHERE resumed_from = ? ORDER BY started, id", (run_id,)
            ).fetchall()
        )
        return [r[0] for r in rows]

    def run_spend(self, run_ids: Sequence[str]) -> dict[str, tuple[TokenUsage, float]]:
        marks = ", ".join("?" for _ in run_ids)
        rows = self._guarded(
            lambda: self._db.execute(
                "SELECT budget_key, SUM(input), SUM(output), SUM(cache_creation),"
                f" SUM(cache_read), SUM(cost_usd) FROM charges WHERE run_id IN ({marks})"
                " GROUP BY budget_key",
                tuple(run_ids),
            ).fetchall()
        )
        return {r[0]: (TokenUsage(r[1], r[2], r[3], r[4]), r[5]) for r in rows}

    def close(self) -> None:
        self._db.close()

    def _guarded(self, call: Callable[[], T]) -> T:
        try:
            return call()
        except sqlite3.Error as exc:
            raise LedgerError(self._reason(exc)) from None


# What resume reads back, in one column order for both ledgers ("user" quoted: PostgreSQL).
RUN_COLUMNS = 'id, started, host, "user", cwd, argv, mode, labels, resumed_from'
INSTANCE_COLUMNS = (
    "run_id, name, command, budget_key, status, input, output, cache_creation, cache_read,"
    " cost_usd, final, cost_is_estimate, started, ended, error, session_id"
)


def run_from_row(row: Sequence[Any]) -> RunRecord:
    rid, started, host, user, cwd, argv, mode, labels, resumed_from = row
    return RunRecord(
        id=rid,
        started=started,
        host=host or "",
        user=user or "",
        cwd=cwd or "",
        argv=tuple(json.loads(argv or "[]")),
        mode=mode or "warn",
        labels=json.loads(labels or "{}"),
        resumed_from=resumed_from,
    )


def instance_from_row(r: Sequence[Any]) -> InstanceRecord:
    return InstanceRecord(
        run_id=r[0],
        name=r[1],
        command=r[2] or "",
        budget_key=r[3] or "",
        status=r[4] or "",
        usage=TokenUsage(r[5] or 0, r[6] or 0, r[7] or 0, r[8] or 0),
        cost_usd=r[9] or 0.0,
        final=bool(r[10]),
        cost_is_estimate=bool(r[11]),
        started=r[12],
        ended=r[13],
        error=r[14],
        session_id=r[15],
    )


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT (ROLLBACK on error): one writer at a time, no upgrade
    deadlock between two processes."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind: object, exc: object, tb: object) -> None:
        if kind is None:
            self._db.execute("COMMIT")
        elif self._db.in_transaction:
            self._db.execute("ROLLBACK")


def _statements(script: str) -> list[str]:
    """The schema's statements; a trigger's body keeps its own semicolons."""
    out: list[str] = []
    for part in script.split(";"):
        if out and "CREATE TRIGGER" in out[-1] and not out[-1].rstrip().endswith("END"):
            out[-1] += ";" + part
        else:
            out.append(part)
    return [
        s
        for s in out
        if s.strip()
        and not all(line.strip().startswith("--") or not line.strip() for line in s.splitlines())
    ]


def _bucket_label(by: str, start: float) -> str:
    from datetime import datetime

    t = datetime.fromtimestamp(start)
    if by == "month":
        return t.strftime("%Y-%m")
    if by == "week":
        year, week, _ = t.isocalendar()
        return f"{year}-W{week:02}"
    return t.strftime("%Y-%m-%d")


def _group_of(by: str, row: tuple[object, ...], labels: dict[str, dict[str, str]]) -> str:
    run_id, instance, key, model = (str(v) if v is not None else "" for v in row[:4])
    if by == "command":
        return key
    if by == "model":
        return model or "(unknown)"
    if by == "run":
        return run_id
    if by == "instance":
        return f"{run_id}/{instance}"
    if by.startswith("label:"):
        return labels.get(run_id, {}).get(by.removeprefix("label:"), "(none)")
    raise ValueError(f"cannot group by {by!r}")


def _aggregate(
    parts: list[tuple[str, tuple[object, ...]]], statuses: dict[str, str]
) -> list[UsageRow]:
    tokens: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    costs: dict[str, list[float]] = defaultdict(list)
    estimate: dict[str, bool] = defaultdict(bool)
    runs: dict[str, set[object]] = defaultdict(set)
    instances: dict[str, set[tuple[object, object]]] = defaultdict(set)
    for group, row in parts:
        run_id, instance = row[0], row[1]
        sums = tokens[group]
        for i in range(4):
            sums[i] += int(row[4 + i])  # type: ignore[call-overload]
        costs[group].append(float(row[8]))  # type: ignore[arg-type]
        estimate[group] |= bool(row[9])
        runs[group].add(run_id)
        instances[group].add((run_id, instance))
    return [
        UsageRow(
            group=group,
            usage=TokenUsage(*sums),
            cost_usd=math.fsum(costs[group]),
            cost_is_estimate=estimate[group],
            runs=len(runs[group]),
            instances=len(instances[group]),
            status=statuses.get(group),
        )
        for group, sums in tokens.items()
    ]
