"""The local journal: what a run could not write to the fleet ledger, kept durably until it can.

One SQLite file per run (``<data dir>/journal/<run id>.sqlite3``), made only when an outage
begins, ``synchronous = FULL`` (each append is on disk when it returns), held with an
exclusive ``flock`` while its run lives. Once the ledger takes its charges (idempotent on
(run, instance, seq): a replay counts nothing twice) the file is deleted. A run that ended
(or died) with a journal leaves it; the next run on the same ledger writes it
(``replay_orphans``): a file nobody holds the lock of.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sqlite3
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path

from budget_core import TokenUsage
from orchestrator.ledger.base import Charge, InstanceRecord, Ledger, LedgerError

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)",
    "CREATE TABLE IF NOT EXISTS charges (run_id TEXT, instance TEXT, seq INTEGER, body TEXT,"
    " PRIMARY KEY (run_id, instance, seq))",
    "CREATE TABLE IF NOT EXISTS instances (run_id TEXT, name TEXT, body TEXT,"
    " PRIMARY KEY (run_id, name))",
)


def journal_folder(env: Mapping[str, str]) -> Path:
    data = env.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data) / "claude-budget-orchestrator" / "journal"


class Journal:
    def __init__(self, folder: Path, run_id: str, ledger_id: str) -> None:
        self.path = folder / f"{run_id}.sqlite3"
        self._ledger_id = ledger_id
        self._db: sqlite3.Connection | None = None
        self._lock_fd: int | None = None
        self.count = 0  # charges in it

    def _open(self) -> sqlite3.Connection:
        if self._db is None:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._lock_fd = os.open(self.path.with_suffix(".lock"), os.O_CREAT | os.O_RDWR)
                fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
                db.execute("PRAGMA synchronous = FULL")
                for statement in _SCHEMA:
                    db.execute(statement)
                db.execute("INSERT OR REPLACE INTO meta VALUES ('ledger', ?)", (self._ledger_id,))
            except (OSError, sqlite3.Error) as exc:
                raise LedgerError(f"cannot keep the journal {self.path}: {exc}") from None
            self._db = db
        return self._db

    def append(
        self,
        charges: list[Charge],
        instances: list[InstanceRecord],
        closed: tuple[str, float, int] | None = None,
    ) -> None:
        """On disk when this returns (or ``LedgerError``)."""
        if not charges and not instances and closed is None:
            return
        db = self._open()
        try:
            db.execute("BEGIN IMMEDIATE")
            db.executemany(
                "INSERT OR IGNORE INTO charges VALUES (?, ?, ?, ?)",
                [(c.run_id, c.instance, c.seq, _charge_json(c)) for c in charges],
            )
            db.executemany(
                "INSERT OR REPLACE INTO instances VALUES (?, ?, ?)",
                [(i.run_id, i.name, _instance_json(i)) for i in instances],
            )
            if closed is not None:
                db.execute(
                    "INSERT OR REPLACE INTO meta VALUES ('closed', ?)", (json.dumps(closed),)
                )
            db.execute("COMMIT")
            (self.count,) = db.execute("SELECT COUNT(*) FROM charges").fetchone()
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            raise LedgerError(f"cannot write the journal {self.path}: {exc}") from None

    @property
    def exists(self) -> bool:
        return self._db is not None

    def clear(self) -> None:
        """Everything in it is in the ledger now: the file goes."""
        if self._db is not None:
            self._db.close()
            self._db = None
            for suffix in ("", "-journal", "-wal", "-shm"):
                with contextlib.suppress(OSError):
                    os.unlink(f"{self.path}{suffix}")
            with contextlib.suppress(OSError):
                os.unlink(self.path.with_suffix(".lock"))
        self._release()
        self.count = 0

    def close(self) -> None:
        """Leave the file (it holds what the ledger lacks) for the next run to write."""
        if self._db is not None:
            self._db.close()
            self._db = None
        self._release()

    def _release(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


def replay_orphans(folder: Path, ledger: Ledger, ledger_id: str) -> list[tuple[str, int]]:
    """Write every journal left by a run that is gone, for this ledger, then delete it.
    Returns (run id, charges) of each written; raises ``LedgerError`` when the ledger fails."""
    written: list[tuple[str, int]] = []
    if not folder.is_dir():
        return written
    for path in sorted(folder.glob("*.sqlite3")):
        lock = path.with_suffix(".lock")
        try:
            fd = os.open(lock, os.O_CREAT | os.O_RDWR)
        except OSError:
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                continue  # its run is alive and still writing it
            if not path.exists():  # written and removed by another run meanwhile
                with contextlib.suppress(OSError):
                    os.unlink(lock)
                continue
            found = _read(path)
            if found is None or found[0] != ledger_id:
                continue
            _, charges, instances, closed = found
            ledger.write(charges, instances)
            if closed is not None:
                run_id, ended, code = closed
                ledger.close_run(run_id, ended, code)
            for suffix in ("", "-journal", "-wal", "-shm"):
                with contextlib.suppress(OSError):
                    os.unlink(f"{path}{suffix}")
            with contextlib.suppress(OSError):
                os.unlink(lock)
            written.append((path.stem, len(charges)))
        finally:
            os.close(fd)
    return written


def _read(
    path: Path,
) -> tuple[str, list[Charge], list[InstanceRecord], tuple[str, float, int] | None] | None:
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
            charges = [
                _charge(json.loads(b))
                for (b,) in db.execute("SELECT body FROM charges ORDER BY run_id, instance, seq")
            ]
            instances = [
                _instance(json.loads(b)) for (b,) in db.execute("SELECT body FROM instances")
            ]
        finally:
            db.close()
    except (sqlite3.Error, ValueError, KeyError, TypeError):
        return None
    closed = meta.get("closed")
    return meta.get("ledger", ""), charges, instances, tuple(json.loads(closed)) if closed else None


def _charge_json(c: Charge) -> str:
    data = asdict(c)
    data["usage"] = _tokens(c.usage)
    return json.dumps(data)


def _charge(data: dict[str, object]) -> Charge:
    data["usage"] = TokenUsage(*data["usage"])  # type: ignore[misc]
    return Charge(**data)  # type: ignore[arg-type]


def _instance_json(i: InstanceRecord) -> str:
    data = asdict(i)
    data["usage"] = _tokens(i.usage)
    return json.dumps(data)


def _instance(data: dict[str, object]) -> InstanceRecord:
    data["usage"] = TokenUsage(*data["usage"])  # type: ignore[misc]
    return InstanceRecord(**data)  # type: ignore[arg-type]


def _tokens(u: TokenUsage) -> list[int]:
    return [u.input, u.output, u.cache_creation, u.cache_read]
