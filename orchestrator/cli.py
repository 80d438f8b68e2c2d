"""The ``orchestrator`` command: parse the command line, build the run, report, exit."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import math
import os
import shlex
import shutil
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from budget_core import (
    OVERALL,
    BudgetManager,
    BudgetSpec,
    PriceTable,
    Unit,
    Window,
    format_tokens,
    format_usd,
    parse_budget_spec,
    parse_windowed_limit,
)
from orchestrator import __version__
from orchestrator.claude_version import Interrupted, check_version
from orchestrator.config import (
    BudgetConfig,
    ConfigError,
    InstanceSpec,
    RunConfig,
    argument_problem,
    check_instance,
    check_mode,
    command_line_problem,
    default_budget_key,
    instance_argv,
    load_config_file,
)
from orchestrator.cooperative import max_budget_args
from orchestrator.descendants import become_subreaper
from orchestrator.failure import failure_report, stop_after_failure
from orchestrator.integration_options import add_arguments, options_from_args
from orchestrator.integrations import Integrations, attach
from orchestrator.ledger_cli import (
    LEDGER_HELP,
    UNREACHABLE_HELP,
    close_ledger,
    open_run_ledger,
)
from orchestrator.output import Output, fill_closed_std_fds, point_at_devnull, say
from orchestrator.output_file import output_problem
from orchestrator.palette import Palette, use_colour
from orchestrator.ratelimits import OnRateLimit
from orchestrator.report import HeadlessReporter, summary_report
from orchestrator.resume_hint import resume_hint
from orchestrator.run import Orchestrator, budget_manager_for
from orchestrator.summary import summary_dict, write_summary_json
from orchestrator.threaded import ThreadedRun
from orchestrator.workspace import workspace_problem

if TYPE_CHECKING:
    from orchestrator.resume_cmd import ResumePlan

log = logging.getLogger("orchestrator")

DEMO_CONFIG = Path(__file__).parent / "demo" / "demo.json"
SIMULATOR = Path(__file__).parent / "simulator.py"
HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
MAX_SECONDS = 7 * 24 * 3600  # delays, timeouts, report intervals: a week at most
MAX_CONCURRENT = 1000

DESCRIPTION = "Run Claude Code instances in parallel and keep their token spend inside budgets."
EPILOG = """\
budgets:
  A token budget counts every token of the instances charged to it: input + output +
  cache_creation + cache_read (cache reads are cheap per token but large in number).
  An instance is charged to its budget key: 'budget_key' in the config, else the first
  word of its slash command (/analyze src -> /analyze), else its name. The overall budget
  counts every instance. Token limits take 50000, 50k, 1.5M or 2_000 (at most 10^15);
  USD limits plain amounts: 5, 2.50 or $2.50 (no k/M, at most $1,000,000,000). A budget
  key has no '=', whitespace or control characters, and each key is given once.
  A limit may carry a window, counted over every run on the ledger (--ledger):
  /review=2M/day, 5/week, 10M/month, 50/5h, 90m, 7d (calendar windows in local time).
  'orchestrator usage --help': what the ledger holds, by day, command, model, run, label.
  'orchestrator resume --help': continue a recorded run's work a budget stopped or blocked.
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
  3 budget enforcement blocked or stopped an instance; 130/143 interrupted (SIGINT/SIGTERM);
  129 the terminal closed (SIGHUP); 141 stdout closed (| head, a pager quit), taken as SIGPIPE.
  Interrupted, every instance is stopped and the summary (and --summary-json) still written.
