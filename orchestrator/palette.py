"""ANSI colour for terminals only; words carry the meaning so logs read without colour."""

from __future__ import annotations

import os
from typing import TextIO

from budget_core import BudgetLevel

_CODES = {
    "green": "32",
    "yellow": "33",
    "red": "31",
    "bold_red": "1;31",
    "dim": "2",
    "bold": "1",
    "cyan": "36",
}
LEVEL_COLOURS = {
    BudgetLevel.OK: "green",
    BudgetLevel.WARNING: "yellow",
    BudgetLevel.CRITICAL: "red",
    BudgetLevel.EXCEEDED: "bold_red",
}


def use_colour(stream: TextIO, no_color_flag: bool = False) -> bool:
    """Colour only on a terminal, and never with --no-color or NO_COLOR set (to anything)."""
    if no_color_flag or "NO_COLOR" in os.environ:
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


class Palette:
    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def paint(self, text: str, colour: str | None) -> str:
        if not self.enabled or colour is None:
            return text
        return f"\x1b[{_CODES[colour]}m{text}\x1b[0m"

    def level(self, text: str, level: BudgetLevel) -> str:
        return self.paint(text, LEVEL_COLOURS[level])
