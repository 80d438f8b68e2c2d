"""Our own output going away: its reader quit (``| head``, a pager closed) or its terminal
hung up.

A write then fails (EPIPE, or EIO on a dead terminal). ``Output`` notices that once, tells
the run (which ends it as an interruption), and puts /dev/null in the stream's place, so that
nothing written later (the summary, Python's own flush at exit) fails again. On a pipe it
also notices the reader going away while there is nothing to write (``--quiet``): the write
end of a pipe whose reader closed polls as an error.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import stat
import sys
from collections.abc import Callable
from typing import TextIO

GONE_ERRNOS = frozenset({errno.EPIPE, errno.EIO})


def is_gone_error(error: BaseException | None) -> bool:
    """Whether a failed write means that nobody reads the stream any more."""
    return isinstance(error, OSError) and error.errno in GONE_ERRNOS


def point_at_devnull(fd: int) -> None:
    null = os.open(os.devnull, os.O_RDWR)
    if null == fd:  # ``fd`` was closed, and opening took its number
        return
    try:
        os.dup2(null, fd)
    finally:
        os.close(null)


def fill_closed_std_fds() -> None:
    """Give /dev/null to whichever of stdin, stdout and stderr was closed when we started
    (``>&-``): the run goes on with that stream discarded, and no pipe to an instance can
    take its number (our writes to "stderr" would then go into an instance's pipe)."""
    for fd, name, mode in ((0, "stdin", "r"), (1, "stdout", "w"), (2, "stderr", "w")):
        try:
            os.fstat(fd)
        except OSError:
            point_at_devnull(fd)
        if getattr(sys, name) is None:  # Python found it closed at start-up
            setattr(sys, name, open(fd, mode, encoding="utf-8", closefd=False))  # noqa: SIM115


def say(text: str, stream: TextIO | None = None) -> bool:
    """Print ``text`` (to stdout by default); False, and nothing raised, if nobody reads it."""
    stream = stream if stream is not None else sys.stdout
    try:
        print(text, file=stream, flush=True)
    except OSError as exc:
        if not is_gone_error(exc):
            raise
        point_at_devnull(stream.fileno())
        return False
    return True


class Output:
    """The stream the run's log goes to; ``on_gone`` is called once, when it goes away."""

    def __init__(self, stream: TextIO, on_gone: Callable[[], None]) -> None:
        self.stream = stream
        self.gone = False
        self._on_gone = on_gone
        self._watched: tuple[asyncio.AbstractEventLoop, int] | None = None

    def went_away(self) -> None:
        if self.gone:
            return
        self.gone = True
        self.unwatch()
        point_at_devnull(self.stream.fileno())
        self._on_gone()

    def handler(self) -> logging.Handler:
        """A logging handler on the stream that reports its going away instead of a traceback."""
        return _Handler(self)

    def watch(self, loop: asyncio.AbstractEventLoop) -> None:
        """On a pipe, notice the reader going away even with nothing to write."""
        fd = self.stream.fileno()
        if self.gone or not stat.S_ISFIFO(os.fstat(fd).st_mode):
            return
        # Never readable (it is the write end): the callback runs only on the error.
        loop.add_reader(fd, self.went_away)
        self._watched = (loop, fd)

    def unwatch(self) -> None:
        if self._watched is not None:
            loop, fd = self._watched
            self._watched = None
            loop.remove_reader(fd)


class _Handler(logging.StreamHandler[TextIO]):
    def __init__(self, output: Output) -> None:
        super().__init__(output.stream)
        self._output = output

    def handleError(self, record: logging.LogRecord) -> None:
        if is_gone_error(sys.exc_info()[1]):
            self._output.went_away()
        else:
            super().handleError(record)