"""


CLAUDE_ARG_HINT = "to give claude one of orchestrator's own options, write --claude-arg=--OPTION"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line, not argparse's usage dump: the message names the bad flag or value.
        if message.startswith("argument --claude-arg: expected one argument"):
            message += f" ({CLAUDE_ARG_HINT})"
        raise ConfigError(f"{message} (see --help)")

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        given = sys.argv[1:] if args is None else list(args)
        own = tuple(self._option_string_actions)
        return super().parse_known_args(_glue_claude_args(given, own), namespace)


def _glue_claude_args(argv: list[str], own: tuple[str, ...]) -> list[str]:
    """``--claude-arg --model`` as ``--claude-arg=--model`` (argparse refuses a value that
    starts with '-'), unless the word is one of ``own`` options or an abbreviation of one:
    ``--claude-arg --dry-run`` missing its value must not launch a real run."""
    glued: list[str] = []
    i = 0
    while i < len(argv):
        if argv[i] == "--":  # what follows is positional
            return glued + argv[i:]
        if argv[i] == "--claude-arg" and i + 1 < len(argv) and not _is_own(argv[i + 1], own):
            glued.append(f"--claude-arg={argv[i + 1]}")
            i += 2
        else:
            glued.append(argv[i])
            i += 1
    return glued


def _is_own(word: str, own: tuple[str, ...]) -> bool:
    name = word.split("=", 1)[0]
    abbreviation = len(name) > 2 and name.startswith("--")  # as argparse accepts them
    return name in own or (abbreviation and any(option.startswith(name) for option in own))


def _number(
    kind: Callable[[str], float], minimum: float, maximum: float, strict: bool
) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
        if value < minimum or (strict and value == minimum):
            relation = ">" if strict else ">="
            raise argparse.ArgumentTypeError(f"{text!r} must be {relation} {minimum:g}")
        if value > maximum:
            raise argparse.ArgumentTypeError(f"{text!r} must be at most {maximum:g}")
        return value

    return parse


MIN_REPORT_INTERVAL_S = 0.01  # shorter floods the log (thousands of blocks of bars a second)


def _report_interval(text: str) -> float:
    """0 (final summary only), or at least ``MIN_REPORT_INTERVAL_S``."""
    value = _number(float, 0, MAX_SECONDS, False)(text)
    if 0 < value < MIN_REPORT_INTERVAL_S:
        raise argparse.ArgumentTypeError(
            f"{text!r} must be 0 (final summary only) or at least {MIN_REPORT_INTERVAL_S:g}"
        )
    return value


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="orchestrator",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "command",
        nargs="?",
        help='one instance running this slash command or prompt, e.g. "/analyze src"',
    )
    source = p.add_mutually_exclusive_group()
    source.add_argument(
        "--config",
        metavar="FILE",
        help='instances and budgets from a JSON file: {"instances": [...], "budget": {...}}, '
        "e.g. examples/budgets.json (default: none; give a COMMAND, --config or --demo)",
    )
    source.add_argument(
        "--demo",
        action="store_true",
        help="run the bundled simulated instances: no Claude, no network, no key (default: off)",
    )
    p.add_argument(
        "--workspace",
        metavar="DIR",
        help="working directory of every instance, e.g. ../app; it must exist and be "
        "readable (default: the current directory)",
    )
    p.add_argument(
        "--claude-bin",
        metavar="PATH",
        help="the claude executable, e.g. ~/.local/bin/claude "
        "(default: $ORCHESTRATOR_CLAUDE_BIN, else claude on PATH)",
    )
    p.add_argument(
        "--claude-arg",
        metavar="ARG",
        action="append",
        default=[],
        help="one more argument for every instance, repeatable; the word after it is taken "
        "as is, even if it starts with '-': --claude-arg --max-turns --claude-arg 3, "
        "or --claude-arg=--model=opus; one of orchestrator's own options needs the '=' form, "
        "--claude-arg=--version (default: none)",
    )
    p.add_argument(
        "--max-concurrent",
        metavar="N",
        type=_number(int, 1, MAX_CONCURRENT, False),
        default=4,
        help=f"instances running at once, e.g. 8; 1 to {MAX_CONCURRENT} (default: 4)",
    )
    p.add_argument(
        "--startup-delay",
        metavar="SECS",
        type=_number(float, 0, MAX_SECONDS, False),
        default=0.0,
        help=f"pause between two launches, e.g. 0.5; 0 to {MAX_SECONDS} (a week) (default: 0)",
    )
    p.add_argument(
        "--timeout",
        metavar="SECS",
        type=_number(float, 0, MAX_SECONDS, True),
        default=None,
        help="stop an instance that runs longer, e.g. 600; at most a week (default: no limit)",
    )
    p.add_argument(
        "--command-budget",
        metavar="CMD=LIMIT",
        action="append",
        default=[],
        help="token budget of the instances charged to CMD, e.g. /analyze=200k; repeatable, "
        "each CMD once; overrides the config's (default: none)",
    )
    p.add_argument(
        "--overall-token-budget",
        metavar="N",
        help="token budget of the whole run, e.g. 1.5M (default: the config's, else none)",
    )
    p.add_argument(
        "--command-cost-budget",
        metavar="CMD=USD",
        action="append",
        default=[],
        help="cost budget of the instances charged to CMD, e.g. /review=2.50; repeatable, "
        "each CMD once; overrides the config's (default: none)",
    )
    p.add_argument(
        "--overall-cost-budget",
        metavar="USD",
        help="cost budget of the whole run, e.g. 10 or $7.50 (default: the config's, else none)",
    )
    p.add_argument(
        "--budget-enforcement-mode",
        choices=("warn", "block"),
        default=None,
        help="warn: log each level crossed; block: do not launch, and stop, what an exceeded "
        "budget covers (default: the config's, else warn)",
    )
    p.add_argument(
        "--on-rate-limit",
        choices=[str(choice) for choice in OnRateLimit],
        default=str(OnRateLimit.CONTINUE),
        help="when a subscription window (5h, 7d) is reported rejected: 'wait' holds new "
        "launches until its reset time, showing a countdown; 'continue' launches anyway "
        "(default: continue)",
    )
    p.add_argument(
        "--tui",
        action="store_true",
        help="the Textual monitor; headless when stdout is not a terminal (default: off)",
    )
    p.add_argument(
        "--status-report-interval",
        metavar="SECS",
        type=_report_interval,
        default=5.0,
        help="seconds between two blocks of budget bars in the headless log, e.g. 30; "
        "0 = final summary only (default: 5)",
    )
    p.add_argument(
        "--summary-json",
        metavar="FILE",
        help="write the final summary as JSON, e.g. run.json: replaced whole, a symlink's "
        "target written, the mode kept; a FIFO, device, folder or the config file is "
        "refused (default: none)",
    )
    p.add_argument(
        "--no-color",
        action="store_true",
        help="no colour; also NO_COLOR (default: colour on a terminal only)",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="print each instance's argv and the budgets; launch nothing (default: off)",
    )
    p.add_argument(
        "--quiet",
        action="store_true",
        help="only warnings and the final summary (default: off)",
    )
    p.add_argument("--ledger", metavar="URL", help=LEDGER_HELP)
    p.add_argument(
        "--ledger-unreachable", choices=("closed", "open"), default="closed", help=UNREACHABLE_HELP
    )
    p.add_argument(
        "--label",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        help="a label recorded with the run in the ledger, repeatable, e.g. --label team=infra"
        " (default: none; git_branch and project are added by themselves)",
    )
    p.add_argument(
        "--no-cooperative-limits",
        action="store_true",
        help="do not hand a USD budget's remainder to the CLI as --max-budget-usd (default: in "
        "block mode, a CLI that takes it, 2.0.30 or later, is given it and stops itself)",
    )
    add_arguments(p)  # alerts, GitHub Actions, metrics
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
    spec = InstanceSpec(name=name, prompt=prompt, budget_key=key)
    check_instance(spec, "COMMAND")
    return [spec], BudgetConfig()


def _budgets(args: argparse.Namespace, base: BudgetConfig) -> BudgetConfig:
    """The file's budget block, overridden by the command line key by key (a flag's limit
    replaces the file's, window and all)."""
    flag_tokens = _flag_budgets("--command-budget", args.command_budget, Unit.TOKENS)
    flag_usd = _flag_budgets("--command-cost-budget", args.command_cost_budget, Unit.USD)
    tokens = {**base.command_tokens, **{k: int(s.limit) for k, s in flag_tokens.items()}}
    usd = {**base.command_usd, **{k: s.limit for k, s in flag_usd.items()}}
    windows = dict(base.windows)
    for flags in (flag_tokens, flag_usd):
        for key, spec in flags.items():
            _set_window(windows, key, spec.unit, spec.window)
    overall_tokens = base.overall_tokens
    if args.overall_token_budget is not None:
        limit, window = _flag_limit(
            "--overall-token-budget", args.overall_token_budget, Unit.TOKENS
        )
        overall_tokens = int(limit)
        _set_window(windows, OVERALL, Unit.TOKENS, window)
    overall_usd = base.overall_usd
    if args.overall_cost_budget is not None:
        overall_usd, window = _flag_limit(
            "--overall-cost-budget", args.overall_cost_budget, Unit.USD
        )
        _set_window(windows, OVERALL, Unit.USD, window)
    mode = base.mode
    if args.budget_enforcement_mode is not None:
        mode = check_mode(args.budget_enforcement_mode, "--budget-enforcement-mode")
    return BudgetConfig(overall_tokens, overall_usd, tokens, usd, mode, windows)


