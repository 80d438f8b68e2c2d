"""The run command's side of the ledger: open it before launching, apply the failure rules,
seed the windowed budgets, close it after the run."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from budget_core import OVERALL, BudgetManager, Unit, format_tokens, format_usd
from budget_core.budgets import BudgetState
from orchestrator.config import ConfigError, RunConfig
from orchestrator.ledger import (
    LEDGER_ENV,
    Ledger,
    LedgerError,
    open_ledger,
    redact_url,
    resolve_ledger_url,
)
from orchestrator.ledger.journal import journal_folder, replay_orphans
from orchestrator.ledger.session import RunLedger, WindowedBudget, new_run_id, run_record
from orchestrator.ledger.urls import redact_arg
from orchestrator.run import Orchestrator

if TYPE_CHECKING:
    from orchestrator.resume_cmd import ResumePlan

log = logging.getLogger("orchestrator")
LEDGER_HELP = (
    "where spend is recorded, for budgets over time windows: a path, sqlite:///ABS/PATH,"
    " postgresql://USER@HOST:PORT/DB[?schema=NAME] (shared by many machines, docs/fleet.md),"
    " or none (also: ORCHESTRATOR_LEDGER; e.g. --ledger none) (default:"
    " $XDG_DATA_HOME/claude-budget-orchestrator/ledger.sqlite3; with --demo a throw-away one)"
)
UNREACHABLE_HELP = (
    "block mode, when the PostgreSQL ledger cannot be reached mid-run: closed launches"
    " nothing until it is back, open launches anyway under what is known locally"
    " (default: closed; charges are journaled locally either way)"
)
_throwaway: list[str] = []  # the demo's ledger folders, removed after the run


def budget_text(budget: BudgetState) -> str:
    """``/review=2M/day``, ``overall=$50/week``: a windowed budget as a user would write it."""
    limit = format_usd(budget.limit) if budget.unit is Unit.USD else format_tokens(budget.limit)
    return f"{budget.key}={limit}/{budget.window.name}"


def parse_labels(texts: Sequence[str]) -> dict[str, str]:
    labels = {}
    for text in texts:
        key, eq, value = text.partition("=")
        if not eq or not key.strip():
            raise ConfigError(f"--label {text!r} must look like KEY=VALUE (e.g. team=infra)")
        labels[key.strip()] = value.strip()
    return labels


def open_run_ledger(
    args: argparse.Namespace,
    argv: Sequence[str],
    run: RunConfig,
    manager: BudgetManager,
    plan: ResumePlan | None = None,
) -> RunLedger | None:
    """The run's ledger, with each windowed budget seeded from it; None without one.

    Raises ``ConfigError`` when a windowed budget in block mode cannot be enforced."""
    labels = parse_labels(args.label)
    windowed = manager.windowed()
    throwaway = None
    if args.demo and args.ledger is None:
        folder = tempfile.mkdtemp(prefix="orchestrator-demo-ledger-")
        _throwaway.append(folder)
        throwaway = os.path.join(folder, "ledger.sqlite3")
    url = resolve_ledger_url(args.ledger, os.environ, throwaway)
    now = time.time()
    session = None
    try:
        ledger = open_ledger(url)
        if ledger is not None:
            words = ["orchestrator", *(redact_arg(a) for a in argv)]  # no password recorded
            record = run_record(new_run_id(now), now, words, manager.mode, labels)
            if plan is not None:  # recorded as: orchestrator resume RUN_ID [flags]
                record = dataclasses.replace(record, resumed_from=plan.run_id)
            budgets = [
                WindowedBudget(None if b.key == OVERALL else b.key, b.unit, b.window)
                for b in windowed
            ]
            session = RunLedger(ledger, record, budgets)
            try:
                session.open_run()
                if plan is not None:
                    _first_resume_or_refuse(ledger, record.id, plan.run_id)
                if session.fleet:
                    fleet_setup(session, args)
                spends = session.start_spend()
            except LedgerError:
                ledger.close()
                raise
            for b, spend in zip(budgets, spends, strict=True):
                manager.set_outside(b.key or OVERALL, b.unit, spend.others - spend.own_before)
            if plan is not None:
                session.used_before.update(plan.used_before)
        # Where "none" came from: the flag, or the environment (the user may not know it is set).
        named = "--ledger none" if args.ledger is not None else f"{LEDGER_ENV}=none"
        reason = named if ledger is None else None
    except LedgerError as exc:
        reason = str(exc)
    if reason is None:
        return session
    if windowed and manager.mode == "block":
        raise ConfigError(f"cannot enforce {budget_text(windowed[0])} without the ledger: {reason}")
    if windowed:
        print(
            f"orchestrator: warning: {reason}; windowed budgets count this run only",
            file=sys.stderr,
        )
    elif ledger_was_asked(args):
        print(
            f"orchestrator: warning: {reason}; the run goes on with per-run budgets "
            "and its spend is not recorded",
            file=sys.stderr,
        )
    return None


def _first_resume_or_refuse(ledger: Ledger, run_id: str, resumed: str) -> None:
    """Two resumes of one run started together would both do its work: recorded first,
    the first one started goes on; the other ends here, before launching anything."""
    first = ledger.resumes_of(resumed)[0]
    if first != run_id:
        ledger.close_run(run_id, time.time(), 2)
        ledger.close()
        raise ConfigError(
            f"run {resumed} is being resumed already, by run {first}: not doing its work twice"
        )


def fleet_setup(session: RunLedger, args: argparse.Namespace) -> None:
    """A fleet ledger: journal outages under the data dir, and first write what earlier runs
    journaled for this ledger and could not write (they ended while it was away)."""
    folder = journal_folder(os.environ)
    session.use_journal(folder)
    session.launch_while_unreachable = args.ledger_unreachable == "open"
    for run_id, count in replay_orphans(folder, session.ledger, session.ledger_id):
        print(
            f"orchestrator: wrote {count} charge(s) that run {run_id} journaled while the"
            " ledger was away",
            file=sys.stderr,
        )


def ledger_was_asked(args: argparse.Namespace) -> bool:
    """``--ledger none`` given on purpose needs no warning; any other failure does."""
    given = args.ledger if args.ledger is not None else os.environ.get("ORCHESTRATOR_LEDGER")
    return (given or "").strip().lower() != "none"


def close_ledger(orchestrator: Orchestrator, exit_code: int) -> bool:
    """Write what is pending and close the run; False when some of it could not be written."""
    session = orchestrator.ledger
    error = None
    if session is not None:
        error = session.finish(orchestrator.instance_records(), exit_code)
        if error is not None:
            print(f"orchestrator: error: ledger: {error}", file=sys.stderr)
    while _throwaway:
        shutil.rmtree(_throwaway.pop(), ignore_errors=True)
    return error is None


def ledger_url_for_summary(orchestrator: Orchestrator) -> str | None:
    session = orchestrator.ledger
    return redact_url(session.ledger.url) if session is not None else None
