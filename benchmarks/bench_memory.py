"""Peak memory of the orchestrator with huge stdout lines and a lot of total output.

What it measures: the peak RSS (``ru_maxrss`` of ``getrusage(RUSAGE_SELF)``) of a driver
process that runs the real headless orchestrator (``orchestrator.cli.main``); children are
separate processes and not included. Scenarios, one instance each:

- ``baseline``: a normal simulated run (a few hundred lines);
- ``50 MB line``: ``orchestrator/simulator.py --sim-fail huge-line --sim-huge-bytes 50000000``,
  a single 50 MB tool-result line;
- ``100 MB total`` and ``1 GB total``: a fake ``claude`` that prints a normal run with
  10 or 100 tool-result lines of 10 MB each inserted (about 0.1 and 1 GB of stdout);
- ``50 MB kept line``: a 50 MB line of a kind that may carry usage (a ``<synthetic>``
  assistant line), which the reader must keep whole and JSON-parse (the worst case).

Every scenario must still count the run's tokens exactly.

Targets (issue): peak RSS under 200 MB with a 50 MB line (either kind) and with 1 GB of
output, and not growing with total output (1 GB total within 10 MB of 100 MB total).

Run: ``.venv/bin/python benchmarks/bench_memory.py``
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

from _common import ROOT, Transcript, Verdicts, make_transcript, run_driver, write_fake_claude

TARGET_PEAK_MB = 200.0
TARGET_GROWTH_MB = 10.0
HUGE_LINE = 50_000_000
BIG_LINE = 10_000_000
CALLS, DELTAS = 5, 20


def simulator_wrapper(directory: Path, sim_args: str) -> Path:
    """An executable that runs the repository's simulator with extra ``--sim-*`` flags."""
    path = directory / "sim-claude"
    simulator = ROOT / "orchestrator" / "simulator.py"
    path.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{simulator}" "$@" {sim_args}\n')
    path.chmod(0o755)
    return path


def measure(
    name: str, claude: Path, env: dict[str, str], expected: dict[str, int]
) -> dict[str, Any]:
    argv = ["/bench", "--claude-bin", str(claude)]
    result = run_driver("orchestrator", {"argv": argv, "env": env})
    (live,) = result["live"].values()
    result["exact"] = result["exit_code"] == 0 and live == {
        **expected,
        "total": sum(expected.values()),
    }
    print(
        f"  {name:<16} peak RSS {result['maxrss_mb']:6.1f} MB   CPU {result['cpu_s']:5.2f} s"
        f"   wall {result['wall_s']:5.2f} s   counted exactly: {result['exact']}"
    )
    return result


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="bench-mem-") as tmp:
        work = Path(tmp)
        transcript: Transcript = make_transcript(work / "transcript.jsonl", CALLS, DELTAS)
        fake = write_fake_claude(work)
        sim_huge = simulator_wrapper(
            work, f"--sim-calls {CALLS} --sim-deltas {DELTAS} --sim-fail huge-line "
            f"--sim-huge-bytes {HUGE_LINE}"
        )  # fmt: skip
        expected = transcript.expected

        def replay(count: int, size: int, kind: str = "user") -> dict[str, str]:
            return {
                "BENCH_TRANSCRIPT": str(transcript.path),
                "BENCH_HUGE_COUNT": str(count),
                "BENCH_HUGE_BYTES": str(size),
                "BENCH_HUGE_KIND": kind,
            }

        print("Memory: peak RSS of the orchestrator process (one instance per scenario)")
        base = measure("baseline", fake, replay(0, 0), expected)
        huge = measure("50 MB line", sim_huge, {}, expected)
        small = measure("100 MB total", fake, replay(10, BIG_LINE), expected)
        large = measure("1 GB total", fake, replay(100, BIG_LINE), expected)
        kept = measure("50 MB kept line", fake, replay(1, HUGE_LINE, "assistant"), expected)
        print(
            f"  (output: {transcript.size / 1e3:.0f} KB run; the 100 MB / 1 GB runs add"
            f" 10 / 100 tool results of {BIG_LINE / 1e6:.0f} MB)"
        )

    print("\nTargets")
    verdicts = Verdicts()
    verdicts.require(
        "every scenario counted exactly",
        all(r["exact"] for r in (base, huge, small, large, kept)),
    )
    verdicts.check("peak RSS with one 50 MB line", huge["maxrss_mb"], TARGET_PEAK_MB, " MB")
    verdicts.check(
        "peak RSS with one 50 MB line kept and parsed", kept["maxrss_mb"], TARGET_PEAK_MB, " MB"
    )
    verdicts.check("peak RSS with 1 GB of output", large["maxrss_mb"], TARGET_PEAK_MB, " MB")
    verdicts.check(
        "peak RSS growth from 100 MB to 1 GB of output",
        max(0.0, large["maxrss_mb"] - small["maxrss_mb"]),
        TARGET_GROWTH_MB,
        " MB",
    )
    return verdicts.summary()


if __name__ == "__main__":
    sys.exit(main())
