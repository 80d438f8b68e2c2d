"""UI under load: the Textual monitor, headless, over 50 instances streaming at full speed.

What it measures: a real ``Orchestrator`` runs 50 instances of ``orchestrator/simulator.py``
at once (``--sim-delay 0``: each writes as fast as its pipe is read; budgets per command
and overall, in warn mode, all far too large to stop anything), driven by the monitor as
``orchestrator --tui`` runs it (the run on its own thread through ``ThreadedRun``;
``--same-loop`` runs it inside the monitor's event loop instead, for comparison) under Textual's
``run_test`` (headless: every frame is composed, nothing is written to a terminal). The
instances would stream for minutes; the measurement covers a fixed window once all 50
stream, then every instance is stopped (``stop_all``), the run awaited and every process
group checked gone.

- Phase 1, no input (``STEADY_S`` seconds): refreshes per second, i.e. calls of
  ``MonitorApp.sync`` (each re-reads ``orchestrator.snapshot()`` and redraws what changed;
  also counted as the app's own ``snapshot()`` calls, wrapped on the instance); against
  that, the ``StateChanged`` events the orchestrator emitted per second (the coalescing
  ratio) and the stdout lines it processed per second.
- Phase 2: ``m`` pressed ``PRESSES`` times, ``PRESS_GAP_S`` apart, while streaming goes on.
  Latency of each press: from just before ``await pilot.press("m")`` to the moment
  ``orchestrator.budgets.set_mode`` returned with the mode changed (wrapped on the
  instance), and, for information, to the first frame composed after it. ``pilot.press``
  itself returns much later under load: it waits for the process to go idle (up to 1 s,
  twice), which is the test harness, not the app. Refresh figures are reported for this
  phase too.

To explain the figures, each phase also reports the frames Textual composed (layouts and
repaints), the event loop's turns (how long one takes: a key press needs several), this
process's CPU and the share of it spent in the UI (``sync``, layout, repaint).

Targets (issue), over the whole streaming period (both phases): refreshes (``sync`` calls)
per second <= 12, on average and in the busiest 1 s window; ``m`` to mode applied < 200 ms
(median and max). Frames are reported, not checked: Textual composes one or more per
refresh.

Options: ``--profile N`` runs everything under cProfile and prints the N costliest
functions (profiling slows the process: use it to see where the time goes, not for the
figures); ``--sim-delay S`` paces every instance to one line per S seconds instead of full
speed (for comparison; the targets are for full speed).

Run: ``.venv/bin/python benchmarks/bench_tui.py [--profile N] [--sim-delay S]`` (about 45 s).
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import cProfile
import io
import os
import pstats
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from _common import ROOT, Verdicts, fmt_list, machine_note, median

from orchestrator.config import BudgetConfig, InstanceSpec, RunConfig
from orchestrator.run import Orchestrator
from orchestrator.state import Notice, RunEvent
from orchestrator.threaded import ThreadedRun
from tui.app import MonitorApp, build_app

INSTANCES = 50
KEYS = ("/analyze", "/review", "/test", "/docs")
HUGE = 10**12
# ~21 lines a call: far more calls than the window can read, so every instance streams
# until it is stopped.
SIM_ARGS = ("--sim-calls", "20000", "--sim-deltas", "10")
SIMULATOR = ROOT / "orchestrator" / "simulator.py"
SIZE = (120, 35)
STARTUP_TIMEOUT_S = 30.0
STEADY_S = 8.0
PRESSES = 10
PRESS_GAP_S = 0.5
STOP_TIMEOUT_S = 20.0
TARGET_REFRESHES_PER_S = 12.0
TARGET_LATENCY_MS = 200.0


class Recorder:
    """Wraps a callable; records when each call returned and how long it took."""

    def __init__(self, func: Callable[..., Any]) -> None:
        self.func = func
        self.times: list[float] = []  # when each call returned (``time.perf_counter``)
        self.durations: list[float] = []  # wall-clock seconds
        self.cpu: list[float] = []  # CPU seconds of this thread
        self.active = False  # inside a call now

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        start, cpu = time.perf_counter(), time.thread_time()
        self.active = True
        try:
            return self.func(*args, **kwargs)
        finally:
            self.active = False
            end = time.perf_counter()
            self.times.append(end)
            self.durations.append(end - start)
            self.cpu.append(time.thread_time() - cpu)

    def _span(self, start: float, end: float) -> slice:
        return slice(bisect.bisect_left(self.times, start), bisect.bisect_left(self.times, end))

    def count(self, start: float, end: float) -> int:
        return len(self.times[self._span(start, end)])

    def took(self, start: float, end: float) -> list[float]:
        """The wall-clock durations of the calls that returned in [start, end)."""
        return self.durations[self._span(start, end)]

    def cpu_took(self, start: float, end: float) -> list[float]:
        """The CPU durations of the calls that returned in [start, end)."""
        return self.cpu[self._span(start, end)]

    def busiest_second(self, start: float, end: float) -> int:
        """The most calls in any 1 s window inside [start, end)."""
        times = self.times[self._span(start, end)]
        return max((bisect.bisect_left(times, t + 1.0) - i for i, t in enumerate(times)), default=0)

    def first_after(self, moment: float) -> float | None:
        index = bisect.bisect_right(self.times, moment)
        return self.times[index] if index < len(self.times) else None


class EventCounter:
    """A run listener that counts StateChanged events and notices."""

    def __init__(self) -> None:
        self.changes = 0
        self.notices = 0

    def __call__(self, event: RunEvent) -> None:
        if isinstance(event, Notice):
            self.notices += 1
        else:
            self.changes += 1


@dataclass(frozen=True)
class Reading:
    at: float
    cpu: float  # this process's CPU seconds (its children not included)
    lines: int
    changes: int
    notices: int


@dataclass(frozen=True)
class Press:
    started: float  # just before ``await pilot.press("m")``
    returned: float  # when ``pilot.press`` returned
    applied: float  # when set_mode returned with the mode changed
    drawn: float  # the first frame composed after that

    @property
    def latency_ms(self) -> float:
        return (self.applied - self.started) * 1000

    @property
    def drawn_ms(self) -> float:
        return (self.drawn - self.started) * 1000


@dataclass(frozen=True)
class Phase:
    name: str
    start: Reading
    end: Reading

    @property
    def seconds(self) -> float:
        return self.end.at - self.start.at


class Bench:
    """The run, the app and everything recorded about them."""

    def __init__(self, sim_delay: float = 0.0, same_loop: bool = False) -> None:
        instances = tuple(
            InstanceSpec(
                name=f"i{n:02d}",
                prompt=f"{KEYS[n % len(KEYS)]} part {n}",
                budget_key=KEYS[n % len(KEYS)],
                claude_args=(*SIM_ARGS, "--sim-delay", f"{sim_delay:g}"),
            )
            for n in range(INSTANCES)
        )
        config = RunConfig(
            instances=instances,
            budgets=BudgetConfig(
                overall_tokens=HUGE, command_tokens=dict.fromkeys(KEYS, HUGE), mode="warn"
            ),
            claude_cmd=(sys.executable, str(SIMULATOR)),
            max_concurrent=INSTANCES,
        )
        self.orchestrator = Orchestrator(config)
        self.events = EventCounter()
        self.orchestrator.subscribe(self.events)
        # Wrapped on the instances, so only the app's own calls are counted: the benchmark
        # reads the real methods and private counters directly.
        self.real_snapshot = self.orchestrator.snapshot
        # As `orchestrator --tui` does: the run on a thread of its own (unless --same-loop).
        self.control: Any = self.orchestrator if same_loop else ThreadedRun(self.orchestrator)
        self.snapshots = Recorder(self.control.snapshot)
        self.control.snapshot = self.snapshots
        budgets = self.orchestrator.budgets
        self.real_set_mode = budgets.set_mode
        self.mode_changes: list[float] = []  # when set_mode returned with the mode changed
        budgets.set_mode = self._set_mode  # type: ignore[method-assign]
        self.app: MonitorApp = build_app(self.control, run=self.control.run, animate=False)
        self.syncs = Recorder(self.app.sync)
        self.app.sync = self.syncs  # type: ignore[method-assign]
        # Replaced once the app runs: every frame composed; layouts (each composes a frame);
        # frames composed outside a layout (repaints); and the event loop's turns.
        self.frames = self.layouts = self.repaints = self.turns = Recorder(lambda: None)
        self.phases: list[Phase] = []
        self.presses: list[Press] = []
        self.pids: list[int] = []
        self.still_streaming = 0  # instances streaming when the measurements ended
        self.exit_code: int | None = None

    def _set_mode(self, mode: Any) -> None:
        before = self.orchestrator.budgets.mode
        self.real_set_mode(mode)
        if self.orchestrator.budgets.mode != before:
            self.mode_changes.append(time.perf_counter())

    def _frame(self) -> None:
        """Compose a frame; timed as a repaint unless a layout (timed itself) asked for it."""
        if self.layouts.active:
            self.repaints.func()
        else:
            self.repaints()

    def lines(self) -> int:
        return sum(inst.tracker.lines_seen for inst in self.orchestrator._instances)

    def streaming(self) -> int:
        """How many instances run and have printed at least one line."""
        return sum(
            1
            for inst in self.orchestrator._instances
            if inst.has_live_process and inst.tracker.lines_seen > 0
        )

    def reading(self) -> Reading:
        return Reading(
            time.perf_counter(),
            time.process_time(),
            self.lines(),
            self.events.changes,
            self.events.notices,
        )

    async def run(self) -> None:
        async with self.app.run_test(size=SIZE) as pilot:
            screen = self.app.screen
            self.repaints = Recorder(screen._compositor_refresh)
            self.frames = Recorder(self._frame)
            screen._compositor_refresh = self.frames  # type: ignore[method-assign]
            self.layouts = Recorder(screen._refresh_layout)
            screen._refresh_layout = self.layouts  # type: ignore[method-assign]
            # One call per turn of the event loop (run_forever looks it up every turn).
            loop = asyncio.get_running_loop()
            self.turns = Recorder(loop._run_once)  # type: ignore[attr-defined]
            loop._run_once = self.turns  # type: ignore[attr-defined]
            try:
                await self._wait_for(
                    lambda: self.streaming() == INSTANCES,
                    STARTUP_TIMEOUT_S,
                    f"all {INSTANCES} instances to stream",
                )
                self.pids = [
                    inst.process.pid
                    for inst in self.orchestrator._instances
                    if inst.process is not None
                ]
                start = self.reading()
                await asyncio.sleep(STEADY_S)
                self.phases.append(Phase("phase 1: streaming, no input", start, self.reading()))

                start = self.reading()
                for _ in range(PRESSES):
                    self.presses.append(await self._press_m(pilot))
                    await asyncio.sleep(PRESS_GAP_S)
                self.phases.append(Phase(f"phase 2: {PRESSES} presses of m", start, self.reading()))
                self.still_streaming = self.streaming()
            finally:
                self.control.stop_all()
                await self._wait_for(
                    lambda: self.real_snapshot().finished, STOP_TIMEOUT_S, "the run to end"
                )
                await pilot.pause()  # let the app take the run's end (RunFinished)
                self.exit_code = self.orchestrator.exit_code()

    async def _press_m(self, pilot: Any) -> Press:
        changes = len(self.mode_changes)
        started = time.perf_counter()
        await pilot.press("m")
        returned = time.perf_counter()
        await self._wait_for(lambda: len(self.mode_changes) > changes, 5.0, "the mode")
        applied = self.mode_changes[changes]
        await self._wait_for(lambda: self.frames.first_after(applied) is not None, 5.0, "a frame")
        drawn = self.frames.first_after(applied)
        assert drawn is not None
        return Press(started, returned, applied, drawn)

    @staticmethod
    async def _wait_for(condition: Callable[[], object], timeout: float, what: str) -> None:
        deadline = time.perf_counter() + timeout
        while not condition():
            if time.perf_counter() > deadline:
                raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
            await asyncio.sleep(0.02)


def group_gone(pid: int) -> bool:
    try:
        os.killpg(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else 0.0


def ms_spread(values: list[float]) -> str:
    """``median / p95 / max`` of durations in seconds, in ms."""
    if not values:
        return "-"
    return (
        f"median {median(values) * 1000:.1f}, p95 {percentile(values, 0.95) * 1000:.1f},"
        f" max {max(values) * 1000:.1f} ms"
    )


def report_phase(bench: Bench, phase: Phase) -> None:
    start, end, seconds = phase.start.at, phase.end.at, phase.seconds
    syncs = bench.syncs.count(start, end)
    busiest = bench.syncs.busiest_second(start, end)
    reads = bench.snapshots.count(start, end)
    frames = bench.frames.count(start, end)
    changes = phase.end.changes - phase.start.changes
    notices = phase.end.notices - phase.start.notices
    lines = phase.end.lines - phase.start.lines
    turns = bench.turns.took(start, end)
    print(f"{phase.name} ({seconds:.2f} s)")
    print(f"  lines processed        {lines:>9,}  {lines / seconds:>9,.0f} /s")
    print(f"  StateChanged emitted   {changes:>9,}  {changes / seconds:>9,.0f} /s")
    print(f"  notices emitted        {notices:>9,}  {notices / seconds:>9,.1f} /s")
    print(
        f"  refreshes (app.sync)   {syncs:>9,}  {syncs / seconds:>9,.1f} /s"
        f"  (busiest 1 s window: {busiest})"
    )
    print(f"  snapshot() by the app  {reads:>9,}  {reads / seconds:>9,.1f} /s")
    print(f"  frames composed        {frames:>9,}  {frames / seconds:>9,.1f} /s")
    if syncs:
        print(f"  coalescing             {changes / syncs:>9,.0f} StateChanged per refresh")
        print(f"  frames per refresh     {frames / syncs:>9.1f}")
    print(f"  event-loop turns       {len(turns):>9,}  {len(turns) / seconds:>9,.1f} /s")
    print(f"    turn duration        {ms_spread(turns)}")
    cpu = phase.end.cpu - phase.start.cpu
    print(f"  CPU of this process    {cpu:>9.2f} s {cpu / seconds:>9.0%} of a core")
    ui = 0.0
    for name, recorder in (
        ("sync", bench.syncs),
        ("layout", bench.layouts),
        ("repaint", bench.repaints),
    ):
        took = recorder.cpu_took(start, end)
        ui += sum(took)
        print(f"    UI {name:<7} x{len(took):<5}  CPU {ms_spread(took)}")
    print(f"    UI share of CPU      {ui / cpu:.0%} (sync + layout + repaint)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", type=int, default=0, metavar="N")
    parser.add_argument(
        "--sim-delay",
        type=float,
        default=0.0,
        metavar="S",
        help="pause between an instance's lines (default 0: full speed)",
    )
    parser.add_argument(
        "--same-loop",
        action="store_true",
        help="run the orchestrator inside the monitor's event loop, not on its own thread",
    )
    args = parser.parse_args()

    pace = "at full speed" if args.sim_delay == 0 else f"one line every {args.sim_delay:g} s"
    print(
        f"UI under load: {INSTANCES} simulated instances {pace}"
        f" ({' '.join(SIM_ARGS)} --sim-delay {args.sim_delay:g}),"
        f" monitor headless at {SIZE[0]}x{SIZE[1]}, refresh_interval 0.1 s"
    )
    print(machine_note())
    where = "inside the monitor's event loop" if args.same_loop else "on its own thread"
    print(f"the run: {where}")
    bench = Bench(args.sim_delay, same_loop=args.same_loop)
    wall0 = time.perf_counter()
    profiler = cProfile.Profile() if args.profile else None
    if profiler is not None:
        profiler.runcall(asyncio.run, bench.run())
    else:
        asyncio.run(bench.run())
    wall = time.perf_counter() - wall0
    print(f"run exit code {bench.exit_code} (130: stopped by request), wall {wall:.1f} s\n")

    for phase in bench.phases:
        report_phase(bench, phase)
    print()
    latencies = [p.latency_ms for p in bench.presses]
    drawn = [p.drawn_ms for p in bench.presses]
    press_calls = [(p.returned - p.started) * 1000 for p in bench.presses]
    print(f"m pressed {len(bench.presses)} times while streaming:")
    print(f"  to mode applied (ms)  {fmt_list(latencies, 1)}")
    print(f"  to first frame (ms)   {fmt_list(drawn, 1)}")
    turns = [bench.turns.count(p.started, p.applied) for p in bench.presses]
    print(f"  loop turns to applied {turns}")
    print(f"  pilot.press call (ms) {fmt_list(press_calls, 0)}  (waits for idle: harness)")
    if latencies:
        print(
            f"  applied: min {min(latencies):.1f}, median {median(latencies):.1f},"
            f" max {max(latencies):.1f} ms; drawn: median {median(drawn):.1f},"
            f" max {max(drawn):.1f} ms"
        )
    left = [pid for pid in bench.pids if not group_gone(pid)]

    if profiler is not None:
        text = io.StringIO()
        stats = pstats.Stats(profiler, stream=text)
        stats.sort_stats("tottime").print_stats(args.profile)
        stats.sort_stats("cumulative").print_stats(args.profile)
        print("\nProfile (by own time, then cumulative):")
        print(text.getvalue())

    print("\nTargets")
    verdicts = Verdicts()
    start, end = bench.phases[0].start.at, bench.phases[-1].end.at
    per_s = bench.syncs.count(start, end) / (end - start)
    verdicts.check("refreshes per s, mean", per_s, TARGET_REFRESHES_PER_S, "/s")
    busiest = bench.syncs.busiest_second(start, end)
    verdicts.check("refreshes in the busiest 1 s", busiest, TARGET_REFRESHES_PER_S)
    for name, value in (("median", median(latencies)), ("max", max(latencies))):
        verdicts.require(
            f"m to mode applied, {name} < {TARGET_LATENCY_MS:g} ms",
            value < TARGET_LATENCY_MS,
            f"{value:.1f} ms",
        )
    verdicts.require(
        f"all {INSTANCES} instances streamed through both phases",
        bench.still_streaming == INSTANCES,
        f"{bench.still_streaming} still streaming at the end",
    )
    verdicts.require(
        "every instance process stopped at the end",
        len(bench.pids) == INSTANCES and not left,
        f"{len(bench.pids) - len(left)} of {len(bench.pids)} process groups gone",
    )
    return verdicts.summary()


if __name__ == "__main__":
    sys.exit(main())
