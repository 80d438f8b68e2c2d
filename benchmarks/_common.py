"""Shared machinery of the benchmarks: transcripts, a fake ``claude``, and measured drivers.

The benchmarks measure the orchestrator's *own* CPU and memory, not its children's. Each
measured run happens in a fresh Python process (a "driver", this file run as a script) that
imports everything first, then runs either the real headless orchestrator
(``orchestrator.cli.main``) or a minimal reference reader, and reports
``resource.getrusage(RUSAGE_SELF)``: utime + stime of that process only (children are
separate processes) and its peak RSS. Results come back as JSON in a file.

The fake ``claude`` replays a transcript written beforehand by ``orchestrator.simulator``
with one ``write()`` per line, as the real CLI does, so that producing the lines costs the
children almost nothing and the line mix is the simulator's (mostly ``content_block_delta``).

Run as ``python benchmarks/_common.py DRIVER PARAMS.json`` only by the benchmark scripts.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from orchestrator import simulator  # noqa: E402

# The fake claude: replays $BENCH_TRANSCRIPT one write per line, optionally slowly, and can
# insert $BENCH_HUGE_COUNT tool-result lines of $BENCH_HUGE_BYTES each after the first line.
# It ignores its command line, like a recording would.
FAKE_CLAUDE = """\
import os, sys, time

env = os.environ
with open(env["BENCH_TRANSCRIPT"], "rb") as f:
    lines = f.read().splitlines(keepends=True)
delay = float(env.get("BENCH_LINE_DELAY", "0"))
huge_count = int(env.get("BENCH_HUGE_COUNT", "0"))
huge_bytes = int(env.get("BENCH_HUGE_BYTES", "0"))
kind = env.get("BENCH_HUGE_KIND", "user")
out = sys.stdout.fileno()


def write(data):
    view = memoryview(data)
    while view:
        view = view[os.write(out, view):]


def write_huge(size):
    if kind == "user":
        head = b'{"type":"user","message":{"role":"user","content":[{"tool_use_id":"toolu_x",'
        head += b'"type":"tool_result","content":"'
    else:  # a line the reader must keep whole and parse: counted as a (zero-usage) call
        head = b'{"type":"assistant","message":{"id":"msg_huge","type":"message",'
        head += b'"role":"assistant","model":"<synthetic>","content":[{"type":"text","text":"'
    tail = b'"}]},"parent_tool_use_id":null,"session_id":"s"}\\n'
    block = b"A" * (1 << 20)
    left = size - len(head) - len(tail) + 1
    write(head)
    while left > 0:
        write(block[: min(left, len(block))])
        left -= len(block)
    write(tail)


for index, line in enumerate(lines):
    if delay:
        time.sleep(delay)
    write(line)
    if index == 0:
        for _ in range(huge_count):
            write_huge(huge_bytes)
