"""A stand-in for the Claude Code CLI that prints stream-json like the real CLI 2.1.197.

Run it as ``python -m orchestrator.simulator -p --output-format stream-json --verbose
[--include-partial-messages] [--sim-* options] -- PROMPT`` or as a script path (the prompt may
also follow ``-p``, as the real CLI allows). ``--version`` prints the version it imitates.
Flags of the real CLI are accepted and ignored; ``--sim-*`` options (or ``SIM_*`` environment
variables, flags win) choose the usage numbers, pacing and failure mode. Standard library
only, so it runs anywhere.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, BinaryIO

JSON = dict[str, Any]

CLAUDE_CODE_VERSION = "2.1.197"
FAIL_MODES = (
    "none",
    "crash",
    "hang",
    "garbage",
    "huge-line",
    "error-result",
    "no-result",
    "stderr-flood",
    "exit-nonzero",
    "invalid-utf8",
    "null-usage",
)
DEFAULT_ERROR_TEXT = (
    "API Error: 500 simulated internal error. This is a server-side issue, usually temporary"
    " — try again in a moment."
)
STDERR_FLOOD_BYTES = 10_000_000
_FLOOD_CHUNK = 256 * 1024
_HUGE_CHUNK = 1 << 20
_BASE_TIME = datetime(2026, 1, 1, tzinfo=UTC)

# Copied from the 2.1.197 init line so consumers see the same shape as in real transcripts.
_TOOLS = [
    "Task", "Bash", "CronCreate", "CronDelete", "CronList", "Edit", "EnterWorktree",
    "ExitWorktree", "NotebookEdit", "Read", "ReportFindings", "ScheduleWakeup", "SendMessage",
    "Skill", "TaskCreate", "TaskGet", "TaskList", "TaskOutput", "TaskStop", "TaskUpdate",
    "WebFetch", "WebSearch", "Workflow", "Write",
]  # fmt: skip
_SKILLS = [
    "deep-research", "update-config", "verify", "debug", "code-review", "simplify", "batch",
    "fewer-permission-prompts", "loop", "claude-api", "run", "run-skill-generator",
]  # fmt: skip
_SLASH_COMMANDS = [
    *_SKILLS, "clear", "compact", "config", "context", "heapdump", "init", "reload-skills",
    "review", "security-review", "usage", "insights", "goal", "team-onboarding",
]  # fmt: skip
_AGENTS = ["claude", "Explore", "general-purpose", "Plan", "statusline-setup"]
_WORDS = ["the", "simulated", "model", "streams", "a", "few", "words", "in", "every", "delta"]


@dataclass(frozen=True)
class Config:
    """Everything that shapes one simulated run."""

    prompt: str = ""
    partial: bool = False
    session_id: str | None = None
    permission_mode: str = "default"
    calls: int = 2
    input_tokens: int = 1200
    output_tokens: int = 400
    cache_creation: int = 200
    cache_read: int = 3000
    deltas: int = 8
    delay: float = 0.0
    model: str = "claude-opus-4-8"
    seed: int = 0
    fail: str = "none"
    huge_bytes: int = 50_000_000
    error_text: str = DEFAULT_ERROR_TEXT
    # A rate_limit_event as 2.1.x prints on a subscription: none, allowed, allowed_warning
    # (after the first call), rejected (the run then fails at once, as on an HTTP 429).
    rate_limit: str = "none"
    rate_limit_window: str = "five_hour"
    rate_limit_utilization: float = 0.83
    rate_limit_reset: str = "3600"  # seconds from now (may be negative), or @UNIX_TIME


def _non_negative_int(raw: str) -> int:
    value = int(raw)
    if value < 0:
        raise ValueError(f"must be >= 0: {raw}")
    return value


def _non_negative_float(raw: str) -> float:
    value = float(raw)
    if value < 0:
        raise ValueError(f"must be >= 0: {raw}")
    return value


RATE_LIMITS = ("none", "allowed", "allowed_warning", "rejected")


def _rate_limit(raw: str) -> str:
    if raw not in RATE_LIMITS:
        raise ValueError(f"unknown rate limit {raw!r}; choose from {', '.join(RATE_LIMITS)}")
    return raw


def _reset(raw: str) -> str:
    float(raw.removeprefix("@"))  # raises ValueError for anything but a number
    return raw


def _fail_mode(raw: str) -> str:
    if raw not in FAIL_MODES:
        raise ValueError(f"unknown fail mode {raw!r}; choose from {', '.join(FAIL_MODES)}")
    return raw


# Config field -> parser. Flag is --sim-<field with dashes>, env var is SIM_<FIELD>.
SIM_OPTIONS: dict[str, Callable[[str], object]] = {
    "calls": _non_negative_int,
    "input_tokens": _non_negative_int,
    "output_tokens": _non_negative_int,
    "cache_creation": _non_negative_int,
    "cache_read": _non_negative_int,
    "deltas": _non_negative_int,
    "delay": _non_negative_float,
    "model": str,
    "seed": int,
    "fail": _fail_mode,
    "huge_bytes": _non_negative_int,
    "error_text": str,
    "rate_limit": _rate_limit,
    "rate_limit_window": str,
    "rate_limit_utilization": float,
    "rate_limit_reset": _reset,
}

# Real CLI flags that take a value: declared only so their value is not taken for the prompt.
_CLAUDE_VALUE_FLAGS = (
    "--output-format", "--input-format", "--model", "--max-turns", "--allowedTools",
    "--allowed-tools", "--disallowedTools", "--disallowed-tools", "--append-system-prompt",
    "--system-prompt", "--fallback-model", "--settings", "--add-dir", "--mcp-config",
    "--resume", "--max-budget-usd",
)  # fmt: skip


def sim_flag(field: str) -> str:
    return "--sim-" + field.replace("_", "-")


def sim_env(field: str) -> str:
    return "SIM_" + field.upper()


def parse_config(argv: Sequence[str], env: Mapping[str, str]) -> Config:
    """Read claude-like argv plus --sim-* flags; SIM_* env vars fill in missing sim flags.

    The argument after ``--`` is the prompt, never an option, as with the real CLI. (Flags
    after the prompt are still read: wrappers that append ``--sim-*`` flags keep working.)
    """
    argv = list(argv)
    after_dashes = argv.index("--") if "--" in argv else None
    options = argv if after_dashes is None else argv[:after_dashes] + argv[after_dashes + 2 :]
    parser = argparse.ArgumentParser(
        prog="orchestrator.simulator", add_help=False, allow_abbrev=False
    )
    # -p is a boolean in the real CLI with the prompt positional; accept both spellings.
    parser.add_argument("-p", "--print", dest="print_prompt", nargs="?", const="")
    parser.add_argument("prompt", nargs="?")
    parser.add_argument("--include-partial-messages", action="store_true")
    parser.add_argument("--session-id")
    parser.add_argument("--permission-mode", default="default")
    for flag in _CLAUDE_VALUE_FLAGS:
        parser.add_argument(flag, action="append")
    for field in SIM_OPTIONS:
        parser.add_argument(sim_flag(field), dest="sim_" + field)
    ns, _unknown = parser.parse_known_args(options)

    values: dict[str, object] = {}
    for field, convert in SIM_OPTIONS.items():
        raw: str | None = getattr(ns, "sim_" + field)
        if raw is None:
            raw = env.get(sim_env(field))
        if raw is None:
            continue
        try:
            values[field] = convert(raw)
        except ValueError as exc:
            parser.error(f"{sim_flag(field)} / {sim_env(field)}: {exc}")
    if after_dashes is not None:
        prompt = argv[after_dashes + 1] if len(argv) > after_dashes + 1 else ""
    else:
        prompt = ns.print_prompt or ns.prompt or ""
    return Config(
        prompt=prompt,
        partial=bool(ns.include_partial_messages),
        session_id=ns.session_id,
        permission_mode=str(ns.permission_mode),
        **values,  # type: ignore[arg-type]  # types checked by SIM_OPTIONS converters
    )


def expected_usage(
    calls: int, input: int, output: int, cache_creation: int, cache_read: int
) -> dict[str, int]:
    """Totals a correct counter must find for a run of ``calls`` identical API calls."""
    return {
        "input": input * calls,
        "output": output * calls,
        "cache_creation": cache_creation * calls,
        "cache_read": cache_read * calls,
    }


def _prices(model: str) -> tuple[float, float, float, float]:
    """USD per Mtok (input, output, cache write 5m, cache read) for a model name."""
    name = model.lower()
    if "haiku" in name:
        return (1.0, 5.0, 1.25, 0.1)
    if "sonnet" in name:
        return (3.0, 15.0, 3.75, 0.3)
    if re.search(r"opus-4(?:-1)?(?:-\d{8})?(?:\[|$)", name):
        return (15.0, 75.0, 18.75, 1.5)  # Opus 4 / 4.1
    return (5.0, 25.0, 6.25, 0.5)  # Opus 4.5 and newer, and the fallback


def cost_usd(model: str, usage: Mapping[str, int]) -> float:
    """Cost of ``usage`` (keys as returned by expected_usage) in the simulator's price table."""
    p_in, p_out, p_write, p_read = _prices(model)
    return (
        usage["input"] * p_in
        + usage["output"] * p_out
        + usage["cache_creation"] * p_write
        + usage["cache_read"] * p_read
    ) / 1_000_000