def _flag_budgets(flag: str, specs: list[str], unit: Unit) -> dict[str, BudgetSpec]:
    """``KEY=LIMIT[/WINDOW]`` flags by key; a key given twice is an error (the last would
    silently win, perhaps a budget loosened by accident)."""
    limits: dict[str, BudgetSpec] = {}
    given: dict[str, str] = {}
    for text in specs:
        try:
            spec = parse_budget_spec(text, unit)
        except ValueError as exc:
            raise ConfigError(f"{flag}: {exc}") from None
        if spec.key in given:
            raise ConfigError(
                f"{flag} {spec.key} is given twice ({given[spec.key]!r}, then {text!r}); "
                "give each key once"
            )
        limits[spec.key], given[spec.key] = spec, text
    return limits


def _set_window(
    windows: dict[tuple[str, Unit], Window], key: str, unit: Unit, window: Window
) -> None:
    if window.is_run:
        windows.pop((key, unit), None)
    else:
        windows[(key, unit)] = window


def _flag_limit(flag: str, text: str, unit: Unit) -> tuple[float, Window]:
    try:
        return parse_windowed_limit(text, unit)
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
    if args.workspace is not None and (problem := workspace_problem(args.workspace)):
        raise ConfigError(f"--workspace {args.workspace}: {problem}")
    for arg in args.claude_arg:
        if problem := argument_problem(arg):
            raise ConfigError(f"--claude-arg {arg!r} {problem}")
    run = RunConfig(
        instances=tuple(instances),
        budgets=budgets,
        claude_cmd=resolve_claude(args) if not args.dry_run or args.demo else _dry_claude(args),
        extra_args=tuple(args.claude_arg),
        workspace=args.workspace,
        max_concurrent=int(args.max_concurrent),
        startup_delay_s=float(args.startup_delay),
        timeout_s=args.timeout,
        on_rate_limit=OnRateLimit(args.on_rate_limit),
    )
    for spec in run.instances:
        if problem := command_line_problem(instance_argv(run, spec)):
            raise ConfigError(f"instance {spec.name!r}: {problem}")
    return run


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
    cooperative = run.cooperative_limits and manager.mode == "block"
    for spec in run.instances:
        limit = max_budget_args(manager.snapshot(), spec.budget_key) if cooperative else ()
        argv = instance_argv(run, spec, limit)
        lines.append(f"  {spec.name} [{spec.budget_key}]: {shlex.join(argv)}")
    budgets = manager.snapshot().budgets
    lines.append("budgets:" if budgets else "budgets: none")
    for b in budgets:
        per = "" if b.window.is_run else f" per {b.window.name}"
        if b.unit is Unit.USD:
            lines.append(f"  {b.key}: {format_usd(b.limit)}{per}")
        else:
            lines.append(f"  {b.key}: {int(b.limit):,} tokens ({format_tokens(b.limit)}){per}")
    return "\n".join(lines)


