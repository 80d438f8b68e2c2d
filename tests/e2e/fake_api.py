"""A fake Anthropic Messages API for end-to-end tests with the real Claude Code CLI.

Standard library only. The server binds 127.0.0.1 on a free port and serves from a daemon thread:

    with FakeAnthropicAPI() as fake:
        fake.add_scenario("a1", "text", input=1000, output=300, cache_creation=20, cache_read=500)
        # run: claude -p "SCENARIO:a1 say hi" ... with ANTHROPIC_BASE_URL=fake.base_url
        fake.sent("a1")       # Usage the server has emitted so far for scenario a1
        fake.requests_for("a1")

A request picks its scenario by the first `SCENARIO:<name>` marker in its `messages` (the CLI sends
the user prompt there, and repeats it on every turn), else the server's default scenario. So several
CLI processes can share one server, each with its own scenario and usage numbers.

A request without `tools` is a side call, not a turn of the conversation: CLIs 1.0.x and 2.0.0 ask
a small model to extract file paths from a Bash command, or to title an earlier session, and those
calls never show in the stream (only in the result's figures). They are answered with plain text
and `side_usage`, and counted apart (`side_sent`), whatever marker they carry.

Subscription windows: a scenario's `rate_limit_headers` go out with each of its answers (an
error's too). Built by `unified_rate_limit_headers`, they are the `anthropic-ratelimit-unified-*`
headers from which Claude Code 2.1.x prints `rate_limit_event` lines (found in its bundle and
confirmed against 2.1.197 and 2.1.332; 1.0.108 and 2.0.0 read some of them but print nothing).
The CLI reads them only when it runs on a subscription: give it `CLAUDE_CODE_OAUTH_TOKEN`
instead of `ANTHROPIC_API_KEY` (`cli_env(..., oauth=True)`). It prints a line whenever the state
changes (the first answer always is one: it starts from a bare `allowed`).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

SCENARIO_MARKER = re.compile(r"SCENARIO:([A-Za-z0-9_.\-]+)")

# kind -> (HTTP status, Anthropic error type, message)
ERROR_KINDS: dict[str, tuple[int, str, str]] = {
    "err400": (400, "invalid_request_error", "fake bad request"),
    "err401": (401, "authentication_error", "invalid x-api-key"),
    "err429": (429, "rate_limit_error", "fake rate limit"),
    "err500": (500, "api_error", "fake internal error"),
    "err529": (529, "overloaded_error", "fake overloaded"),
}
STREAM_KINDS = ("text", "tool", "task", "slow", "broken")
KINDS = (*STREAM_KINDS, *ERROR_KINDS, "hang")

TOOL_INPUT = {"command": "echo hi", "description": "Print hi"}
DEFAULT_MAX_LIFETIME_S = 600.0
SIDE_TEXT = "Fake side answer"

_Send = Callable[[str, dict[str, Any]], None]  # sends one SSE event (name, data)


@dataclass(frozen=True)
class Usage:
    """Token usage of one API call (or a sum of calls), in the CLI's four buckets."""

    input: int = 0
    output: int = 0
    cache_creation: int = 0
    cache_read: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.input + other.input,
            self.output + other.output,
            self.cache_creation + other.cache_creation,
            self.cache_read + other.cache_read,
        )

    def __neg__(self) -> Usage:
        return Usage(-self.input, -self.output, -self.cache_creation, -self.cache_read)

    @property
    def total(self) -> int:
        return self.input + self.output + self.cache_creation + self.cache_read

    def api(self, output: int | None = None) -> dict[str, int]:
        """The usage object as the Messages API spells it."""
        return {
            "input_tokens": self.input,
            "output_tokens": self.output if output is None else output,
            "cache_creation_input_tokens": self.cache_creation,
            "cache_read_input_tokens": self.cache_read,
        }

    @classmethod
    def of(cls, value: Usage | Mapping[str, int]) -> Usage:
        return value if isinstance(value, Usage) else cls(**value)

    @classmethod
    def from_api(cls, usage: Mapping[str, Any]) -> Usage:
        """Parse an API usage object (missing or null fields count as 0)."""
        return cls(
            usage.get("input_tokens") or 0,
            usage.get("output_tokens") or 0,
            usage.get("cache_creation_input_tokens") or 0,
            usage.get("cache_read_input_tokens") or 0,
        )


