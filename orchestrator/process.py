"""One child process: launched in its own process group, its pipes read without choking.

stdout is split into lines by ``LineAssembler`` and handed over line by line, inside the
event loop's read callback (no coroutine per line); stderr is drained concurrently and only
a bounded tail is kept, for error messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from orchestrator.lines import LineAssembler

STDERR_TAIL_BYTES = 8192
_PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None
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


class _Protocol(asyncio.SubprocessProtocol):
    def __init__(self, stdout: LineAssembler, loop: asyncio.AbstractEventLoop) -> None:
        self._stdout = stdout
        self._stderr = bytearray()
        self.pipes_closed = loop.create_future()
        self.exited = loop.create_future()
        self._open_pipes = {1, 2}

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        if fd == 1:
            self._stdout.feed(data)
        else:
            self._stderr += data
            if len(self._stderr) > 2 * STDERR_TAIL_BYTES:
                del self._stderr[:-STDERR_TAIL_BYTES]

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        if fd == 1:
            self._stdout.close()
        self._open_pipes.discard(fd)
        if not self._open_pipes and not self.pipes_closed.done():
            self.pipes_closed.set_result(None)

    def process_exited(self) -> None:
        if not self.exited.done():
            self.exited.set_result(None)

    def stderr_tail(self) -> str:
        return bytes(self._stderr[-STDERR_TAIL_BYTES:]).decode("utf-8", errors="replace")


def _die_with_parent(parent: int) -> Callable[[], None] | None:
    """In the child, before exec: be killed if the orchestrator dies, even by SIGKILL.

    Signals and our own cleanup cover every other way the orchestrator ends; this covers
    the one no handler sees. (Linux only; elsewhere a SIGKILLed orchestrator can orphan.)
    """
    libc = _LIBC
    if libc is None:
        return None

    def arrange() -> None:
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return arrange


class ChildProcess:
    """A started child. ``wait()`` returns once it has exited and its output is all read."""

    def __init__(self, transport: asyncio.SubprocessTransport, protocol: _Protocol) -> None:
        self._transport = transport
        self._protocol = protocol
        self.pid: int = transport.get_pid()

    @classmethod
    async def start(
        cls,
        argv: Sequence[str],
        on_line: Callable[[bytes], None],
        keep_line: Callable[[bytes], bool],
        cwd: str | None = None,
        env: dict[str, str] | None = None,
    ) -> ChildProcess:
        """Start ``argv`` without a shell, stdin from /dev/null, in a new process group.

        Raises ``OSError`` when the executable cannot be started.
        """
        loop = asyncio.get_running_loop()
        assembler = LineAssembler(on_line, keep_line)
        transport, protocol = await loop.subprocess_exec(
            lambda: _Protocol(assembler, loop),
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=cwd,
            env=env,
            start_new_session=True,  # its own process group: we can stop it and its children
            preexec_fn=_die_with_parent(os.getpid()),
        )
        return cls(transport, protocol)

    def signal_group(self, sig: int) -> bool:
        """Send ``sig`` to the child's whole process group; False when nothing is left."""
        try:
            os.killpg(self.pid, sig)
        except (ProcessLookupError, PermissionError):
            return False
        return True

    @property
    def returncode(self) -> int | None:
        return self._transport.get_returncode()

    async def wait(self) -> ProcessExit:
        await self._protocol.exited
        try:
            await asyncio.wait_for(asyncio.shield(self._protocol.pipes_closed), PIPE_CLOSE_GRACE_S)
        except TimeoutError:
            # A grandchild still holds the pipes open: the instance is done, stop its group.
            self.signal_group(signal.SIGKILL)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._protocol.pipes_closed, PIPE_CLOSE_GRACE_S)
        # Anything the child left running in its group goes with it: no orphans.
        self.signal_group(signal.SIGKILL)
        self._transport.close()
        code = self._transport.get_returncode()
        return ProcessExit(code if code is not None else -1, self._protocol.stderr_tail())
