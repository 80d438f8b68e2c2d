"""The run itself failing (an exception out of ``Orchestrator.run``: a bug, not a user error):
stop what it started without hanging on it, then say so once the terminal is ours."""

from __future__ import annotations

import asyncio
import traceback

from orchestrator.run import Orchestrator

LEFTOVER_WAIT_S = 10.0  # for the run's own tasks to end once every instance was killed


async def stop_after_failure(orchestrator: Orchestrator, error: BaseException) -> None:
    """Kill every instance, then let the run's remaining tasks end by themselves.

    They are not cancelled, as ``asyncio.run`` would do: on Python 3.11 a task cancelled while
    its process is being started never ends (its pipes are never connected, and the transport
    waits for them), and the orchestrator would hang instead of reporting. Killed, every
    instance's task ends on its own, its output counted. Call with the caller's other tasks
    (timers, reporters) already cancelled.
    """
    orchestrator.kill_now(f"stopped: the run failed ({type(error).__name__})")
    leftovers = asyncio.all_tasks() - {asyncio.current_task()}
    if leftovers:
        await asyncio.wait(leftovers, timeout=LEFTOVER_WAIT_S)


def failure_report(error: BaseException) -> str:
    """The traceback (it is a bug: someone will need it), then one line that says it all."""
    trace = "".join(traceback.format_exception(error)).rstrip()
    return (
        f"{trace}\norchestrator: error: the run failed, a bug in the orchestrator "
        f"({type(error).__name__}: {error}); every instance was stopped"
    )
