"""The fleet ledger: one PostgreSQL database shared by many machines (psycopg 3).

Same records as the SQLite ledger. What differs:

- Each batch of charges is written in one transaction that also adds them to per-minute
  counters (``spend_1m`` for everyone, ``run_spend_1m`` per run) and reads the windows' new
  totals back (``write_and_sum``): the decision rests on the value the database returned.
  Counter rows are updated in one order (key, minute), so two writers never deadlock.
- A charge really inserted (``ON CONFLICT DO NOTHING`` on (run, instance, seq)) is the only
  one counted in the counters: a replay after an outage counts nothing twice.
- A commit that charged something sends ``NOTIFY orchestrator_spend``; other orchestrators
  ``LISTEN`` and read their windows again at once (``listen``).
- Schema: ``?schema=NAME`` in the URL (taken out before libpq sees it) selects the schema,
  ``public`` by default. Versioned in ``ledger_meta``; migrated forward on open under an
  advisory lock, refused when newer.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import re
import socket
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg import sql

from budget_core import TokenUsage, Unit
from budget_core.windows import calendar_buckets
from orchestrator.ledger.base import (
    CRASHED_AFTER_S,
    Charge,
    InstanceRecord,
    LedgerError,
    LedgerUnreachable,
    RunRecord,
    UsageRow,
    WindowQuery,
    WindowSpend,
)
from orchestrator.ledger.sqlite import (
    INSTANCE_COLUMNS,
    RUN_COLUMNS,
    _aggregate,
    _bucket_label,
    _group_of,
    instance_from_row,
    run_from_row,
)
from orchestrator.ledger.urls import redact_url

T = TypeVar("T")
# psycopg logs what it ignores while dropping a lost connection ("error ignored terminating
# <Pipeline [BAD]>"); the run reports the outage itself, once, in its own words.
logging.getLogger("psycopg").addHandler(logging.NullHandler())
logging.getLogger("psycopg").propagate = False
CHANNEL = "orchestrator_spend"
SCHEMA_VERSION = 2
MINUTE = 60
CONNECT_TIMEOUT_S = 3
# A call that has not returned by then is abandoned (its socket shut down): a server or a
# link that stops answering without closing must not hang the run's writer, nor its end.
CALL_TIMEOUT_S = 5.0
LONG_CALL_S = 600.0  # a migration (it fills the counters from every charge), a report
# Detect a dead peer in seconds, not the kernel's default of minutes (a cut network).
_CONNECT_DEFAULTS = {
    "connect_timeout": str(CONNECT_TIMEOUT_S),
    "keepalives": "1",
    "keepalives_idle": "5",
    "keepalives_interval": "1",
    "keepalives_count": "3",
    "tcp_user_timeout": "5000",
    "application_name": "claude-budget-orchestrator",
}
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")

# Each step takes the schema from the version before it to its own number.
MIGRATIONS: tuple[tuple[int, str], ...] = (
    (
        1,
        """
CREATE TABLE runs (
    id TEXT PRIMARY KEY, started DOUBLE PRECISION NOT NULL, ended DOUBLE PRECISION,
    heartbeat DOUBLE PRECISION, exit_code INTEGER, host TEXT, "user" TEXT, cwd TEXT,
    argv TEXT, mode TEXT, labels TEXT NOT NULL DEFAULT '{}', resumed_from TEXT
);
CREATE TABLE instances (
    run_id TEXT NOT NULL, name TEXT NOT NULL, command TEXT, budget_key TEXT, session_id TEXT,
    status TEXT, input BIGINT, output BIGINT, cache_creation BIGINT, cache_read BIGINT,
    cost_usd DOUBLE PRECISION, final BOOLEAN, cost_is_estimate BOOLEAN,
    started DOUBLE PRECISION, ended DOUBLE PRECISION, error TEXT, PRIMARY KEY (run_id, name)
);
CREATE TABLE charges (
    run_id TEXT NOT NULL, instance TEXT NOT NULL, seq INTEGER NOT NULL,
    ts DOUBLE PRECISION NOT NULL, budget_key TEXT NOT NULL, model TEXT,
    input BIGINT NOT NULL, output BIGINT NOT NULL, cache_creation BIGINT NOT NULL,
    cache_read BIGINT NOT NULL, cost_usd DOUBLE PRECISION NOT NULL,
    cost_is_estimate BOOLEAN NOT NULL, PRIMARY KEY (run_id, instance, seq)
);
CREATE INDEX charges_by_time ON charges (ts);
CREATE INDEX charges_by_key ON charges (budget_key, ts);
""",
    ),
    (
        2,
        # Per-minute counters: a window's total reads one row a minute, not every charge.
        # Filled from the charges already there, so a ledger of version 1 keeps its spend.
        """
