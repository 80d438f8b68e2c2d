"""``orchestrator resume [RUN_ID | last] [flags]``: continue the work of a recorded run.

The run's configuration is rebuilt from its record in the ledger (its argv, read in its
working directory; a resumed run's record is ``resume RUN_ID [flags]``, applied on top of
the run it resumed). Flags given here override it. Every instance that did not succeed is
launched again: one with a session continues it (``--resume SESSION_ID`` and the resume
prompt), one that never started starts afresh. Run-window budgets count what the earlier
runs of the work spent; windowed ones count it anyway (it is in the ledger).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from budget_core import OVERALL, BudgetManager, TokenUsage, Unit
from orchestrator.config import ConfigError, RunConfig, argument_problem
from orchestrator.ledger import Ledger, LedgerError, open_ledger, redact_url, resolve_ledger_url
from orchestrator.ledger.base import InstanceRecord, RunRecord
from orchestrator.ledger.urls import sqlite_path
from orchestrator.output import say
from orchestrator.run import DEFAULT_RESUME_PROMPT

# The flags that may change on resume; the rest (config, workspace, instances) is the run's.
_OVERRIDABLE = (
    "--command-budget",
    "--command-cost-budget",
    "--overall-token-budget",
    "--overall-cost-budget",
    "--budget-enforcement-mode",
    "--tui",
    "--status-report-interval",
    "--summary-json",
    "--no-color",
    "--quiet",
    "--dry-run",
    "--ledger",
    "--label",
    "--max-concurrent",
    "--startup-delay",
    "--timeout",
    "--claude-bin",
    "--no-cooperative-limits",
    "--ledger-unreachable",
    "--on-rate-limit",
    "--alert-command",
    "--alert-webhook",
    "--alert-at",
    "--alert-timeout",
    "--metrics-file",
)
_BY_KEY = ("command_budget", "command_cost_budget")  # merged key by key
_NOT_INHERITED = ("summary_json", "tui", "dry_run")  # the new run's own choice
MAX_CHAIN = 1000  # resumes of resumes; a loop in a broken ledger must not hang us


@dataclass
class ResumePlan:
    """What resuming changes in the run built from the configuration."""

    run_id: str
    records: dict[str, InstanceRecord]  # each instance's latest record in the chain
    spend: dict[str, tuple[TokenUsage, float]]  # the chain's charges by key
    sessions: dict[str, str]  # each instance's newest session in the chain
    resume_prompt: str = DEFAULT_RESUME_PROMPT
    used_before: dict[tuple[str | None, Unit], float] = field(default_factory=dict)

    def apply(self, run: RunConfig) -> RunConfig:
        """Only what did not succeed, each continuing its session when it has one."""
        names = {spec.name for spec in run.instances}
        gone = [n for n, r in self.records.items() if r.status != "succeeded" and n not in names]
        if gone:  # the config file changed since the run: resuming the rest would lose them
            raise ConfigError(
                f"run {self.run_id}: {', '.join(sorted(gone))} not in its configuration any "
                "more (was the config file changed since?): its work cannot be resumed"
            )
        instances = []
        for spec in run.instances:
            record = self.records.get(spec.name)
            if record is not None and record.status == "succeeded":
                continue
            session = self.sessions.get(spec.name)
            if session and record is not None:
                spec = dataclasses.replace(
                    spec,
                    resume_session_id=session,
                    resume_prompt=self.resume_prompt,
                    resume_settled=record.final,
                )
            instances.append(spec)
        if not instances:
            raise ConfigError(f"run {self.run_id} has nothing to resume: every instance succeeded")
        return dataclasses.replace(run, instances=tuple(instances))

    def seed(self, manager: BudgetManager) -> None:
        """A run-window budget counts the earlier runs' spend: the work goes on."""
        total_usage = sum((u for u, _ in self.spend.values()), TokenUsage())
        total_cost = sum(c for _, c in self.spend.values())
        for budget in manager.snapshot().budgets:
            if not budget.window.is_run:
                continue
            if budget.key == OVERALL:
                usage, cost = total_usage, total_cost
            else:
                usage, cost = self.spend.get(budget.key, (TokenUsage(), 0.0))
            amount = float(usage.total) if budget.unit is Unit.TOKENS else cost
            manager.set_outside(budget.key, budget.unit, amount)
            key = None if budget.key == OVERALL else budget.key
            self.used_before[(key, budget.unit)] = amount


