"""The fleet ledger (PostgreSQL): charges per second one server sustains from 50 simulated
orchestrators, the time from a crossing charge to the stop signal in another orchestrator
process, and the CPU of a run with the PostgreSQL ledger vs ``--ledger none``.

- Throughput: 50 processes, each a simulated orchestrator with 10 instances: in a loop, one
  transaction of 10 charges (one per instance) that also returns the totals of a ``/day``
  command budget and an overall one (``write_and_sum``, as a run writes), as fast as the
  server answers, for 6 s. Charges/s and transactions/s over all of them.
- Crossing -> stop: a real orchestrator process (block mode) runs 40 instances, each on a
  ``/cN=1000/day`` budget of its own; each instance is a tiny process that writes down when
  SIGTERM reaches it. This process then crosses the budgets one at a time (a 1,000-token
  charge of another run, 0.25 s apart) and times from just before that write to the
  instance's SIGTERM: the commit, NOTIFY, the other orchestrator's read of its windows,
  its decision and its signal. Target p99 < 200 ms.
- CPU: as ``bench_ledger.py`` (its 20 x 5,000-line workload, from ``bench_end_to_end``),
  end to end with a PostgreSQL ledger (a fresh schema) vs ``--ledger none``, repeats
  interleaved, medians; and the per-line work in process (``Orchestrator._on_line`` with and
  without a ``RunLedger`` on PostgreSQL, its thread writing meanwhile), as a share of the
  fastest ``--ledger none`` run. Target <= 1.05.

Server: ``ORCHESTRATOR_TEST_PG`` (default ``postgresql://127.0.0.1:5432/test``); a schema of
its own, dropped at the end.
Run: ``.venv/bin/python benchmarks/bench_fleet.py [--repeats N]``
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import secrets
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

import psycopg
from _common import (
    Verdicts,
    fmt_list,
    machine_note,
    make_transcript,
    median,
    run_driver,
    write_config,
    write_fake_claude,
)
from bench_end_to_end import CALLS, DELTAS, INSTANCES, KEYS
from bench_ledger import PER_RUN, WINDOWED, params

from budget_core import TokenUsage, Unit, line_may_carry_usage
from orchestrator.config import RunConfig, load_config_file
from orchestrator.ledger import Charge, RunRecord, WindowQuery
from orchestrator.ledger.postgres import PostgresLedger
from orchestrator.ledger.session import RunLedger
from orchestrator.lines import LineAssembler
from orchestrator.run import Orchestrator

SERVER = os.environ.get("ORCHESTRATOR_TEST_PG", "postgresql://127.0.0.1:5432/test")
WRITERS, PER_BATCH, SECONDS = 50, 10, 6.0
CROSSINGS = 40
TARGET_P99_MS, TARGET_RATIO = 200.0, 1.05

INSTANCE = """\
import os, signal, sys, time
if sys.argv[1:] == ["--version"]:  # the orchestrator's version check
    from orchestrator import simulator
    sys.exit(simulator.main(["--version"]))
folder = os.environ["BENCH_SIGNALS"]
key = sys.argv[-1].split()[0]


def on_term(signum, frame):
    with open(os.path.join(folder, key.strip("/") + ".term"), "w") as f:
        f.write(repr(time.time()))
    os._exit(0)


signal.signal(signal.SIGTERM, on_term)
open(os.path.join(folder, key.strip("/") + ".ready"), "w").close()
while True:
    time.sleep(1)
