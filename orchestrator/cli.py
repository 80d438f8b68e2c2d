"""The ``orchestrator`` command: parse the command line, build the run, report, exit."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import shlex
import shutil
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import NoReturn

from budget_core import (
    OVERALL,
    BudgetManager,
    PriceTable,
    Unit,
    format_tokens,
    format_usd,
    parse_budget_spec,
    parse_limit,
)
from orchestrator import __version__
from orchestrator.claude_version import Interrupted, check_version
from orchestrator.config import (
    BudgetConfig,
    ConfigError,
    InstanceSpec,
    RunConfig,
    check_mode,
    default_budget_key,
    instance_argv,
    load_config_file,
)
from orchestrator.palette import Palette, use_colour
from orchestrator.report import HeadlessReporter, summary_report
from orchestrator.run import Orchestrator, budget_manager_for
from orchestrator.summary import check_writable, summary_dict, write_summary_json
from orchestrator.threaded import ThreadedRun

log = logging.getLogger("orchestrator")

DEMO_CONFIG = Path(__file__).parent / "demo" / "demo.json"
SIMULATOR = Path(__file__).parent / "simulator.py"
HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

DESCRIPTION = "Run Claude Code instances in parallel and keep their token spend inside budgets."
EPILOG = """\
budgets:
  A token budget counts every token of the instances charged to it: input + output +
  cache_creation + cache_read (cache reads are cheap per token but large in number).
  An instance is charged to its budget key: 'budget_key' in the config, else the first
  word of its slash command (/analyze src -> /analyze), else its name. The overall budget
  counts every instance. Limits take 50000, 50k, 1.5M or 2_000; USD limits 2.50 or $2.50.
  Levels: ok < 70% <= warning < 90% <= critical < 100% <= exceeded.
  warn mode logs each level crossed and goes on; block mode does not launch an instance
  whose budget is exceeded and stops (SIGTERM, then SIGKILL) running instances charged
  to a budget the moment it is exceeded. Tokens already streamed are still counted.

example:
  orchestrator --config examples/budgets.json \\
      --command-budget /analyze=200k --command-budget /review=50k \\
      --overall-cost-budget 5 --budget-enforcement-mode block --summary-json run.json

exit status:
  0 every instance succeeded; 1 an instance failed or timed out; 2 bad usage or config;
  3 budget enforcement blocked or stopped an instance; 130/143 interrupted (SIGINT/SIGTERM).
