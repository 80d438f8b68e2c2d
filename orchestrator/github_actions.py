"""GitHub Actions (``GITHUB_ACTIONS=true``): annotations, the job summary, step outputs.

- ``::warning`` / ``::error`` workflow commands for budget crossings and stops, printed to
  the log (stdout), escaped as the runner's own toolkit does (``%``, CR, LF in the message;
  also ``:`` and ``,`` in a property), so no name can end the command early or start another.
- A markdown summary (bars, instances, totals) appended to ``$GITHUB_STEP_SUMMARY``.
- ``total_tokens``, ``cost_usd``, ``exit_code`` and ``status`` appended to ``$GITHUB_OUTPUT``.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Mapping

from budget_core import format_clock, format_percent, render_bar, render_window_bar
from budget_core.formatting import format_budget_amounts
from orchestrator.alert_events import AlertEvent, AlertKind, run_status
from orchestrator.report import BAR_WIDTH, EXIT_MEANINGS, budget_name, cost_text
from orchestrator.state import RunSnapshot

USD_PLACES = 10


def is_github_actions(environ: Mapping[str, str]) -> bool:
    return environ.get("GITHUB_ACTIONS") == "true"


def escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(text: str) -> str:
    return escape_data(text).replace(":", "%3A").replace(",", "%2C")


def annotation(event: AlertEvent) -> str | None:
    """The workflow command for ``event``, or None (the run's end goes in the summary)."""
    if event.kind is AlertKind.RUN_END:
        return None
    command = "error" if event.severity == "error" else "warning"
    return f"::{command} title={escape_property(event.title)}::{escape_data(event.text)}"


def _cell(text: str) -> str:
    """Text as one markdown table cell: nothing in it may end the cell, the row, or be
    taken for markup."""
    text = " ".join(text.split())
    for char in "\\`*_[]<>|#~$":
        text = text.replace(char, "\\" + char)
    return text


def step_summary(snapshot: RunSnapshot, exit_code: int, meaning: str | None = None) -> str:
    meaning = meaning or EXIT_MEANINGS.get(exit_code, "")
    usage, cost = snapshot.instances_usage, snapshot.instances_cost
    head = f"Exit status {exit_code}" + (f": {_cell(meaning)}" if meaning else "")
    lines = [
        "### Claude budget orchestrator",
        "",
        f"**{head}** · {snapshot.mode.upper()} mode · {len(snapshot.instances)} instance(s) · "
        f"{usage.total:,} tokens · {_cell(cost_text(cost, snapshot.cost_is_estimate))} · "
        f"{format_clock(snapshot.elapsed_s)}",
        "",
    ]
    if snapshot.budgets.budgets:
        lines += ["| budget | | used | level |", "|---|---|--:|---|"]
        for b in snapshot.budgets.budgets:
            if b.window.is_run:
                bar = render_bar(b.used, b.limit, BAR_WIDTH)
            else:
                bar = render_window_bar(b.outside, b.used, b.limit, BAR_WIDTH)
            lines.append(
                f"| {_cell(budget_name(b))} | `{bar}` {format_percent(b.used, b.limit)} "
                f"| {_cell(format_budget_amounts(b))} | **{b.level.upper()}** |"
            )
        lines.append("")
    lines += [
        "| instance | budget | status | input | output | cache write | cache read | total "
        "| cost | time |",
        "|---|---|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for i in snapshot.instances:
        u = i.usage
        live = "" if i.final or not u else "\\*"
        lines.append(
            f"| {_cell(i.name)} | {_cell(i.budget_key)} | {i.status} | {u.input:,} "
            f"| {u.output:,} | {u.cache_creation:,} | {u.cache_read:,} | {u.total:,}{live} "
            f"| {_cell(cost_text(i.cost_usd, i.cost_is_estimate))} | {format_clock(i.elapsed_s)} |"
        )
    lines.append(
        f"| **total** | | | {usage.input:,} | {usage.output:,} | {usage.cache_creation:,} "
        f"| {usage.cache_read:,} | **{usage.total:,}** "
        f"| **{_cell(cost_text(cost, snapshot.cost_is_estimate))}** "
        f"| {format_clock(snapshot.elapsed_s)} |"
    )
    errors = [i for i in snapshot.instances if i.error and str(i.status) != "succeeded"]
    if errors:
        lines.append("")
        lines += [f"- {_cell(i.name)}: {_cell(i.error or '')}" for i in errors]
    if any(not i.final and i.usage for i in snapshot.instances):
        lines += ["", "\\* live count: no result line from the CLI, so not its final figures"]
    return "\n".join(lines) + "\n\n"


def outputs(snapshot: RunSnapshot, exit_code: int) -> str:
    """``name=value`` lines for ``$GITHUB_OUTPUT`` (every value is one line)."""
    cost = f"{round(snapshot.instances_cost, USD_PLACES):.{USD_PLACES}f}".rstrip("0").rstrip(".")
    return (
        f"total_tokens={snapshot.instances_usage.total}\n"
        f"cost_usd={cost}\n"
        f"exit_code={exit_code}\n"
        f"status={run_status(exit_code)}\n"
    )


def append(path: str, text: str) -> None:
    """Append ``text`` to a file the runner gave us. Raises ``OSError``. Only a regular file:
    opening a FIFO nobody reads would block the end of the run for ever (signals too)."""
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, 0o666)
    except OSError as exc:
        if exc.errno == errno.ENXIO:  # a FIFO with no reader
            raise OSError(exc.errno, "a FIFO, not a regular file") from None
        raise
    with os.fdopen(fd, "a", encoding="utf-8") as out:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        os.set_blocking(fd, True)
        out.write(text)