def build_resume_parser() -> argparse.ArgumentParser:
    from orchestrator.cli import _Parser, build_parser

    main = build_parser()
    p = _Parser(
        prog="orchestrator resume",
        description="Continue a recorded run's work that did not succeed (stopped or blocked "
        "by a budget, cancelled, timed out, failed): sessions are resumed with --resume, "
        "instances that never started start afresh. The run's configuration is used; the "
        "flags below override it.",
        argument_default=argparse.SUPPRESS,
    )
    p.add_argument(
        "run",
        nargs="?",
        default="last",
        metavar="RUN_ID",
        help="the run to resume, as 'orchestrator usage --by run' lists it, or 'last' "
        "(default: last, the run started last)",
    )
    p.add_argument(
        "--resume-prompt",
        metavar="TEXT",
        help=f"the prompt a resumed session gets (default: {DEFAULT_RESUME_PROMPT!r})",
    )
    for action in main._actions:
        if action.option_strings and action.option_strings[0] in _OVERRIDABLE:
            kwargs = {
                "dest": action.dest,
                "help": action.help,
                "default": argparse.SUPPRESS,
            }
            if isinstance(action, argparse._StoreTrueAction):
                p.add_argument(*action.option_strings, action="store_true", **kwargs)  # type: ignore[arg-type]
            else:
                p.add_argument(
                    *action.option_strings,
                    action="append" if isinstance(action, argparse._AppendAction) else "store",
                    type=action.type,  # type: ignore[arg-type]
                    choices=action.choices,
                    metavar=action.metavar,
                    **kwargs,  # type: ignore[arg-type]
                )
    return p


def _key(text: str) -> str:
    return text.partition("=")[0].strip()


def merge(base: argparse.Namespace, override: argparse.Namespace) -> argparse.Namespace:
    """``base`` with every flag ``override`` gives; budget flags replace key by key."""
    merged = argparse.Namespace(**vars(base))
    for name in _NOT_INHERITED:
        setattr(merged, name, None if name == "summary_json" else False)
    for name, value in vars(override).items():
        if name in ("run", "resume_prompt"):
            continue
        if name in _BY_KEY:
            given = {_key(text) for text in value}
            kept = [text for text in getattr(base, name) if _key(text) not in given]
            value = kept + list(value)
        setattr(merged, name, value)
    return merged


def original_args(ledger: Ledger, record: RunRecord, depth: int = 0) -> argparse.Namespace:
    """The parsed command line of the run ``record``, relative paths made absolute in its
    working directory; for a resumed run, its flags applied to the run it resumed."""
    from orchestrator.cli import build_parser

    argv = list(record.argv[1:])
    if argv[:1] == ["resume"]:
        earlier = ledger.find_run(record.resumed_from) if record.resumed_from else None
        if earlier is None or depth > MAX_CHAIN:
            raise ConfigError(
                f"run {record.id} resumed {record.resumed_from or 'a run'}, which is not "
                "in the ledger: its configuration cannot be rebuilt"
            )
        return merge(
            original_args(ledger, earlier, depth + 1),
            build_resume_parser().parse_args(argv[1:]),
        )
    if argv[:1] == ["run"]:
        argv = argv[1:]
    try:
        args = build_parser().parse_args(argv)
    except ConfigError as exc:
        raise ConfigError(f"run {record.id}'s recorded command line: {exc}") from None
    for name in ("config", "workspace"):
        value = getattr(args, name)
        if value and not os.path.isabs(value):
            setattr(args, name, os.path.join(record.cwd, value))
    if args.claude_bin and os.sep in args.claude_bin and not os.path.isabs(args.claude_bin):
        args.claude_bin = os.path.join(record.cwd, args.claude_bin)
    return args


def _chain(ledger: Ledger, record: RunRecord) -> list[RunRecord]:
    """The run and those it resumed, newest first."""
    chain = [record]
    while chain[-1].resumed_from and len(chain) <= MAX_CHAIN:
        earlier = ledger.find_run(chain[-1].resumed_from)
        if earlier is None:
            break
        chain.append(earlier)
    return chain