"""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line, not argparse's usage dump: the message names the bad flag or value.
        raise ConfigError(f"{message} (see --help)")


def _number(kind: Callable[[str], float], minimum: float, strict: bool) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if value < minimum or (strict and value == minimum):
            relation = ">" if strict else ">="
            raise argparse.ArgumentTypeError(f"{text!r} must be {relation} {minimum:g}")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="orchestrator",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("command", nargs="?", help="one instance running this slash command or prompt")
    source = p.add_mutually_exclusive_group()
    source.add_argument(
        "--config", metavar="FILE", help='JSON: {"instances": [...], "budget": {...}}'
    )
    source.add_argument("--demo", action="store_true", help="bundled simulated instances")
    p.add_argument("--workspace", metavar="DIR", help="working directory of every instance")
    p.add_argument("--claude-bin", metavar="PATH", help="claude executable")
    p.add_argument(
        "--claude-arg",
        metavar="ARG",
        action="append",
        default=[],
        help="extra argument, repeatable",
    )
    p.add_argument("--max-concurrent", metavar="N", type=_number(int, 1, False), default=4)
    p.add_argument("--startup-delay", metavar="SECS", type=_number(float, 0, False), default=0.0)
    p.add_argument("--timeout", metavar="SECS", type=_number(float, 0, True), default=None)
    p.add_argument(
        "--command-budget", metavar="CMD=LIMIT", action="append", default=[], help="token budget"
    )
    p.add_argument("--overall-token-budget", metavar="N")
    p.add_argument("--command-cost-budget", metavar="CMD=USD", action="append", default=[])
    p.add_argument("--overall-cost-budget", metavar="USD")
    p.add_argument("--budget-enforcement-mode", choices=("warn", "block"), default=None)
    p.add_argument("--tui", action="store_true", help="the Textual monitor")
    p.add_argument(
        "--status-report-interval", metavar="SECS", type=_number(float, 0, False), default=5.0
    )
    p.add_argument("--summary-json", metavar="FILE")
    p.add_argument("--no-color", action="store_true", help="no colour (also: NO_COLOR)")
    p.add_argument("--dry-run", action="store_true", help="print argv and budgets; launch nothing")
    p.add_argument("--quiet", action="store_true", help="only warnings and the final summary")
    p.add_argument("--version", action="version", version=f"orchestrator {__version__}")
    return p


def _instances(args: argparse.Namespace) -> tuple[list[InstanceSpec], BudgetConfig]:
    if args.demo:
        if args.command:
            raise ConfigError("--demo runs its own instances; give no COMMAND with it")
        return load_config_file(DEMO_CONFIG)
    if args.config:
        if args.command:
            raise ConfigError("give a COMMAND or --config, not both")
        return load_config_file(Path(args.config))
    if not args.command or not args.command.strip():
        raise ConfigError("nothing to run: give a COMMAND, --config FILE or --demo (see --help)")
    prompt = args.command.strip()
    key = default_budget_key("instance", prompt)
    name = key.lstrip("/") if key.startswith("/") else "instance"
    return [InstanceSpec(name=name, prompt=prompt, budget_key=key)], BudgetConfig()


def _budgets(args: argparse.Namespace, base: BudgetConfig) -> BudgetConfig:
    """The file's budget block, overridden by the command line."""
    tokens, usd = dict(base.command_tokens), dict(base.command_usd)
    try:
        for text in args.command_budget:
            spec = parse_budget_spec(text, Unit.TOKENS)
            tokens[spec.key] = int(spec.limit)
        for text in args.command_cost_budget:
            spec = parse_budget_spec(text, Unit.USD)
            usd[spec.key] = spec.limit
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    overall_tokens = base.overall_tokens
    if args.overall_token_budget is not None:
        overall_tokens = int(
            _flag_limit("--overall-token-budget", args.overall_token_budget, Unit.TOKENS)
        )
    overall_usd = base.overall_usd
    if args.overall_cost_budget is not None:
        overall_usd = _flag_limit("--overall-cost-budget", args.overall_cost_budget, Unit.USD)
    mode = base.mode
    if args.budget_enforcement_mode is not None:
        mode = check_mode(args.budget_enforcement_mode, "--budget-enforcement-mode")
    return BudgetConfig(overall_tokens, overall_usd, tokens, usd, mode)


def _flag_limit(flag: str, text: str, unit: Unit) -> float:
    try:
        return parse_limit(text, unit)
    except ValueError as exc:
        raise ConfigError(f"{flag}: {exc}") from None


def resolve_claude(args: argparse.Namespace) -> tuple[str, ...]:
    if args.demo:
        return (sys.executable, str(SIMULATOR))
    given = args.claude_bin or os.environ.get("ORCHESTRATOR_CLAUDE_BIN") or "claude"
    if args.claude_bin:
        origin = " (from --claude-bin)"
    elif os.environ.get("ORCHESTRATOR_CLAUDE_BIN"):
        origin = " (from ORCHESTRATOR_CLAUDE_BIN)"
    else:
        origin = ""
    if os.sep not in given:
        found = shutil.which(given)
        if found is None:
            raise ConfigError(
                f"claude executable {given!r}{origin} not found on PATH "
                "(install Claude Code, or use --claude-bin / ORCHESTRATOR_CLAUDE_BIN)"
            )
        return (found,)
    path = Path(given)
    if not path.exists():
        raise ConfigError(f"claude executable {given}{origin} does not exist")
    if path.is_dir() or not os.access(path, os.X_OK):
        raise ConfigError(f"claude executable {given}{origin} is not executable")
    # Absolute: Path() drops a leading "./" (then exec searches PATH), and a relative path
    # would be resolved again against --workspace, the instances' working directory.
    return (os.path.abspath(given),)


