"""``--metrics-file``: the run as a Prometheus text file, for node_exporter's textfile
collector, written atomically (prometheus-client's ``write_to_textfile``: a temporary file
beside it, then a rename) every status interval and at the end.

Off the hot path: the run hands over a snapshot (immutable) and goes on; a thread of its
own builds the metrics and writes them. When writing is slower than the run, only the latest
snapshot is written. prometheus-client is imported only when a metrics file is asked for.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING

from budget_core import BudgetLevel
from orchestrator.output_file import output_problem
from orchestrator.state import InstanceStatus, RunSnapshot

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

KINDS = ("input", "output", "cache_creation", "cache_read")
LEVEL_VALUES = {level: level.rank for level in BudgetLevel}  # ok 0, warning 1, ... exceeded 3


def metric_families(snapshot: RunSnapshot, exit_code: int | None = None) -> list[Metric]:
    """Every metric of the run at ``snapshot`` (``exit_code`` once it is over)."""
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    tokens = CounterMetricFamily(
        "orchestrator_tokens",
        "Tokens counted, by instance, budget key, model and kind",
        labels=["instance", "budget", "model", "kind"],
    )
    cost = CounterMetricFamily(
        "orchestrator_cost_usd",
        "Cost in USD (an estimate until the CLI reports its own), by instance, budget, model",
        labels=["instance", "budget", "model"],
    )
    for view in snapshot.instances:
        model = view.model or "unknown"
        for kind in KINDS:
            tokens.add_metric([view.name, view.budget_key, model, kind], getattr(view.usage, kind))
        cost.add_metric([view.name, view.budget_key, model], view.cost_usd)
    labels = ["budget", "unit", "window"]
    used = GaugeMetricFamily(
        "orchestrator_budget_used", "Spend counted against a budget", labels=labels
    )
    limit = GaugeMetricFamily("orchestrator_budget_limit", "A budget's limit", labels=labels)
    ratio = GaugeMetricFamily(
        "orchestrator_budget_used_ratio", "Used / limit (1 = exceeded)", labels=labels
    )
    level = GaugeMetricFamily(
        "orchestrator_budget_level",
        "A budget's level: 0 ok, 1 warning (70%), 2 critical (90%), 3 exceeded (100%)",
        labels=labels,
    )
    for budget in snapshot.budgets.budgets:
        names = [budget.key, str(budget.unit), budget.window.name]
        used.add_metric(names, budget.used)
        limit.add_metric(names, budget.limit)
        ratio.add_metric(names, budget.fraction)
        level.add_metric(names, LEVEL_VALUES[budget.level])
    statuses = GaugeMetricFamily("orchestrator_instances", "Instances by status", labels=["status"])
    counts = dict.fromkeys(InstanceStatus, 0)
    for view in snapshot.instances:
        counts[view.status] += 1
    for status, count in counts.items():
        statuses.add_metric([str(status)], count)
    mode = GaugeMetricFamily(
        "orchestrator_enforcement_mode", "1 for the enforcement mode in force", labels=["mode"]
    )
    for name in ("warn", "block"):
        mode.add_metric([name], 1 if snapshot.mode == name else 0)
    families: list[Metric] = [tokens, cost, used, limit, ratio, level, statuses, mode]
    families.append(
        GaugeMetricFamily(
            "orchestrator_run_elapsed_seconds", "Time since the run started", snapshot.elapsed_s
        )
    )
    families.append(
        GaugeMetricFamily(
            "orchestrator_run_finished", "1 once the run is over", 1 if exit_code is not None else 0
        )
    )
    if exit_code is not None:
        families.append(
            GaugeMetricFamily("orchestrator_run_exit_code", "The run's exit status", exit_code)
        )
    return families


class _Snapshot:
    """A collector of one snapshot's metrics (what ``write_to_textfile`` asks for)."""

    def __init__(self, snapshot: RunSnapshot, exit_code: int | None) -> None:
        self._snapshot, self._exit_code = snapshot, exit_code

    def collect(self) -> Iterator[Metric]:
        yield from metric_families(self._snapshot, self._exit_code)


def write_metrics(
    path: str,
    snapshot: RunSnapshot,
    exit_code: int | None = None,
    inputs: Sequence[tuple[str, str]] = (),
) -> None:
    """Write the metrics file now. Raises ``OSError`` saying what went wrong."""
    from prometheus_client import CollectorRegistry, write_to_textfile

    if problem := output_problem(path, inputs):  # again: it may have changed meanwhile
        raise OSError(problem)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Snapshot(snapshot, exit_code))
    # Through a symlink to its target: the rename would replace the link itself.
    write_to_textfile(os.path.realpath(path), registry)


class MetricsWriter:
    """Writes the latest snapshot handed over, on a thread of its own."""

    def __init__(
        self, path: str, warn: Callable[[str], None], inputs: Sequence[tuple[str, str]] = ()
    ) -> None:
        self.path = path
        self._warn = warn
        self._inputs = tuple(inputs)
        self._wake = threading.Condition()
        self._latest: RunSnapshot | None = None
        self._closed = False
        self._failing = False  # said once; said again when it works again
        # Imported now, before the run: ~0.1 s of CPU that, on the writer's thread during
        # the launches, would compete for the interpreter with reading and enforcement.
        import prometheus_client  # noqa: F401

        self._thread = threading.Thread(target=self._work, name="orchestrator-metrics", daemon=True)
        self._thread.start()

    def submit(self, snapshot: RunSnapshot) -> None:
        """Hand over a snapshot to write; never waits for the disk."""
        with self._wake:
            if not self._closed:
                self._latest = snapshot
                self._wake.notify()

    def finish(self, snapshot: RunSnapshot, exit_code: int) -> str | None:
        """The final write, with the exit status, done now: why it failed, or None."""
        with self._wake:
            self._closed = True
            self._latest = None
            self._wake.notify()
        self._thread.join(10.0)  # a periodic write in progress: the final one comes after
        try:
            write_metrics(self.path, snapshot, exit_code, self._inputs)
        except (OSError, ValueError) as exc:
            return _reason(exc)
        return None

    def _work(self) -> None:
        while True:
            with self._wake:
                while self._latest is None and not self._closed:
                    self._wake.wait()
                if self._closed:
                    return
                snapshot, self._latest = self._latest, None
            assert snapshot is not None
            try:
                write_metrics(self.path, snapshot, None, self._inputs)
            except (OSError, ValueError) as exc:
                if not self._failing:
                    self._failing = True
                    self._warn(
                        f"orchestrator: warning: cannot write --metrics-file {self.path}: "
                        f"{_reason(exc)}; trying again at the next interval"
                    )
                continue
            if self._failing:
                self._failing = False
                self._warn(f"orchestrator: --metrics-file {self.path} is written again")


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror + (f": {exc.filename}" if exc.filename else "")
    return str(exc)
