"""Descendants that left an instance's process group, found and stopped with it (Linux).

An agent may start a background server with ``setsid`` (or a double fork): it leaves the
instance's process group, so stopping the group misses it. The orchestrator is a child
subreaper (``PR_SET_CHILD_SUBREAPER``), so such a process, once its parent exits, becomes the
orchestrator's own child instead of init's; and every instance's environment carries
``INSTANCE_ENV`` with a token of its own, inherited by all it starts. So an instance's strays
are the processes below it, and the orchestrator's children that carry its token.

Elsewhere than Linux these functions find nothing: stopping the group is all there is.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Iterable

from orchestrator.libc import prctl

INSTANCE_ENV = "ORCHESTRATOR_INSTANCE"
# The orchestrator's own secrets (a ledger URL may carry a database password, a webhook URL
# is a credential): an agent has no use for them, and could print them.
WITHHELD_ENV = ("ORCHESTRATOR_LEDGER", "ORCHESTRATOR_ALERT_WEBHOOK")
_PR_SET_CHILD_SUBREAPER = 36
_LINUX = sys.platform.startswith("linux")


def child_env(token: str) -> dict[str, str]:
    """The environment an instance (or the version check) runs with: ours, without our
    secrets, with its token."""
    env = {k: v for k, v in os.environ.items() if k not in WITHHELD_ENV}
    env[INSTANCE_ENV] = token
    return env


def become_subreaper() -> bool:
    """Make orphaned descendants this process's children (Linux); False where unsupported."""
    return _LINUX and prctl(_PR_SET_CHILD_SUBREAPER, 1) == 0


def children_of(pid: int) -> list[int]:
    """Direct children of ``pid`` (all its threads'), from /proc; [] when it is gone."""
    found: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children", "rb") as f:
                found.extend(int(p) for p in f.read().split())
        except (OSError, ValueError):
            continue
    return found


def descendants_of(pid: int) -> list[int]:
    """Every process below ``pid``, whatever its process group or session."""
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in children_of(todo.pop()):
            if child not in found:
                found.append(child)
                todo.append(child)
    return found


def token_of(pid: int) -> str | None:
    """The ``INSTANCE_ENV`` token ``pid`` was started with, if any."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            environ = f.read()
    except OSError:
        return None
    prefix = f"{INSTANCE_ENV}=".encode()
    entry = next((e for e in environ.split(b"\0") if e.startswith(prefix)), None)
    return entry[len(prefix) :].decode(errors="replace") if entry is not None else None


def strays(tokens: Iterable[str], exclude: Iterable[int] = ()) -> list[int]:
    """Processes of the instances with ``tokens`` that were handed to this (subreaper)
    process, and everything below them."""
    wanted, skip = set(tokens), set(exclude)
    found: list[int] = []
    for child in children_of(os.getpid()):
        if child not in skip and token_of(child) in wanted:
            found.append(child)
            found.extend(descendants_of(child))
    return found


def kill_all(pids: Iterable[int]) -> None:
    """SIGKILL each of ``pids``, and collect those that were handed to this process (only
    those: an instance's own process is collected by its watcher, a pidfd on the loop)."""
    pids = list(pids)
    if not pids:
        return  # the usual case, at every instance's end: no need to list our children
    mine = set(children_of(os.getpid()))
    killed = []
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
    for pid in killed:
        if pid in mine:
            reap(pid)


def reap(pid: int) -> None:
    """Collect ``pid`` if it is a child of ours that has exited (never blocks)."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)