def check_not_resumed_twice(ledger: Ledger, record: RunRecord) -> None:
    """Work is continued once: not a run some run already resumed (that one goes on with
    it), nor a resume that lost to another started at the same time."""
    if resumes := ledger.resumes_of(record.id):
        raise ConfigError(
            f"run {record.id} was resumed already, by run {resumes[0]}: to go on with its "
            f"work, resume that one (orchestrator resume {resumes[0]})"
        )
    if record.resumed_from:
        first = ledger.resumes_of(record.resumed_from)[:1]
        if first and first[0] != record.id:
            raise ConfigError(
                f"run {record.id} resumed {record.resumed_from} at the same time as run "
                f"{first[0]}, which went on with its work: resume that one "
                f"(orchestrator resume {first[0]})"
            )


def _open(given: str | None) -> tuple[Ledger, str, str]:
    url = resolve_ledger_url(given, os.environ, None)
    where = "--ledger" if given is not None else "the ledger"
    if url.strip().lower() == "none":
        named = "--ledger none" if given is not None else "ORCHESTRATOR_LEDGER=none"
        raise ConfigError(f"nothing to resume from: {named} (runs are resumed from the ledger)")
    try:
        path = sqlite_path(url)
        if path is not None and not path.exists():
            raise ConfigError(f"no ledger at {path}: no run was recorded there to resume")
        ledger = open_ledger(url)
    except LedgerError as exc:
        raise ConfigError(f"cannot open {where}: {exc}") from None
    assert ledger is not None
    return ledger, url, redact_url(url)


def plan_for(args: argparse.Namespace) -> tuple[argparse.Namespace, ResumePlan]:
    ledger, url, shown = _open(getattr(args, "ledger", None))
    try:
        wanted = None if args.run == "last" else args.run
        record = ledger.find_run(wanted)
        if record is None:
            if wanted is None:
                raise ConfigError(f"the ledger {shown} holds no run to resume")
            shown_id = (
                repr(wanted) if len(wanted) <= 80 else f"{wanted[:60]!r}... ({len(wanted)} chars)"
            )
            raise ConfigError(
                f"no run {shown_id} in the ledger {shown} (see: orchestrator usage --by run)"
            )
        status = getattr(ledger, "run_status", None)
        if status is not None and status(record.id, time.time()) == "running":
            raise ConfigError(
                f"run {record.id} is still running (its heartbeat is recent); resume it once "
                "it has ended"
            )
        check_not_resumed_twice(ledger, record)
        run_args = merge(original_args(ledger, record), args)
        # The run goes on in the ledger it was found in; the recorded --ledger has no password.
        run_args.ledger = url
        records: dict[str, InstanceRecord] = {}
        chain = _chain(ledger, record)
        sessions: dict[str, str] = {}
        for earlier in chain:
            for inst in ledger.run_instances(earlier.id):
                records.setdefault(inst.name, inst)
                if inst.session_id:  # the newest session (stopped before its first line,
                    sessions.setdefault(inst.name, inst.session_id)  # a process has none)
        spend = ledger.run_spend([r.id for r in chain])
        if records and all(r.status == "succeeded" for r in records.values()):
            raise ConfigError(f"run {record.id} has nothing to resume: every instance succeeded")
    except LedgerError as exc:
        raise ConfigError(f"cannot read the ledger {shown}: {exc}") from None
    finally:
        ledger.close()
    prompt = getattr(args, "resume_prompt", DEFAULT_RESUME_PROMPT)
    if not prompt.strip():
        raise ConfigError("--resume-prompt is empty")
    if problem := argument_problem(prompt):
        raise ConfigError(f"--resume-prompt {problem}")
    return run_args, ResumePlan(record.id, records, spend, sessions, prompt)


def main(argv: Sequence[str]) -> int:
    from orchestrator.cli import run_command

    argv = list(argv)
    try:
        args = build_resume_parser().parse_args(argv)
        run_args, plan = plan_for(args)
    except ConfigError as exc:
        say(f"orchestrator resume: error: {exc}", sys.stderr)
        return 2
    # Recorded as typed, with the run's id: a later resume rebuilds this one from it.
    flags = list(argv)
    if args.run in flags:
        flags.remove(args.run)
    return run_command(run_args, ["resume", plan.run_id, *flags], plan)
