"""What --metrics-file (and the alert subscriber) costs the run: 20 instances x ~5,000
stream-json lines at full speed, budgets on, as ``bench_end_to_end.py``.

Set-ups, each with ``--quiet`` (no bars: the interval changes only the metrics) and
``--status-report-interval 0.05`` (so a 0.2 s run writes the metrics file several times; the
default is every 5 s) unless said:

- ``metrics off``: token budgets per command and overall, nothing else;
- ``metrics on, 5 s``: the same plus ``--metrics-file``, at the default interval (a 0.2 s
  run: only the final write);
- ``metrics on``: the same, written every 0.05 s;
- ``metrics + alerts``: plus ``--alert-command true`` (the subscriber checks the budgets at
  every notice and every 0.25 s; nothing crosses, so nothing is sent).

End to end: the orchestrator process's CPU (its threads included: the metrics writer runs in
it), median of interleaved repeats, and the longest event-loop stall. As the end-to-end noise
is larger than the difference, the per-line work is also measured alone, in process: the
transcripts fed through the real line splitter and ``Orchestrator._on_line`` with and without
the subscriber (the only per-line work it could add: a call per ``StateChanged``). Last, the
work done on the run's loop at each interval (a snapshot handed over) and on the writer's
thread (the metrics built and written), for 20 and for 200 instances.

Targets: per-line work with the subscriber / without <= 1.02; end to end reported with its
noise; the loop's share at each interval well under a millisecond for 20 instances.

Run: ``.venv/bin/python benchmarks/bench_integrations.py [--repeats N]``
"""

from __future__ import annotations

import argparse
import statistics
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

from budget_core import line_may_carry_usage
from orchestrator.config import RunConfig, load_config_file
from orchestrator.integration_options import IntegrationOptions
from orchestrator.integrations import Integrations
from orchestrator.lines import LineAssembler
from orchestrator.metrics import write_metrics
from orchestrator.palette import Palette
from orchestrator.report import HeadlessReporter
from orchestrator.run import Orchestrator

INSTANCES = 20
CALLS, DELTAS = 50, 89  # 4,998 lines per instance
KEYS = ("/analyze", "/review", "/test", "/docs")
HUGE = 10**12
BUDGETS: dict[str, Any] = {"overall_budget": HUGE, "command_budgets": dict.fromkeys(KEYS, HUGE)}
TARGET_LINE_WORK = 1.02
TARGET_LOOP_MS = 1.0


def line_work(
    transcript: Transcript, config: Path, metrics: Path, repeats: int
) -> dict[str, float]:
    """CPU seconds of one run's per-line work, without and with the subscriber (min)."""
    data = transcript.path.read_bytes()
    chunks = [data[i : i + 65536] for i in range(0, len(data), 65536)]
    instances, budgets = load_config_file(config)
    run = RunConfig(instances=tuple(instances), budgets=budgets, claude_cmd=("x",))
    options = IntegrationOptions(metrics_file=str(metrics))

    def feed(subscribed: bool) -> float:
        orchestrator = Orchestrator(run)
        HeadlessReporter(orchestrator, Palette(False), 0)
        if subscribed:
            Integrations(options, orchestrator)
        start = time.process_time()
        for inst in orchestrator._instances:
            assembler = LineAssembler(partial(orchestrator._on_line, inst), line_may_carry_usage)
            for chunk in chunks:
                assembler.feed(chunk)
            assembler.close()
        return time.process_time() - start

    best = {"without": float("inf"), "with": float("inf")}
    for _ in range(repeats):
        best["without"] = min(best["without"], feed(False))
        best["with"] = min(best["with"], feed(True))
    return best


