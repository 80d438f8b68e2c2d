"""Text measured in terminal cells, not characters: a CJK character or most emoji take two
cells, a combining accent none. Columns of names line up only when padded and cut by cells.

rich's measure, so the headless table and the monitor (drawn by Textual, on rich) agree.
"""

from __future__ import annotations

from rich.cells import cell_len, set_cell_size

ELLIPSIS = "…"


def width(text: str) -> int:
    """How many terminal cells ``text`` takes."""
    return cell_len(text)


def pad(text: str, cells: int, right: bool = False) -> str:
    """``text`` padded with spaces to ``cells`` cells (on the left when ``right``-aligned);
    never cut."""
    gap = " " * max(cells - cell_len(text), 0)
    return gap + text if right else text + gap


def fit(text: str, cells: int) -> str:
    """``text`` if it fits in ``cells`` cells, else cut to fit, ending in an ellipsis.

    A wide character that would be split in half is left out (rich pads its place with a
    space), so the result never takes more than ``cells`` cells.
    """
    if cell_len(text) <= cells:
        return text
    if cells < 1:
        return ""
    return set_cell_size(text, cells - 1).rstrip() + ELLIPSIS
