"""The instances table: one row per instance, updated in place so the cursor stays put."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from rich.style import Style
from rich.text import Text
from textual import events
from textual.reactive import reactive
from textual.widgets import DataTable

from orchestrator.cells import fit, pad
from orchestrator.state import InstanceStatus, InstanceView, RunSnapshot
from tui.format import clock_text, cost_cell, tokens_cell


@dataclass(frozen=True, slots=True)
class Column:
    key: str
    label: str
    width: int
    numeric: bool = False
    drop_order: int = 0  # left out first when the table is narrow: 2, then 1; 0 always shown


COLUMNS = (
    Column("name", "Instance", 14),
    Column("key", "Budget", 10, drop_order=1),
    Column("status", "Status", 17),
    Column("in", "In", 6, numeric=True, drop_order=2),
    Column("out", "Out", 6, numeric=True, drop_order=2),
    Column("cache_w", "Cache w", 7, numeric=True, drop_order=2),
    Column("cache_r", "Cache r", 7, numeric=True, drop_order=2),
    Column("total", "Total", 7, numeric=True),
    Column("cost", "Cost", 9, numeric=True),
    Column("time", "Time", 5, numeric=True, drop_order=1),
)
NUMBERS = tuple(c.key for c in COLUMNS if c.numeric)
CELL_PADDING = 1
FRAME = 4  # the border and a vertical scrollbar


def columns_for(width: int) -> tuple[Column, ...]:
    """The most columns that fit in ``width`` cells without scrolling sideways: the token
    breakdown goes first, then the budget key and the time; name, status, total and cost
    always stay (the narrowest set, 55 cells and the frame, fits a 60-column terminal)."""
    for dropped in (3, 2, 1):
        columns = tuple(c for c in COLUMNS if c.drop_order < dropped)
        if sum(c.width + 2 * CELL_PADDING for c in columns) + FRAME <= width:
            return columns
    return columns


NOT_STARTED = frozenset({InstanceStatus.PENDING, InstanceStatus.BLOCKED})


def instance_cells(view: InstanceView) -> dict[str, str]:
    """The text of every column for one instance; ``-`` where nothing ran yet."""
    usage = view.usage
    cells = {"name": view.name, "key": view.budget_key, "status": view.status.value}
    if not usage and (view.status in NOT_STARTED or view.elapsed_s == 0):
        return cells | dict.fromkeys(NUMBERS, "-")
    return cells | {
        "in": tokens_cell(usage.input, view),
        "out": tokens_cell(usage.output, view),
        "cache_w": tokens_cell(usage.cache_creation, view),
        "cache_r": tokens_cell(usage.cache_read, view),
        "total": tokens_cell(usage.total, view),
        "cost": cost_cell(view),
        "time": clock_text(view.elapsed_s),
    }


class InstanceTable(DataTable[Text]):
    """Status cells take their colour from ``instances--<status>`` component classes."""

    COMPONENT_CLASSES: ClassVar[set[str]] = DataTable.COMPONENT_CLASSES | {
        f"instances--{status.value}" for status in InstanceStatus
    }

    run_snapshot: reactive[RunSnapshot | None] = reactive[RunSnapshot | None](None)
    columns_shown: reactive[tuple[Column, ...]] = reactive(COLUMNS, init=False)

    def __init__(self) -> None:
        super().__init__(
            id="instances", cursor_type="row", zebra_stripes=False, cell_padding=CELL_PADDING
        )
        self.border_title = "Instances"
        self._shown: dict[str, dict[str, str]] = {}
        self._columns: tuple[Column, ...] = ()

    def on_mount(self) -> None:
        self._set_columns()
        self._show(self.run_snapshot)

    def on_resize(self, event: events.Resize) -> None:
        self.columns_shown = columns_for(event.size.width)

    def watch_columns_shown(self) -> None:
        cursor = self.cursor_row
        self._set_columns()
        self._show(self.run_snapshot)
        self.move_cursor(row=cursor)

    def watch_run_snapshot(self, snapshot: RunSnapshot | None) -> None:
        self._show(snapshot)

    def selected_instance(self) -> str | None:
        """The name of the instance under the cursor, if any."""
        if not self.is_valid_coordinate(self.cursor_coordinate):
            return None
        row_key = self.coordinate_to_cell_key(self.cursor_coordinate).row_key
        return row_key.value

    def _set_columns(self) -> None:
        columns = self.columns_shown
        if columns == self._columns:
            return
        self.clear(columns=True)
        self._shown.clear()
        self._columns = columns
        for column in columns:
            self.add_column(_aligned(column.label, column), width=column.width, key=column.key)

    def _show(self, snapshot: RunSnapshot | None) -> None:
        if snapshot is None or not self._columns:
            return
        names = [view.name for view in snapshot.instances]
        for gone in set(self._shown) - set(names):
            self.remove_row(gone)
            del self._shown[gone]
        for view in snapshot.instances:
            cells = instance_cells(view)
            shown = self._shown.get(view.name)
            if shown is None:
                self.add_row(*(self._cell(c, cells, view) for c in self._columns), key=view.name)
            else:
                for column in self._columns:
                    if shown[column.key] != cells[column.key]:
                        self.update_cell(view.name, column.key, self._cell(column, cells, view))
            self._shown[view.name] = cells

    def _cell(self, column: Column, cells: dict[str, str], view: InstanceView) -> Text:
        text = _aligned(cells[column.key], column)
        if column.key == "status":
            # Colour only: a background of its own would punch a hole in the cursor row.
            style = self.get_component_rich_style(f"instances--{view.status.value}")
            return Text(text, Style(color=style.color, bold=style.bold))
        return Text(text, no_wrap=True)


def _aligned(text: str, column: Column) -> str:
    # DataTable cells do not honour Text.justify, so numbers are padded to the right edge;
    # long names end in an ellipsis rather than being cut silently. Both by display width:
    # a CJK or emoji name takes two cells a character.
    text = fit(text, column.width)
    return pad(text, column.width, right=True) if column.numeric else text
