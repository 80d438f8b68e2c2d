"""Fixtures for the integration tests (the harness itself is in ``harness.py``)."""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import FakeClaude, MakeFakeClaude, Runner, process_exists


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: takes more than a few seconds (the bundled demo)")


@pytest.fixture
def make_fake_claude(tmp_path: Path) -> Iterator[MakeFakeClaude]:
    """Makes fake ``claude`` executables; whatever the test asserts, nothing they started
    outlives it."""
    made: list[FakeClaude] = []
    counter = itertools.count()

    def make(**options: object) -> FakeClaude:
        claude = FakeClaude(tmp_path / f"fake-{next(counter)}", **options)  # type: ignore[arg-type]
        made.append(claude)
        return claude

    yield make
    for claude in made:
        for launch in claude.launches():
            if process_exists(launch.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(launch.pid, signal.SIGKILL)


@pytest.fixture
def fake_claude(make_fake_claude: MakeFakeClaude) -> FakeClaude:
    return make_fake_claude()


@pytest.fixture
def runner(tmp_path: Path, fake_claude: FakeClaude) -> Runner:
    workdir = tmp_path / "work"
    workdir.mkdir()
    return Runner(workdir, fake_claude)
