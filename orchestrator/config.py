"""Run configuration: instances and budgets, from a JSON file and/or the command line.

Every problem a user can cause is a ``ConfigError`` whose message names the file, key or
value and what is allowed; the CLI prints it as one line and exits 2 before launching.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from budget_core import MODES, Mode

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


@dataclass(frozen=True, slots=True)
class BudgetConfig:
    overall_tokens: int | None = None
    overall_usd: float | None = None
    command_tokens: dict[str, int] = field(default_factory=dict)
    command_usd: dict[str, float] = field(default_factory=dict)
    mode: Mode = "warn"


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
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}:{exc.lineno}:{exc.colno}: malformed JSON: {exc.msg}") from None
    return parse_config(data, str(path))


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
        raise ConfigError(f"{where}: '{key}' must be a string, not {value!r}")
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
    return InstanceSpec(
        name=name,
        prompt=text,
        budget_key=budget_key.strip() if budget_key else default_budget_key(name, text),
        description=_text(item, "description", where) or "",
        permission_mode=permission_mode,
        allowed_tools=_string_list(item.get("allowed_tools"), "allowed_tools", where),
        session_id=_text(item, "session_id", where),
        model=_text(item, "model", where),
        max_tokens=_positive_int(
            item.get("max_tokens_per_command"), "max_tokens_per_command", where
        ),
        claude_args=_string_list(item.get("claude_args"), "claude_args", where),
    )


def _string_list(value: object, key: str, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return tuple(part for part in value.replace(",", " ").split() if part)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise ConfigError(f"{where}: '{key}' must be a list of strings")


def _positive_int(value: object, key: str, where: str, required: bool = False) -> int | None:
    if value is None and not required:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ConfigError(f"{where}: '{key}' must be a number > 0, not {value!r}")
    if value != int(value):
        raise ConfigError(f"{where}: '{key}' must be a whole number of tokens, not {value!r}")
    return int(value)


def _positive_usd(value: object, key: str, where: str, required: bool = False) -> float | None:
    if value is None and not required:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ConfigError(f"{where}: '{key}' must be a number of USD > 0, not {value!r}")
    return float(value)


def _parse_budget(raw: object, where: str) -> BudgetConfig:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: must be an object")
    _reject_unknown(raw, BUDGET_KEYS, where)
    command_tokens = {
        key: _positive_int(limit, f"command_budgets.{key}", where, required=True) or 0
        for key, limit in _table(raw, "command_budgets", where).items()
    }
    command_usd = {
        key: _positive_usd(limit, f"command_cost_budgets.{key}", where, required=True) or 0.0
        for key, limit in _table(raw, "command_cost_budgets", where).items()
    }
    mode = raw.get("enforcement_mode", "warn")
    return BudgetConfig(
        overall_tokens=_positive_int(raw.get("overall_budget"), "overall_budget", where),
        overall_usd=_positive_usd(raw.get("overall_cost_budget"), "overall_cost_budget", where),
        command_tokens=command_tokens,
        command_usd=command_usd,
        mode=check_mode(mode, f"{where}: 'enforcement_mode'"),
    )


def _table(raw: dict[str, Any], key: str, where: str) -> dict[str, object]:
    table = raw.get(key, {})
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: '{key}' must be an object of key: limit")
    if any(not k.strip() for k in table):
        raise ConfigError(f"{where}: '{key}' has an empty key")
    return {k.strip(): v for k, v in table.items()}


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


def instance_argv(run: RunConfig, spec: InstanceSpec) -> list[str]:
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
    if spec.session_id:
        argv += ["--session-id", spec.session_id]
    if spec.model:
        argv += ["--model", spec.model]
    return [*argv, *spec.claude_args, *run.extra_args, "--", spec.prompt]
