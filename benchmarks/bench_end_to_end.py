"""End-to-end reading cost: 20 instances x ~5,000 stream-json lines each, at full speed.

What it measures: the CPU seconds of the orchestrator process itself (utime + stime from
``getrusage(RUSAGE_SELF)`` in a driver process that runs ``orchestrator.cli.main``
headless; children are not included) per 1,000 stdout lines, and the wall time, in four
set-ups that read the very same children:

- ``budgets off``: no budget configured;
- ``budgets on``: a token budget per command and an overall token budget, all far too large
  to stop anything (every usage line is charged, nothing is enforced);
- ``budgets on +USD``: the same plus a cost budget per command and overall, in block mode
  (every kind of budget on every key: the most work per charge);
- ``minimal reader``: a few lines of asyncio that read the same pipes, split lines and
  ``json.loads`` every one (the cost of "just reading the pipes").

The children are a fake ``claude`` that replays a transcript written by
``orchestrator.simulator`` (``--include-partial-messages``: mostly ``content_block_delta``
lines, assistant lines, tool results, a result line) with one ``write()`` per line, as the
CLI does; so the children cost little CPU and the figures are not drowned by the
simulator's own JSON encoding. The runs of the set-ups are interleaved and repeated; the
ratios use the median of the repeats (every repeat is printed). CPU figures are only
comparable on an otherwise idle machine: the load average is printed first.

The budgets-on overhead (a few ms in a 0.2 s run) is smaller than the run-to-run noise of
the end-to-end figures (printed, with that noise), so the on/off target is checked on the
overhead measured without the pipes: the same transcripts fed in process through the real
line splitter and ``Orchestrator._on_line`` with each set-up's budgets (min of repeats); the
difference is the budget work, the only work that differs between the set-ups (their
profiles differ by those calls alone), taken as a share of the fastest budgets-off run's
end-to-end CPU.

Targets (issue): budgets-on / budgets-off <= 1.02; orchestrator <= 1.5x the minimal reader;
orchestrator <= 0.02 CPU-s per 1,000 lines (the earlier orchestrator: about 0.26).

Run: ``.venv/bin/python benchmarks/bench_end_to_end.py [--repeats N] [--profile N]``
(``--profile N`` also prints the N costliest functions of one "budgets on +USD" run).
"""

from __future__ import annotations

import argparse
import statistics
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

from budget_core import line_may_carry_usage
from orchestrator.config import RunConfig, load_config_file
from orchestrator.lines import LineAssembler
from orchestrator.palette import Palette
from orchestrator.report import HeadlessReporter
from orchestrator.run import Orchestrator

INSTANCES = 20
CALLS, DELTAS = 50, 89  # 4,998 lines per instance
KEYS = ("/analyze", "/review", "/test", "/docs")
HUGE = 10**12  # tokens; far above anything the run spends
TOKEN_BUDGETS: dict[str, Any] = {
    "overall_budget": HUGE,
    "command_budgets": dict.fromkeys(KEYS, HUGE),
}
ALL_BUDGETS: dict[str, Any] = {
    **TOKEN_BUDGETS,
    "overall_cost_budget": 1e9,
    "command_cost_budgets": dict.fromkeys(KEYS, 1e9),
    "enforcement_mode": "block",
}
TARGET_ON_OFF = 1.02
TARGET_VS_MINIMAL = 1.5
TARGET_CPU_PER_1K = 0.02
EARLIER_CPU_PER_1K = 0.26


def orchestrator_params(config: Path, fake: Path, transcript: Transcript) -> dict[str, Any]:
    argv = ["--config", str(config), "--claude-bin", str(fake)]
    argv += ["--max-concurrent", str(INSTANCES)]
    return {"argv": argv, "env": {"BENCH_TRANSCRIPT": str(transcript.path)}}


def line_work_seconds(
    transcript: Transcript, configs: dict[str, Path], repeats: int = 25
) -> dict[str, float]:
    """CPU seconds of the orchestrator's per-line work for one run, per set-up (min of repeats).

    A precise complement to the end-to-end ratio, which the machine's noise blurs: every
    instance's transcript is fed in 64 KB chunks through the real ``LineAssembler`` and
    ``Orchestrator._on_line`` (tracker, budget charges, events to a headless reporter), in
    process: everything the run does per line except reading the pipes, which is the same
    with budgets on or off.
    """
    data = transcript.path.read_bytes()
    chunks = [data[i : i + 65536] for i in range(0, len(data), 65536)]
    runs = {}
    for name, path in configs.items():
        instances, budgets = load_config_file(path)
        runs[name] = RunConfig(instances=tuple(instances), budgets=budgets, claude_cmd=("x",))

    def feed(run: RunConfig) -> float:
        orchestrator = Orchestrator(run)
        HeadlessReporter(orchestrator, Palette(False), 0)
        start = time.process_time()
        for inst in orchestrator._instances:
            on_line = partial(orchestrator._on_line, inst)
            assembler = LineAssembler(on_line, line_may_carry_usage)
            for chunk in chunks:
                assembler.feed(chunk)
            assembler.close()
        return time.process_time() - start

    best = dict.fromkeys(configs, float("inf"))
    for _ in range(repeats):
        for name, run in runs.items():
            best[name] = min(best[name], feed(run))
    return best