CREATE TABLE spend_1m (
    budget_key TEXT NOT NULL, minute BIGINT NOT NULL, tokens BIGINT NOT NULL,
    cost_usd DOUBLE PRECISION NOT NULL, PRIMARY KEY (budget_key, minute)
);
CREATE INDEX spend_1m_by_minute ON spend_1m (minute) INCLUDE (tokens, cost_usd);
CREATE TABLE run_spend_1m (
    run_id TEXT NOT NULL, budget_key TEXT NOT NULL, minute BIGINT NOT NULL,
    tokens BIGINT NOT NULL, cost_usd DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (run_id, budget_key, minute)
);
CREATE INDEX charges_by_run ON charges (run_id, ts);
-- Who this ledger is, whatever URL reaches it: a run's journal is written only to its own.
INSERT INTO ledger_meta VALUES ('ledger_id', md5(random()::text || clock_timestamp()::text));
INSERT INTO spend_1m
    SELECT budget_key, floor(ts / 60)::bigint,
        SUM(input + output + cache_creation + cache_read), SUM(cost_usd)
    FROM charges GROUP BY 1, 2;
INSERT INTO run_spend_1m
    SELECT run_id, budget_key, floor(ts / 60)::bigint,
        SUM(input + output + cache_creation + cache_read), SUM(cost_usd)
    FROM charges GROUP BY 1, 2, 3;
