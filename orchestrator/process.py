"""One child process: launched in its own process group, its pipes read without choking.

stdout is split into lines by ``LineAssembler`` and handed over line by line, inside the
event loop's read callback (no coroutine per line); stderr is drained concurrently and only
a bounded tail is kept, for error messages.

Spawning happens on a thread of its own (``Spawner``): setting the parent death signal
needs a ``preexec_fn``, which makes Python fork the whole interpreter and wait for the
child's exec; on the event loop that held up reading and enforcement for seconds when 200
instances started at once. The loop only ever waits for the fork itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial

from orchestrator.libc import prctl
from orchestrator.lines import LineAssembler

STDERR_TAIL_BYTES = 8192
_PR_SET_PDEATHSIG = 1
_LINUX = sys.platform.startswith("linux")
# After the main process exits, how long its pipes may stay open (held by a grandchild)
# before the rest of its process group is killed so the run can end.
PIPE_CLOSE_GRACE_S = 2.0


@dataclass(frozen=True, slots=True)
class ProcessExit:
    returncode: int
    stderr_tail: str

    @property
    def signal(self) -> int | None:
        return -self.returncode if self.returncode < 0 else None


def _die_with_parent(parent: int) -> Callable[[], None] | None:
    """In the child, before exec: be killed if the orchestrator dies, even by SIGKILL.

    Signals and our own cleanup cover every other way the orchestrator ends; this covers
    the one no handler sees. (Linux only; elsewhere a SIGKILLed orchestrator can orphan.)
    The signal comes when the *thread* that spawned the child ends: the ``Spawner``'s
    thread lives until the run is over.
    """
    if not _LINUX:
        return None

    def arrange() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return arrange


class SpawnAbandoned(Exception):
    """The child was not started: a stop was asked for before its turn to be spawned."""


class Spawner:
    """The thread that starts every child of a run (see the module's docstring)."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="orchestrator-spawn")

    async def popen(
        self,
        argv: Sequence[str],
        cwd: str | None,
        env: Mapping[str, str] | None,
        abandoned: threading.Event,
    ) -> subprocess.Popen[bytes]:
        def start() -> subprocess.Popen[bytes]:
            if abandoned.is_set():  # stopped while it waited for the spawning thread
                raise SpawnAbandoned
            return subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd=cwd,
                env=env,
                start_new_session=True,  # its own group: we can stop it and its children
                preexec_fn=_die_with_parent(os.getpid()),
            )

        return await asyncio.get_running_loop().run_in_executor(self._pool, start)

    def close(self) -> None:
        """Once no child of the run is left: its thread's end would kill them."""
        self._pool.shutdown(wait=False)


class _Pipe(asyncio.Protocol):
    def __init__(self, on_data: Callable[[bytes], None], closed: asyncio.Future[None]) -> None:
        self._on_data = on_data
        self._closed = closed

    def data_received(self, data: bytes) -> None:
        self._on_data(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._closed.done():
            self._closed.set_result(None)


class ChildProcess:
    """A child being started, then started. ``wait()`` returns once it has exited and its
    output is all read; ``signal_group`` reaches its process group until then."""

    def __init__(self, spawner: Spawner) -> None:
        self._spawner = spawner
        self._popen: subprocess.Popen[bytes] | None = None
        self._stderr = bytearray()
        self._pipes: list[asyncio.BaseTransport] = []
        self._pipes_closed: list[asyncio.Future[None]] = []
        self._exited: asyncio.Future[None] | None = None
        self._reaped = False
        self._abandoned = threading.Event()
        self.pid: int | None = None

    def abandon(self) -> None:
        """Not wanted any more: if it is not spawned yet, it never will be (``start`` then
        raises ``SpawnAbandoned``); if it is, stopping it is the caller's business."""
        self._abandoned.set()

    async def start(
        self,
        argv: Sequence[str],
        on_line: Callable[[bytes], None],
        keep_line: Callable[[bytes], bool],
        on_spawned: Callable[[ChildProcess], None],
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        """Start ``argv`` without a shell, stdin from /dev/null, in a new process group.

        ``on_spawned(self)`` is called as soon as the process exists (it has a pid), before
        any of its output is read. Raises ``OSError`` (or ``ValueError`` for an argument the
        OS refuses) when it cannot be started, ``SpawnAbandoned`` when ``abandon`` came first.
        """
        loop = asyncio.get_running_loop()
        popen = self._popen = await self._spawner.popen(argv, cwd, env, self._abandoned)
        self.pid = popen.pid
        self._exited = loop.create_future()
        self._watch_exit(loop, popen)
        on_spawned(self)  # before a byte is read: a stop asked for meanwhile comes first
        assembler = LineAssembler(on_line, keep_line)
        assert popen.stdout is not None and popen.stderr is not None
        for pipe, on_data in ((popen.stdout, assembler.feed), (popen.stderr, self._keep_tail)):
            closed: asyncio.Future[None] = loop.create_future()
            if pipe is popen.stdout:
                closed.add_done_callback(lambda _: assembler.close())
            transport, _ = await loop.connect_read_pipe(partial(_Pipe, on_data, closed), pipe)
            self._pipes.append(transport)
            self._pipes_closed.append(closed)

    def _keep_tail(self, data: bytes) -> None:
        self._stderr += data
        if len(self._stderr) > 2 * STDERR_TAIL_BYTES:
            del self._stderr[:-STDERR_TAIL_BYTES]

    def _watch_exit(self, loop: asyncio.AbstractEventLoop, popen: subprocess.Popen[bytes]) -> None:
        """Resolve ``_exited`` when the child exits: a pidfd in the loop (Linux 5.3+), else
        a thread blocked in wait()."""
        exited = self._exited
        assert exited is not None

        def settle() -> None:
            popen.poll()  # reaps it: returncode is set
            if popen.returncode is not None and not exited.done():
                exited.set_result(None)

        try:
            pidfd = os.pidfd_open(popen.pid)
        except (AttributeError, OSError):
            threading.Thread(
                target=lambda: (popen.wait(), loop.call_soon_threadsafe(settle)), daemon=True
            ).start()
            return

        def readable() -> None:
            loop.remove_reader(pidfd)
            os.close(pidfd)
            settle()

        loop.add_reader(pidfd, readable)

    def signal_group(self, sig: int) -> bool:
        """Send ``sig`` to the child's whole process group; False when nothing is left, or
        once the child was waited for (its pid may since name someone else's group)."""
        if self.pid is None or self._reaped:
            return False
        try:
            os.killpg(self.pid, sig)
        except (ProcessLookupError, PermissionError):
            return False
        return True

    async def wait(self) -> ProcessExit:
        assert self._popen is not None and self._exited is not None, "not started"
        await self._exited
        pipes = asyncio.gather(*self._pipes_closed)
        try:
            await asyncio.wait_for(asyncio.shield(pipes), PIPE_CLOSE_GRACE_S)
        except TimeoutError:
            # A grandchild still holds the pipes open: the instance is done, stop its group.
            self.signal_group(signal.SIGKILL)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(pipes, PIPE_CLOSE_GRACE_S)
        # Anything the child left running in its group goes with it: no orphans.
        self.signal_group(signal.SIGKILL)
        self._reaped = True
        for transport in self._pipes:
            transport.close()
        code = self._popen.returncode
        tail = bytes(self._stderr[-STDERR_TAIL_BYTES:]).decode("utf-8", errors="replace")
        return ProcessExit(code if code is not None else -1, tail)