@dataclass
class Scenario:
    """How the fake answers requests carrying `SCENARIO:<name>`.

    `usages[i]` is the usage of turn i (the last one repeats). Turn i = number of assistant
    messages in the request, so parallel runs of the same scenario don't disturb each other.
    """

    name: str
    kind: str
    usages: list[Usage]
    text: str = "hi from the fake API"
    deltas: int = 2  # text_delta events per text block
    delay_s: float = 0.0  # pause before each text_delta (slow streams)
    turns: int = 1  # slow: turns in a full run; all but the last ask for a Bash tool call
    retry_after: str = "0"  # err429
    repeat_usage_in_delta: bool = False  # newer API: message_delta repeats input/cache numbers
    cache_1h: bool = False  # cache writes are 1-hour ones (usage.cache_creation says so)
    subagent: str = "text"  # task: the scenario of the subagent its Task tool call starts
    # On every answer: headers, or a function making them per answer (times relative to it).
    rate_limit_headers: Mapping[str, str] | Callable[[], Mapping[str, str]] = field(
        default_factory=dict
    )
    sent: Usage = Usage()  # what the server has emitted so far (see FakeAnthropicAPI.sent)
    calls: int = 0  # POST /v1/messages requests answered with this scenario

    def usage_for(self, turn: int) -> Usage:
        return self.usages[min(turn, len(self.usages) - 1)]

    def answer_headers(self) -> Mapping[str, str]:
        headers = self.rate_limit_headers
        return headers() if callable(headers) else headers

    def api_usage(self, usage: Usage, output: int | None = None) -> dict[str, Any]:
        """The usage object of an answer, with the 5-minute/1-hour split of cache writes."""
        split = (0, usage.cache_creation) if self.cache_1h else (usage.cache_creation, 0)
        return {
            **usage.api(output),
            "cache_creation": {
                "ephemeral_5m_input_tokens": split[0],
                "ephemeral_1h_input_tokens": split[1],
            },
        }

    def wants_tool(self, turn: int) -> bool:
        if self.kind in ("tool", "task"):
            return turn == 0
        return self.kind == "slow" and turn < self.turns - 1

    @property
    def full_run_turns(self) -> int:
        return {"text": 1, "tool": 2, "task": 2, "slow": self.turns}.get(self.kind, 0)

    def expected_total(self) -> Usage:
        """Usage of a complete run of this scenario, summed over its turns."""
        return sum((self.usage_for(t) for t in range(self.full_run_turns)), Usage())


@dataclass
class RequestRecord:
    """One request the fake received, for tests to inspect."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: Any  # parsed JSON, or the raw text when it isn't JSON
    scenario: str | None = None
    turn: int | None = None
    stream: bool | None = None
    model: str | None = None
    side_call: bool = False  # no `tools`: a hidden side call (see the module's docstring)
    status: int | None = None  # None: not answered (yet), e.g. `hang`
    at: float = field(default_factory=time.monotonic)

    @property
    def summary(self) -> str:
        """One line for failure messages: `POST /v1/messages?beta=true -> 200 scenario=a1 ...`."""
        line = f"{self.method} {self.path}{'?' + self.query if self.query else ''} -> {self.status}"
        if self.side_call:
            line += " side call"
        elif self.scenario is not None:
            line += f" scenario={self.scenario} turn={self.turn}"
        return f"{line} {self.body_summary}".rstrip()

    @property
    def body_summary(self) -> str:
        if isinstance(self.body, dict):
            keys = ("model", "stream", "max_tokens")
            parts = [f"{k}={self.body[k]}" for k in keys if k in self.body]
            parts += [f"{k}=[{len(self.body[k])}]" for k in ("messages", "tools") if k in self.body]
            return " ".join(parts)
        return "" if self.body is None else repr(self.body)[:80]

    def user_texts(self) -> list[str]:
        """Every text the request's user messages hold (a string content is one text)."""
        messages = self.body.get("messages") if isinstance(self.body, dict) else None
        texts: list[str] = []
        for message in messages or []:
            if not isinstance(message, dict) or message.get("role") != "user":
                continue
            content = message.get("content")
            if isinstance(content, str):
                texts.append(content)
            elif isinstance(content, list):
                texts += [b["text"] for b in content if isinstance(b, dict) and "text" in b]
        return texts


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # never wait for `hang` handlers when closing
    fake: FakeAnthropicAPI


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    record: RequestRecord | None = None

    def send_response(self, code: int, message: str | None = None) -> None:
        # Log the status when it goes out: the client may read the answer before we return.
        if self.record is not None:
            self.record.status = code
        super().send_response(code, message)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # requests are recorded in FakeAnthropicAPI.requests instead

    def _dispatch(self) -> None:
        self.server.fake._handle(self)

    do_HEAD = do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _dispatch