"""

DRIVER = Path(__file__).resolve()


# -- transcripts -------------------------------------------------------------------------


@dataclass(frozen=True)
class Transcript:
    path: Path
    lines: int
    size: int
    expected: dict[str, int]  # token totals a correct counter finds (input, output, ...)

    @property
    def expected_total(self) -> int:
        return sum(self.expected.values())

    def kinds(self) -> dict[str, int]:
        """How many lines of each kind (``stream_event/<event type>`` for stream events)."""
        counts: dict[str, int] = {}
        for raw in self.path.read_bytes().splitlines():
            data = json.loads(raw)
            kind = data["type"]
            if kind == "stream_event":
                kind += "/" + data["event"]["type"]
            counts[kind] = counts.get(kind, 0) + 1
        return dict(sorted(counts.items(), key=lambda kv: -kv[1]))


def make_transcript(path: Path, calls: int, deltas: int, prompt: str = "/bench") -> Transcript:
    """A stream-json transcript from the simulator, with partial messages on."""
    cfg = simulator.Config(prompt=prompt, partial=True, calls=calls, deltas=deltas)
    out, err = io.BytesIO(), io.BytesIO()
    code = simulator.run(cfg, out, err)
    if code != 0:
        raise RuntimeError(f"simulator exited {code}: {err.getvalue()!r}")
    data = out.getvalue()
    path.write_bytes(data)
    expected = simulator.expected_usage(
        calls, cfg.input_tokens, cfg.output_tokens, cfg.cache_creation, cfg.cache_read
    )
    return Transcript(path, data.count(b"\n"), len(data), expected)


def write_fake_claude(directory: Path) -> Path:
    """An executable ``claude`` stand-in (see FAKE_CLAUDE) in ``directory``."""
    path = directory / "fake-claude"
    path.write_text(f"#!{sys.executable} -S\n{FAKE_CLAUDE}")
    path.chmod(0o755)
    return path


def write_config(
    directory: Path, count: int, keys: Sequence[str], budgets: dict[str, Any] | None
) -> Path:
    """A ``--config`` file: ``count`` instances spread over the slash commands ``keys``."""
    instances = [
        {"name": f"i{n:03d}", "command": f"{keys[n % len(keys)]} part {n}"} for n in range(count)
    ]
    data: dict[str, Any] = {"instances": instances}
    if budgets is not None:
        data["budget"] = budgets
    path = directory / ("config-budgets.json" if budgets else "config-plain.json")
    path.write_text(json.dumps(data, indent=1))
    return path


# -- measured runs -----------------------------------------------------------------------


def run_driver(kind: str, params: dict[str, Any], timeout: float = 300) -> dict[str, Any]:
    """Run one measured driver in a fresh Python process; return its JSON result."""
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        params = {**params, "result": str(Path(tmp) / "result.json")}
        params_path = Path(tmp) / "params.json"
        params_path.write_text(json.dumps(params))
        proc = subprocess.run(
            [sys.executable, str(DRIVER), kind, str(params_path)],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
            text=True,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"driver {kind} failed ({proc.returncode}):\n{proc.stderr}")
        result: dict[str, Any] = json.loads(Path(params["result"]).read_text())
        result["stderr"] = proc.stderr
        return result


def _usage_now() -> tuple[float, int]:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime, ru.ru_maxrss


def _measure(call: Callable[[], Any], profile: int) -> tuple[Any, dict[str, Any]]:
    """Run ``call`` and return its result and this process's CPU, wall time and peak RSS."""
    profiler = None
    if profile:
        import cProfile

        profiler = cProfile.Profile()
    cpu0, _ = _usage_now()
    wall0 = time.perf_counter()
    value = profiler.runcall(call) if profiler is not None else call()
    wall = time.perf_counter() - wall0
    cpu1, maxrss_kb = _usage_now()
    figures = {"cpu_s": cpu1 - cpu0, "wall_s": wall, "maxrss_mb": maxrss_kb / 1024}
    if profiler is not None:
        import pstats

        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(profile)
        figures["profile"] = text.getvalue()
    return value, figures