""",
    ),
)
_TOKENS = "input + output + cache_creation + cache_read"


def split_url(url: str) -> tuple[str, str]:
    """(the URL libpq reads, the schema): ``schema`` is ours, libpq would refuse it."""
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # "Invalid IPv6 URL": say which URL, without its password
        raise LedgerError(f"ledger URL {redact_url(url)!r}: {exc}") from None
    query = parse_qsl(parts.query, keep_blank_values=True)
    schemas = [value for key, value in query if key == "schema"]
    if len(schemas) > 1:
        raise LedgerError("ledger URL: 'schema' is given more than once")
    schema = schemas[0] if schemas else "public"
    if not _IDENT.match(schema):
        raise LedgerError(
            f"ledger URL: schema {schema!r} must be a plain name (letters, digits, _; "
            "up to 63, not starting with a digit)"
        )
    rest = urlencode([(k, v) for k, v in query if k != "schema"])
    return urlunsplit(parts._replace(query=rest)), schema


def _raw_password(url: str) -> str:
    """The password as written in ``url`` (percent escapes kept); "" when none is found."""
    try:
        return urlsplit(url).password or ""
    except ValueError:
        return ""


class PostgresLedger:
    """One connection (autocommit; explicit transactions). Reconnects on the next call after
    a connection is lost; while it cannot, calls raise ``LedgerUnreachable``."""

    fleet = True  # shared by machines: journal locally in an outage; notifies

    def __init__(self, url: str, display: str) -> None:
        self.url = display
        self._secret_url = url
        self._libpq_url, self.schema = split_url(url)
        self._raw_password = _raw_password(url)  # a parse error quotes it as written
        self._password = ""
        try:
            self._params = psycopg.conninfo.conninfo_to_dict(self._libpq_url)
        except psycopg.Error as exc:
            raise LedgerError(f"ledger URL {self.url!r}: {self._clean(exc)}") from None
        self._password = str(self._params.get("password") or "")
        for key, value in _CONNECT_DEFAULTS.items():
            self._params.setdefault(key, value)
        self._conninfo = psycopg.conninfo.make_conninfo("", **self._params)
        self._conn: psycopg.Connection[Any] | None = None
        self.outages = 0  # connections lost so far (the listener reconnects on a change)
        self._watchdog = _Watchdog()
        self._connect()
        self._migrate()

    # -- connection ------------------------------------------------------------------------

    def _connect(self) -> psycopg.Connection[Any]:
        if self._conn is not None and not self._conn.closed:
            return self._conn
        self._conn = None
        try:
            conn = psycopg.connect(self._conninfo, autocommit=True)
        except psycopg.Error as exc:
            raise LedgerUnreachable(
                f"cannot connect to ledger {self.url}: {self._clean(exc)}"
            ) from None
        try:
            found = conn.execute(
                "SELECT 1 FROM pg_namespace WHERE nspname = %s", (self.schema,)
            ).fetchone()
            if found is None:
                conn.close()
                raise LedgerError(
                    f"ledger {self.url}: schema {self.schema!r} does not exist "
                    f"(create it: CREATE SCHEMA {self.schema})"
                )
            conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(self.schema)))
        except psycopg.Error as exc:
            conn.close()
            raise self._error(exc) from None
        self._conn = conn
        return conn

    def connection(self) -> psycopg.Connection[Any]:
        return self._connect()

    def _clean(self, exc: BaseException | str) -> str:
        """An error's text on one line, with no password and no whole URL in it: libpq puts
        the connection string in some messages (``invalid dsn: ... in "postgresql://..."``)."""
        text = str(exc).strip()
        for secret in (self._secret_url, self._libpq_url):
            if secret:
                text = text.replace(secret, self.url)
        for password in (self._password, self._raw_password):
            if password:
                text = text.replace(password, "***")
        return "; ".join(line.strip() for line in text.splitlines() if line.strip())

    def _error(self, exc: psycopg.Error) -> LedgerError:
        if isinstance(exc, psycopg.OperationalError) or (
            self._conn is not None and self._conn.closed
        ):
            if self._conn is not None:
                self._conn.close()
                self._conn = None
            self.outages += 1
            return LedgerUnreachable(f"ledger {self.url} unreachable: {self._clean(exc)}")
        return LedgerError(f"ledger {self.url}: {self._clean(exc)}")

    def _guarded(
        self, call: Callable[[psycopg.Connection[Any]], T], timeout: float | None = None
    ) -> T:
        conn = self._connect()
        timeout = timeout or CALL_TIMEOUT_S
        self._watchdog.arm(conn, timeout)
        try:
            return call(conn)
        except psycopg.Error as exc:
            if self._watchdog.fired:
                conn.close()
                self._conn = None
                self.outages += 1
                raise LedgerUnreachable(
                    f"ledger {self.url} unreachable: no answer in {timeout:g}s"
                ) from None
            raise self._error(exc) from None
        finally:
            self._watchdog.disarm()

    def _migrate(self) -> None:
        def run(conn: psycopg.Connection[Any]) -> None:
            with conn.transaction():
                # One migrator per schema at a time; the others wait, then find it done.
                conn.execute(
                    "SELECT pg_advisory_xact_lock(hashtext(%s))",
                    (f"claude-budget-orchestrator:{self.schema}",),
                )
                version = self._version(conn)
                if version > SCHEMA_VERSION:
                    raise LedgerError(
                        f"ledger {self.url} was written by a newer orchestrator (schema "
                        f"{version}; this one reads up to {SCHEMA_VERSION}): upgrade, or use "
                        "another --ledger"
                    )
                if version == SCHEMA_VERSION:
                    return
                if version == 0:
                    conn.execute("CREATE TABLE ledger_meta (key TEXT PRIMARY KEY, value TEXT)")
                for number, script in MIGRATIONS:
                    if number > version:
                        conn.execute(script)
                conn.execute(
                    "INSERT INTO ledger_meta VALUES ('schema_version', %s)"
                    " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    (str(SCHEMA_VERSION),),
                )

        self._guarded(run, timeout=LONG_CALL_S)
        found = self._guarded(
            lambda conn: conn.execute(
                "SELECT value FROM ledger_meta WHERE key = 'ledger_id'"
            ).fetchone()
        )
        self.ledger_id = f"postgresql:{found[0] if found else self.url}"

    def _version(self, conn: psycopg.Connection[Any]) -> int:
        (meta,) = conn.execute("SELECT to_regclass('ledger_meta')").fetchone() or (None,)
        if meta is None:
            return 0
        row = conn.execute("SELECT value FROM ledger_meta WHERE key = 'schema_version'").fetchone()
        return int(row[0]) if row else 0

    def schema_version(self) -> int:
        return self._guarded(self._version)

    # -- writing ---------------------------------------------------------------------------

    def open_run(self, run: RunRecord) -> None:
        self._guarded(
            lambda conn: conn.execute(
                'INSERT INTO runs (id, started, heartbeat, host, "user", cwd, argv, mode,'
                " labels, resumed_from) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (id) DO NOTHING",
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
        self.write_and_sum(charges, instances, heartbeat, None, ())

    def write_and_sum(
        self,
        charges: Sequence[Charge],
        instances: Sequence[InstanceRecord],
        heartbeat: tuple[str, float] | None,
        run_id: str | None,
        queries: Sequence[WindowQuery],
    ) -> list[WindowSpend]:
        """Write in one transaction and return each window's spend as of that commit.
        Pipelined: the statements go out together, one wait for all their answers."""

        def run(conn: psycopg.Connection[Any]) -> list[WindowSpend]:
            with conn.pipeline(), conn.transaction():
                self._insert_charges(conn, charges)
                self._upsert_instances(conn, instances)
                if heartbeat is not None:
                    conn.execute(
                        "UPDATE runs SET heartbeat = %s WHERE id = %s", (heartbeat[1], heartbeat[0])
                    )
                if run_id is None or not queries:
                    return []
                return self._sums(conn, run_id, queries)

        return self._guarded(run)

    def _insert_charges(self, conn: psycopg.Connection[Any], charges: Sequence[Charge]) -> None:
        """One statement: insert; add only what was really inserted to the counters (rows
        taken in one order, (key, minute), by every writer: no deadlock); notify."""
        if not charges:
            return
        columns = list(
            zip(
                *(
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
                        c.cost_is_estimate,
                    )
                    for c in charges
                ),
                strict=True,
            )
        )
        conn.execute(
            "WITH new AS (INSERT INTO charges SELECT * FROM unnest(%s::text[], %s::text[],"
            " %s::int[], %s::float8[], %s::text[], %s::text[], %s::int8[], %s::int8[],"
            " %s::int8[], %s::int8[], %s::float8[], %s::bool[]) ON CONFLICT DO NOTHING"
            f" RETURNING run_id, budget_key, floor(ts / 60)::bigint AS minute,"
            f" {_TOKENS} AS tokens, cost_usd),"
            " shared AS (INSERT INTO spend_1m SELECT budget_key, minute, SUM(tokens),"
            " SUM(cost_usd) FROM new GROUP BY 1, 2 ORDER BY 1, 2"
            " ON CONFLICT (budget_key, minute) DO UPDATE SET"
            " tokens = spend_1m.tokens + excluded.tokens,"
            " cost_usd = spend_1m.cost_usd + excluded.cost_usd),"
            " own AS (INSERT INTO run_spend_1m SELECT run_id, budget_key, minute, SUM(tokens),"
            " SUM(cost_usd) FROM new GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"
            " ON CONFLICT (run_id, budget_key, minute) DO UPDATE SET"
            " tokens = run_spend_1m.tokens + excluded.tokens,"
            " cost_usd = run_spend_1m.cost_usd + excluded.cost_usd)"
            " SELECT pg_notify(%s, json_build_object('schema', %s::text, 'run', %s::text,"
            " 'keys', (SELECT json_agg(DISTINCT budget_key) FROM new))::text)"
            " WHERE EXISTS (SELECT 1 FROM new)",
            [*(list(column) for column in columns), CHANNEL, self.schema, charges[0].run_id],
        )

    def _upsert_instances(
        self, conn: psycopg.Connection[Any], instances: Sequence[InstanceRecord]
    ) -> None:
        if not instances:
            return
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO instances VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s,"
                " %s, %s, %s, %s) ON CONFLICT (run_id, name) DO UPDATE SET"
                " command = excluded.command, budget_key = excluded.budget_key,"
                " session_id = excluded.session_id, status = excluded.status,"
                " input = excluded.input, output = excluded.output,"
                " cache_creation = excluded.cache_creation, cache_read = excluded.cache_read,"
                " cost_usd = excluded.cost_usd, final = excluded.final,"
                " cost_is_estimate = excluded.cost_is_estimate, started = excluded.started,"
                " ended = excluded.ended, error = excluded.error",
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
                        i.final,
                        i.cost_is_estimate,
                        i.started,
                        i.ended,
                        i.error,
                    )
                    for i in instances
                ],
            )

    def close_run(self, run_id: str, ended: float, exit_code: int) -> None:
        self._guarded(
            lambda conn: conn.execute(
                "UPDATE runs SET ended = %s, heartbeat = %s, exit_code = %s WHERE id = %s",
                (ended, ended, exit_code, run_id),
            )
        )

    # -- reading ---------------------------------------------------------------------------

    def window_spend(self, run_id: str, queries: Sequence[WindowQuery]) -> list[WindowSpend]:
        # One statement: one snapshot for every sum.
        return self._guarded(lambda conn: self._sums(conn, run_id, queries))

    def _sums(
        self, conn: psycopg.Connection[Any], run_id: str, queries: Sequence[WindowQuery]
    ) -> list[WindowSpend]:
        """Each window in one statement: whole minutes from the counters, the part of a
        minute a rolling window starts in from the charges themselves. Per window: (all
        runs' spend in it, this run's in it, this run's ever)."""
        parts: list[str] = []
        args: dict[str, object] = {"run": run_id}
        for n, q in enumerate(queries):
            amount = "tokens" if q.unit is Unit.TOKENS else "cost_usd"
            raw = _TOKENS if q.unit is Unit.TOKENS else "cost_usd"
            first = math.ceil(q.start / MINUTE)
            args.update({f"f{n}": first, f"k{n}": q.key, f"s{n}": q.start})
            args[f"a{n}"] = float(first * MINUTE)
            key = f" AND budget_key = %(k{n})s" if q.key is not None else ""
            mine = " AND run_id = %(run)s"
            since = f" AND minute >= %(f{n})s"
            total = _sum(amount, "spend_1m", since + key)
            own_in = _sum(amount, "run_spend_1m", mine + since + key)
            own_all = _sum(amount, "run_spend_1m", mine + key)
            if first * MINUTE > q.start:  # a rolling window, mid-minute
                edge = f" AND ts >= %(s{n})s AND ts < %(a{n})s{key}"
                total += " + " + _sum(raw, "charges", edge)
                own_in += " + " + _sum(raw, "charges", edge + mine)
            parts += [total, own_in, own_all]
        row = conn.execute(f"SELECT {', '.join(parts)}", args).fetchone()
        assert row is not None
        out = []
        for n, q in enumerate(queries):
            total, own_in, own_all = row[3 * n : 3 * n + 3]
            cast = int if q.unit is Unit.TOKENS else float
            out.append(WindowSpend(cast(total - own_in), cast(own_all - own_in)))
        return out

    def usage(self, since: float, until: float, by: str, now: float) -> list[UsageRow]:
        return self._guarded(
            lambda conn: self._usage(conn, since, until, by, now), timeout=LONG_CALL_S
        )

    def _usage(
        self, conn: psycopg.Connection[Any], since: float, until: float, by: str, now: float
    ) -> list[UsageRow]:
        parts: list[tuple[str, tuple[object, ...]]] = []
        if by in ("day", "week", "month"):
            first, last = conn.execute(
                "SELECT MIN(ts), MAX(ts) FROM charges WHERE ts >= %s AND ts < %s", (since, until)
            ).fetchone() or (None, None)
            spans = (
                calendar_buckets(by, first, last + 1e-6)
                if first is not None and last is not None
                else []
            )
            for start, end in spans:
                label = _bucket_label(by, start)
                rows = self._range(conn, max(start, since), min(end, until))
                parts += [(label, row) for row in rows]
        else:
            rows = self._range(conn, since, until)
            labels: dict[str, dict[str, str]] = {}
            if by.startswith("label:"):
                ids = sorted({str(row[0]) for row in rows})
                labels = {
                    rid: json.loads(text)
                    for rid, text in conn.execute(
                        "SELECT id, labels FROM runs WHERE id = ANY(%s)", (ids,)
                    )
                }
            for row in rows:
                parts.append((_group_of(by, row, labels), row))
        statuses = self._run_statuses(conn, now) if by == "run" else {}
        return _aggregate(parts, statuses)

    def _range(
        self, conn: psycopg.Connection[Any], since: float, until: float
    ) -> list[tuple[object, ...]]:
        # An instance's cost is an estimate when its latest charge says so.
        return conn.execute(
            "SELECT run_id, instance, budget_key, COALESCE(model, ''), SUM(input), SUM(output),"
            " SUM(cache_creation), SUM(cache_read), SUM(cost_usd),"
            " (array_agg(cost_is_estimate ORDER BY seq DESC))[1], MAX(seq)"
            " FROM charges WHERE ts >= %s AND ts < %s GROUP BY 1, 2, 3, 4",
            (since, until),
        ).fetchall()

    def _run_statuses(self, conn: psycopg.Connection[Any], now: float) -> dict[str, str]:
        statuses = {}
        for rid, ended, heartbeat in conn.execute("SELECT id, ended, heartbeat FROM runs"):
            if ended is not None:
                statuses[rid] = "ended"
            elif heartbeat is None or now - heartbeat > CRASHED_AFTER_S:
                statuses[rid] = "crashed"
            else:
                statuses[rid] = "running"
        return statuses

    def run_status(self, run_id: str, now: float) -> str | None:
        return self._guarded(lambda conn: self._run_statuses(conn, now).get(run_id))

    def find_run(self, run_id: str | None) -> RunRecord | None:
        values: tuple[str, ...] = ()
        if run_id is None:
            query = f"SELECT {RUN_COLUMNS} FROM runs ORDER BY started DESC LIMIT 1"
        else:
            query, values = f"SELECT {RUN_COLUMNS} FROM runs WHERE id = %s", (run_id,)
        row = self._guarded(lambda conn: conn.execute(query, values).fetchone())
        return None if row is None else run_from_row(row)

    def run_instances(self, run_id: str) -> list[InstanceRecord]:
        # No rowid here: launch order, then name (never-started instances last).
        rows = self._guarded(
            lambda conn: conn.execute(
                f"SELECT {INSTANCE_COLUMNS} FROM instances WHERE run_id = %s"
                " ORDER BY started NULLS LAST, name",
                (run_id,),
            ).fetchall()
        )
        return [instance_from_row(r) for r in rows]

    def resumes_of(self, run_id: str) -> list[str]:
        rows = self._guarded(
            lambda conn: conn.execute(
                "SELECT id FROM runs WHERE resumed_from = %s ORDER BY started, id", (run_id,)
            ).fetchall()
        )
        return [r[0] for r in rows]

    def run_spend(self, run_ids: Sequence[str]) -> dict[str, tuple[TokenUsage, float]]:
        rows = self._guarded(
            lambda conn: conn.execute(
                "SELECT budget_key, SUM(input), SUM(output), SUM(cache_creation),"
                " SUM(cache_read), SUM(cost_usd) FROM charges WHERE run_id = ANY(%s)"
                " GROUP BY budget_key",
                (list(run_ids),),
            ).fetchall()
        )
        return {
            r[0]: (TokenUsage(int(r[1]), int(r[2]), int(r[3]), int(r[4])), float(r[5]))
            for r in rows
        }

    # -- notifications ---------------------------------------------------------------------

    def listen(self, run_id: str, on_change: Callable[[], None]) -> Callable[[], None]:
        """Call ``on_change`` (on a thread of its own) whenever another run charges this
        schema; returns a function that stops listening. Reconnects after an outage (and
        calls ``on_change`` then: what was missed meanwhile is read again)."""
        listener = _Listener(self, run_id, on_change)
        listener.start()
        return listener.stop

    def close(self) -> None:
        self._watchdog.close()
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class _Watchdog:
    """Shuts a connection's socket down when a call on it outlives its deadline: the call
    then fails at once (psycopg cannot be interrupted from its own thread). It looks every
    ``TICK_S``: arming and disarming only set two fields, no wake-up per call."""

    TICK_S = 0.25

    def __init__(self) -> None:
        self._deadline: float | None = None
        self._conn: psycopg.Connection[Any] | None = None
        self._closed = threading.Event()
        self.fired = False
        self._thread: threading.Thread | None = None

    def arm(self, conn: psycopg.Connection[Any], seconds: float) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._watch, name="ledger-watchdog", daemon=True)
            self._thread.start()
        self.fired = False
        self._conn = conn
        self._deadline = time.monotonic() + seconds

    def disarm(self) -> None:
        self._deadline = None
        self._conn = None

    def close(self) -> None:
        self._closed.set()

    def _watch(self) -> None:
        while not self._closed.wait(self.TICK_S):
            deadline, conn = self._deadline, self._conn
            if deadline is None or conn is None or time.monotonic() < deadline:
                continue
            self._deadline = None
            self.fired = True
            with contextlib.suppress(OSError, psycopg.Error):
                fd = conn.pgconn.socket
                with socket.fromfd(fd, socket.AF_INET, socket.SOCK_STREAM) as sock:
                    sock.shutdown(socket.SHUT_RDWR)