class ClientGone(Exception):
    """The client closed the connection (e.g. the CLI was killed mid-stream)."""


class FakeAnthropicAPI:
    """The fake server; one use (start, stop). Built-in scenarios are named after their kinds.

    Kinds: text (one turn), tool (a Bash `echo hi` call, then text), task (a Task tool call
    whose subagent's requests carry the marker of scenario `subagent`, then text; the
    subagent's usage is its own scenario's), slow (deltas with pauses,
    `turns` turns), broken (a stream dropped after message_start: the CLI retries without
    streaming and gets a JSON message), err400/401/429/500/529 (Anthropic error JSON), hang
    (never answers). Connection refused: point the client at `free_port()`.
    """

    def __init__(
        self,
        default_scenario: str = "text",
        max_lifetime_s: float = DEFAULT_MAX_LIFETIME_S,
        side_usage: Usage = Usage(61, 7, 0, 0),
    ) -> None:
        self.default_scenario = default_scenario
        self.max_lifetime_s = max_lifetime_s
        self.side_usage = side_usage
        self._side = Scenario("(side calls)", "text", [side_usage], text=SIDE_TEXT)
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._scenarios: dict[str, Scenario] = {}
        self._requests: list[RequestRecord] = []
        self._ids = itertools.count(1)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._timer: threading.Timer | None = None
        self._add_builtin_scenarios()

    # ---- lifecycle -------------------------------------------------------------------------

    def start(self) -> FakeAnthropicAPI:
        server = _Server(("127.0.0.1", 0), _Handler)
        server.fake = self
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
        )
        self._thread.start()
        # A forgotten server must not outlive a test session by much.
        self._timer = threading.Timer(self.max_lifetime_s, self.stop)
        self._timer.daemon = True
        self._timer.start()
        return self

    def stop(self) -> None:
        """Stop serving; idempotent. Releases `hang` and `slow` handlers."""
        self._stopping.set()
        if self._timer is not None and self._timer is not threading.current_thread():
            self._timer.cancel()
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()

    def __enter__(self) -> FakeAnthropicAPI:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("fake API not started")
        return self._server.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # ---- scenarios -------------------------------------------------------------------------

    def add_scenario(
        self,
        name: str,
        kind: str = "text",
        *,
        input: int = 100,
        output: int = 50,
        cache_creation: int = 0,
        cache_read: int = 0,
        usages: Sequence[Usage | Mapping[str, int]] | None = None,
        **options: Any,
    ) -> Scenario:
        """Register (or replace) a scenario.

        Usage is one turn's numbers (`input=`, `output=`, ...) or a per-turn list `usages=`
        (dicts with keys input/output/cache_creation/cache_read). Options are Scenario fields:
        text, deltas, delay_s, turns, retry_after, repeat_usage_in_delta, cache_1h, subagent,
        rate_limit_headers (see `unified_rate_limit_headers`).
        """
        if kind not in KINDS:
            raise ValueError(f"unknown scenario kind {kind!r}; expected one of {KINDS}")
        if not SCENARIO_MARKER.fullmatch(f"SCENARIO:{name}"):
            raise ValueError(f"scenario name {name!r} must match {SCENARIO_MARKER.pattern}")
        per_turn = (
            [Usage.of(u) for u in usages]
            if usages
            else [Usage(input, output, cache_creation, cache_read)]
        )
        scenario = Scenario(name=name, kind=kind, usages=per_turn, **options)
        with self._lock:
            self._scenarios[name] = scenario
        return scenario

    def scenario(self, name: str) -> Scenario:
        return self._scenarios[name]

    @property
    def side_sent(self) -> Usage:
        """Usage emitted so far in answers to side calls (requests without `tools`)."""
        with self._lock:
            return self._side.sent

    @property
    def side_calls(self) -> list[RequestRecord]:
        return [r for r in self.requests if r.side_call]

    def sent(self, name: str) -> Usage:
        """Usage emitted so far for a scenario, counted the way a client must count it.

        Input and cache numbers are summed over message_start events. Output is, per message,
        the last value sent (message_start's preliminary 1, then message_delta's exact count),
        summed over messages. Counted just before each write; a failed write is taken back.
        """
        with self._lock:
            return self._scenarios[name].sent

    def _add_builtin_scenarios(self) -> None:
        self.add_scenario("text", "text", input=1234, output=567, cache_creation=10, cache_read=89)
        self.add_scenario(
            "tool",
            "tool",
            usages=[
                Usage(1234, 30, 10, 89),
                Usage(2000, 567, 5, 1300),
            ],
            text="The command printed: hi",
        )
        self.add_scenario(
            "slow",
            "slow",
            input=500,
            output=800,
            cache_read=100,
            text="A slow answer from the fake API. " * 8,
            deltas=50,
            delay_s=0.1,
        )
        for kind in (*ERROR_KINDS, "hang"):
            self.add_scenario(kind, kind)

    def _add_sent(self, scenario: Scenario, usage: Usage) -> None:
        with self._lock:
            scenario.sent = scenario.sent + usage

    @contextlib.contextmanager
    def _counting(self, scenario: Scenario, usage: Usage) -> Iterator[None]:
        """Count usage as sent just before writing it (the client may act on it at once), and
        take it back if the write fails (then it never reached the client)."""
        self._add_sent(scenario, usage)
        try:
            yield
        except OSError:
            self._add_sent(scenario, -usage)
            raise

    # ---- request log -----------------------------------------------------------------------

    @property
    def requests(self) -> list[RequestRecord]:
        with self._lock:
            return list(self._requests)

    def requests_for(self, scenario: str) -> list[RequestRecord]:
        return [r for r in self.requests if r.scenario == scenario]

    def request_summaries(self) -> list[str]:
        return [r.summary for r in self.requests]

    # ---- request handling ------------------------------------------------------------------

    def _handle(self, h: _Handler) -> None:
        url = urlsplit(h.path)
        record = RequestRecord(
            method=h.command,
            path=url.path,
            query=url.query,
            headers={k.lower(): v for k, v in h.headers.items()},
            body=_read_body(h),
        )
        h.record = record
        with self._lock:
            self._requests.append(record)
        try:
            self._route(h, record)
        except (BrokenPipeError, ConnectionResetError, ClientGone):
            record.status = 499  # the answer was cut short (client gone or server stopping)

    def _route(self, h: _Handler, record: RequestRecord) -> None:
        route = (record.method, record.path.rstrip("/"))
        if record.method == "HEAD":
            _send_empty(h, 200)
        elif route == ("POST", "/v1/messages"):
            self._messages(h, record)
        elif route == ("POST", "/v1/messages/count_tokens"):
            _send_json(h, 200, {"input_tokens": _estimate_tokens(record.body)})
        elif route == ("GET", "/v1/models"):
            _send_json(h, 200, _models_page())
        elif route == ("GET", ""):
            _send_json(h, 200, {"ok": True})
        else:
            _send_error(h, 404, "not_found_error", f"fake API: no route {record.path}")

    def _messages(self, h: _Handler, record: RequestRecord) -> None:
        body = record.body if isinstance(record.body, dict) else {}
        messages = body.get("messages") or []
        record.model = str(body.get("model") or "claude-fake")
        record.stream = body.get("stream") is True
        record.side_call = "tools" not in body
        # The turn is how many answers the conversation already holds; no per-client state.
        record.turn = sum(
            1 for m in messages if isinstance(m, dict) and m.get("role") == "assistant"
        )
        if record.side_call:  # answered apart, whatever marker it quotes: no scenario's
            self._answer(h, record, self._side)
            return
        match = SCENARIO_MARKER.search(json.dumps(messages))
        record.scenario = match.group(1) if match else self.default_scenario
        scenario = self._scenarios.get(record.scenario)
        if scenario is None:
            message = f"fake API: unknown scenario {record.scenario!r}"
            _send_error(h, 400, "invalid_request_error", message)
            return
        self._answer(h, record, scenario)

    def _answer(self, h: _Handler, record: RequestRecord, scenario: Scenario) -> None:
        assert record.turn is not None and record.model is not None
        with self._lock:
            scenario.calls += 1
        msg_id = f"msg_fake_{next(self._ids):03d}_{uuid.uuid4().hex[:8]}"
        args = (h, scenario, record.turn, record.model, msg_id)
        if scenario.kind in ERROR_KINDS:
            self._error(h, scenario)
        elif scenario.kind == "hang":
            self._stopping.wait()  # hold the connection, silent, until the server stops
            h.close_connection = True
        elif record.stream and scenario.kind == "broken":
            self._broken_stream(*args)
        elif record.stream:
            self._stream(*args)
        else:
            self._whole_message(*args)

    def _error(self, h: _Handler, scenario: Scenario) -> None:
        status, error_type, message = ERROR_KINDS[scenario.kind]
        headers = {"retry-after": scenario.retry_after} if status == 429 else {}
        _send_error(h, status, error_type, message, {**headers, **scenario.answer_headers()})

    def _blocks(self, scenario: Scenario, turn: int, msg_id: str) -> list[dict[str, Any]]:
        """The content blocks of one answer (full form, as in a non-streaming message)."""
        if scenario.wants_tool(turn):
            tool_id = f"toolu_{msg_id.removeprefix('msg_')}"
            if scenario.kind == "task":
                task = {
                    "description": "Say hi",
                    "prompt": f"SCENARIO:{scenario.subagent} say hi",
                    "subagent_type": "general-purpose",
                }
                return [
                    {"type": "text", "text": "Delegating."},
                    {"type": "tool_use", "id": tool_id, "name": "Task", "input": task},
                ]
            return [
                {"type": "text", "text": "Running echo."},
                {"type": "tool_use", "id": tool_id, "name": "Bash", "input": TOOL_INPUT},
            ]
        return [{"type": "text", "text": scenario.text}]

    def _whole_message(
        self, h: _Handler, scenario: Scenario, turn: int, model: str, msg_id: str
    ) -> None:
        usage = scenario.usage_for(turn)
        message = _message(msg_id, model, scenario.api_usage(usage))
        message["content"] = self._blocks(scenario, turn, msg_id)
        message["stop_reason"] = "tool_use" if scenario.wants_tool(turn) else "end_turn"
        with self._counting(scenario, usage):
            _send_json(h, 200, message, scenario.answer_headers())

    def _stream(self, h: _Handler, scenario: Scenario, turn: int, model: str, msg_id: str) -> None:
        usage = scenario.usage_for(turn)
        send = _start_sse(h, scenario.answer_headers())
        self._send_message_start(send, scenario, usage, model, msg_id)
        send("ping", {"type": "ping"})
        for index, block in enumerate(self._blocks(scenario, turn, msg_id)):
            self._stream_block(send, scenario, index, block)
        stop_reason = "tool_use" if scenario.wants_tool(turn) else "end_turn"
        delta_usage = (
            scenario.api_usage(usage)
            if scenario.repeat_usage_in_delta
            else {"output_tokens": usage.output}
        )
        delta = {
            "type": "message_delta",
            "delta": {"stop_reason": stop_reason, "stop_sequence": None},
            "usage": delta_usage,
        }
        # The exact output replaces message_start's preliminary 1: count the difference.
        with self._counting(scenario, Usage(output=usage.output - 1)):
            send("message_delta", delta)
        send("message_stop", {"type": "message_stop"})

    def _broken_stream(
        self, h: _Handler, scenario: Scenario, turn: int, model: str, msg_id: str
    ) -> None:
        """Start a message, then drop the connection: the CLI retries once without streaming."""
        send = _start_sse(h)
        self._send_message_start(send, scenario, scenario.usage_for(turn), model, msg_id)
        text = {"type": "text_delta", "text": "partial"}
        send("content_block_start", _block_start(0, {"type": "text", "text": ""}))
        send("content_block_delta", _block_delta(0, text))
        h.connection.shutdown(socket.SHUT_RDWR)
        h.close_connection = True

    def _send_message_start(
        self, send: _Send, scenario: Scenario, usage: Usage, model: str, msg_id: str
    ) -> None:
        message = _message(msg_id, model, scenario.api_usage(usage, output=1))
        with self._counting(
            scenario, Usage(usage.input, 1, usage.cache_creation, usage.cache_read)
        ):
            send("message_start", {"type": "message_start", "message": message})

    def _stream_block(
        self, send: _Send, scenario: Scenario, index: int, block: dict[str, Any]
    ) -> None:
        if block["type"] == "tool_use":
            start = {**block, "input": {}}
            pieces = _split(json.dumps(block["input"]), 2)
            deltas = [{"type": "input_json_delta", "partial_json": p} for p in pieces]
            delay = 0.0
        else:
            start = {"type": "text", "text": ""}
            pieces = _split(block["text"], scenario.deltas)
            deltas = [{"type": "text_delta", "text": p} for p in pieces]
            delay = scenario.delay_s
        send("content_block_start", _block_start(index, start))
        for delta in deltas:
            if delay and self._stopping.wait(delay):
                raise ClientGone("server stopping")
            send("content_block_delta", _block_delta(index, delta))
        send("content_block_stop", {"type": "content_block_stop", "index": index})


