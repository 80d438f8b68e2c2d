"""Headless reporting: notices as log lines, periodic ASCII budget bars, the final table."""

from __future__ import annotations

import asyncio
import logging

from budget_core import (
    BudgetState,
    Unit,
    format_budget_amounts,
    format_clock,
    format_percent,
    format_tokens,
    format_usd,
    render_bar,
    render_window_bar,
)
from orchestrator.cells import pad, width
from orchestrator.palette import Palette
from orchestrator.ratelimits import hold_text, rate_limit_line
from orchestrator.state import (
    InstanceStatus,
    InstanceView,
    Notice,
    NoticeKind,
    RunControl,
    RunEvent,
    RunSnapshot,
)

log = logging.getLogger("orchestrator")

BAR_WIDTH = 20
_KIND_COLOURS = {
    NoticeKind.LAUNCH: "cyan",
    NoticeKind.DONE: "green",
    NoticeKind.FAIL: "red",
    NoticeKind.STOP: "yellow",
    NoticeKind.BLOCK: "red",
    NoticeKind.ERROR: "bold_red",
    NoticeKind.MODE: "bold",
    NoticeKind.RATE: "yellow",
}
_STATUS_COLOURS = {
    InstanceStatus.SUCCEEDED: "green",
    InstanceStatus.FAILED: "red",
    InstanceStatus.TIMED_OUT: "red",
    InstanceStatus.BLOCKED: "red",
    InstanceStatus.STOPPED_BY_BUDGET: "yellow",
    InstanceStatus.CANCELLED: "yellow",
    InstanceStatus.STOPPING: "yellow",
}
EXIT_MEANINGS = {
    0: "every instance succeeded",
    1: "an instance failed or timed out",
    2: "bad usage or configuration",
    3: "budget enforcement blocked or stopped an instance",
    129: "interrupted (SIGHUP)",
    130: "interrupted",
    141: "interrupted: stdout was closed (SIGPIPE)",
    143: "interrupted (SIGTERM)",
}


def format_notice(notice: Notice, palette: Palette) -> str:
    kind = f"{notice.kind.upper():<6}"
    colour = _KIND_COLOURS.get(notice.kind)
    if notice.level is not None:
        kind = palette.level(kind, notice.level)
    else:
        kind = palette.paint(kind, colour)
    return f"[{format_clock(notice.at_s)}] {kind} {notice.message}"


def budget_name(budget: BudgetState) -> str:
    return budget.key if budget.unit is Unit.TOKENS else f"{budget.key} ($)"


def budget_line(budget: BudgetState, palette: Palette, name_width: int) -> str:
    name = pad(budget_name(budget), name_width)
    if budget.window.is_run:
        plain = render_bar(budget.used, budget.limit, BAR_WIDTH)
    else:  # two segments: spend before this run, then this run's
        plain = render_window_bar(budget.outside, budget.used, budget.limit, BAR_WIDTH)
    bar = palette.level(plain, budget.level)
    word = palette.level(budget.level.upper(), budget.level)
    percent = format_percent(budget.used, budget.limit)
    return f"  {name} {bar} {percent:>5}  {format_budget_amounts(budget):<22} {word}"


def budget_block(snapshot: RunSnapshot, palette: Palette) -> list[str]:
    budgets = snapshot.budgets.budgets
    if not budgets:
        return []
    name_width = max(width(budget_name(b)) for b in budgets)
    return [budget_line(b, palette, name_width) for b in budgets]


def cost_text(cost: float, estimate: bool) -> str:
    return f"~{format_usd(cost)}" if estimate else format_usd(cost)


def instance_line(view: InstanceView, palette: Palette, name_width: int) -> str:
    status = palette.paint(f"{view.status:<9}", _STATUS_COLOURS.get(view.status))
    usage = view.usage
    return (
        f"    {pad(view.name, name_width)} {status} {format_tokens(usage.total):>6} tokens"
        f" (in {format_tokens(usage.input)}, out {format_tokens(usage.output)},"
        f" cache {format_tokens(usage.cache_creation + usage.cache_read)})"
        f"  {cost_text(view.cost_usd, view.cost_is_estimate)}  {format_clock(view.elapsed_s)}"
    )


def progress_report(snapshot: RunSnapshot, palette: Palette) -> str:
    done = sum(1 for i in snapshot.instances if i.status.is_done)
    total = snapshot.total_usage
    head = (
        f"[{format_clock(snapshot.elapsed_s)}] "
        + palette.paint("STATUS", "bold")
        + f" {snapshot.mode.upper()} mode, {len(snapshot.running)} running,"
        f" {done}/{len(snapshot.instances)} done, {format_tokens(total.total)} tokens,"
        f" {cost_text(snapshot.total_cost_usd, snapshot.cost_is_estimate)}"
    )
    held = hold_text(snapshot.rate_limits) if snapshot.rate_limits is not None else None
    if held is not None:  # the countdown of --on-rate-limit wait
        head += ", " + palette.paint(held, "yellow")
    lines = [head, *budget_block(snapshot, palette)]
    running = snapshot.running
    if running:
        name_width = max(width(i.name) for i in running)
        lines += [instance_line(i, palette, name_width) for i in running]
    return "\n".join(lines)


