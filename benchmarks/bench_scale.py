"""Scale: 200 concurrent simulated instances with slow streams, on this machine.

What it measures: 200 instances run at once (``--max-concurrent 200``) by the real headless
orchestrator (``orchestrator.cli.main`` in a driver process), with a token budget per
command and an overall budget, all too large to stop anything. Each instance prints a
simulated run (a few API calls with partial messages) one line every ``DELAY`` seconds. It
reports the orchestrator process's own CPU seconds (``getrusage(RUSAGE_SELF)``: children
excluded) over the run's wall-clock seconds, how many instances really ran at the same
time, and checks that every instance was counted exactly: its live count from the stream,
its final count, and the budgets' totals.

The children are by default a light fake ``claude`` that replays a transcript written by
``orchestrator/simulator.py`` (the Python simulator needs about 70 ms of CPU to start, and
200 of them starting at once saturate both cores for seconds, which only stretches the wall
time and flatters the CPU/wall figure). ``--simulator`` runs the simulator itself instead.

It also measures how long the event loop is held up (a 5 ms timer on the run's loop, and
how late it wakes): while 200 instances are launched, no stall may exceed 50 ms, or lines
are not read and budgets not enforced meanwhile (spawning forks on a thread of its own).

Targets (issue): every instance counted exactly; orchestrator CPU under half a core
(CPU-s / wall-s < 0.5); no event-loop stall over 50 ms while launching.

Run: ``.venv/bin/python benchmarks/bench_scale.py [--simulator] [--instances N] [--profile N]``
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from _common import ROOT, Verdicts, make_transcript, run_driver, write_config, write_fake_claude

INSTANCES = 200
CALLS, DELTAS, DELAY = 10, 10, 0.05  # 208 lines per instance, about 10 s each
KEYS = ("/analyze", "/review", "/test", "/docs")
HUGE = 10**12
BUDGETS: dict[str, Any] = {"overall_budget": HUGE, "command_budgets": dict.fromkeys(KEYS, HUGE)}
TARGET_CORE_FRACTION = 0.5
TARGET_STALL_S = 0.050  # the longest the event loop may be held up while launching


def simulator_wrapper(directory: Path) -> Path:
    """An executable ``claude``: the repository's simulator with slow-stream flags."""
    path = directory / "sim-claude"
    flags = f"--sim-calls {CALLS} --sim-deltas {DELTAS} --sim-delay {DELAY}"
    script = ROOT / "orchestrator" / "simulator.py"
    path.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{script}" "$@" {flags}\n')
    path.chmod(0o755)
    return path


def check(
    result: dict[str, Any], summary: dict[str, Any], count: int, expected: dict[str, int]
) -> list[str]:
    expected = {**expected, "total": sum(expected.values())}
    problems = []
    if result["exit_code"] != 0:
        problems.append(f"exit code {result['exit_code']}")
    if len(result["live"]) != count:
        problems.append(f"{len(result['live'])} instances counted, expected {count}")
    for name, live in result["live"].items():
        if live != expected:
            problems.append(f"{name}: live count {live} != {expected}")
    for inst in summary["instances"]:
        if inst["status"] != "succeeded" or not inst["final"] or inst["tokens"] != expected:
            problems.append(f"{inst['name']}: {inst['status']} {inst['tokens']}")
    for budget in summary["budgets"]:
        share = sum(
            1 for inst in summary["instances"] if budget["key"] in ("overall", inst["budget_key"])
        )
        if budget["used"] != share * expected["total"]:
            problems.append(f"budget {budget['key']} used {budget['used']}")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=INSTANCES)
    parser.add_argument("--simulator", action="store_true", help="run the Python simulator")
    parser.add_argument("--profile", type=int, default=0, metavar="N")
    args = parser.parse_args()
    count = args.instances

    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        work = Path(tmp)
        transcript = make_transcript(work / "transcript.jsonl", CALLS, DELTAS)
        if args.simulator:
            claude, env = simulator_wrapper(work), {}
            kind = "orchestrator/simulator.py"
        else:
            claude = write_fake_claude(work)
            env = {"BENCH_TRANSCRIPT": str(transcript.path), "BENCH_LINE_DELAY": str(DELAY)}
            kind = "replayed simulator transcripts"
        config = write_config(work, count, KEYS, BUDGETS)
        summary_path = work / "summary.json"
        argv = ["--config", str(config), "--claude-bin", str(claude)]
        argv += ["--max-concurrent", str(count), "--summary-json", str(summary_path)]
        print(
            f"Scale: {count} concurrent instances ({kind}), {transcript.lines} lines each,"
            f" one line every {DELAY} s ({CALLS} calls x {DELTAS} deltas)"
        )
        result = run_driver("orchestrator", {"argv": argv, "env": env, "profile": args.profile})
        summary = json.loads(summary_path.read_text())

    problems = check(result, summary, count, transcript.expected)
    cpu, wall = result["cpu_s"], result["wall_s"]
    total_lines = transcript.lines * count
    print(
        f"  wall {wall:.2f} s, orchestrator CPU {cpu:.2f} s, peak RSS {result['maxrss_mb']:.0f} MB,"
        f" at most {result['peak_running']} instances running at once"
    )
    print(
        f"  {total_lines:,} lines, {total_lines / wall:,.0f} lines/s on average;"
        f" {cpu / total_lines * 1000:.4f} CPU-s per 1,000 lines (launches included)"
    )
    print(
        f"  longest event-loop stall: {result['max_launch_stall_s'] * 1000:.1f} ms while"
        f" launching, {result['max_stall_s'] * 1000:.1f} ms over the whole run"
    )
    if args.profile:
        print("\nProfile (by own time):")
        print(result["profile"])

    print("\nTargets")
    verdicts = Verdicts()
    verdicts.require(
        f"all {count} instances counted exactly (live, final, budgets)",
        not problems,
        "; ".join(problems[:5]) or f"{count} x {transcript.expected_total:,} tokens",
    )
    verdicts.check("orchestrator CPU-s / wall-s", cpu / wall, TARGET_CORE_FRACTION, " cores")
    verdicts.check(
        f"longest event-loop stall while launching {count}",
        result["max_launch_stall_s"] * 1000,
        TARGET_STALL_S * 1000,
        " ms",
    )
    return verdicts.summary()


if __name__ == "__main__":
    sys.exit(main())