# ---- helpers ---------------------------------------------------------------------------------


def free_port() -> int:
    """A local port nobody listens on (for the client-side "connection refused" case).

    Another process may take it later; `refused_port()` avoids that race.
    """
    with refused_port() as port:
        return port


@contextlib.contextmanager
def refused_port() -> Iterator[int]:
    """A local port that refuses connections while the block runs: it is bound (so no one
    else can take it) but not listening."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        yield int(s.getsockname()[1])


def _read_body(h: BaseHTTPRequestHandler) -> Any:
    if h.headers.get("Transfer-Encoding", "").lower() == "chunked":
        raw = b"".join(_read_chunks(h))
    else:
        raw = h.rfile.read(int(h.headers.get("Content-Length") or 0))
    if not raw:
        return None
    text = raw.decode("utf-8", errors="replace")
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _read_chunks(h: BaseHTTPRequestHandler) -> Iterator[bytes]:
    while size := int(h.rfile.readline().split(b";")[0].strip() or b"0", 16):
        yield h.rfile.read(size)
        h.rfile.readline()
    h.rfile.readline()  # the empty line after the last chunk


def _start_sse(h: BaseHTTPRequestHandler, headers: Mapping[str, str] | None = None) -> _Send:
    """Send the headers of a Server-Sent Events answer; return a function sending one event."""
    h.send_response(200)
    h.send_header("Content-Type", "text/event-stream")
    h.send_header("Cache-Control", "no-cache")
    h.send_header("request-id", _request_id())
    for key, value in (headers or {}).items():
        h.send_header(key, value)
    h.send_header("Connection", "close")  # the body ends when the connection closes
    h.end_headers()

    def send(name: str, data: dict[str, Any]) -> None:
        h.wfile.write(f"event: {name}\ndata: {json.dumps(data)}\n\n".encode())
        h.wfile.flush()

    return send


# The CLI's short names of the windows in per-window headers (its `rateLimitType`s).
WINDOW_ABBREVIATIONS = {
    "five_hour": "5h",
    "seven_day": "7d",
    "seven_day_overage_included": "7d_oi",
    "overage": "overage",
}


def unified_rate_limit_headers(
    status: str,
    *,
    window: str = "five_hour",
    resets_at: float | None = None,
    utilization: float | None = None,
    surpassed_threshold: float | None = None,
    others: Mapping[str, tuple[float, float]] | None = None,
) -> dict[str, str]:
    """The `anthropic-ratelimit-unified-*` headers of an answer, as Claude Code 2.1.x reads them.

    `status` (`allowed`, `allowed_warning`, `rejected`), the window that decided (`window`, sent
    as the representative claim) and its reset time (Unix seconds) give the event's `status`,
    `rateLimitType` and `resetsAt`. An `allowed_warning` event needs the window's
    `surpassed_threshold` (with its `utilization`): without it the CLI reports plain
    `allowed`. A rejection arrives with an HTTP 429 (scenario kind `err429`). `others`:
    `{window: (utilization, resets_at)}` of other windows (2.1.332 reports them in
    `unifiedWindows`).
    """
    prefix = "anthropic-ratelimit-unified"
    headers = {f"{prefix}-status": status, f"{prefix}-representative-claim": window}
    abbreviation = WINDOW_ABBREVIATIONS.get(window, window)
    if resets_at is not None:
        headers[f"{prefix}-reset"] = str(int(resets_at))
        headers[f"{prefix}-{abbreviation}-reset"] = str(int(resets_at))
    if utilization is not None:
        headers[f"{prefix}-{abbreviation}-utilization"] = str(utilization)
    if surpassed_threshold is not None:
        headers[f"{prefix}-{abbreviation}-surpassed-threshold"] = str(surpassed_threshold)
    for other, (used, reset) in (others or {}).items():
        short = WINDOW_ABBREVIATIONS.get(other, other)
        headers[f"{prefix}-{short}-utilization"] = str(used)
        headers[f"{prefix}-{short}-reset"] = str(int(reset))
    return headers


def _block_start(index: int, block: dict[str, Any]) -> dict[str, Any]:
    return {"type": "content_block_start", "index": index, "content_block": block}


def _block_delta(index: int, delta: dict[str, Any]) -> dict[str, Any]:
    return {"type": "content_block_delta", "index": index, "delta": delta}


def _message(msg_id: str, model: str, usage: dict[str, int]) -> dict[str, Any]:
    return {
        "id": msg_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": usage,
    }


def _split(text: str, parts: int) -> list[str]:
    """Split text into at most `parts` non-empty pieces of similar length."""
    parts = max(1, min(parts, len(text)))
    size, extra = divmod(len(text), parts)
    pieces, pos = [], 0
    for i in range(parts):
        end = pos + size + (1 if i < extra else 0)
        pieces.append(text[pos:end])
        pos = end
    return pieces


def _request_id() -> str:
    return f"req_fake_{uuid.uuid4().hex[:16]}"


def _send_empty(h: BaseHTTPRequestHandler, status: int) -> None:
    h.send_response(status)
    h.send_header("Content-Length", "0")
    h.send_header("Connection", "close")
    h.end_headers()


def _send_json(
    h: BaseHTTPRequestHandler, status: int, payload: Any, headers: Mapping[str, str] | None = None
) -> None:
    data = json.dumps(payload).encode()
    h.send_response(status)
    h.send_header("Content-Type", "application/json")
    h.send_header("Content-Length", str(len(data)))
    h.send_header("request-id", _request_id())
    for key, value in (headers or {}).items():
        h.send_header(key, value)
    h.send_header("Connection", "close")
    h.end_headers()
    h.wfile.write(data)
    h.wfile.flush()


def _send_error(
    h: BaseHTTPRequestHandler,
    status: int,
    error_type: str,
    message: str,
    headers: Mapping[str, str] | None = None,
) -> None:
    payload = {"type": "error", "error": {"type": error_type, "message": message}}
    _send_json(h, status, payload, headers)


def _estimate_tokens(body: Any) -> int:
    return max(1, len(json.dumps(body)) // 4)


def _models_page() -> dict[str, Any]:
    ids = ["claude-opus-4-8", "claude-sonnet-4-5", "claude-haiku-4-5"]
    data = [
        {"type": "model", "id": i, "display_name": i, "created_at": "2025-01-01T00:00:00Z"}
        for i in ids
    ]
    return {"data": data, "has_more": False, "first_id": ids[0], "last_id": ids[-1]}


if __name__ == "__main__":  # manual experiments: python tests/e2e/fake_api.py
    with FakeAnthropicAPI() as api:
        print(f"fake Messages API at {api.base_url} (Ctrl-C to stop)", flush=True)
        try:
            while not api._stopping.wait(1.0):
                pass
        except KeyboardInterrupt:
            pass
        for line in api.request_summaries():
            print(line)
