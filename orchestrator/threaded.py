"""The run on a thread of its own, for a monitor whose event loop must stay responsive.

Reading and counting 50 instances at full speed keeps an event loop busy for tens of
milliseconds a turn; a key press then needs several turns. On its own thread and loop the
run never delays the monitor's loop: Python hands the lock over every few milliseconds.

Nothing crosses the threads unguarded: the monitor's requests are posted to the run's loop,
snapshots are built on the run's thread and published whole, and the monitor's listener
(which only marks itself dirty or posts a message, both thread-safe) is called from the run's
thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import threading
from collections.abc import Callable

from budget_core import Mode
from orchestrator.failure import stop_after_failure
from orchestrator.run import Orchestrator
from orchestrator.state import (
    RESUMABLE,
    Notice,
    RunEvent,
    RunListener,
    RunSnapshot,
    StateChanged,
)

PUBLISH_INTERVAL_S = 0.05
_STATE_CHANGED = StateChanged()


class ThreadedRun:
    """A ``RunControl`` over an ``Orchestrator`` that runs on its own thread and loop."""

    def __init__(self, orchestrator: Orchestrator) -> None:
        self.orchestrator = orchestrator
        self._loop: asyncio.AbstractEventLoop | None = None
        self._latest = orchestrator.snapshot()
        self._mode: Mode = self._latest.mode  # what the user last asked for, shown at once
        self._dirty = threading.Event()
        self._listeners: list[RunListener] = []
        self.finished = threading.Event()  # set once the run's thread is done with it
        orchestrator.subscribe(self._on_event)

    # -- RunControl (called from the monitor's thread) -------------------------------------

    def snapshot(self) -> RunSnapshot:
        latest = self._latest
        return latest if latest.mode == self._mode else dataclasses.replace(latest, mode=self._mode)

    def subscribe(self, listener: RunListener) -> Callable[[], None]:
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def set_enforcement_mode(self, mode: Mode) -> None:
        self._mode = mode
        self._call(self.orchestrator.set_enforcement_mode, mode)

    def stop_all(self, reason: str = "stopped by request") -> None:
        self._call(self.orchestrator.stop_all, reason)

    def stop_instance(self, name: str) -> None:
        self._call(self.orchestrator.stop_instance, name)

    def interrupt(self, signum: int) -> None:
        self._call(self.orchestrator.interrupt, signum)

    def resume_instance(self, name: str) -> str | None:
        """Checked against the latest snapshot here; the run decides again on its thread
        (and says so in a notice) when the instance has changed meanwhile."""
        view = next((i for i in self._latest.instances if i.name == name), None)
        if view is None:
            return f"no instance {name!r}"
        if view.status not in RESUMABLE:
            return f"{name} is {view.status}: only a blocked or stopped instance is resumed"
        if self.finished.is_set() or self._latest.finished:
            return "the run is over"
        self._call(self._resume_there, name)
        return None

    def _resume_there(self, name: str) -> None:
        problem = self.orchestrator.resume_instance(name)
        if problem is not None:
            self.orchestrator.tell(f"{name}: not resumed: {problem}")

    def set_limit(self, key: str, tokens: int | None = None, usd: float | None = None) -> None:
        self._call(self.orchestrator.set_limit, key, tokens, usd)

    async def run(self) -> int:
        """Await the whole run from the monitor's loop; it happens on a thread of its own.

        Not the loop's default executor: closing the monitor's loop would wait for that
        thread, i.e. for the whole run, even when the monitor failed and nobody stops it.
        """
        loop = asyncio.get_running_loop()
        outcome: asyncio.Future[int] = loop.create_future()

        def settle(code: int | None, error: BaseException | None) -> None:
            if outcome.done():
                return
            if error is not None:
                outcome.set_exception(error)
            else:
                outcome.set_result(code if code is not None else 1)

        def work() -> None:
            code, error = None, None
            try:
                code = asyncio.run(self._run_here())
            except BaseException as exc:  # handed to the awaiting side
                error = exc
            # If the monitor's loop is gone (RuntimeError), nobody awaits the outcome.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(settle, code, error)

        threading.Thread(target=work, name="orchestrator-run", daemon=True).start()
        return await outcome

    # -- the run's thread ------------------------------------------------------------------

    async def _run_here(self) -> int:
        self._loop = asyncio.get_running_loop()
        publisher = asyncio.create_task(self._publish_periodically())
        try:
            return await self.orchestrator.run()
        except Exception as error:
            publisher.cancel()
            await stop_after_failure(self.orchestrator, error)
            raise
        finally:
            publisher.cancel()
            self._publish()
            self.finished.set()

    async def _publish_periodically(self) -> None:
        while True:
            await asyncio.sleep(PUBLISH_INTERVAL_S)
            if self._dirty.is_set():
                self._publish()

    def _publish(self) -> None:
        self._dirty.clear()
        self._latest = self.orchestrator.snapshot()
        self._tell(_STATE_CHANGED)

    def _on_event(self, event: RunEvent) -> None:
        if isinstance(event, Notice):
            self._publish()  # a notice and the state it speaks of arrive together
            self._tell(event)
        else:
            self._dirty.set()  # coalesced: published at most every PUBLISH_INTERVAL_S

    def _tell(self, event: RunEvent) -> None:
        for listener in tuple(self._listeners):
            listener(event)

    def _call(self, method: Callable[..., None], *args: object) -> None:
        def apply() -> None:
            method(*args)
            self._publish()

        loop = self._loop
        if loop is not None and not self.finished.is_set():
            try:
                loop.call_soon_threadsafe(apply)
                return
            except RuntimeError:  # the loop closed just now
                pass
        apply()  # not started, or over: nothing runs on the other thread