def interval_work(config: Path, metrics: Path, count: int) -> tuple[float, float]:
    """Milliseconds at each interval: on the loop (the snapshot handed over), and on the
    writer's thread (metrics built and written); min of 50."""
    instances, budgets = load_config_file(config)
    specs = tuple(instances) * (count // len(instances))
    orchestrator = Orchestrator(RunConfig(instances=specs, budgets=budgets, claude_cmd=("x",)))
    loop_ms = writer_ms = float("inf")
    for _ in range(50):
        start = time.perf_counter()
        snapshot = orchestrator.snapshot()
        loop_ms = min(loop_ms, (time.perf_counter() - start) * 1000)
        start = time.perf_counter()
        write_metrics(str(metrics), snapshot)
        writer_ms = min(writer_ms, (time.perf_counter() - start) * 1000)
    return loop_ms, writer_ms


def import_cpu() -> float:
    """CPU seconds of ``import prometheus_client`` in a fresh interpreter (min of 3)."""
    code = "import time; t = time.process_time(); import prometheus_client; "
    code += "print(time.process_time() - t)"
    runs = [
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        for _ in range(3)
    ]
    return min(float(r.stdout) for r in runs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-integrations-") as tmp:
        work = Path(tmp)
        transcript = make_transcript(work / "transcript.jsonl", CALLS, DELTAS)
        fake = write_fake_claude(work)
        config = write_config(work, INSTANCES, KEYS, BUDGETS)
        metrics = work / "run.prom"
        total_lines = transcript.lines * INSTANCES
        print(f"Metrics and alerts: {INSTANCES} instances x {transcript.lines:,} lines, budgets on")
        print(f"  {machine_note()}")
        base = ["--config", str(config), "--claude-bin", str(fake)]
        base += ["--max-concurrent", str(INSTANCES), "--status-report-interval", "0.05", "--quiet"]
        env = {"BENCH_TRANSCRIPT": str(transcript.path)}
        setups = {
            "metrics off": base,
            "metrics on, 5 s": [
                *base,
                "--metrics-file",
                str(metrics),
                "--status-report-interval",
                "5",
            ],
            "metrics on": [*base, "--metrics-file", str(metrics)],
            "metrics + alerts": [*base, "--metrics-file", str(metrics), "--alert-command", "true"],
        }
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in setups}
        problems: list[str] = []
        for _ in range(args.repeats):
            for name, argv in setups.items():
                result = run_driver("orchestrator", {"argv": argv, "env": env})
                if result["exit_code"] != 0:
                    problems.append(f"{name}: exit code {result['exit_code']}")
                runs[name].append(result)
        if not metrics.exists() or "orchestrator_run_finished 1.0" not in metrics.read_text():
            problems.append("the metrics file was not written at the end")

        print(
            f"\n  {'set-up':<17} {'CPU s':>7} {'min':>6} {'ratio':>6} {'max stall ms':>12}"
            "  every run's CPU s"
        )
        cpu = {name: median(r["cpu_s"] for r in results) for name, results in runs.items()}
        for name, results in runs.items():
            stall = median(r["max_stall_s"] for r in results) * 1000
            print(
                f"  {name:<17} {cpu[name]:>7.3f} {min(r['cpu_s'] for r in results):>6.3f}"
                f" {cpu[name] / cpu['metrics off']:>6.3f} {stall:>12.1f}"
                f"  {fmt_list([r['cpu_s'] for r in results])}"
            )
        off = [r["cpu_s"] for r in runs["metrics off"]]
        q1, _, q3 = statistics.quantiles(off, n=4)
        print(
            f"  (medians; {total_lines:,} lines a run; metrics-off runs alone vary by "
            f"+-{(q3 - q1) / 2 / median(off):.1%} between their quartiles)"
        )

        print(
            f"  (of which, in every set-up with metrics, importing prometheus_client once: "
            f"{import_cpu() * 1000:.0f} ms CPU, measured alone)"
        )
        print(
            "  (metrics on, 5 s: the default interval, so one write, at the end; the other"
            " two write every 0.05 s)"
        )

        alone = line_work(transcript, config, metrics, 25)
        ratio = alone["with"] / alone["without"]
        print("\n  Per-line work alone (transcripts through Orchestrator._on_line, min of 25):")
        print(
            f"  without the subscriber {alone['without'] * 1000:6.1f} ms;"
            f" with {alone['with'] * 1000:6.1f} ms; ratio {ratio:.3f}"
        )

        print("\n  At each interval (min of 50):")
        loop20 = 0.0
        for count in (20, 200):
            loop_ms, writer_ms = interval_work(config, metrics, count)
            loop20 = loop_ms if count == 20 else loop20
            print(
                f"  {count:>3} instances: on the run's loop {loop_ms:.3f} ms (a snapshot);"
                f" on the writer's thread {writer_ms:.2f} ms (built and written)"
            )

    print("\nTargets")
    verdicts = Verdicts()
    verdicts.require(
        "every run exited 0, the metrics file written",
        not problems,
        "; ".join(problems[:5]) or "ok",
    )
    verdicts.check("per-line work with the subscriber / without", ratio, TARGET_LINE_WORK)
    verdicts.check("on the loop at each interval, 20 instances (ms)", loop20, TARGET_LOOP_MS)
    return verdicts.summary()


if __name__ == "__main__":
    sys.exit(main())