def build_run(args: argparse.Namespace) -> RunConfig:
    instances, file_budgets = _instances(args)
    budgets = _budgets(args, file_budgets)
    if args.workspace is not None and not Path(args.workspace).is_dir():
        raise ConfigError(f"--workspace {args.workspace}: not a directory")
    return RunConfig(
        instances=tuple(instances),
        budgets=budgets,
        claude_cmd=resolve_claude(args) if not args.dry_run or args.demo else _dry_claude(args),
        extra_args=tuple(args.claude_arg),
        workspace=args.workspace,
        max_concurrent=int(args.max_concurrent),
        startup_delay_s=float(args.startup_delay),
        timeout_s=args.timeout,
    )


def _dry_claude(args: argparse.Namespace) -> tuple[str, ...]:
    """A dry run prints what would run, even where claude is not installed (and says so)."""
    try:
        return resolve_claude(args)
    except ConfigError as exc:
        print(f"orchestrator: warning: {exc}", file=sys.stderr)
        return (args.claude_bin or os.environ.get("ORCHESTRATOR_CLAUDE_BIN") or "claude",)


def unused_budget_keys(run: RunConfig) -> list[str]:
    keys = {*run.budgets.command_tokens, *run.budgets.command_usd}
    used = {spec.budget_key for spec in run.instances}
    return sorted(keys - used - {OVERALL})


def dry_run_text(run: RunConfig, manager: BudgetManager) -> str:
    lines = [
        f"dry run: {len(run.instances)} instance(s), at most {run.max_concurrent} at once, "
        f"enforcement {manager.mode.upper()}; nothing is launched"
    ]
    for spec in run.instances:
        lines.append(f"  {spec.name} [{spec.budget_key}]: {shlex.join(instance_argv(run, spec))}")
    budgets = manager.snapshot().budgets
    lines.append("budgets:" if budgets else "budgets: none")
    for b in budgets:
        if b.unit is Unit.USD:
            lines.append(f"  {b.key}: {format_usd(b.limit)}")
        else:
            lines.append(f"  {b.key}: {int(b.limit):,} tokens ({format_tokens(b.limit)})")
    return "\n".join(lines)


def _setup_logging(quiet: bool) -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(logging.WARNING if quiet else logging.INFO)
    log.propagate = False


async def _run_headless(orchestrator: Orchestrator, reporter: HeadlessReporter) -> int:
    loop = asyncio.get_running_loop()
    for sig in HANDLED_SIGNALS:
        loop.add_signal_handler(sig, orchestrator.interrupt, sig)
    periodic = asyncio.create_task(reporter.report_periodically())
    try:
        return await orchestrator.run()
    finally:
        periodic.cancel()
        for sig in HANDLED_SIGNALS:
            loop.remove_signal_handler(sig)


def _run_tui(orchestrator: Orchestrator) -> int:
    from tui.app import build_app  # only here: headless runs never import textual

    run = ThreadedRun(orchestrator)  # reading never holds up the monitor's keys
    app = build_app(run, run=lambda: _run_in_app(run, app.exit))
    result = app.run()
    if result is None:
        # The app ended without the run's result (it failed, or the terminal went away
        # first): nothing will wait for the instances any more. Kill them now, none may
        # outlive us, and let the run's thread count what they printed.
        orchestrator.kill_now("stopped: the monitor ended before the run did")
        run.finished.wait(timeout=10)
        return orchestrator.exit_code() if orchestrator.interrupted_by else 1
    return int(result)


async def _run_in_app(run: ThreadedRun, exit_app: Callable[[int], None]) -> int:
    """The run, awaited from Textual's loop; a closed terminal (SIGHUP) or SIGTERM stops it."""
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, run.interrupt, signal.SIGTERM)
    terminal_fds = [fd for fd in (0, 1, 2) if os.isatty(fd)]

    def hangup(signum: int, _frame: object) -> None:
        # Handled at once, not later in the loop: when the terminal closes, the kernel also
        # sends SIGCONT, on which Textual restarts its output thread; if that thread meets
        # the dead terminal it dies, and the app then blocks for ever on its full queue
        # (the run never ends, the summary is never written). /dev/null takes the
        # terminal's place first, so every later write just goes nowhere.
        _detach_dead_terminal(terminal_fds)
        run.interrupt(signum)

    signal.signal(signal.SIGHUP, hangup)
    code = await run.run()
    if run.orchestrator.interrupted_by is not None:
        exit_app(code)
    return code