def _setup_logging(output: Output, quiet: bool) -> None:
    log.handlers[:] = [output.handler()]
    log.handlers[0].setFormatter(logging.Formatter("%(message)s"))
    log.setLevel(logging.WARNING if quiet else logging.INFO)
    log.propagate = False


async def _run_headless(
    orchestrator: Orchestrator, reporter: HeadlessReporter, output: Output
) -> int:
    loop = asyncio.get_running_loop()
    for sig in HANDLED_SIGNALS:
        loop.add_signal_handler(sig, orchestrator.interrupt, sig)
    output.watch(loop)
    periodic = asyncio.create_task(reporter.report_periodically())
    try:
        return await orchestrator.run()
    except Exception as error:
        periodic.cancel()
        await stop_after_failure(orchestrator, error)
        raise
    finally:
        periodic.cancel()
        output.unwatch()
        for sig in HANDLED_SIGNALS:
            loop.remove_signal_handler(sig)
        _ignore_stop_signals()


def _ignore_stop_signals() -> None:
    """The run is over and every instance stopped: a Ctrl-C now (a second one, typed a
    moment late) must not cost the summary, which is written next."""
    for sig in HANDLED_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


def tui_refusal() -> str | None:
    """Why ``--tui`` cannot draw here, or None. Textual draws on stderr; stdout gets the
    summary: both must be the terminal, or the monitor goes into a file (or a pipe)."""
    not_terminals = [name for fd, name in ((1, "stdout"), (2, "stderr")) if not os.isatty(fd)]
    if not not_terminals:
        return None
    which = " and ".join(not_terminals)
    verb = "are" if len(not_terminals) > 1 else "is"
    return f"--tui needs a terminal on stdout and stderr ({which} {verb} not one); running headless"