"""


def writer(url: str, n: int, start_at: float, out: Any) -> None:
    ledger = PostgresLedger(url, url)
    run = f"w{n}"
    now = time.time()
    ledger.open_run(RunRecord(run, now, "h", "u", "/", (), "block"))
    queries = [
        WindowQuery("/k0", Unit.TOKENS, now - 3600),
        WindowQuery(None, Unit.USD, now - 3600),
    ]
    while time.time() < start_at:
        time.sleep(0.01)
    seq = charges = txs = 0
    usage = TokenUsage(100, 20, 0, 300)
    while time.time() < start_at + SECONDS:
        seq += 1
        batch = [
            Charge(run, f"i{i}", seq, time.time(), f"/k{i % 4}", "m", usage, 0.001, True)
            for i in range(PER_BATCH)
        ]
        ledger.write_and_sum(batch, [], None, run, queries)
        charges += len(batch)
        txs += 1
    out.put((charges, txs))
    ledger.close()


def throughput(url: str) -> tuple[float, float]:
    queue: multiprocessing.Queue[tuple[int, int]] = multiprocessing.Queue()
    start_at = time.time() + 3
    procs = [
        multiprocessing.Process(target=writer, args=(url, n, start_at, queue))
        for n in range(WRITERS)
    ]
    for p in procs:
        p.start()
    results = [queue.get(timeout=60) for _ in procs]
    for p in procs:
        p.join()
    return sum(c for c, _ in results) / SECONDS, sum(t for _, t in results) / SECONDS


def crossing_latency(url: str, work: Path) -> list[float]:
    folder = work / "signals"
    folder.mkdir()
    claude = work / "instance.py"
    claude.write_text(f"#!{sys.executable}\n{INSTANCE}")
    claude.chmod(0o755)
    argv = [
        sys.executable,
        "-c",
        "from orchestrator.cli import entry_point; entry_point()",
        "--status-report-interval=0",
        f"--claude-bin={claude}",
        f"--ledger={url}",
        "--budget-enforcement-mode=block",
        f"--max-concurrent={CROSSINGS}",
        "--quiet",
    ]
    for n in range(CROSSINGS):
        argv += [f"--command-budget=/c{n}=1000/day"]
    config = work / "crossing.json"
    instances = ",".join(f'{{"name": "i{n}", "command": "/c{n} x"}}' for n in range(CROSSINGS))
    config.write_text(f'{{"instances": [{instances}]}}')
    proc = subprocess.Popen(
        [*argv, f"--config={config}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "BENCH_SIGNALS": str(folder)},
    )
    ledger = PostgresLedger(url, url)
    ledger.open_run(RunRecord("crosser", time.time(), "h", "u", "/", (), "block"))
    latencies = []
    try:
        deadline = time.time() + 60
        while len(list(folder.glob("*.ready"))) < CROSSINGS and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(1)  # the orchestrator's first poll and its LISTEN are in place
        for n in range(CROSSINGS):
            usage = TokenUsage(1000, 0, 0, 0)
            charge = Charge("crosser", f"c{n}", 1, time.time(), f"/c{n}", "m", usage, 0.0, False)
            began = time.time()
            ledger.write([charge], [])
            term = folder / f"c{n}.term"
            while not term.exists() and time.time() < began + 5:
                time.sleep(0.001)
            time.sleep(0.01)  # written whole
            if term.exists():
                latencies.append((float(term.read_text()) - began) * 1000)
            time.sleep(0.25)
    finally:
        proc.wait(timeout=30)
        ledger.close()
    return latencies


def import_cpu() -> float:
    """CPU of ``import psycopg`` in a process that has the orchestrator imported already."""
    code = (
        "import time, orchestrator.cli, orchestrator.ledger.sqlite;"
        "t = time.process_time(); import psycopg; print(time.process_time() - t)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    return float(done.stdout)


def one_line_work(run: RunConfig, chunks: list[bytes], url: str | None) -> float:
    session = None
    loop = asyncio.new_event_loop()
    if url is not None:
        record = RunRecord(f"bench-{secrets.token_hex(3)}", time.time(), "h", "u", "/", (), "b")
        session = RunLedger(PostgresLedger(url, url), record, [])
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
            if fed % 20 == 0:
                orchestrator.record_spend()
        assembler.close()
    orchestrator.record_spend()
    if session is not None:
        session.finish([], 0)
    spent = time.process_time() - start
    loop.close()
    return spent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    verdicts = Verdicts()
    schema = f"bench_{secrets.token_hex(4)}"
    with psycopg.connect(SERVER, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    url = f"{SERVER}?schema={schema}"
    try:
        with tempfile.TemporaryDirectory(prefix="bench-fleet-") as tmp:
            work = Path(tmp)
            os.environ["XDG_DATA_HOME"] = str(work / "xdg")
            os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
            os.environ["PYTHONPYCACHEPREFIX"] = str(work / "pycache")
            print(f"Fleet ledger on {SERVER}\n  {machine_note()}")
            PostgresLedger(url, url).close()  # the schema's tables
            per_s, tx_s = throughput(url)
            print(
                f"  {WRITERS} simulated orchestrators, {PER_BATCH} charges a transaction:"
                f" {per_s:,.0f} charges/s ({tx_s:,.0f} transactions/s, each returning 2"
                " windows' totals)"
            )
            lat = sorted(crossing_latency(url, work))
            if len(lat) < CROSSINGS:
                print(f"  {CROSSINGS - len(lat)} crossing(s) got no stop within 5 s")
            p50 = lat[len(lat) // 2]
            p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
            print(
                f"  crossing charge -> SIGTERM in another orchestrator: p50 {p50:.0f} ms,"
                f" p99 {p99:.0f} ms, max {lat[-1]:.0f} ms ({len(lat)} crossings)"
            )
            verdicts.check("crossing -> stop signal, p99", p99, TARGET_P99_MS, " ms")
            transcript = make_transcript(work / "transcript.jsonl", CALLS, DELTAS)
            fake = write_fake_claude(work)
            (work / "w").mkdir()
            (work / "p").mkdir()
            windowed = write_config(work / "w", INSTANCES, KEYS, WINDOWED)
            per_run = write_config(work / "p", INSTANCES, KEYS, PER_RUN)
            runs: dict[str, list[dict[str, Any]]] = {"postgresql": [], "none": []}
            run_driver("orchestrator", params(windowed, fake, transcript, url))  # warm-up
            run_driver("orchestrator", params(per_run, fake, transcript, "none"))
            for _ in range(args.repeats):
                runs["postgresql"].append(
                    run_driver("orchestrator", params(windowed, fake, transcript, url))
                )
                runs["none"].append(
                    run_driver("orchestrator", params(per_run, fake, transcript, "none"))
                )
            for name, results in runs.items():
                cpus = [r["cpu_s"] for r in results]
                print(f"  --ledger {name:<10} CPU s median {median(cpus):.3f} [{fmt_list(cpus)}]")
            ratio = median(r["cpu_s"] for r in runs["postgresql"]) / median(
                r["cpu_s"] for r in runs["none"]
            )
            print(f"  end to end, CPU postgresql / none (medians): {ratio:.3f}")
            imports = median(import_cpu() for _ in range(3))
            base_median = median(r["cpu_s"] for r in runs["none"])
            print(
                f"  of which importing psycopg (once a run, whatever its length): {imports:.3f}"
                f" CPU s; end to end without it: "
                f"{(median(r['cpu_s'] for r in runs['postgresql']) - imports) / base_median:.3f}"
            )
            data = transcript.path.read_bytes()
            chunks = [data[i : i + 65536] for i in range(0, len(data), 65536)]
            instances, budgets = load_config_file(windowed)
            run = RunConfig(instances=tuple(instances), budgets=budgets, claude_cmd=("x",))
            extra = median(
                one_line_work(run, chunks, url) - one_line_work(run, chunks, None)
                for _ in range(11)
            )
            base = min(r["cpu_s"] for r in runs["none"])
            share = (base + extra) / base
            print(
                f"  per-line work in process: the PostgreSQL ledger adds {extra * 1000:.2f} ms"
                f" (median of 11 pairs); as a share of the fastest --ledger none run: {share:.4f}"
            )
            verdicts.check("CPU with the PostgreSQL ledger / --ledger none", share, TARGET_RATIO)
    finally:
        with psycopg.connect(SERVER, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")
    return verdicts.summary()


if __name__ == "__main__":
    sys.exit(main())
