"""The one libc call the orchestrator needs that Python lacks: ``prctl`` (Linux)."""

from __future__ import annotations

import ctypes
import sys

_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


def prctl(option: int, value: int) -> int:
    """``prctl(option, value)``; -1 where there is no such call."""
    return int(_LIBC.prctl(option, value, 0, 0, 0)) if _LIBC is not None else -1
