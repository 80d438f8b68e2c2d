"""One run's link to the ledger: charges go out and other runs' spend comes in, on a thread.

The event loop only stores each instance's latest counts (``record_totals``) and appends
instance records to a deque (``instance``); a thread of its own turns what changed into charges
and writes them every ``FLUSH_S`` (one charge per instance per write, however often the loop
handed counts over), writes a heartbeat, and reads the windows' spend every ``POLL_S``, handing
it to the loop with ``call_soon_threadsafe`` when it changed. The loop never waits on SQLite.

A fleet ledger (PostgreSQL) also returns the windows' totals from the transaction that wrote
the charges (the decision rests on them), wakes the thread when another run charges (NOTIFY),
and, while it cannot be written, keeps the charges in a local journal (``journal.py``),
retried every ``RETRY_S``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import getpass
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from budget_core import ZERO, TokenUsage, Unit, Window
from orchestrator.ledger.base import (
    Charge,
    InstanceRecord,
    Ledger,
    LedgerError,
    RunRecord,
    WindowQuery,
    WindowSpend,
)
from orchestrator.ledger.journal import Journal

FLUSH_S = 0.05  # with the run's 25 ms hand-over: durable within ~75 ms, plus the write
POLL_S = 0.25
HEARTBEAT_S = 5.0
RETRY_S = 0.5  # a fleet ledger that failed is tried again this often


@dataclass(frozen=True, slots=True)
class WindowedBudget:
    key: str | None  # None: overall
    unit: Unit
    window: Window


def new_run_id(now: float) -> str:
    stamp = time.strftime("%Y%m%dT%H%M%S", time.localtime(now))
    return f"{stamp}-{os.urandom(3).hex()}"


def automatic_labels(cwd: str) -> dict[str, str]:
    """``project`` (the folder's name) and ``git_branch`` (when cwd is in a git work tree)."""
    labels = {"project": Path(cwd).name}
    branch = git_branch(Path(cwd))
    if branch:
        labels["git_branch"] = branch
    return labels


def git_branch(folder: Path) -> str | None:
    """The branch checked out in the work tree holding ``folder``, read from its HEAD file
    (no git process: this runs before every launch); None when detached or not in one."""
    for parent in (folder, *folder.parents):
        dotgit = parent / ".git"
        try:
            if dotgit.is_file():  # a worktree or submodule: "gitdir: PATH"
                text = dotgit.read_text(encoding="utf-8").strip()
                dotgit = (parent / text.removeprefix("gitdir:").strip()).resolve()
            if dotgit.is_dir():
                head = (dotgit / "HEAD").read_text(encoding="utf-8").strip()
                return head.removeprefix("ref: refs/heads/") if head.startswith("ref:") else None
        except (OSError, UnicodeDecodeError):
            return None
    return None


def run_record(
    run_id: str, started: float, argv: Sequence[str], mode: str, labels: Mapping[str, str]
) -> RunRecord:
    cwd = os.getcwd()
    return RunRecord(
        id=run_id,
        started=started,
        host=socket.gethostname(),
        user=getpass.getuser(),
        cwd=cwd,
        argv=tuple(argv),
        mode=mode,
        labels={**automatic_labels(cwd), **labels},
    )


class RunLedger:
    """Owns one ``Ledger`` for one run. ``open_run`` and ``spend_now`` block: call them before
    the loop starts; ``charge`` and ``instance`` are for the loop; ``finish`` after it."""

    def __init__(
        self,
        ledger: Ledger,
        run: RunRecord,
        windowed: Sequence[WindowedBudget],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.ledger = ledger
        self.run = run
        self.windowed = tuple(windowed)
        self._clock = clock
        self._seq: dict[str, int] = {}
        # The loop's side: each instance's latest counts (replaced whole, read by the thread).
        self._latest: dict[str, _Totals] = {}
        self._pending: collections.deque[InstanceRecord] = collections.deque()
        self._unwritten: list[Charge] = []  # charges made but not yet written (the thread's)
        self._stop = threading.Event()
        self._wake = threading.Event()  # set to end the wait at once (finish)
        # Per instance: the counts already turned into charges (usage, cost, estimate).
        self._written: dict[str, tuple[TokenUsage, float, bool]] = {}
        self._thread: threading.Thread | None = None
        self._failed: str | None = None  # the last write error, until a write succeeds
        # Each windowed budget's spend from elsewhere when the run started (summary JSON).
        self.used_before: dict[tuple[str | None, Unit], float] = {}
        # The fleet ledger's side: shared by machines, so an outage is journaled locally.
        self.fleet = bool(getattr(ledger, "fleet", False))
        self.launch_while_unreachable = False  # --ledger-unreachable open
        self.journal: Journal | None = None
        self._journaled = 0  # how many of _unwritten (from the front) the journal holds
        self._journaled_records: dict[str, InstanceRecord] = {}
        self._down_since: float | None = None  # monotonic, while the fleet ledger fails
        self._next_try = 0.0
        self.back_note = ""  # what the run says when the ledger works again
        self._poll_now = threading.Event()  # another run charged (NOTIFY): read the windows
        self._last_spend: list[WindowSpend] | None = None  # the loop hears only of a change
        self._stop_listening: Callable[[], None] | None = None

    @property
    def run_id(self) -> str:
        return self.run.id

    def open_run(self) -> None:
        self.ledger.open_run(self.run)

    def use_journal(self, folder: Path) -> None:
        self.journal = Journal(folder, self.run.id, self.ledger_id)

    @property
    def ledger_id(self) -> str:
        """The ledger's identity (its own id, whatever URL reaches it): journals are
        replayed into the ledger they were meant for, only."""
        return str(getattr(self.ledger, "ledger_id", self.ledger.url))

    def spend_now(self) -> list[WindowSpend]:
        """Each windowed budget's spend from elsewhere, as of now (blocking)."""
        return self.ledger.window_spend(self.run.id, self._queries(self._clock()))

    def start_spend(self) -> list[WindowSpend]:
        """``spend_now``, remembered as the spend before this run (blocking)."""
        spends = self.spend_now()
        for budget, spend in zip(self.windowed, spends, strict=True):
            self.used_before[(budget.key, budget.unit)] = spend.others
        return spends

    def _queries(self, now: float) -> list[WindowQuery]:
        queries = []
        for budget in self.windowed:
            start = budget.window.start(now)
            assert start is not None
            queries.append(WindowQuery(budget.key, budget.unit, start))
        return queries

    # -- on the event loop: appends only ---------------------------------------------------

    def record_totals(
        self,
        instance: str,
        key: str,
        model: str | None,
        usage: TokenUsage,
        cost_usd: float,
        cost_is_estimate: bool,
    ) -> None:
        """An instance's counts so far; the next write turns what changed into a charge."""
        self._latest[instance] = _Totals(
            key, model, usage, cost_usd, cost_is_estimate, self._clock()
        )

    def _new_charges(self) -> list[Charge]:
        """What changed since the last charge of each instance (also when only whether its
        cost is an estimate changed: the latest charge says). On the thread."""
        charges = []
        for instance, now in dict(self._latest).items():  # a copy: the loop may add to it
            if instance not in self._written and not now.usage and not now.cost_usd:
                continue  # nothing spent yet (or never launched): no charge
            last_usage, last_cost, last_estimate = self._written.get(instance, (ZERO, 0.0, False))
            if (now.usage, now.cost_usd, now.cost_is_estimate) == (
                last_usage,
                last_cost,
                last_estimate,
            ):
                continue
            self._written[instance] = (now.usage, now.cost_usd, now.cost_is_estimate)
            seq = self._seq[instance] = self._seq.get(instance, 0) + 1
            charges.append(
                Charge(
                    self.run.id,
                    instance,
                    seq,
                    now.at,
                    now.key,
                    now.model,
                    now.usage - last_usage,
                    now.cost_usd - last_cost,
                    now.cost_is_estimate,
                )
            )
        return charges

    def instance(self, record: InstanceRecord) -> None:
        self._pending.append(record)

    def start(
        self,
        loop: asyncio.AbstractEventLoop,
        on_spend: Callable[[list[WindowSpend]], None],
        on_error: Callable[[str | None], None],
    ) -> None:
        """Write and poll on a thread until ``finish``; results reach the loop's callbacks
        (``on_error(None)`` once the ledger works again)."""
        self._thread = threading.Thread(
            target=self._work, args=(loop, on_spend, on_error), name="ledger", daemon=True
        )
        self._thread.start()
        listen = getattr(self.ledger, "listen", None)
        if listen is not None and self.windowed:
            self._stop_listening = listen(self.run.id, self._on_notify)

    def _on_notify(self) -> None:
        """Another run charged the ledger (its listening thread): read the windows now."""
        self._poll_now.set()
        self._wake.set()

    def _work(
        self,
        loop: asyncio.AbstractEventLoop,
        on_spend: Callable[[list[WindowSpend]], None],
        on_error: Callable[[str | None], None],
    ) -> None:
        next_poll = next_beat = 0.0

        def post_spend(spend: list[WindowSpend]) -> None:
            if spend != self._last_spend:
                self._last_spend = spend
                _post(loop, on_spend, spend)

        while not self._stop.is_set():
            self._wake.wait(FLUSH_S)
            self._wake.clear()
            asked = self._poll_now.is_set()
            self._poll_now.clear()
            now = time.monotonic()
            beat = now >= next_beat
            if beat:
                next_beat = now + HEARTBEAT_S
            fresh = self._flush(beat, lambda message: _post(loop, on_error, message))
            if fresh is not None:  # the totals as of the transaction that wrote the charges
                next_poll = now + POLL_S
                post_spend(fresh)
            elif self.windowed and (asked or now >= next_poll) and self._down_since is None:
                next_poll = now + POLL_S
                try:
                    spend = self.spend_now()
                except LedgerError:
                    continue  # the write path reports it; the last known spend holds
                post_spend(spend)

    def _flush(
        self, heartbeat: bool, report: Callable[[str | None], None] | None
    ) -> list[WindowSpend] | None:
        """Write what changed; a fleet ledger's write returns the windows' totals."""
        pending = self._pending
        records = [pending.popleft() for _ in range(len(pending))]  # the loop appends on the right
        # Kept until written, in order, and written as made (once: charges are idempotent).
        self._unwritten += self._new_charges()
        charges = self._unwritten
        instances = list({i.name: i for i in records}.values())
        if not charges and not instances and not heartbeat:
            return None
        if self.fleet and self._down_since is not None and time.monotonic() < self._next_try:
            self._keep(instances, report)  # not yet time to try again
            pending.extendleft(reversed(records))
            return None
        beat = (self.run.id, self._clock()) if heartbeat else None
        sums = None
        try:
            if self.fleet and self.windowed:
                queries = self._queries(self._clock())
                sums = self.ledger.write_and_sum(  # type: ignore[attr-defined]
                    charges, instances, beat, self.run.id, queries
                )
            else:
                self.ledger.write(charges, instances, beat)
        except LedgerError as exc:
            if self._down_since is None:
                self._down_since = time.monotonic()
            self._next_try = time.monotonic() + RETRY_S
            self._keep(instances, None)
            # SQLite: each new reason; the fleet ledger: once an outage (then the journal).
            news = self._failed is None if self.fleet else str(exc) != self._failed
            if report is not None and news:
                report(self._down_text(str(exc)))
            self._failed = str(exc)
            pending.extendleft(reversed(records))
            return None
        journaled = self.journal.count if self.journal is not None else 0
        self._unwritten = []
        self._journaled = 0
        if self.journal is not None and self.journal.exists:
            self.journal.clear()
        self._journaled_records.clear()
        if self._failed is not None:
            down = time.monotonic() - (self._down_since or time.monotonic())
            self._failed = None
            self._down_since = None
            self.back_note = (
                f"the ledger is back after {down:.1f}s; {journaled} journaled charge(s) written"
                if self.fleet
                else "the ledger works again; pending charges written"
            )
            if report is not None:
                report(None)
        return sums

    def _down_text(self, reason: str) -> str:
        if not self.fleet:
            return reason  # the run says the rest
        where = f" in {self.journal.path}" if self.journal is not None else " in memory"
        text = (
            f"the ledger went away ({reason}); charges are journaled{where} and written"
            " once it is back"
        )
        return text

    def _keep(
        self, instances: list[InstanceRecord], report: Callable[[str | None], None] | None
    ) -> None:
        """A fleet ledger that failed: what it lacks goes to the journal, durably, now."""
        if self.journal is None:
            return
        fresh = self._unwritten[self._journaled :]
        # Records wait in the queue until written: journal each state of one only once.
        records = [i for i in instances if self._journaled_records.get(i.name) != i]
        if not fresh and not records:
            return
        try:
            self.journal.append(fresh, records)
        except LedgerError:
            return  # kept in memory meanwhile; the end of the run reports what is unwritten
        self._journaled = len(self._unwritten)
        self._journaled_records.update((i.name, i) for i in records)

    def finish(self, records: Sequence[InstanceRecord], exit_code: int) -> str | None:
        """Stop the thread, write what is pending and close the run; returns an error."""
        self._stop.set()
        self._wake.set()
        if self._stop_listening is not None:
            self._stop_listening()
        if self._thread is not None:
            self._thread.join()
        for record in records:
            self._pending.append(record)
        self._next_try = 0.0  # one last try, now
        self._flush(True, None)
        ended = self._clock()
        try:
            if self._pending or self._unwritten:
                raise LedgerError(self._failed or "charges could not be written")
            self.ledger.close_run(self.run.id, ended, exit_code)
            return None
        except LedgerError as exc:
            unwritten = len(self._unwritten) + len(self._pending)
            if self.journal is not None:
                kept = self._journal_at_end(ended, exit_code)
                if kept is not None:
                    return f"{exc}; {kept}"
            return f"{exc}; {unwritten} record(s) not written"
        finally:
            self.ledger.close()

    def _journal_at_end(self, ended: float, exit_code: int) -> str | None:
        """The run ends with the fleet ledger away: all it lacks stays in the journal, for
        the next run on this ledger to write. The note saying so, or None if it cannot."""
        assert self.journal is not None
        records = list({i.name: i for i in self._pending}.values())
        try:
            self.journal.append(
                self._unwritten[self._journaled :], records, (self.run.id, ended, exit_code)
            )
        except LedgerError:
            return None
        self.journal.close()
        return (
            f"{self.journal.count} charge(s) kept in {self.journal.path}; the next run on"
            " this ledger writes them"
        )


@dataclass(frozen=True, slots=True)
class _Totals:
    """An instance's counts as last handed over by the loop, and when."""

    key: str
    model: str | None
    usage: TokenUsage
    cost_usd: float
    cost_is_estimate: bool
    at: float


def _post(loop: asyncio.AbstractEventLoop, callback: Callable[..., None], *args: object) -> None:
    with contextlib.suppress(RuntimeError):  # the loop has closed: the run is over
        loop.call_soon_threadsafe(callback, *args)