def _sum(amount: str, table: str, where: str) -> str:
    return f"COALESCE((SELECT SUM({amount}) FROM {table} WHERE TRUE{where}), 0)"


class _Listener(threading.Thread):
    RETRY_S = 0.5
    WAKE_S = 0.2  # how soon ``stop`` is noticed

    def __init__(self, ledger: PostgresLedger, run_id: str, on_change: Callable[[], None]):
        super().__init__(name="ledger-listen", daemon=True)
        self._ledger = ledger
        self._run_id = run_id
        self._on_change = on_change
        self._stopped = threading.Event()

    def stop(self) -> None:
        self._stopped.set()
        self.join(timeout=2)

    def run(self) -> None:
        while not self._stopped.is_set():
            try:
                with psycopg.connect(self._ledger._conninfo, autocommit=True) as conn:
                    conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(CHANNEL)))
                    self._on_change()  # whatever was missed while not listening
                    outages = self._ledger.outages
                    # A link that broke without closing is noticed by the writer: then
                    # this connection is suspect too, and is made anew.
                    while not self._stopped.is_set() and self._ledger.outages == outages:
                        for note in conn.notifies(timeout=self.WAKE_S):
                            if self._concerns_us(note.payload):
                                self._on_change()
            except psycopg.Error:
                self._stopped.wait(self.RETRY_S)

    def _concerns_us(self, payload: str) -> bool:
        try:
            data = json.loads(payload)
        except ValueError:
            return False
        return bool(data.get("schema") == self._ledger.schema and data.get("run") != self._run_id)
