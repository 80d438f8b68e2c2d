"""Byte-level line splitting with no line-length cap and bounded memory.

A line that cannot carry usage (judged from its first bytes, by the tracker's own rule) is
not kept: its head is passed on and the rest dropped as it arrives. So a 50 MB tool result
costs no memory, while a line that may carry usage is always delivered whole.
"""

from __future__ import annotations

from collections.abc import Callable

# Enough bytes to judge a line: longer than every prefix the tracker checks.
HEAD_BYTES = 128


class LineAssembler:
    def __init__(self, on_line: Callable[[bytes], None], keep: Callable[[bytes], bool]) -> None:
        self._on_line = on_line
        self._keep = keep  # from a line's head: must the whole line be delivered?
        self._parts: list[bytes] = []
        self._size = 0
        self._dropping = False
        self.dropped_bytes = 0

    def feed(self, chunk: bytes) -> None:
        if not chunk:
            return  # nothing read: must not start a (phantom, empty) line
        lines = chunk.split(b"\n")
        if len(lines) == 1:
            self._append(chunk)
            return
        first, *middle, last = lines
        if self._parts:
            self._append(first)
            self._finish()
        else:
            self._on_line(first)
        # Complete lines inside one chunk are already in memory: hand them over as they are.
        for line in middle:
            self._on_line(line)
        if last:
            self._append(last)

    def close(self) -> None:
        """End of stream: a last line without a newline (e.g. truncated) is still delivered."""
        if self._parts:
            self._finish()

    def _append(self, piece: bytes) -> None:
        if self._dropping:
            self.dropped_bytes += len(piece)
            return
        self._parts.append(piece)
        before, self._size = self._size, self._size + len(piece)
        if before < HEAD_BYTES <= self._size:
            head = b"".join(self._parts)
            if not self._keep(head[:HEAD_BYTES]):
                self._dropping = True
                self.dropped_bytes += len(head) - HEAD_BYTES
                self._parts = [head[:HEAD_BYTES]]

    def _finish(self) -> None:
        line = self._parts[0] if len(self._parts) == 1 else b"".join(self._parts)
        self._parts, self._size, self._dropping = [], 0, False
        self._on_line(line)
