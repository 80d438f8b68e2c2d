"""Run configuration: instances and budgets, from a JSON file and/or the command line.

Every problem a user can cause is a ``ConfigError`` whose message names the file, key or
value and what is allowed; the CLI prints it as one line and exits 2 before launching.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from budget_core import (
    MAX_TOKENS,
    MAX_USD,
    MODES,
    OVERALL,
    Mode,
    Unit,
    Window,
    check_budget_key,
    parse_windowed_limit,
    unprintable_character,
)
from orchestrator.ratelimits import OnRateLimit

INSTANCE_KEYS = (
    "name",
    "command",
    "prompt",
    "description",
    "permission_mode",
    "allowed_tools",
    "session_id",
    "model",
    "max_tokens_per_command",
    "budget_key",
    "claude_args",
)
BUDGET_KEYS = (
    "overall_budget",
    "overall_cost_budget",
    "command_budgets",
    "command_cost_budgets",
    "enforcement_mode",
)
TOP_KEYS = ("instances", "budget")
PERMISSION_MODES = ("default", "acceptEdits", "bypassPermissions", "plan")
# Linux refuses (E2BIG) one argument longer than this, its NUL included; elsewhere only the
# whole command line is limited.
MAX_ARG_STRLEN = 131_072 if sys.platform.startswith("linux") else None


class ConfigError(Exception):
    """Bad configuration or usage: one line for the user, exit status 2."""


@dataclass(frozen=True, slots=True)
class InstanceSpec:
    name: str
    prompt: str  # the slash command or prompt given to ``claude -p``
    budget_key: str
    description: str = ""
    permission_mode: str | None = None
    allowed_tools: tuple[str, ...] = ()
    session_id: str | None = None
    model: str | None = None
    max_tokens: int | None = None  # the earlier tool's max_tokens_per_command
    claude_args: tuple[str, ...] = ()
    # Continuing a session (``orchestrator resume``, ``r`` in the monitor): ``--resume ID``
    # with ``resume_prompt`` instead of ``prompt`` (which stays the instance's command).
    resume_session_id: str | None = None
    resume_prompt: str | None = None
    resume_settled: bool = True  # the session's last process printed a result line


@dataclass(frozen=True, slots=True)
class BudgetConfig:
    overall_tokens: int | None = None
    overall_usd: float | None = None
    command_tokens: dict[str, int] = field(default_factory=dict)
    command_usd: dict[str, float] = field(default_factory=dict)
    mode: Mode = "warn"
    # The window of each budget that has one other than ``run`` (``"2M/day"``).
    windows: dict[tuple[str, Unit], Window] = field(default_factory=dict)


def default_budget_key(name: str, prompt: str) -> str:
    """``/analyze src`` -> ``/analyze``; a plain prompt is budgeted under the instance name."""
    first = prompt.strip().split(maxsplit=1)[0] if prompt.strip() else ""
    return first if first.startswith("/") and len(first) > 1 else name


def check_mode(value: object, where: str) -> Mode:
    if value == "warn" or value == "block":
        return "warn" if value == "warn" else "block"
    raise ConfigError(f"{where}: enforcement mode {value!r} is not one of {', '.join(MODES)}")


def load_config_file(path: Path) -> tuple[list[InstanceSpec], BudgetConfig]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc}") from None
    duplicates: list[_Duplicate] = []
    try:
        data = json.loads(text, object_pairs_hook=_pairs_hook(duplicates), parse_int=_json_int)
        for holder, key, first, second in duplicates:
            where = _path_to(data, holder)
            if where is not None:  # else it was in a value that a later duplicate replaced
                raise ConfigError(
                    f"{path}: {where or 'the top level'}: key {key!r} is given twice "
                    f"({_brief(first)}, then {_brief(second)}); give each key once"
                )
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}:{exc.lineno}:{exc.colno}: malformed JSON: {exc.msg}") from None
    except RecursionError:
        raise ConfigError(f"{path}: the JSON is nested too deeply") from None
    return parse_config(data, str(path))


_Duplicate = tuple[dict[str, Any], str, object, object]  # a JSON object, its key, both values


def _pairs_hook(found: list[_Duplicate]) -> Callable[[list[tuple[str, Any]]], dict[str, Any]]:
    """Builds JSON objects like ``json`` does, noting each key given twice (``json`` would
    silently keep the last)."""

    def build(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        obj: dict[str, Any] = {}
        for key, value in pairs:
            if key in obj:
                found.append((obj, key, obj[key], value))
            obj[key] = value
        return obj

    return build


def _path_to(data: object, target: object, path: str = "") -> str | None:
    """``instances[0]`` or ``budget.command_budgets``: where ``target`` sits in ``data``."""
    if data is target:
        return path
    items: list[tuple[str, object]] = []
    if isinstance(data, dict):
        items = [(f"{path}.{k}" if path else k, v) for k, v in data.items()]
    elif isinstance(data, list):
        items = [(f"{path}[{i}]", v) for i, v in enumerate(data)]
    for sub_path, value in items:
        if (found := _path_to(value, target, sub_path)) is not None:
            return found
    return None


def _json_int(text: str) -> int | float:
    # Past Python's 4,300-digit limit int() raises with advice about sys; as a float such a
    # number gets the same "must be at most ..." as any other value too large.
    return int(text) if len(text) <= 100 else float(text)


def _brief(value: object) -> str:
    if isinstance(value, dict):
        return "{...}"
    if isinstance(value, list):
        return "[...]"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def parse_config(data: object, where: str) -> tuple[list[InstanceSpec], BudgetConfig]:
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: the top level must be an object with 'instances'")
    _reject_unknown(data, TOP_KEYS, where)
    raw_instances = data.get("instances")
    if not isinstance(raw_instances, list) or not raw_instances:
        raise ConfigError(f"{where}: 'instances' must be a non-empty list")
    instances = [
        _parse_instance(item, f"{where}: instances[{i}]") for i, item in enumerate(raw_instances)
    ]
    seen: set[str] = set()
    for spec in instances:
        if spec.name in seen:
            raise ConfigError(f"{where}: duplicate instance name {spec.name!r}")
        seen.add(spec.name)
    budget = _parse_budget(data.get("budget", {}), f"{where}: budget")
    return instances, budget


def _reject_unknown(data: dict[str, Any], allowed: tuple[str, ...], where: str) -> None:
    unknown = [k for k in data if k not in allowed]
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r} (allowed: {', '.join(allowed)})")


def _text(data: dict[str, Any], key: str, where: str) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ConfigError(f"{where}: '{key}' must be a string, not {_brief(value)}")
    return value


def _parse_instance(item: object, where: str) -> InstanceSpec:
    if not isinstance(item, dict):
        raise ConfigError(f"{where}: each instance must be an object")
    _reject_unknown(item, INSTANCE_KEYS, where)
    command = _text(item, "command", where)
    prompt = _text(item, "prompt", where)
    if command and prompt:
        raise ConfigError(f"{where}: give 'command' or 'prompt', not both")
    text = (command or prompt or "").strip()
    if not text:
        raise ConfigError(f"{where}: missing 'command' (a slash command) or 'prompt'")
    name = _text(item, "name", where)
    if name is not None and not name.strip():
        raise ConfigError(f"{where}: 'name' is empty")
    name = name.strip() if name else f"instance-{where.rsplit('[', 1)[-1].rstrip(']')}"
    permission_mode = _text(item, "permission_mode", where)
    if permission_mode is not None and permission_mode not in PERMISSION_MODES:
        raise ConfigError(
            f"{where}: permission_mode {permission_mode!r} is not one of "
            + ", ".join(PERMISSION_MODES)
        )
    budget_key = _text(item, "budget_key", where)
    if budget_key is not None and not budget_key.strip():
        raise ConfigError(f"{where}: 'budget_key' is empty")
    spec = InstanceSpec(
        name=name,
        prompt=text,
        budget_key=budget_key.strip() if budget_key else default_budget_key(name, text),
        description=_text(item, "description", where) or "",
        permission_mode=permission_mode,
        allowed_tools=_string_list(item.get("allowed_tools"), "allowed_tools", where),
        session_id=_text(item, "session_id", where),
        model=_text(item, "model", where),
        max_tokens=_token_limit(
            item.get("max_tokens_per_command"), "max_tokens_per_command", where
        ),
        claude_args=_string_list(item.get("claude_args"), "claude_args", where),
    )
    check_instance(spec, where)
    return spec


def check_instance(spec: InstanceSpec, where: str) -> None:
    """Refuse what the OS would refuse in an argument (a NUL byte, text it cannot encode,
    too long) and what would break a log line or the table (in the name, the budget key)."""
    fields: list[tuple[str, str | None]] = [
        ("prompt", spec.prompt),
        ("session_id", spec.session_id),
        ("model", spec.model),
    ]
    fields += [(f"allowed_tools[{i}]", tool) for i, tool in enumerate(spec.allowed_tools)]
    fields += [(f"claude_args[{i}]", arg) for i, arg in enumerate(spec.claude_args)]
    for key, value in fields:
        if value is not None and (problem := argument_problem(value)):
            raise ConfigError(f"{where}: '{key}' {problem}")
    try:
        check_budget_key(spec.budget_key)
    except ValueError as exc:
        raise ConfigError(
            f"{where}: {exc} (an instance's budget key is its 'budget_key', else the first "
            "word of its slash command, else its name)"
        ) from None
    if problem := unprintable_character(spec.name):
        raise ConfigError(f"{where}: name {spec.name!r} contains {problem}")


def argument_problem(text: str) -> str | None:
    """Why the OS would refuse ``text`` as one argument of a command line, or None."""
    try:
        raw = os.fsencode(text)
    except UnicodeEncodeError as exc:
        return f"holds {text[exc.start]!r}, which cannot be passed as an argument"
    if b"\0" in raw:
        return "contains a NUL byte, which cannot be passed as an argument"
    if MAX_ARG_STRLEN is not None and len(raw) >= MAX_ARG_STRLEN:
        return (
            f"is {len(raw):,} bytes; one argument may hold at most {MAX_ARG_STRLEN - 1:,} "
            "(the system's MAX_ARG_STRLEN)"
        )
    return None


def command_line_problem(argv: Sequence[str]) -> str | None:
    """Why ``argv`` with this process's environment is over the system's ARG_MAX, or None."""
    pointer = 8  # each argument and variable also costs the kernel one pointer
    size = sum(len(os.fsencode(arg)) + 1 + pointer for arg in argv)
    size += sum(len(k) + len(v) + 2 + pointer for k, v in os.environb.items())
    limit = os.sysconf("SC_ARG_MAX") - 2048  # POSIX's headroom, as xargs keeps
    if size > limit:
        return (
            f"its command line and the environment would be {size:,} bytes, over the "
            f"system's limit of {limit:,} (ARG_MAX)"
        )
    return None


def _string_list(value: object, key: str, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    example = '["Read", "Grep"]' if key == "allowed_tools" else '["--max-turns", "3"]'
    raise ConfigError(
        f"{where}: '{key}' must be a list of strings like {example}, not {_brief(value)}"
    )


def _token_limit(value: object, key: str, where: str, required: bool = False) -> int | None:
    if value is None and not required:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not 0 < value <= MAX_TOKENS  # also false for NaN
    ):
        raise ConfigError(
            f"{where}: '{key}' must be a number > 0, not {_brief(value)} "
            "(a whole number of tokens, at most 10^15)"
        )
    if value != int(value):
        raise ConfigError(f"{where}: '{key}' must be a whole number of tokens, not {value!r}")
    return int(value)


def _usd_limit(value: object, key: str, where: str, required: bool = False) -> float | None:
    if value is None and not required:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= MAX_USD:
        raise ConfigError(
            f"{where}: '{key}' must be a number of USD > 0, not {_brief(value)} "
            f"(at most {MAX_USD:,})"
        )
    return float(value)


def _parse_budget(raw: object, where: str) -> BudgetConfig:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: must be an object")
    _reject_unknown(raw, BUDGET_KEYS, where)
    windows: dict[tuple[str, Unit], Window] = {}

    def limit(value: object, name: str, budget: tuple[str, Unit]) -> object:
        """A limit written as a string (``"5k"``, ``"2M/day"``, ``"$2.50/week"``) is read as
        on the command line: its window kept aside, its number returned. A JSON number is
        a per-run limit, as before."""
        if not isinstance(value, str):
            return value
        try:
            number, window = parse_windowed_limit(value, budget[1])
        except ValueError as exc:
            raise ConfigError(f"{where}: '{name}': {exc}") from None
        if not window.is_run:
            windows[budget] = window
        return number

    command_tokens = {
        key: _token_limit(
            limit(value, f"command_budgets.{key}", (key, Unit.TOKENS)),
            f"command_budgets.{key}",
            where,
            required=True,
        )
        or 0
        for key, value in _table(raw, "command_budgets", where).items()
    }
    command_usd = {
        key: _usd_limit(
            limit(value, f"command_cost_budgets.{key}", (key, Unit.USD)),
            f"command_cost_budgets.{key}",
            where,
            required=True,
        )
        or 0.0
        for key, value in _table(raw, "command_cost_budgets", where).items()
    }
    overall_tokens = limit(raw.get("overall_budget"), "overall_budget", (OVERALL, Unit.TOKENS))
    overall_usd = limit(raw.get("overall_cost_budget"), "overall_cost_budget", (OVERALL, Unit.USD))
    mode = raw.get("enforcement_mode", "warn")
    return BudgetConfig(
        overall_tokens=_token_limit(overall_tokens, "overall_budget", where),
        overall_usd=_usd_limit(overall_usd, "overall_cost_budget", where),
        command_tokens=command_tokens,
        command_usd=command_usd,
        mode=check_mode(mode, f"{where}: 'enforcement_mode'"),
        windows=windows,
    )


def _table(raw: dict[str, Any], key: str, where: str) -> dict[str, object]:
    table = raw.get(key, {})
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: '{key}' must be an object of key: limit")
    checked: dict[str, object] = {}
    for given, limit in table.items():
        name = given.strip()
        if not name:
            raise ConfigError(f"{where}: '{key}' has an empty key")
        try:
            check_budget_key(name)
        except ValueError as exc:
            raise ConfigError(f"{where}: '{key}': {exc}") from None
        if name in checked:
            raise ConfigError(
                f"{where}: '{key}' gives {name!r} twice ({_brief(checked[name])}, then "
                f"{_brief(limit)}); give each key once"
            )
        checked[name] = limit
    return checked


@dataclass(frozen=True, slots=True)
class RunConfig:
    """Everything a run needs, after the file and the command line have been merged."""

    instances: tuple[InstanceSpec, ...]
    budgets: BudgetConfig
    claude_cmd: tuple[str, ...]  # the executable, possibly with leading arguments
    extra_args: tuple[str, ...] = ()
    workspace: str | None = None
    max_concurrent: int = 4
    startup_delay_s: float = 0.0
    timeout_s: float | None = None
    stop_grace_s: float = 3.0  # SIGTERM, then SIGKILL this much later
    partial_messages: bool = True  # --include-partial-messages (off for CLIs before 1.0.109)
    # Hand a USD budget's remainder to the CLI (--max-budget-usd) in block mode: the CLI
    # supports it and --no-cooperative-limits was not given (see orchestrator.cooperative).
    cooperative_limits: bool = False
    on_rate_limit: OnRateLimit = OnRateLimit.CONTINUE  # --on-rate-limit


def instance_argv(run: RunConfig, spec: InstanceSpec, max_budget: Sequence[str] = ()) -> list[str]:
    """``claude -p --output-format stream-json --verbose --include-partial-messages ... -- PROMPT``

    The prompt comes last, after ``--``: a prompt starting with ``-`` ("--help", "-x ...")
    would otherwise be taken for an option by the CLI. Older CLIs lack partial messages
    (``run.partial_messages`` off): counting then falls back to the assistant lines.
    """
    argv = [*run.claude_cmd, "-p", "--output-format", "stream-json", "--verbose"]
    if run.partial_messages:
        argv.append("--include-partial-messages")
    if spec.permission_mode:
        argv += ["--permission-mode", spec.permission_mode]
    if spec.allowed_tools:
        argv += ["--allowedTools", *spec.allowed_tools]
    if spec.resume_session_id:
        argv += ["--resume", spec.resume_session_id]
    elif spec.session_id:
        argv += ["--session-id", spec.session_id]
    if spec.model:
        argv += ["--model", spec.model]
    prompt = spec.resume_prompt if spec.resume_session_id and spec.resume_prompt else spec.prompt
    return [*argv, *spec.claude_args, *run.extra_args, *max_budget, "--", prompt]
