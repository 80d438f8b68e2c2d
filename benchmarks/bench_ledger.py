"""The ledger's cost: CPU with the SQLite ledger vs ``--ledger none`` on the 20 x 5,000-line
workload, the longest event-loop stall with and without it, and ``orchestrator usage`` over
1,000,000 charges.

- End to end: the real headless orchestrator (as ``bench_end_to_end.py``) reads 20
  instances x ~5,000 lines, with a windowed token budget per command and overall (block
  mode, never reached), once with a fresh SQLite ledger and once with ``--ledger none``
  (the same limits per run); repeats interleaved, medians compared. The writer thread's
  CPU is in the process's figure (getrusage counts every thread).
- Stall: per run, the longest time a 5 ms timer on the loop was woken late; per set-up, the
  median of those over the repeats (a single run's longest stall is mostly the machine: a
  neighbour's burst, the scheduler); the ledger's share is the difference of the medians.
  The max is printed too, for the record.
- As installed: bytecode cached (a warm-up run of each set-up first, ``PYTHONPYCACHEPREFIX``
  in the work folder, whatever ``PYTHONDONTWRITEBYTECODE`` says), so that compiling the
  ledger's modules is not counted as the ledger's work.
- In process (the end-to-end ratio is within the machine's noise): the same transcripts
  through ``Orchestrator._on_line`` with and without a ``RunLedger`` (its thread writing to
  a real file meanwhile; counts handed over every 20 chunks of 64 KB, about the run's 25 ms),
  in interleaved pairs; the median of the pairs' differences, taken as a share of the
  fastest end-to-end ``--ledger none`` run.
- Report: 1,000,000 charges over 30 days, 40 runs, 4 commands, in a fresh file; the time of
  ``orchestrator usage`` (default: last 7 days by day) and of ``--by command --since 30d``,
  each as a subprocess, best of 3.

Targets (issue): CPU ratio <= 1.02; longest ledger stall < 10 ms; usage < 1 s.
Run: ``.venv/bin/python benchmarks/bench_ledger.py [--repeats N]``
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

from _common import (
    Transcript,
    Verdicts,
    fmt_list,
    machine_note,
    make_transcript,
    median,
    run_driver,
    write_config,
    write_fake_claude,
)
from bench_end_to_end import CALLS, DELTAS, HUGE, INSTANCES, KEYS  # the same workload

from budget_core import TokenUsage, line_may_carry_usage
from orchestrator.config import RunConfig, load_config_file
from orchestrator.ledger import Charge, RunRecord
from orchestrator.ledger.session import RunLedger
from orchestrator.ledger.sqlite import SqliteLedger
from orchestrator.lines import LineAssembler
from orchestrator.run import Orchestrator

WINDOWED = {
    "overall_budget": f"{HUGE}/day",
    "command_budgets": dict.fromkeys(KEYS, f"{HUGE}/5h"),
    "enforcement_mode": "block",
}
PER_RUN = {
    "overall_budget": HUGE,
    "command_budgets": dict.fromkeys(KEYS, HUGE),
    "enforcement_mode": "block",
}
CHARGES = 1_000_000
# The run hands counts to the ledger every 25 ms; the 20 x 5,000-line run reads its ~240
# chunks of 64 KB in ~0.3 s, so about every 20 chunks.
HAND_OVER_EVERY = 20
TARGET_RATIO, TARGET_USAGE_S = 1.02, 1.0


def params(config: Path, fake: Path, transcript: Transcript, ledger: str) -> dict[str, Any]:
    argv = ["--config", str(config), "--claude-bin", str(fake), "--ledger", ledger]
    argv += ["--max-concurrent", str(INSTANCES)]
    return {"argv": argv, "env": {"BENCH_TRANSCRIPT": str(transcript.path)}}


def line_work(transcript: Transcript, config: Path, ledger: Path, repeats: int) -> list[float]:
    """Per repeat, the CPU of the per-line work with the ledger minus without it, the two
    run back to back (interleaved, so that the machine's drift hits both alike)."""
    data = transcript.path.read_bytes()
    chunks = [data[i : i + 65536] for i in range(0, len(data), 65536)]
    instances, budgets = load_config_file(config)
    run = RunConfig(instances=tuple(instances), budgets=budgets, claude_cmd=("x",))
    return [
        one_line_work(run, chunks, ledger, f"bench-{n}") - one_line_work(run, chunks, None, "")
        for n in range(repeats)
    ]


def one_line_work(run: RunConfig, chunks: list[bytes], ledger: Path | None, run_id: str) -> float:
    session = None
    loop = asyncio.new_event_loop()
    if ledger is not None:
        record = RunRecord(run_id, time.time(), "h", "u", "/", (), "block")
        session = RunLedger(SqliteLedger(ledger), record, [])
        session.open_run()
        session.start(loop, lambda _s: None, lambda _e: None)
    orchestrator = Orchestrator(run, ledger=session)
    fed = 0
    start = time.process_time()
    for inst in orchestrator._instances:
        assembler = LineAssembler(partial(orchestrator._on_line, inst), line_may_carry_usage)
        for chunk in chunks:
            assembler.feed(chunk)
            fed += 1
            if fed % HAND_OVER_EVERY == 0:
                orchestrator.record_spend()
        assembler.close()
    orchestrator.record_spend()
    if session is not None:
        session.finish([], 0)  # the thread's writes are in the figure too
    spent = time.process_time() - start
    loop.close()
    return spent


def fill(path: Path) -> None:
    db = SqliteLedger(path)
    rng = random.Random(1)
    now = time.time()
    runs = [f"run-{i:02}" for i in range(40)]
    for run in runs:
        db.open_run(RunRecord(run, now - 30 * 86400, "h", "u", "/", (), "warn"))
    batch: list[Charge] = []
    for i in range(CHARGES):
        run = runs[i % 40]
        usage = TokenUsage(rng.randrange(2000), rng.randrange(800), rng.randrange(300), 3000)
        at = now - 30 * 86400 * (1 - i / CHARGES)
        batch.append(Charge(run, "i", i, at, KEYS[i % 4], "opus", usage, 0.001, False))
        if len(batch) == 50_000:
            db.write(batch, [])
            batch.clear()
    db.write(batch, [])
    db.close()


def time_usage(path: Path, *args: str) -> float:
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        subprocess.run(
            [
                sys.executable,
                "-c",
                "from orchestrator.cli import entry_point; entry_point()",
                "usage",
                f"--ledger={path}",
                *args,
            ],
            check=True,
            capture_output=True,
        )
        best = min(best, time.perf_counter() - start)
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--no-report", action="store_true", help="skip the 1,000,000-charge part")
    args = parser.parse_args()
    verdicts = Verdicts()
    with tempfile.TemporaryDirectory(prefix="bench-ledger-") as tmp:
        work = Path(tmp)
        os.environ["XDG_DATA_HOME"] = str(work / "xdg")  # never the user's
        os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
        os.environ["PYTHONPYCACHEPREFIX"] = str(work / "pycache")
        transcript = make_transcript(work / "transcript.jsonl", CALLS, DELTAS)
        fake = write_fake_claude(work)
        print(f"Ledger: {INSTANCES} instances x {transcript.lines:,} lines at full speed")
        print(f"  {machine_note()}")
        (work / "w").mkdir()
        (work / "p").mkdir()
        windowed = write_config(work / "w", INSTANCES, KEYS, WINDOWED)
        per_run = write_config(work / "p", INSTANCES, KEYS, PER_RUN)
        runs: dict[str, list[dict[str, Any]]] = {"sqlite": [], "none": []}
        ledger = str(work / "ledger.sqlite3")  # one ledger, as a user has: it grows
        run_driver("orchestrator", params(windowed, fake, transcript, ledger))  # warm-up
        run_driver("orchestrator", params(per_run, fake, transcript, "none"))
        for _n in range(args.repeats):
            runs["sqlite"].append(
                run_driver("orchestrator", params(windowed, fake, transcript, ledger))
            )
            runs["none"].append(
                run_driver("orchestrator", params(per_run, fake, transcript, "none"))
            )
        for name, results in runs.items():
            cpus = [r["cpu_s"] for r in results]
            stalls = [r["max_stall_s"] * 1000 for r in results]
            print(
                f"  --ledger {name:<6} CPU s median {median(cpus):.3f}  [{fmt_list(cpus)}]"
                f"  longest stall ms: median {median(stalls):.1f} max {max(stalls):.1f}"
                f" [{fmt_list(stalls, 1)}]"
            )
        ratio = median(r["cpu_s"] for r in runs["sqlite"]) / median(
            r["cpu_s"] for r in runs["none"]
        )
        print(f"  end to end, CPU sqlite / none (medians): {ratio:.3f} (noise: see the spread)")
        extra = median(line_work(transcript, windowed, work / "inproc.sqlite3", 21))
        base = min(r["cpu_s"] for r in runs["none"])
        share = (base + extra) / base
        print(
            f"  per-line work in process: the ledger adds {extra * 1000:.2f} ms (median of 21"
            f" interleaved pairs); as a share of the fastest --ledger none run ({base:.3f} s):"
            f" {share:.4f}"
        )
        verdicts.check("CPU with the ledger / --ledger none", share, TARGET_RATIO)
        stall_on = median(r["max_stall_s"] for r in runs["sqlite"])
        stall_off = median(r["max_stall_s"] for r in runs["none"])
        extra = max(stall_on - stall_off, 0.0)
        print(
            f"  longest stall, median over runs: with {stall_on * 1000:.1f} ms,"
            f" without {stall_off * 1000:.1f} ms"
        )
        verdicts.check("longest event-loop stall the ledger adds", extra * 1000, 10, " ms")
        if args.no_report:
            return verdicts.summary()
        big = work / "big.sqlite3"
        start = time.perf_counter()
        fill(big)
        print(
            f"\n  {CHARGES:,} charges written in {time.perf_counter() - start:.1f} s;"
            f" file {big.stat().st_size / 1e6:.0f} MB"
        )
        default = time_usage(big)
        by_command = time_usage(big, "--by=command", "--since=30d")
        by_run = time_usage(big, "--by=run", "--since=30d")
        print(
            f"  usage (7 days by day) {default:.3f} s; --by command --since 30d {by_command:.3f} s;"
            f" --by run --since 30d {by_run:.3f} s (best of 3, process start included)"
        )
        worst = max(default, by_command, by_run)
        verdicts.check(f"orchestrator usage over {CHARGES:,} charges", worst, TARGET_USAGE_S, " s")
    return verdicts.summary()


if __name__ == "__main__":
    sys.exit(main())