def _run_tui(orchestrator: Orchestrator) -> int:
    from tui.app import build_app  # only here: headless runs never import textual

    orchestrator.hold_when_paused = True  # paused by a budget: wait for + and r, or q
    run = ThreadedRun(orchestrator)  # reading never holds up the monitor's keys
    app = build_app(run, run=run.run)
    terminal_fds = [fd for fd in (0, 1, 2) if os.isatty(fd)]

    async def monitor() -> int | None:
        # A signal means what Ctrl-C in the monitor means: the app has the run stop every
        # instance (SIGTERM, SIGKILL after the grace; a second one kills at once) and then
        # closes with the run's exit status; once the run is over, it just closes.
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, app.interrupt, sig)

        def hangup(signum: int, _frame: object) -> None:
            # The terminal is gone. Its file descriptors are replaced at once, not later in
            # the loop: the kernel also sends SIGCONT, on which Textual restarts its output
            # thread; if that thread met the dead terminal it would die, and the app would
            # then block for ever on its full queue. /dev/null takes the terminal's place,
            # so every later write just goes nowhere; the stop itself goes through the app.
            for fd in terminal_fds:
                if not os.isatty(fd):
                    point_at_devnull(fd)
            loop.call_soon_threadsafe(app.interrupt, signum)

        previous = signal.signal(signal.SIGHUP, hangup)
        try:
            return await app.run_async()
        finally:
            signal.signal(signal.SIGHUP, previous)
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)

    result = asyncio.run(monitor())
    if app.run_error is not None:
        raise app.run_error  # shown now that the monitor has given the terminal back
    if result is None:
        # The app ended without the run's result (it failed, or the terminal went away
        # first): nothing will wait for the instances any more. Kill them now, none may
        # outlive us, and let the run's thread count what they printed.
        orchestrator.kill_now("stopped: the monitor ended before the run did")
        run.finished.wait(timeout=10)
        return orchestrator.exit_code() if orchestrator.interrupted_by else 1
    return int(result)


