"""Modal screens: the quit confirmation and the help."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Label

from tui.format import ESTIMATE_MARK, LIVE_MARK


class ConfirmQuit(ModalScreen[bool]):
    """Asked when quitting would stop running instances; dismisses with True to quit."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "answer(True)", "Stop all and quit", id="confirm-quit.yes"),
        Binding("n,escape", "answer(False)", "Keep running", id="confirm-quit.no"),
    ]

    def __init__(self, running: int) -> None:
        super().__init__()
        self._still_running = running

    def compose(self) -> ComposeResult:
        plural = "instance is" if self._still_running == 1 else "instances are"
        with Vertical(id="confirm-dialog", classes="dialog"):
            yield Label("Quit?", classes="dialog-title")
            yield Label(
                f"{self._still_running} {plural} still running. Quitting stops them all; "
                "tokens they already used stay counted.",
                classes="dialog-body",
                markup=False,
            )
            with Horizontal(classes="dialog-buttons"):
                yield Button("Stop all and quit (y)", variant="error", id="yes")
                yield Button("Keep running (n)", id="no")

    def on_mount(self) -> None:
        # Enter on the focused button confirms, as the design asks.
        self.query_one("#yes", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.dismiss(event.button.id == "yes")

    def action_answer(self, quit_: bool) -> None:
        self.dismiss(quit_)


HelpEntry = tuple[str, str]  # (key as shown, what it does)

LEGEND: tuple[HelpEntry, ...] = (
    ("WARN", "over-budget instances are logged and keep running"),
    ("BLOCK", "over-budget instances are stopped; new ones are not started"),
    (LIVE_MARK, "live count: the CLI's result line has not confirmed it yet"),
    (ESTIMATE_MARK, "cost estimated from token prices (the CLI reported none)"),
    ("est.", "some of the total cost is such an estimate"),
)


class HelpScreen(ModalScreen[None]):
    """The monitor's keys, taken from the app's bindings, and what its marks mean."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,question_mark,q", "close", "Close help", id="help.close"),
    ]

    def __init__(self, keys: Sequence[HelpEntry]) -> None:
        super().__init__()
        self._keys = tuple(keys)

    def compose(self) -> ComposeResult:
        # Scrolls (arrow keys, it has the focus) where the terminal is too short for it.
        with VerticalScroll(id="help-dialog", classes="dialog"):
            yield Label("Keys", classes="dialog-title")
            for key, text in self._keys:
                yield self._entry(key, text)
            yield Label("Marks", classes="dialog-title")
            for key, text in LEGEND:
                yield self._entry(key, text)
            yield Label("escape or ? closes this help", classes="dialog-hint")

    @staticmethod
    def _entry(key: str, text: str) -> Horizontal:
        return Horizontal(
            Label(key, classes="help-key", markup=False),
            Label(text, classes="help-text", markup=False),
            classes="help-entry",
        )

    def action_close(self) -> None:
        self.dismiss(None)