def summary_report(
    snapshot: RunSnapshot, exit_code: int, palette: Palette, meaning: str | None = None
) -> str:
    """The final table: per instance exact tokens by kind, cost and time; then the budgets."""
    headers: tuple[str, ...] = ("instance", "budget", "status", "input", "output")
    headers += ("cache_w", "cache_r", "total", "cost", "time")
    rows: list[tuple[str, ...]] = []
    for i in snapshot.instances:
        u = i.usage
        live = "" if i.final or not u else "*"
        rows.append(
            (
                i.name,
                i.budget_key,
                str(i.status),
                f"{u.input:,}",
                f"{u.output:,}",
                f"{u.cache_creation:,}",
                f"{u.cache_read:,}",
                f"{u.total:,}{live}",
                cost_text(i.cost_usd, i.cost_is_estimate),
                format_clock(i.elapsed_s),
            )
        )
    total, cost, estimate = (
        snapshot.instances_usage,
        snapshot.instances_cost,
        snapshot.cost_is_estimate,
    )
    rows.append(
        (
            "TOTAL",
            "",
            "",
            f"{total.input:,}",
            f"{total.output:,}",
            f"{total.cache_creation:,}",
            f"{total.cache_read:,}",
            f"{total.total:,}",
            cost_text(cost, estimate),
            format_clock(snapshot.elapsed_s),
        )
    )
    # Padded by display width: a CJK or emoji name takes two cells a character.
    widths = [max(width(h), *(width(r[c]) for r in rows)) for c, h in enumerate(headers)]
    numeric = {3, 4, 5, 6, 7, 8}
    status_index = 2

    def fmt(cells: tuple[str, ...], status_colour: str | None = None) -> str:
        parts = [pad(cell, widths[c], right=c in numeric) for c, cell in enumerate(cells)]
        parts[status_index] = palette.paint(parts[status_index], status_colour)
        return "  " + "  ".join(parts).rstrip()

    lines = [palette.paint("Summary", "bold"), fmt(headers)]
    for row in rows[:-1]:
        lines.append(fmt(row, _STATUS_COLOURS.get(InstanceStatus(row[status_index]))))
    lines.append(fmt(rows[-1]))
    if any(r[7].endswith("*") for r in rows):
        lines.append("  * live count: no result line from the CLI, so not its final figures")
    if estimate:
        lines.append(
            "  ~ cost estimated from the price table (the CLI reported no total_cost_usd,"
            " or less than the stream showed)"
        )
        unknown = sorted(
            {m for i in snapshot.instances if i.cost_is_estimate for m in i.unknown_models}
        )
        if unknown:
            lines.append(
                "    models not in the price table, estimated at default prices: "
                + ", ".join(unknown)
            )
    skipped = [f"{i.name} {i.skipped_lines:,}" for i in snapshot.instances if i.skipped_lines]
    if skipped:
        lines.append(
            "  lines skipped (not stream-json, nothing counted from them): " + ", ".join(skipped)
        )
    for i in snapshot.instances:
        if i.error and i.status is not InstanceStatus.SUCCEEDED:
            lines.append(f"  {i.name}: {i.error}")
    limits = snapshot.rate_limits
    windows = rate_limit_line(limits, with_hold=False) if limits is not None else None
    if windows is not None:
        lines.append(f"  subscription windows: {windows}")
    block = budget_block(snapshot, palette)
    if block:
        lines += ["Budgets", *block]
    if not snapshot.enforcement_ok:
        lines.append(
            palette.paint("  budget enforcement was OFF after the budget system failed", "bold_red")
        )
    meaning = meaning or EXIT_MEANINGS.get(exit_code, "")
    lines.append(f"Exit status {exit_code}" + (f": {meaning}" if meaning else ""))
    return "\n".join(lines)


class HeadlessReporter:
    """Logs notices as they come and prints the budget bars every ``interval`` seconds."""

    def __init__(
        self, control: RunControl, palette: Palette, interval: float, quiet: bool = False
    ) -> None:
        self._control = control
        self._palette = palette
        self._interval = interval
        self._quiet = quiet
        self._unsubscribe = control.subscribe(self._on_event)

    def _on_event(self, event: RunEvent) -> None:
        if isinstance(event, Notice):
            if event.warning:
                log.warning(format_notice(event, self._palette))
            elif not self._quiet:
                log.info(format_notice(event, self._palette))

    async def report_periodically(self) -> None:
        if self._interval <= 0 or self._quiet:
            return
        while True:
            await asyncio.sleep(self._interval)
            log.info(progress_report(self._control.snapshot(), self._palette))

    def close(self) -> None:
        self._unsubscribe()