def run_inputs(args: argparse.Namespace, run: RunConfig) -> list[tuple[str, str]]:
    """Files the run reads, which an output file must not replace: (what, path)."""
    inputs = [("the command the instances run", part) for part in run.claude_cmd]
    if args.config or args.demo:
        inputs.append(("the config file", args.config or str(DEMO_CONFIG)))
    if prices := os.environ.get("ORCHESTRATOR_PRICES"):
        inputs.append(("the price table (ORCHESTRATOR_PRICES)", prices))
    return inputs


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
    fill_closed_std_fds()
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["usage"]:
        from orchestrator.usage_cmd import main as usage_main

        return usage_main(argv[1:])
    if argv[:1] == ["resume"]:
        from orchestrator.resume_cmd import main as resume_main

        return resume_main(argv[1:])
    if argv[:1] == ["run"]:  # the explicit spelling, for a prompt named like a subcommand
        argv = argv[1:]
    try:
        args = build_parser().parse_args(argv)
    except ConfigError as exc:
        say(f"orchestrator: error: {exc}", sys.stderr)
        return 2
    return run_command(args, argv)


def run_command(args: argparse.Namespace, argv: list[str], plan: ResumePlan | None = None) -> int:
    """The run of parsed ``args`` (``argv`` is recorded in the ledger); ``plan``: what
    ``orchestrator resume`` changes (instances continued, earlier spend, resumed_from)."""
    try:
        run = build_run(args)
        if plan is not None:
            run = plan.apply(run)
        manager = _budget_manager(run)
        if plan is not None:
            plan.seed(manager)
        prices = load_prices()
        if args.summary_json is not None and (
            problem := output_problem(args.summary_json, run_inputs(args, run))
        ):
            raise ConfigError(f"--summary-json: cannot write there: {problem}")
        integration_options = options_from_args(args, run_inputs(args, run))
    except ConfigError as exc:
        say(f"orchestrator: error: {exc}", sys.stderr)
        return 2
    # What leaves an instance's (or the version check's) process group (setsid) becomes
    # ours when orphaned, so it is found and stopped with it (the process is ours alone).
    become_subreaper()
    if not args.demo and shutil.which(run.claude_cmd[0]):
        try:
            run = _adapt_to_claude_version(run, not args.no_cooperative_limits)
        except Interrupted as exc:
            return 128 + exc.signum
    if args.dry_run:
        say(dry_run_text(run, manager))
        return 0
    try:
        ledger = open_run_ledger(args, argv, run, manager, plan)
    except ConfigError as exc:
        say(f"orchestrator: error: {exc}", sys.stderr)
        return 2
    orchestrator = Orchestrator(run, budgets=manager, prices=prices, ledger=ledger)
    if plan is not None:
        orchestrator.resume_prompt = plan.resume_prompt
    output = Output(sys.stdout, on_gone=lambda: _output_gone(orchestrator))
    _setup_logging(output, args.quiet)
    palette = Palette(use_colour(sys.stdout, args.no_color))
    for key in unused_budget_keys(run) if plan is None else ():  # resumed: a subset ran
        log.warning(f"WARNING budget {key} applies to no instance (no instance's key is {key})")
    refusal = tui_refusal() if args.tui else None
    if refusal:
        log.warning(f"orchestrator: {refusal}")
    use_tui = args.tui and refusal is None
    reporter = HeadlessReporter(
        orchestrator, palette, 0 if use_tui else args.status_report_interval, args.quiet or use_tui
    )
    integrations = attach(integration_options, orchestrator, deferred=use_tui)  # after the log
    meaning = None
    try:
        if use_tui:
            reporter.close()
            code = _run_tui(orchestrator)
        else:
            code = asyncio.run(_run_headless(orchestrator, reporter, output))
    except Exception as error:  # a bug in the run; it stopped what it started (kill_now: surely)
        orchestrator.kill_now(f"stopped: the run failed ({type(error).__name__})")
        say(failure_report(error), sys.stderr)
        code, meaning = 1, "the run failed (a bug in the orchestrator, see the error above)"
    _ignore_stop_signals()
    if orchestrator.interrupted_by == signal.SIGPIPE:
        say(
            "orchestrator: stdout was closed (its reader went away): every instance was "
            f"stopped; exit status {code}",
            sys.stderr,
        )
    return _finish(orchestrator, code, args, palette, meaning, integrations)