def _detach_dead_terminal(fds: Sequence[int]) -> None:
    """Point each of ``fds`` that was a terminal and is one no longer (hung up) at /dev/null."""
    dead = [fd for fd in fds if not os.isatty(fd)]
    if dead:
        null = os.open(os.devnull, os.O_RDWR)
        for fd in dead:
            os.dup2(null, fd)
        os.close(null)


def load_prices() -> PriceTable | None:
    """A user's price table from $ORCHESTRATOR_PRICES, for estimates before the CLI's own cost."""
    path = os.environ.get("ORCHESTRATOR_PRICES")
    if not path:
        return None
    try:
        return PriceTable.from_json(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"ORCHESTRATOR_PRICES={path}: cannot read: {exc.strerror}") from None
    except ValueError as exc:
        raise ConfigError(f"ORCHESTRATOR_PRICES={path}: {exc}") from None


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        run = build_run(args)
        manager = _budget_manager(run)
        prices = load_prices()
        if args.summary_json and (problem := check_writable(Path(args.summary_json))):
            raise ConfigError(f"--summary-json: cannot write there: {problem}")
    except ConfigError as exc:
        print(f"orchestrator: error: {exc}", file=sys.stderr)
        return 2
    if not args.demo and shutil.which(run.claude_cmd[0]):
        try:
            run = _adapt_to_claude_version(run)
        except Interrupted as exc:
            return 128 + exc.signum
    if args.dry_run:
        print(dry_run_text(run, manager))
        return 0
    _setup_logging(args.quiet)
    palette = Palette(use_colour(sys.stdout, args.no_color))
    for key in unused_budget_keys(run):
        log.warning(f"WARNING budget {key} applies to no instance (no instance's key is {key})")
    orchestrator = Orchestrator(run, budgets=manager, prices=prices)
    use_tui = args.tui and sys.stdout.isatty()
    if args.tui and not use_tui:
        print("orchestrator: --tui needs a terminal (stdout is not one); running headless")
    reporter = HeadlessReporter(
        orchestrator, palette, 0 if use_tui else args.status_report_interval, args.quiet or use_tui
    )
    if use_tui:
        reporter.close()
        code = _run_tui(orchestrator)
    else:
        code = _run_and_wait(_run_headless(orchestrator, reporter))
    return _finish(orchestrator, code, args, palette)


def _adapt_to_claude_version(run: RunConfig) -> RunConfig:
    """Ask the CLI its version once; one older than 1.0.109 runs without partial messages."""
    check = check_version(run.claude_cmd)
    if warning := check.warning(run.claude_cmd[-1]):
        print(f"orchestrator: warning: {warning}", file=sys.stderr)
    return dataclasses.replace(run, partial_messages=check.partial_messages)


def _run_and_wait(coro: Awaitable[int]) -> int:
    async def wrapper() -> int:
        return await coro

    return asyncio.run(wrapper())


def _budget_manager(run: RunConfig) -> BudgetManager:
    try:
        return budget_manager_for(run)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _finish(
    orchestrator: Orchestrator, code: int, args: argparse.Namespace, palette: Palette
) -> int:
    snapshot = orchestrator.snapshot()
    meaning = None
    if args.summary_json:
        try:
            write_summary_json(Path(args.summary_json), summary_dict(snapshot, code))
        except OSError as exc:
            print(
                f"orchestrator: error: cannot write --summary-json {args.summary_json}: "
                f"{exc.strerror or exc}",
                file=sys.stderr,
            )
            if code == 0:
                code, meaning = 1, "every instance succeeded, but the summary JSON was not written"
    print(summary_report(snapshot, code, palette, meaning), flush=True)
    return code


def entry_point() -> NoReturn:
    sys.exit(main())
