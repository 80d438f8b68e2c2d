"""``orchestrator usage``: what the ledger holds, summed exactly, grouped by time or by kind."""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import re
import sys
import time
from collections.abc import Sequence
from datetime import date, datetime, timedelta
from typing import Any, NoReturn

from budget_core import TokenUsage, format_usd
from budget_core.windows import calendar_start
from orchestrator.ledger import (
    GROUPINGS,
    LEDGER_ENV,
    LedgerError,
    UsageRow,
    open_ledger,
    resolve_ledger_url,
)
from orchestrator.ledger.urls import sqlite_path
from orchestrator.summary import USD_PLACES

_RELATIVE = re.compile(r"^([0-9]+)([dh])$")
FIELDS = (
    "group",
    "input",
    "output",
    "cache_creation",
    "cache_read",
    "total",
    "cost_usd",
    "cost_is_estimate",
    "runs",
    "instances",
)


class UsageError(Exception):
    """Bad usage of the subcommand: one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see orchestrator usage --help)")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="orchestrator usage",
        description="Spend recorded in the ledger, as exact sums of its charges.",
        epilog=(
            "WHEN: an ISO date or date-time (local time), today, yesterday, or 7d / 24h ago.\n"
            "--until a date means the end of that day. Default: the last 7 days, by day.\n"
            "A cost marked ~ is estimated from the price table (in part at least)."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--ledger",
        metavar="URL",
        help="a path, sqlite:///ABS/PATH or postgresql://USER@HOST/DB?schema=NAME (env too)",
    )
    p.add_argument("--since", metavar="WHEN")
    p.add_argument("--until", metavar="WHEN")
    p.add_argument(
        "--by",
        default="day",
        metavar="GROUP",
        help="day|week|month|command|model|run|instance|label:KEY",
    )
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true")
    out.add_argument("--csv", action="store_true")
    return p


def parse_when(text: str, now: float, end_of_day: bool = False) -> float:
    """WHEN -> POSIX seconds; raises ``UsageError`` naming what is allowed."""
    try:
        return _parse_when(text, now, end_of_day)
    except (OverflowError, OSError, ValueError):
        raise UsageError(f"WHEN {text!r} is out of range") from None


def _parse_when(text: str, now: float, end_of_day: bool) -> float:
    value = text.strip().lower()
    today = date.fromtimestamp(now)
    day: date | None = None
    if value == "today":
        day = today
    elif value == "yesterday":
        day = today - timedelta(days=1)
    elif match := _RELATIVE.match(value):
        return now - int(match.group(1)) * (86400 if match.group(2) == "d" else 3600)
    else:
        try:
            day = date.fromisoformat(text.strip())
        except ValueError:
            try:
                moment = datetime.fromisoformat(text.strip())
            except ValueError:
                raise UsageError(
                    f"WHEN {text!r} is not an ISO date or date-time, today, yesterday, or 7d / 24h"
                ) from None
            return (moment if moment.tzinfo else moment.astimezone()).timestamp()
    if end_of_day:
        day += timedelta(days=1)
    return datetime(day.year, day.month, day.day).timestamp()


def check_group(by: str) -> str:
    if by in GROUPINGS or (by.startswith("label:") and by.removeprefix("label:")):
        return by
    raise UsageError(f"--by {by!r} is not one of {', '.join(GROUPINGS)} or label:KEY")


def rows_as_dicts(rows: Sequence[UsageRow]) -> list[dict[str, Any]]:
    out = []
    for r in rows:
        item: dict[str, Any] = {
            "group": r.group,
            "input": r.usage.input,
            "output": r.usage.output,
            "cache_creation": r.usage.cache_creation,
            "cache_read": r.usage.cache_read,
            "total": r.usage.total,
            "cost_usd": round(r.cost_usd, USD_PLACES),  # 0.3, not 0.30000000000000004
            "cost_is_estimate": r.cost_is_estimate,
            "runs": r.runs,
            "instances": r.instances,
        }
        if r.status is not None:
            item["status"] = r.status
        out.append(item)
    return out


def table(rows: Sequence[UsageRow], by: str) -> str:
    with_status = by == "run"
    headers = [by, "input", "output", "cache write", "cache read", "total", "cost"]
    headers += ["runs", "instances"] + (["status"] if with_status else [])
    cells = []
    for r in rows:
        u = r.usage
        cost = ("~" if r.cost_is_estimate else "") + format_usd(r.cost_usd)
        line = [r.group, f"{u.input:,}", f"{u.output:,}", f"{u.cache_creation:,}"]
        line += [f"{u.cache_read:,}", f"{u.total:,}", cost, str(r.runs), str(r.instances)]
        cells.append(line + ([r.status or ""] if with_status else []))
    if rows:
        t = sum((r.usage for r in rows), start=TokenUsage())
        estimate = any(r.cost_is_estimate for r in rows)
        cost = ("~" if estimate else "") + format_usd(math.fsum(r.cost_usd for r in rows))
        cells.append(
            ["TOTAL", f"{t.input:,}", f"{t.output:,}", f"{t.cache_creation:,}"]
            + [f"{t.cache_read:,}", f"{t.total:,}", cost, "", ""]
            + ([""] if with_status else [])
        )
    left = {0, len(headers) - 1} if with_status else {0}
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(headers)]

    def fmt(line: Sequence[str]) -> str:
        parts = [
            cell.ljust(widths[i]) if i in left else cell.rjust(widths[i])
            for i, cell in enumerate(line)
        ]
        return "  ".join(parts).rstrip()

    lines = [fmt(headers), *(fmt(c) for c in cells)]
    if not rows:
        lines.append("(no charges in this period)")
    if any(r.cost_is_estimate for r in rows):
        lines.append("~ cost estimated from the price table, at least in part")
    return "\n".join(lines)


def main(argv: Sequence[str]) -> int:
    now = time.time()
    try:
        args = build_parser().parse_args(argv)
        by = check_group(args.by)
        since = (
            parse_when(args.since, now)
            if args.since
            else calendar_start("day", now) - 6 * 86400  # 7 calendar days, today included
        )
        if not args.since:
            since = calendar_start("day", since + 43200)  # a DST change in between
        until = parse_when(args.until, now, end_of_day=True) if args.until else now
        if until <= since:
            raise UsageError("--until must be later than --since")
    except UsageError as exc:
        print(f"orchestrator usage: error: {exc}", file=sys.stderr)
        return 2
    url = resolve_ledger_url(args.ledger, os.environ, None)
    try:
        path = sqlite_path(url) if url.strip().lower() != "none" else None
        if path is not None and not path.exists():
            raise LedgerError(f"no ledger at {path} (nothing recorded there yet)")
        ledger = open_ledger(url)
        if ledger is None:
            named = "--ledger none" if args.ledger is not None else f"{LEDGER_ENV}=none"
            raise LedgerError(f"{named}: there is no ledger to report on")
        try:
            rows = ledger.usage(since, until, by, now)
        finally:
            ledger.close()
    except LedgerError as exc:
        print(f"orchestrator usage: error: {exc}", file=sys.stderr)
        return 1
    try:
        if args.json:
            print(json.dumps(rows_as_dicts(rows), indent=2))
        elif args.csv:
            dicts = rows_as_dicts(rows)
            fields = [*FIELDS, "status"] if by == "run" else list(FIELDS)
            writer = csv.DictWriter(sys.stdout, fieldnames=fields, lineterminator="\n")
            writer.writeheader()
            writer.writerows(dicts)
        else:
            print(table(rows, by))
        sys.stdout.flush()
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0