def _output_gone(orchestrator: Orchestrator) -> None:
    """Nobody reads the log any more (``| head``, a pager quit): end the run as interrupted,
    by SIGPIPE as the shell would have it (exit 128 + 13 = 141)."""
    if orchestrator.interrupted_by is None:
        orchestrator.interrupt(signal.SIGPIPE)


def _adapt_to_claude_version(run: RunConfig, cooperative: bool = True) -> RunConfig:
    """Ask the CLI its version once; one older than 1.0.109 runs without partial messages,
    one older than 2.0.30 without cooperative limits (--max-budget-usd)."""
    check = check_version(run.claude_cmd)
    if warning := check.warning(run.claude_cmd[-1]):
        say(f"orchestrator: warning: {warning}", sys.stderr)
    return dataclasses.replace(
        run,
        partial_messages=check.partial_messages,
        cooperative_limits=cooperative and check.max_budget_usd,
    )


def _budget_manager(run: RunConfig) -> BudgetManager:
    try:
        return budget_manager_for(run)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _finish(
    orchestrator: Orchestrator,
    code: int,
    args: argparse.Namespace,
    palette: Palette,
    meaning: str | None = None,
    integrations: Integrations | None = None,
) -> int:
    if not close_ledger(orchestrator, code) and code == 0:
        code, meaning = 1, "every instance succeeded, but the ledger lacks some of their spend"
    if integrations is not None and (problem := integrations.finish_metrics(code)):
        say(
            f"orchestrator: error: cannot write --metrics-file {args.metrics_file}: {problem}",
            sys.stderr,
        )
        if code == 0:
            code, meaning = 1, "every instance succeeded, but the metrics file was not written"
    snapshot = orchestrator.snapshot()
    if args.summary_json is not None:
        try:
            write_summary_json(
                args.summary_json,
                summary_dict(snapshot, code, orchestrator.ledger),
                run_inputs(args, orchestrator.config),
            )
        except OSError as exc:
            say(
                f"orchestrator: error: cannot write --summary-json {args.summary_json}: "
                f"{exc.strerror or exc}",
                sys.stderr,
            )
            if code == 0:
                code, meaning = 1, "every instance succeeded, but the summary JSON was not written"
    if integrations is not None:  # the run's end alert, GitHub's summary and outputs
        integrations.finish(code, meaning)
    # Once the summary JSON is written, the exit status is decided: a reader that goes away
    # now (the run is over) changes neither.
    say(summary_report(snapshot, code, palette, meaning))
    if hint := resume_hint(
        snapshot, orchestrator.ledger, args.ledger, args.demo and args.ledger is None
    ):
        say(hint)
    return code


def entry_point() -> NoReturn:
    try:
        code = main()
    except KeyboardInterrupt:
        # Ctrl-C outside the run (while starting up, or while the summary is written): the
        # run's own handlers are not there, and no instance runs. No traceback for it.
        say("orchestrator: interrupted", sys.stderr)
        code = 130
    sys.exit(code)