def display_model(model: str) -> str:
    """The name the CLI shows in init/modelUsage: Opus runs with the 1M context suffix."""
    if "[" in model or "opus" not in model:
        return model
    return model + "[1m]"


def _dumps(obj: object) -> bytes:
    # Compact and non-ASCII kept raw, as JSON.stringify does.
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def _text_pieces(call: int, count: int, tool: bool) -> list[str]:
    if count == 0:
        return []
    lead = f"Call {call}: " + ("running echo." if tool else "done.")
    return [lead] + [f" {_WORDS[j % len(_WORDS)]}" for j in range(count - 1)]


def _repeat_bytes(total: int, chunk: bytes) -> Iterator[bytes]:
    """Yield ``total`` bytes cut from ``chunk`` without building one giant string."""
    while total > 0:
        part = chunk if total >= len(chunk) else chunk[:total]
        total -= len(part)
        yield part


class Simulator:
    """Writes one simulated run; every id comes from a seeded RNG so output is reproducible."""

    def __init__(self, cfg: Config, out: BinaryIO, err: BinaryIO) -> None:
        self.cfg = cfg
        self.out = out
        self.err = err
        self.rng = random.Random(f"{cfg.seed}:{cfg.prompt}")
        self.session_id = cfg.session_id or self._uuid()
        self.api_model = cfg.model.split("[")[0]
        self.lines = 0
        self.calls_done = 0
        self.last_text = ""
        self.stderr_left = STDERR_FLOOD_BYTES if cfg.fail == "stderr-flood" else 0
        self.special_pending = cfg.fail in ("huge-line", "invalid-utf8")

    # -- ids -----------------------------------------------------------------------------------

    def _uuid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def _hex(self, bits: int) -> str:
        return f"{self.rng.getrandbits(bits):0{bits // 4}x}"

    def _timestamp(self) -> str:
        moment = _BASE_TIME + timedelta(seconds=self.lines)
        return moment.strftime("%Y-%m-%dT%H:%M:%S.000Z")

    # -- output primitives ---------------------------------------------------------------------

    def write(self, parts: Iterable[bytes], newline: bool = True) -> None:
        """Write one line (possibly in pieces), then flush so readers see live progress."""
        if self.cfg.delay:
            time.sleep(self.cfg.delay)
        self.flood_stderr(_FLOOD_CHUNK)
        for part in parts:
            self.out.write(part)
        if newline:
            self.out.write(b"\n")
        self.out.flush()
        self.lines += 1

    def emit(self, obj: JSON) -> bytes:
        line = _dumps(obj)
        self.write([line])
        return line

    def flood_stderr(self, limit: int) -> None:
        size = min(limit, self.stderr_left)
        if size <= 0:
            return
        line = b"[sim] stderr flood: the CLI may be chatty on stderr; drain it concurrently\n"
        block = line * (_FLOOD_CHUNK // len(line) + 1)
        for part in _repeat_bytes(size, block):
            self.err.write(part)
        self.err.flush()
        self.stderr_left -= size

    def event(self, event: JSON, **extra: Any) -> None:
        # Like the real CLI, raw API events only appear with --include-partial-messages.
        if self.cfg.partial:
            self.emit(
                {
                    "type": "stream_event",
                    "event": event,
                    "session_id": self.session_id,
                    "parent_tool_use_id": None,
                    "uuid": self._uuid(),
                    **extra,
                }
            )

    # -- line builders -------------------------------------------------------------------------

    def _call_usage(self, assistant_line: bool) -> JSON:
        """Per-call usage as message_start/assistant lines carry it: output is a placeholder."""
        cfg = self.cfg
        usage: JSON = {
            "input_tokens": cfg.input_tokens,
            "output_tokens": 1,
            "cache_read_input_tokens": cfg.cache_read,
            "cache_creation_input_tokens": cfg.cache_creation,
        }
        if cfg.fail == "null-usage":
            # Real lines do arrive with null or missing numbers; only the result stays exact.
            usage["output_tokens"] = None
            if assistant_line:
                usage["cache_read_input_tokens"] = None
                usage["cache_creation_input_tokens"] = None
        return usage

    def _assistant(self, msg_id: str, request_id: str, block: JSON) -> JSON:
        return {
            "type": "assistant",
            "message": {
                "id": msg_id,
                "type": "message",
                "role": "assistant",
                "model": self.api_model,
                "content": [block],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": self._call_usage(assistant_line=True),
                "context_management": None,
            },
            "parent_tool_use_id": None,
            "session_id": self.session_id,
            "uuid": self._uuid(),
            "request_id": request_id,
        }

    def _user(self, tool_id: str, content: str, stdout: str) -> JSON:
        return {
            "type": "user",
            "message": {
                "role": "user",
                "content": [
                    {
                        "tool_use_id": tool_id,
                        "type": "tool_result",
                        "content": content,
                        "is_error": False,
                    }
                ],
            },
            "parent_tool_use_id": None,
            "session_id": self.session_id,
            "uuid": self._uuid(),
            "timestamp": self._timestamp(),
            "tool_use_result": {
                "stdout": stdout,
                "stderr": "",
                "interrupted": False,
                "isImage": False,
                "noOutputExpected": False,
            },
        }

    # -- run phases ----------------------------------------------------------------------------

    def emit_init(self) -> None:
        cwd = os.getcwd()
        home = os.path.expanduser("~")
        self.emit(
            {
                "type": "system",
                "subtype": "init",
                "cwd": cwd,
                "session_id": self.session_id,
                "tools": _TOOLS,
                "mcp_servers": [],
                "model": display_model(self.cfg.model),
                "permissionMode": self.cfg.permission_mode,
                "slash_commands": _SLASH_COMMANDS,
                "apiKeySource": "ANTHROPIC_API_KEY",
                "claude_code_version": CLAUDE_CODE_VERSION,
                "output_style": "default",
                "agents": _AGENTS,
                "skills": _SKILLS,
                "plugins": [],
                "analytics_disabled": True,
                "product_feedback_disabled": True,
                "uuid": self._uuid(),
                "memory_paths": {
                    "auto": f"{home}/.claude/projects/{cwd.replace('/', '-')}/memory/"
                },
                "fast_mode_state": "off",
            }
        )
        if self.cfg.partial:  # the real CLI only prints this status with partial messages
            self.emit(
                {
                    "type": "system",
                    "subtype": "status",
                    "status": "requesting",
                    "uuid": self._uuid(),
                    "session_id": self.session_id,
                }
            )

    def _start_message(self, call: int) -> tuple[str, str]:
        msg_id = f"msg_sim_{call:03d}_{self._hex(32)}"
        request_id = f"req_sim_{self._hex(64)}"
        message: JSON = {
            "id": msg_id,
            "type": "message",
            "role": "assistant",
            "model": self.api_model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": self._call_usage(assistant_line=False),
        }
        self.event({"type": "message_start", "message": message}, ttft_ms=20 + call)
        self.event({"type": "content_block_start", "index": 0, "content_block": _EMPTY_TEXT})
        return msg_id, request_id

    def emit_call(self, index: int, tool: bool) -> None:
        """One API call: text block, optional Bash tool_use, then its tool_result."""
        call = index + 1
        if self.cfg.fail == "garbage":
            self.write([f"DEBUG: [sim] POST /v1/messages?beta=true (turn {call})".encode()])
        msg_id, request_id = self._start_message(call)
        pieces = _text_pieces(call, self.cfg.deltas, tool)
        for piece in pieces:
            self.event(_text_delta(piece))
        text = "".join(pieces)
        line = self.emit(self._assistant(msg_id, request_id, {"type": "text", "text": text}))
        if self.cfg.fail == "garbage" and index == 0:
            self.write([line[: len(line) // 2]])  # a duplicate cut mid-line: must not count
        self.event({"type": "content_block_stop", "index": 0})
        tool_id = ""
        if tool:
            tool_id = f"toolu_sim_{call:03d}_{self._hex(32)}"
            tool_input = {"command": f"echo step {call}", "description": f"Print step {call}"}
            block = {"type": "tool_use", "id": tool_id, "name": "Bash", "input": tool_input}
            start = {**block, "input": {}}  # the input arrives in the delta, as from the API
            self.event({"type": "content_block_start", "index": 1, "content_block": start})
            self.event(
                {
                    "type": "content_block_delta",
                    "index": 1,
                    "delta": {"type": "input_json_delta", "partial_json": json.dumps(tool_input)},
                }
            )
            self.emit(self._assistant(msg_id, request_id, block))
            self.event({"type": "content_block_stop", "index": 1})
        self.event(
            {
                "type": "message_delta",
                "delta": {"stop_reason": "tool_use" if tool else "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": self.cfg.output_tokens},
            }
        )
        self.event({"type": "message_stop"})
        self.calls_done += 1
        self.last_text = text
        if tool:
            self.emit_tool_result(tool_id, f"step {call}")

    def emit_tool_result(self, tool_id: str, output: str) -> None:
        if self.special_pending:
            self.emit_special_line(tool_id)
        else:
            self.emit(self._user(tool_id, output, output))

    def emit_special_line(self, tool_id: str) -> None:
        """The huge-line / invalid-utf8 tool_result, in place of a normal one."""
        self.special_pending = False
        marker = "@@SIM_MARKER@@"
        line = _dumps(self._user(tool_id, marker, "[sim: output omitted]"))
        head, tail = line.split(marker.encode())
        if self.cfg.fail == "invalid-utf8":
            self.write([head, b"bytes that are not UTF-8: \xff\xfe", tail])
            return
        # huge-line: the whole line (without its newline) is exactly huge_bytes long.
        filler = max(0, self.cfg.huge_bytes - len(head) - len(tail))
        self.write([head, *_repeat_bytes(filler, b"A" * _HUGE_CHUNK), tail])

    def _usage_totals(self) -> dict[str, int]:
        cfg = self.cfg
        return expected_usage(
            self.calls_done,
            cfg.input_tokens,
            cfg.output_tokens,
            cfg.cache_creation,
            cfg.cache_read,
        )

    def _result(self, *, is_error: bool, api_error_status: int | None, timing: JSON) -> JSON:
        totals = self._usage_totals()
        cost = cost_usd(self.api_model, totals) if self.calls_done else 0
        model_usage: JSON = {}
        if self.calls_done:
            shown = display_model(self.cfg.model)
            model_usage[shown] = {
                "inputTokens": totals["input"],
                "outputTokens": totals["output"],
                "cacheReadInputTokens": totals["cache_read"],
                "cacheCreationInputTokens": totals["cache_creation"],
                "webSearchRequests": 0,
                "costUSD": cost,
                "contextWindow": 1_000_000 if "[1m]" in shown else 200_000,
                "maxOutputTokens": 64_000 if "opus" in shown else 32_000,
            }
        # Simulated (not measured) durations, so the same seed gives byte-identical output.
        duration_ms = 250 + 120 * self.calls_done + round(self.lines * self.cfg.delay * 1000)
        error_turn = 1 if is_error else 0
        return {
            "type": "result",
            "subtype": "success",
            "is_error": is_error,
            "api_error_status": api_error_status,
            "duration_ms": duration_ms,
            **timing,
            "num_turns": self.calls_done + error_turn,
            "result": self.cfg.error_text if is_error else self.last_text,
            "stop_reason": "stop_sequence" if is_error else "end_turn",
            "session_id": self.session_id,
            "total_cost_usd": cost,
            "usage": {
                "input_tokens": totals["input"],
                "cache_creation_input_tokens": totals["cache_creation"],
                "cache_read_input_tokens": totals["cache_read"],
                "output_tokens": totals["output"],
                "server_tool_use": {"web_search_requests": 0, "web_fetch_requests": 0},
                "service_tier": "standard",
                "cache_creation": {
                    "ephemeral_1h_input_tokens": 0,
                    "ephemeral_5m_input_tokens": totals["cache_creation"],
                },
                "inference_geo": "",
                "iterations": [],
                "speed": "standard",
            },
            "modelUsage": model_usage,
            "permission_denials": [],
            "terminal_reason": "completed",
            "fast_mode_state": "off",
            "uuid": self._uuid(),
        }

    def emit_result(self) -> None:
        api_ms = 50 * self.calls_done
        timing = {
            "duration_api_ms": api_ms,
            "ttft_ms": 200 + api_ms,
            "ttft_stream_ms": 195 + api_ms,
            "time_to_request_ms": 180,
        }
        self.emit(self._result(is_error=False, api_error_status=None, timing=timing))

    def emit_error_result(self) -> None:
        """Retries, then a <synthetic> assistant line and an is_error result (cli-err500)."""
        for attempt in (1, 2):
            self.emit(
                {
                    "type": "system",
                    "subtype": "api_retry",
                    "attempt": attempt,
                    "max_retries": 2,
                    "retry_delay_ms": 500.0 * attempt + self.rng.random() * 100,
                    "error_status": 500,
                    "error": "server_error",
                    "session_id": self.session_id,
                    "uuid": self._uuid(),
                }
            )
        zero_usage = {
            "input_tokens": 0,
            "output_tokens": 0,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "server_tool_use": {"web_search_requests": 0, "web_fetch_requests": 0},
            "service_tier": None,
            "cache_creation": {"ephemeral_1h_input_tokens": 0, "ephemeral_5m_input_tokens": 0},
            "inference_geo": None,
            "iterations": None,
            "speed": None,
        }
        self.emit(
            {
                "type": "assistant",
                "message": {
                    "id": self._uuid(),
                    "container": None,
                    "model": "<synthetic>",
                    "role": "assistant",
                    "stop_details": None,
                    "stop_reason": "stop_sequence",
                    "stop_sequence": "",
                    "type": "message",
                    "usage": zero_usage,
                    "content": [{"type": "text", "text": self.cfg.error_text}],
                    "context_management": None,
                },
                "parent_tool_use_id": None,
                "session_id": self.session_id,
                "uuid": self._uuid(),
                "error": "server_error",
                "request_id": f"req_sim_{self._hex(64)}",
            }
        )
        self.emit(self._result(is_error=True, api_error_status=500, timing={"duration_api_ms": 0}))

    def emit_rate_limit(self) -> None:
        """A ``rate_limit_event`` as Claude Code 2.1.197 prints it (see budget_core.ratelimit)."""
        cfg = self.cfg
        reset = cfg.rate_limit_reset
        resets_at = float(reset[1:]) if reset.startswith("@") else time.time() + float(reset)
        info: JSON = {
            "status": cfg.rate_limit,
            "resetsAt": int(resets_at),
            "rateLimitType": cfg.rate_limit_window,
        }
        if cfg.rate_limit == "allowed_warning":
            info["utilization"] = cfg.rate_limit_utilization
        info["isUsingOverage"] = False
        self.emit(
            {
                "type": "rate_limit_event",
                "rate_limit_info": info,
                "uuid": self._uuid(),
                "session_id": self.session_id,
            }
        )

    def emit_rejected(self) -> None:
        """What 2.1.197 prints when an API call is refused for a rejected window: the event,
        a <synthetic> assistant line and an is_error result (HTTP 429), no call made."""
        text = "You've hit your session limit · resets 7:41pm (UTC)"
        self.emit_rate_limit()
        self.emit(
            {
                "type": "assistant",
                "message": {
                    "id": self._uuid(),
                    "model": "<synthetic>",
                    "role": "assistant",
                    "stop_reason": "stop_sequence",
                    "type": "message",
                    "usage": {"input_tokens": 0, "output_tokens": 0},
                    "content": [{"type": "text", "text": text}],
                },
                "parent_tool_use_id": None,
                "session_id": self.session_id,
                "uuid": self._uuid(),
                "error": "rate_limit",
            }
        )
        result = self._result(is_error=True, api_error_status=429, timing={"duration_api_ms": 0})
        self.emit({**result, "result": text})

    def crash(self, index: int) -> None:
        """Die inside call ``index``: its first lines, half an assistant line, no newline."""
        if index < self.cfg.calls:
            call = index + 1
            msg_id, request_id = self._start_message(call)
            for piece in _text_pieces(call, self.cfg.deltas, tool=False)[:2]:
                self.event(_text_delta(piece))
            line = _dumps(self._assistant(msg_id, request_id, {"type": "text", "text": "Call"}))
            self.write([line[: len(line) // 2]], newline=False)
        self.err.write(f"Error: simulated crash during API call {index + 1}\n".encode())
        self.err.flush()


_EMPTY_TEXT: JSON = {"type": "text", "text": ""}


def _text_delta(text: str) -> JSON:
    return {
        "type": "content_block_delta",
        "index": 0,
        "delta": {"type": "text_delta", "text": text},
    }


def _sleep_forever() -> None:
    while True:
        time.sleep(3600)


def run(cfg: Config, out: BinaryIO, err: BinaryIO) -> int:
    """Write a whole simulated run to ``out``/``err`` and return the process exit code."""
    sim = Simulator(cfg, out, err)
    mode = cfg.fail
    if mode == "garbage":
        sim.write([b"DEBUG: [sim] starting; this banner is not JSON"])
    sim.emit_init()
    if cfg.rate_limit == "rejected":
        sim.emit_rejected()
        return 1
    if cfg.rate_limit != "none" and cfg.calls == 0:
        sim.emit_rate_limit()
    completed = cfg.calls // 2 if mode == "crash" else cfg.calls
    if mode == "hang" and completed == 0:
        _sleep_forever()
    for index in range(completed):
        # The call before an API error also used a tool: the CLI only asks again after a tool.
        tool = index < cfg.calls - 1 or mode == "error-result"
        sim.emit_call(index, tool)
        if index == 0 and cfg.rate_limit != "none":  # read from the first answer's headers
            sim.emit_rate_limit()
        if mode == "hang":
            _sleep_forever()
    if mode == "crash":
        sim.crash(completed)
        return 1
    if sim.special_pending:  # no tool call to attach it to (calls <= 1)
        sim.emit_special_line("toolu_sim_special")
    sim.flood_stderr(sim.stderr_left)
    if mode == "no-result":
        return 0
    if mode == "error-result":
        sim.emit_error_result()
        return 1
    sim.emit_result()
    return 2 if mode == "exit-nonzero" else 0


def main(argv: Sequence[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    if "--version" in args[: args.index("--") if "--" in args else None]:
        print(f"{CLAUDE_CODE_VERSION} (Claude Code simulator)")
        return 0
    cfg = parse_config(args, os.environ)
    try:
        return run(cfg, sys.stdout.buffer, sys.stderr.buffer)
    except BrokenPipeError:
        # The reader went away; point stdout at devnull so the exit-time flush stays quiet.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