def check_counts(result: dict[str, Any], transcript: Transcript, label: str) -> list[str]:
    """Every instance counted exactly, live (from the stream) as well as final."""
    problems = []
    if result["exit_code"] != 0:
        problems.append(f"{label}: exit code {result['exit_code']}")
    for name, live in result["live"].items():
        if live != {**transcript.expected, "total": transcript.expected_total}:
            problems.append(f"{label}: {name} live count {live} != {transcript.expected}")
    if len(result["live"]) != INSTANCES:
        problems.append(f"{label}: {len(result['live'])} instances, expected {INSTANCES}")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--profile", type=int, default=0, metavar="N")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-e2e-") as tmp:
        work = Path(tmp)
        transcript = make_transcript(work / "transcript.jsonl", CALLS, DELTAS)
        fake = write_fake_claude(work)
        total_lines = transcript.lines * INSTANCES
        kinds = ", ".join(f"{k} {n}" for k, n in transcript.kinds().items())
        print(f"End-to-end: {INSTANCES} instances x {transcript.lines:,} lines at full speed")
        print(f"  {machine_note()}")
        print(f"  per instance: {transcript.size / 1e6:.2f} MB; line mix: {kinds}")
        print(f"  total {total_lines:,} lines; {args.repeats} interleaved repeats per set-up")

        setups, configs = {}, {}
        for name, budgets in (
            ("budgets off", None),
            ("budgets on", TOKEN_BUDGETS),
            ("budgets on +USD", ALL_BUDGETS),
        ):
            directory = work / name.replace(" ", "-")
            directory.mkdir()
            config = configs[name] = write_config(directory, INSTANCES, KEYS, budgets)
            setups[name] = orchestrator_params(config, fake, transcript)
        minimal = {
            "argv": [str(fake)],
            "count": INSTANCES,
            "env": {"BENCH_TRANSCRIPT": str(transcript.path)},
        }
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in [*setups, "minimal reader"]}
        problems: list[str] = []
        for _ in range(args.repeats):
            for name, params in setups.items():
                result = run_driver("orchestrator", params)
                problems += check_counts(result, transcript, name)
                runs[name].append(result)
            result = run_driver("minimal", minimal)
            if result["lines"] != total_lines:
                problems.append(f"minimal reader saw {result['lines']} lines, not {total_lines}")
            runs["minimal reader"].append(result)

        print()
        print(
            f"  {'set-up':<16} {'CPU-s/1k lines':>14} {'CPU s':>7} {'min':>6} {'wall s':>7}"
            "  every run's CPU s"
        )
        per_1k = {}
        for name, results in runs.items():
            cpus = [r["cpu_s"] for r in results]
            per_1k[name] = median(cpus) / total_lines * 1000
            wall = median(r["wall_s"] for r in results)
            print(
                f"  {name:<16} {per_1k[name]:>14.5f} {median(cpus):>7.3f} {min(cpus):>6.3f}"
                f" {wall:>7.2f}"
                f"  {fmt_list(cpus)}"
            )
        print(f"  (medians; the earlier orchestrator: about {EARLIER_CPU_PER_1K} CPU-s/1k lines)")
        print("  (CPU: the reader process only, children excluded; wall: the whole run)")

        line_work = line_work_seconds(transcript, configs)
        off_cpus = [r["cpu_s"] for r in runs["budgets off"]]
        base_cpu = min(off_cpus)  # the least disturbed run: the strictest denominator
        q1, _, q3 = statistics.quantiles(off_cpus, n=4)
        print("\n  Budgets on / off, end to end (ratio of the medians above):")
        for name in ("budgets on", "budgets on +USD"):
            print(f"  {name:<16} {per_1k[name] / per_1k['budgets off']:.3f}")
        spread = (q3 - q1) / 2 / median(off_cpus)
        print(
            f"  (noise: budgets-off runs alone vary by +-{spread:.1%} between their quartiles;"
            " so the overhead is also measured without the pipes, below)"
        )
        print("\n  Per-line work alone (transcripts fed through Orchestrator._on_line, min of 25):")
        overhead = {}
        for name, seconds in line_work.items():
            extra = seconds - line_work["budgets off"]
            overhead[name] = 1 + extra / base_cpu
            print(
                f"  {name:<16} {seconds * 1000:6.1f} ms; {extra * 1000:+5.1f} ms over budgets off"
                f" = {extra / base_cpu:+.2%} of the fastest budgets-off run's CPU"
            )

        if args.profile:
            params = {**setups["budgets on +USD"], "profile": args.profile}
            print("\nProfile of one 'budgets on +USD' run (by own time):")
            print(run_driver("orchestrator", params)["profile"])

    print("\nTargets")
    verdicts = Verdicts()
    verdicts.require(
        "every instance counted exactly (live and final), every line read",
        not problems,
        "; ".join(problems[:5]) or f"{INSTANCES} x {transcript.expected_total:,} tokens",
    )
    for name in ("budgets on", "budgets on +USD"):
        verdicts.check(
            f"{name} / budgets off CPU (per-line work measured alone)",
            overhead[name],
            TARGET_ON_OFF,
        )
    for name in setups:
        verdicts.check(
            f"{name} / minimal reader CPU",
            per_1k[name] / per_1k["minimal reader"],
            TARGET_VS_MINIMAL,
        )
    for name in setups:
        verdicts.check(f"{name} CPU-s per 1,000 lines", per_1k[name], TARGET_CPU_PER_1K)
    return verdicts.summary()


if __name__ == "__main__":
    sys.exit(main())
