"""Throughput of ``UsageTracker.feed_line`` against the floor of ``json.loads`` on every line.

Generates a large transcript in memory, modelled on real Claude Code ``stream-json`` output
(init, stream_event deltas, message_start/message_delta, one assistant line per content block,
tool_use inputs of some size, user tool_result lines from 100 B to 200 KB, rate-limit events,
subagent lanes, a result line), then times, best of several runs:

- the floor: ``json.loads`` on every line, which any line-by-line JSON consumer pays at least;
- the tracker: a fresh ``UsageTracker`` fed every line as ``bytes``.

Once with ``--include-partial-messages`` lines (most lines are ``content_block_delta``) and once
without any ``stream_event`` line. The target is tracker lines/s >= 1.0x the floor. The totals
the tracker ends on are checked against the totals the generator put in.

    .venv/bin/python benchmarks/bench_tracker.py [--calls 2500] [--runs 3] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import json
import math
import pstats
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from budget_core import TokenUsage, UsageTracker, default_price_table

TARGET_RATIO = 1.0
SESSION = "7a854790-5cc1-431d-a29b-f39778202e38"
MODELS = ("claude-opus-4-8", "claude-haiku-4-5-20251001")
TOOLS = ("Bash", "Read", "Edit", "Write", "Grep", "Glob", "Task")

_CODE = (
    "def handle(request: Request) -> Response:\n"
    '    """Serve one request; see docs/api.md for the fields."""\n'
    '    if request.method not in {"GET", "HEAD"}:\n'
    '        return Response(status=405, body=b"method not allowed")\n'
    "\tpath = request.path.rstrip('/') or '/'\n"
    "    # ünïcödé, emoji ✓ and CJK 日本語 appear in real tool output too\n"
    '    log.info("path=%s user=%s", path, request.user)\n'
    "    return router.dispatch(path, request)\n\n"
)


def _corpus() -> str:
    rnd = random.Random(7)
    parts: list[str] = []
    while sum(map(len, parts)) < 600_000:
        words = " ".join(
            rnd.choice(("token", "budget", "stream", "line", "cache")) for _ in range(9)
        )
        parts.append(_CODE.replace("request", rnd.choice(("request", "req", "incoming"))))
        parts.append(f"{rnd.randint(0, 10**9)}: {words}\n")
    return "".join(parts)


CORPUS = _corpus()


def _dumps(obj: dict[str, Any]) -> bytes:
    # The CLI writes compact JSON with raw UTF-8 (JSON.stringify), one object per line.
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


@dataclass
class Transcript:
    lines: list[bytes]
    final: TokenUsage
    live: TokenUsage
    cost_usd: float
    stream_events: int = 0
    user_sizes: list[int] = field(default_factory=list)

    @property
    def size(self) -> int:
        return sum(map(len, self.lines))


class _Generator:
    """One seeded run of ``calls`` API calls; the same seed gives the same calls either way."""

    def __init__(self, seed: int, partial: bool) -> None:
        self.rnd = random.Random(seed)
        self.event_ids = random.Random(seed + 1)  # so stream events do not shift the calls
        self.partial = partial
        self.lines: list[bytes] = []
        self.stream_events = 0
        self.user_sizes: list[int] = []
        self.final = TokenUsage()
        self.live = TokenUsage()
        self.per_model: dict[str, TokenUsage] = {}
        self.per_model_cost: dict[str, float] = {}
        self.per_lane_count: dict[str | None, int] = {}

    def text(self, size: int) -> str:
        start = self.rnd.randrange(0, len(CORPUS) - size - 1)
        return CORPUS[start : start + size]

    def uuid(self) -> str:
        return f"{self.rnd.getrandbits(128):032x}"

    def emit(self, obj: dict[str, Any]) -> None:
        self.lines.append(_dumps(obj))

    def event(self, event: dict[str, Any], lane: str | None) -> None:
        if self.partial:
            self.stream_events += 1
            self.emit(
                {
                    "type": "stream_event",
                    "event": event,
                    "session_id": SESSION,
                    "parent_tool_use_id": lane,
                    "uuid": f"{self.event_ids.getrandbits(128):032x}",
                }
            )

    def init(self) -> None:
        self.emit(
            {
                "type": "system",
                "subtype": "init",
                "cwd": "/home/user/work",
                "session_id": SESSION,
                "tools": [*TOOLS, "TodoWrite", "WebFetch", "WebSearch", "NotebookEdit"],
                "mcp_servers": [],
                "model": "claude-opus-4-8[1m]",
                "permissionMode": "bypassPermissions",
                "slash_commands": ["analyze", "review", "compact", "cost", "init"],
                "apiKeySource": "ANTHROPIC_API_KEY",
                "claude_code_version": "2.1.197",
                "output_style": "default",
                "uuid": self.uuid(),
            }
        )

    def block(self, kind: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """A finished content block and the deltas that stream it."""
        rnd = self.rnd
        if kind == "tool_use":
            tool = rnd.choice(TOOLS)
            if tool == "Write":
                tool_input: dict[str, Any] = {
                    "file_path": "/home/user/work/src/module.py",
                    "content": self.text(
                        int(math.exp(rnd.uniform(math.log(500), math.log(40_000))))
                    ),
                }
            elif tool == "Edit":
                tool_input = {
                    "file_path": "/home/user/work/src/app.py",
                    "old_string": self.text(rnd.randint(50, 3000)),
                    "new_string": self.text(rnd.randint(50, 3000)),
                }
            elif tool == "Task":
                tool_input = {"description": "review", "prompt": self.text(rnd.randint(200, 2000))}
            else:
                tool_input = {"command": self.text(rnd.randint(20, 300)), "description": "run"}
            block = {
                "type": "tool_use",
                "id": f"toolu_{self.uuid()[:24]}",
                "name": tool,
                "input": tool_input,
            }
            raw = json.dumps(tool_input, ensure_ascii=False)
            step = rnd.randint(20, 200)
            deltas = [
                {"type": "input_json_delta", "partial_json": raw[i : i + step]}
                for i in range(0, len(raw), step)
            ]
            return block, deltas
        text = self.text(rnd.randint(40, 4000))
        step = rnd.randint(8, 60)
        key, delta_type = (
            ("thinking", "thinking_delta") if kind == "thinking" else ("text", "text_delta")
        )
        deltas = [{"type": delta_type, key: text[i : i + step]} for i in range(0, len(text), step)]
        block = {"type": kind, key: text}
        if kind == "thinking":
            block["signature"] = self.uuid() * 4
        return block, deltas

    def call(self, lane: str | None) -> list[dict[str, Any]]:
        """One API call; returns its tool_use blocks."""
        rnd = self.rnd
        model = MODELS[0] if lane is None or rnd.random() < 0.5 else MODELS[1]
        number = self.per_lane_count[lane] = self.per_lane_count.get(lane, 0) + 1
        msg_id = f"msg_{number:06d}_{self.uuid()[:16]}"
        cache_write = rnd.randint(0, 30_000)
        one_hour = rnd.choice((0, 0, cache_write, cache_write // 3))
        input_tokens, cache_read = rnd.randint(1, 40), rnd.randint(0, 200_000)
        placeholder = rnd.randint(1, 20)
        usage: dict[str, Any] = {
            "input_tokens": input_tokens,
            "cache_creation_input_tokens": cache_write,
            "cache_read_input_tokens": cache_read,
            "cache_creation": {
                "ephemeral_5m_input_tokens": cache_write - one_hour,
                "ephemeral_1h_input_tokens": one_hour,
            },
            "output_tokens": placeholder,
            "service_tier": "standard",
        }
        exact_output = placeholder + rnd.randint(0, 8_000)
        message: dict[str, Any] = {
            "id": msg_id,
            "type": "message",
            "role": "assistant",
            "model": model,
        }
        start = {**message, "content": [], "stop_reason": None, "usage": usage}
        self.event({"type": "message_start", "message": start}, lane)

        kinds = ["thinking"] if rnd.random() < 0.3 else []
        kinds += ["text"] if rnd.random() < 0.8 else []
        kinds += ["tool_use"] * rnd.choice((0, 1, 1, 1, 2, 3))
        kinds = kinds or ["text"]
        tool_uses = []
        for index, kind in enumerate(kinds):
            block, deltas = self.block(kind)
            opening = {"type": kind} if kind != "tool_use" else {**block, "input": {}}
            self.event(
                {"type": "content_block_start", "index": index, "content_block": opening}, lane
            )
            for delta in deltas:
                self.event({"type": "content_block_delta", "index": index, "delta": delta}, lane)
            self.emit(
                {
                    "type": "assistant",
                    "message": {**message, "content": [block], "stop_reason": None, "usage": usage},
                    "parent_tool_use_id": lane,
                    "session_id": SESSION,
                    "uuid": self.uuid(),
                }
            )
            self.event({"type": "content_block_stop", "index": index}, lane)
            if kind == "tool_use":
                tool_uses.append(block)
        repeated = {k: usage[k] for k in usage if k.endswith("_tokens")}
        delta_usage = {**repeated, "output_tokens": exact_output}
        stop = "tool_use" if tool_uses else "end_turn"
        self.event(
            {"type": "message_delta", "delta": {"stop_reason": stop}, "usage": delta_usage}, lane
        )
        self.event({"type": "message_stop"}, lane)

        counted = TokenUsage(input_tokens, exact_output, cache_write, cache_read)
        self.final += counted
        self.per_model[model] = self.per_model.get(model, TokenUsage()) + counted
        # What the CLI charges for the call, at the bundled prices: a result's cost below
        # the tracker's own estimate would be kept from the stream instead (budgets never
        # go down), and the totals check would compare two different figures.
        call_cost = default_price_table().lookup(model)[0].cost(counted, one_hour)
        self.per_model_cost[model] = self.per_model_cost.get(model, 0.0) + call_cost
        live_output = exact_output if self.partial else placeholder
        self.live += TokenUsage(
            counted.input, live_output, counted.cache_creation, counted.cache_read
        )
        return tool_uses

    def tool_result(self, tool_use: dict[str, Any], lane: str | None) -> None:
        rnd = self.rnd
        target = int(math.exp(rnd.uniform(math.log(100), math.log(200_000))))
        content = self.text(max(target - 330, 1))
        self.user_sizes.append(target)
        self.emit(
            {
                "type": "user",
                "message": {
                    "role": "user",
                    "content": [
                        {"tool_use_id": tool_use["id"], "type": "tool_result", "content": content}
                    ],
                },
                "parent_tool_use_id": lane,
                "session_id": SESSION,
                "uuid": self.uuid(),
                "timestamp": "2026-08-21T01:27:38.733Z",
                "tool_use_result": {"interrupted": False, "isImage": False},
            }
        )

    def run(self, calls: int) -> Transcript:
        rnd = self.rnd
        self.init()
        done = 0
        while done < calls:
            self.emit({"type": "system", "subtype": "status", "status": "requesting"})
            tool_uses = self.call(None)
            done += 1
            for tool_use in tool_uses:
                if tool_use["name"] == "Task":  # a subagent: a few calls in its own lane
                    for _ in range(rnd.randint(1, 4)):
                        for inner in self.call(tool_use["id"]):
                            self.tool_result(inner, tool_use["id"])
                        done += 1
                self.tool_result(tool_use, None)
            if rnd.random() < 0.2:
                self.emit(
                    {
                        "type": "rate_limit_event",
                        "rate_limit_info": {"status": "allowed", "rateLimitType": "five_hour"},
                        "session_id": SESSION,
                    }
                )
        cost = sum(self.per_model_cost.values())
        model_usage = {
            model: {
                "inputTokens": u.input,
                "outputTokens": u.output,
                "cacheReadInputTokens": u.cache_read,
                "cacheCreationInputTokens": u.cache_creation,
                "costUSD": self.per_model_cost[model],
            }
            for model, u in self.per_model.items()
        }
        self.emit(
            {
                "type": "result",
                "subtype": "success",
                "is_error": False,
                "duration_ms": 123_456,
                "num_turns": done,
                "result": "done",
                "session_id": SESSION,
                "total_cost_usd": cost,
                "usage": {"input_tokens": 1, "output_tokens": 1},  # main loop only: not the total
                "modelUsage": model_usage,
            }
        )
        return Transcript(
            self.lines, self.final, self.live, cost, self.stream_events, self.user_sizes
        )


def generate(calls: int, seed: int, partial: bool) -> Transcript:
    return _Generator(seed, partial).run(calls)


# -- measuring -------------------------------------------------------------------------------


def floor_pass(lines: list[bytes]) -> None:
    loads = json.loads
    for line in lines:
        loads(line)


def tracker_pass(lines: list[bytes]) -> UsageTracker:
    tracker = UsageTracker()
    feed = tracker.feed_line
    for line in lines:
        feed(line)
    return tracker


def best_times(runs: int, works: list[Callable[[], object]]) -> list[float]:
    """Best wall time of each piece of work; runs interleave so that load drifts hit all alike."""
    best = [math.inf] * len(works)
    for _ in range(runs):
        for i, work in enumerate(works):
            started = time.perf_counter()
            work()
            best[i] = min(best[i], time.perf_counter() - started)
    return best


def check_totals(t: Transcript) -> list[str]:
    tracker = tracker_pass(t.lines)
    problems = []
    if tracker.usage != t.final:
        problems.append(f"final usage {tracker.usage} != expected {t.final}")
    if tracker.live_usage != t.live:
        problems.append(f"live usage {tracker.live_usage} != expected {t.live}")
    if abs(tracker.cost_usd - t.cost_usd) > 1e-9 or tracker.cost_is_estimate:
        problems.append(
            f"cost {tracker.cost_usd} (estimate={tracker.cost_is_estimate}) != {t.cost_usd}"
        )
    if not tracker.is_final or tracker.is_error or tracker.skipped_lines:
        problems.append("expected a final, successful run with no skipped line")
    return problems


def measure(label: str, t: Transcript, runs: int, profile: bool) -> bool:
    sizes = sorted(t.user_sizes)
    print(f"\n== {label}")
    print(
        f"   {len(t.lines):,} lines, {t.size / 1e6:.1f} MB; "
        f"{t.stream_events:,} stream_event lines; "
        f"{len(sizes):,} tool_result lines of {sizes[0]:,} B to {sizes[-1]:,} B "
        f"(median {sizes[len(sizes) // 2]:,} B)"
    )
    # Informational: the same lines with a leading space defeat the tracker's key-order fast
    # path, so every line is parsed (a CLI that someday prints keys in another order).
    spaced = [b" " + line for line in t.lines]
    floor, tracked, parsed_all = best_times(
        runs,
        [
            lambda: floor_pass(t.lines),
            lambda: tracker_pass(t.lines),
            lambda: tracker_pass(spaced),
        ],
    )
    n = len(t.lines)
    floor_rate, tracker_rate, slow_rate = n / floor, n / tracked, n / parsed_all
    ratio = tracker_rate / floor_rate
    met = ratio >= TARGET_RATIO
    row = "   {:<34}: {:>11,.0f} lines/s  ({:,.0f} ms)"
    print(row.format("floor: json.loads every line", floor_rate, floor * 1e3))
    print(row.format("tracker: feed_line(bytes)", tracker_rate, tracked * 1e3))
    verdict = "MET" if met else "MISSED"
    target = f"target >= {TARGET_RATIO:.1f}x: {verdict}"
    print(f"   {'ratio tracker/floor':<34}: {ratio:>11.2f}x  ({target})")
    print(row.format("(info) tracker, no fast path", slow_rate, parsed_all * 1e3))
    print(f"   {'(info) ratio no-fast-path/floor':<34}: {slow_rate / floor_rate:>11.2f}x")
    problems = check_totals(t)
    print(f"   totals: final {t.final.as_dict()}")
    print(f"           live  {t.live.as_dict()}")
    verdict = "OK (final, live and cost equal the generated ones)" if not problems else "FAILED"
    print(f"   totals check: {verdict}")
    for problem in problems:
        print(f"     - {problem}")
    if profile:
        profiler = cProfile.Profile()
        profiler.runcall(tracker_pass, t.lines)
        pstats.Stats(profiler).sort_stats("tottime").print_stats(12)
    return met and not problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--calls", type=int, default=2500, help="API calls in the transcript")
    parser.add_argument("--seed", type=int, default=20260821)
    parser.add_argument("--runs", type=int, default=3, help="timed runs; the best one counts")
    parser.add_argument("--profile", action="store_true", help="cProfile one tracker pass")
    args = parser.parse_args(argv)

    print(f"Python {sys.version.split()[0]}; {args.calls:,} API calls; best of {args.runs} runs")
    started = time.perf_counter()
    with_partial = generate(args.calls, args.seed, partial=True)
    without_partial = generate(args.calls, args.seed, partial=False)
    print(f"generated in {time.perf_counter() - started:.1f} s")
    ok = measure(
        "WITH partial messages (--include-partial-messages)", with_partial, args.runs, args.profile
    )
    ok &= measure(
        "WITHOUT partial messages (no stream_event lines)", without_partial, args.runs, args.profile
    )
    print(f"\noverall: {'PASS' if ok else 'FAIL'} (total {time.perf_counter() - started:.1f} s)")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
