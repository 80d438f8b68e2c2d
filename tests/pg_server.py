"""The real PostgreSQL server the fleet-ledger tests run against, and a TCP proxy to cut.

``pg_schema`` gives each test a schema of its own (created, then dropped with everything in
it) and the ledger URL that selects it (``?schema=NAME``). Without a reachable server the
tests skip, saying why; with ``ORCHESTRATOR_PG_REQUIRED=1`` (CI's ``.ci/run``) they fail.
Server: ``ORCHESTRATOR_TEST_PG`` (default ``postgresql://127.0.0.1:5432/test``, trust auth).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import psycopg
import pytest

SERVER = os.environ.get("ORCHESTRATOR_TEST_PG", "postgresql://127.0.0.1:5432/test")
HOST, PORT = "127.0.0.1", 5432


def server_problem() -> str | None:
    try:
        with psycopg.connect(SERVER, connect_timeout=3):
            return None
    except psycopg.Error as exc:
        return str(exc).strip().splitlines()[0]


def require_server() -> None:
    problem = server_problem()
    if problem is None:
        return
    if os.environ.get("ORCHESTRATOR_PG_REQUIRED") == "1":
        pytest.fail(f"PostgreSQL at {SERVER} unreachable (and required): {problem}")
    pytest.skip(f"PostgreSQL at {SERVER} unreachable: {problem}")


@dataclass(frozen=True)
class PgSchema:
    name: str
    url: str  # the ledger URL selecting it

    def connect(self) -> psycopg.Connection[tuple[object, ...]]:
        conn = psycopg.connect(SERVER, autocommit=True)
        conn.execute(f"SET search_path TO {self.name}")
        return conn

    def url_via(self, host: str, port: int, user: str = "", password: str = "") -> str:
        who = f"{user}:{password}@" if password else (f"{user}@" if user else "")
        db = SERVER.rsplit("/", 1)[1]
        return f"postgresql://{who}{host}:{port}/{db}?schema={self.name}"


@pytest.fixture
def pg_schema() -> Iterator[PgSchema]:
    require_server()
    name = f"t_{secrets.token_hex(6)}"
    with psycopg.connect(SERVER, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {name}")
    try:
        yield PgSchema(name, f"{SERVER}?schema={name}")
    finally:
        with psycopg.connect(SERVER, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {name} CASCADE")


class TcpProxy:
    """127.0.0.1:<port> -> the server. ``cut()`` closes every connection and refuses new
    ones (the port stays reserved: nothing else can take it); ``restore()`` forwards again."""

    def __init__(self, target: tuple[str, int] = (HOST, PORT)) -> None:
        self.target = target
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(128)
        self._listener.settimeout(0.05)
        self.port: int = self._listener.getsockname()[1]
        self._up = threading.Event()
        self._up.set()
        self._closed = threading.Event()
        self._flowing = threading.Event()  # cleared: a link that answers nothing, open
        self._flowing.set()
        self._lock = threading.Lock()
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self.cut_at: float | None = None
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if not self._up.is_set():
                _abort(client)  # refused while cut
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=3)
            except OSError:
                _abort(client)
                continue
            with self._lock:
                self._pairs.append((client, upstream))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                self._flowing.wait()
                dst.sendall(data)
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        self._up.clear()
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for client, upstream in pairs:
            _abort(client)
            _abort(upstream)

    def freeze(self) -> None:
        """Connections stay open, nothing passes: a server or link that hangs."""
        self._flowing.clear()

    def restore(self) -> None:
        self._up.set()
        self._flowing.set()

    def close(self) -> None:
        self._flowing.set()
        self._closed.set()
        self.cut()
        self._listener.close()
        self._thread.join(timeout=2)


def _abort(sock: socket.socket) -> None:
    """Close with a reset, as a dropped link looks to the peer (shut down first: a thread
    blocked reading it would otherwise keep it open)."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()