def _drive_orchestrator(params: dict[str, Any]) -> dict[str, Any]:
    """The real headless orchestrator (``orchestrator.cli.main``), stdout to /dev/null."""
    import orchestrator.cli as cli

    created: list[Any] = []
    stalls: list[tuple[float, float]] = []  # (when, how late the loop woke us)

    class Recording(cli.Orchestrator):
        """Keeps a reference so live (stream-only) counts can be checked afterwards, and
        measures how long the event loop is held up (a 5 ms timer, woken late)."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            created.append(self)

        async def run(self) -> int:
            async def watch_loop() -> None:
                while True:
                    before = time.monotonic()
                    await asyncio.sleep(0.005)
                    now = time.monotonic()
                    stalls.append((now, now - before - 0.005))

            watcher = asyncio.create_task(watch_loop())
            try:
                return int(await super().run())
            finally:
                watcher.cancel()

    cli.Orchestrator = Recording
    # No benchmark writes into the user's ledger: none, unless the set-up names one.
    os.environ["ORCHESTRATOR_LEDGER"] = "none"
    os.environ.update(params.get("env", {}))
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115
    code, figures = _measure(lambda: cli.main(params["argv"]), params.get("profile", 0))
    sys.stdout.flush()
    live, spans = {}, []
    for orch in created:
        for inst in orch._instances:
            live[inst.name] = inst.tracker.live_usage.as_dict()
            spans.append((inst.started_at, inst.ended_at))
    last_launch = max((start for start, _ in spans if start is not None), default=0.0)
    launch_stalls = [late for at, late in stalls if at <= last_launch + 0.1]
    return {
        "exit_code": code,
        "live": live,
        "peak_running": _peak(spans),
        "max_stall_s": max((late for _, late in stalls), default=0.0),
        "max_launch_stall_s": max(launch_stalls, default=0.0),
        **figures,
    }


def _peak(spans: list[tuple[float | None, float | None]]) -> int:
    """The most instances that were running at the same moment."""
    edges = sorted(
        (t, step)
        for start, end in spans
        if start is not None
        for t, step in ((start, 1), (end if end is not None else float("inf"), -1))
    )
    running = peak = 0
    for _, step in edges:
        running += step
        peak = max(peak, running)
    return peak


class _MinimalReader(asyncio.SubprocessProtocol):
    """The reference: split stdout into lines, ``json.loads`` every one, drain stderr."""

    def __init__(self, done: asyncio.Future[int]) -> None:
        self.done, self.rest, self.lines, self.open = done, b"", 0, 3

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        if fd == 1:
            *lines, self.rest = (self.rest + data).split(b"\n")
            for line in lines:
                json.loads(line)
            self.lines += len(lines)

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        self._closed()

    def process_exited(self) -> None:
        self._closed()

    def _closed(self) -> None:
        self.open -= 1
        if not self.open:
            self.done.set_result(self.lines)


async def _minimal_run(argv: list[str], count: int) -> int:
    loop = asyncio.get_running_loop()

    async def one() -> int:
        done: asyncio.Future[int] = loop.create_future()
        transport, _ = await loop.subprocess_exec(
            lambda: _MinimalReader(done), *argv, stdin=subprocess.DEVNULL
        )
        lines = await done
        transport.close()
        return lines

    return sum(await asyncio.gather(*(one() for _ in range(count))))


def _drive_minimal(params: dict[str, Any]) -> dict[str, Any]:
    os.environ.update(params.get("env", {}))
    lines, figures = _measure(
        lambda: asyncio.run(_minimal_run(params["argv"], params["count"])),
        params.get("profile", 0),
    )
    return {"lines": lines, **figures}


DRIVERS = {"orchestrator": _drive_orchestrator, "minimal": _drive_minimal}


# -- reporting ---------------------------------------------------------------------------


class Verdicts:
    """Collects PASS/FAIL lines; ``exit_code()`` is 1 when any target was missed."""

    def __init__(self) -> None:
        self.results: list[tuple[str, bool]] = []

    def check(self, name: str, value: float, target: float, unit: str = "") -> bool:
        """``value <= target``: print figure, target, ratio and verdict."""
        ok = value <= target
        ratio = value / target if target else float("inf")
        print(
            f"  {'PASS' if ok else 'FAIL'}  {name}: {value:.4g}{unit} "
            f"(target <= {target:g}{unit}, {ratio:.2f}x of target)"
        )
        self.results.append((name, ok))
        return ok

    def require(self, name: str, ok: bool, detail: str = "") -> bool:
        print(f"  {'PASS' if ok else 'FAIL'}  {name}" + (f": {detail}" if detail else ""))
        self.results.append((name, ok))
        return ok

    def summary(self) -> int:
        failed = [name for name, ok in self.results if not ok]
        print()
        if failed:
            print(f"RESULT: FAIL ({len(failed)} of {len(self.results)} targets missed)")
            for name in failed:
                print(f"  missed: {name}")
            return 1
        print(f"RESULT: PASS (all {len(self.results)} targets met)")
        return 0


def machine_note() -> str:
    """Cores and load: CPU figures are only comparable on an otherwise idle machine."""
    one, five, _ = os.getloadavg()
    note = f"machine: {os.cpu_count()} cores, load average {one:.2f} (1 min) {five:.2f} (5 min)"
    if one > 0.5 * (os.cpu_count() or 1):
        note += "; NOT idle: CPU figures are noisy"
    return note


def median(values: Iterable[float]) -> float:
    return statistics.median(list(values))


def fmt_list(values: Iterable[float], digits: int = 3) -> str:
    return "[" + ", ".join(f"{v:.{digits}f}" for v in values) + "]"


def main(argv: Sequence[str]) -> int:
    kind, params_path = argv
    params = json.loads(Path(params_path).read_text())
    result = DRIVERS[kind](params)
    Path(params["result"]).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
