"""LineAssembler: bytes from a pipe, in chunks of any size, into lines, with bounded memory
for lines that cannot carry usage."""

from __future__ import annotations

from collections.abc import Callable
from itertools import pairwise

from hypothesis import given, settings
from hypothesis import strategies as st

from budget_core import line_may_carry_usage
from orchestrator.lines import HEAD_BYTES, LineAssembler

USAGE_LINE = b'{"type":"assistant","message":{"id":"m1","usage":{"input_tokens":3}}}'
TOOL_RESULT = b'{"type":"user","message":{"content":[{"type":"tool_result","content":"'


class Collector:
    def __init__(self, keep: Callable[[bytes], bool] = line_may_carry_usage) -> None:
        self.lines: list[bytes] = []
        self.assembler = LineAssembler(self.lines.append, keep)

    def feed_all(self, chunks: list[bytes]) -> list[bytes]:
        for chunk in chunks:
            self.assembler.feed(chunk)
        self.assembler.close()
        return self.lines


def cut(data: bytes, points: list[int]) -> list[bytes]:
    bounds = [0, *sorted(p % (len(data) + 1) for p in points), len(data)]
    return [data[a:b] for a, b in pairwise(bounds)]


def expected_lines(data: bytes) -> list[bytes]:
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    return lines


def test_lines_are_split_on_newlines() -> None:
    assert Collector().feed_all([b"a\nb\n", b"c\n"]) == [b"a", b"b", b"c"]


def test_a_line_split_across_chunks_is_joined() -> None:
    half = len(USAGE_LINE) // 2
    assert Collector().feed_all([USAGE_LINE[:half], USAGE_LINE[half:] + b"\n"]) == [USAGE_LINE]


def test_a_line_split_one_byte_at_a_time_is_joined() -> None:
    data = USAGE_LINE + b"\n" + USAGE_LINE + b"\n"
    chunks = [data[i : i + 1] for i in range(len(data))]
    assert Collector().feed_all(chunks) == [USAGE_LINE, USAGE_LINE]


def test_empty_lines_are_delivered_as_empty() -> None:
    assert Collector().feed_all([b"a\n\n", b"\nb\n"]) == [b"a", b"", b"", b"b"]


def test_a_last_line_without_newline_is_delivered_on_close() -> None:
    collector = Collector()
    collector.assembler.feed(b"a\n{truncated")
    assert collector.lines == [b"a"]
    collector.assembler.close()
    assert collector.lines == [b"a", b"{truncated"]


def test_close_after_a_complete_line_delivers_nothing_more() -> None:
    assert Collector().feed_all([b"a\n"]) == [b"a"]
    assert Collector().feed_all([]) == []


def test_an_empty_chunk_changes_nothing() -> None:
    assert Collector().feed_all([b"a\n", b""]) == [b"a"]
    assert Collector().feed_all([b"", b"a", b"", b"b\n", b""]) == [b"ab"]


def test_a_long_usage_line_is_delivered_whole() -> None:
    line = USAGE_LINE[:-2] + b',"pad":"' + b"x" * 100_000 + b'"}}'
    chunks = cut(line + b"\n", list(range(0, len(line), 4096)))
    assert Collector().feed_all(chunks) == [line]


def test_a_huge_tool_result_is_not_kept_in_memory() -> None:
    collector = Collector()
    collector.assembler.feed(TOOL_RESULT)
    for _ in range(100):
        collector.assembler.feed(b"A" * 100_000)
        assert sum(len(p) for p in collector.assembler._parts) <= HEAD_BYTES
    collector.assembler.feed(b'"}]}}\n' + USAGE_LINE + b"\n")
    head, after = collector.lines
    assert head == (TOOL_RESULT + b"A" * HEAD_BYTES)[:HEAD_BYTES]
    assert after == USAGE_LINE  # the next line is not affected
    assert collector.assembler.dropped_bytes == len(TOOL_RESULT) + 100 * 100_000 + 5 - HEAD_BYTES


def test_a_short_line_is_never_judged() -> None:
    judged: list[bytes] = []

    def keep(head: bytes) -> bool:
        judged.append(head)
        return False

    collector = Collector(keep)
    short = b"x" * (HEAD_BYTES - 1)
    assert collector.feed_all([short[:10], short[10:] + b"\n"]) == [short]
    assert judged == []


# -- any chunking gives the same lines -----------------------------------------------------

line_bodies = st.one_of(
    st.binary(max_size=300).map(lambda b: b.replace(b"\n", b"")),
    st.sampled_from([USAGE_LINE, TOOL_RESULT + b"B" * 500 + b'"}]}}', b"", b"not json"]),
)


@settings(max_examples=300, deadline=None)
@given(
    lines=st.lists(line_bodies, max_size=12),
    final_newline=st.booleans(),
    points=st.lists(st.integers(min_value=0, max_value=10_000), max_size=30),
)
def test_any_chunking_keeps_every_line_that_may_carry_usage_exact(
    lines: list[bytes], final_newline: bool, points: list[int]
) -> None:
    data = b"\n".join(lines) + (b"\n" if final_newline and lines else b"")
    got = Collector().feed_all(cut(data, points))

    expected = expected_lines(data)
    assert len(got) == len(expected)
    for line, original in zip(got, expected, strict=True):
        if line_may_carry_usage(original[:HEAD_BYTES]) or len(original) <= HEAD_BYTES:
            assert line == original
        else:  # a line that cannot carry usage may be cut to its head, never less
            assert original.startswith(line)
            assert len(line) >= HEAD_BYTES


@settings(max_examples=200, deadline=None)
@given(
    lines=st.lists(line_bodies, max_size=12),
    points=st.lists(st.integers(min_value=0, max_value=10_000), max_size=30),
)
def test_with_everything_kept_any_chunking_gives_exactly_the_lines(
    lines: list[bytes], points: list[int]
) -> None:
    data = b"\n".join(lines)
    got = Collector(keep=lambda head: True).feed_all(cut(data, points))
    assert got == expected_lines(data)
