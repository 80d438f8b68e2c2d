"""Fixtures for end-to-end tests with the real Claude Code CLI and a fake Messages API."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from claude_cli import CLI_VERSION, TESTED_VERSIONS, CliEnvFactory, ensure_claude_clis
from claude_cli import cli_env as make_cli_env
from fake_api import FakeAnthropicAPI


@pytest.fixture(scope="session")
def claude_installs() -> dict[str, tuple[Path | None, str]]:
    """Every tested CLI version, installed on first use (in parallel): version -> (path of
    `claude` or None, reason)."""
    return ensure_claude_clis(TESTED_VERSIONS)


def _available(installs: dict[str, tuple[Path | None, str]], version: str) -> Path:
    """The `claude` of a version, else skip; CI sets ORCHESTRATOR_E2E_REQUIRED=1, and there a
    CLI that cannot be installed is a failure: the end-to-end tests never pass by skipping."""
    path, reason = installs[version]
    if path is None:
        if os.environ.get("ORCHESTRATOR_E2E_REQUIRED") == "1":
            pytest.fail(f"Claude Code CLI {version} unavailable (and required): {reason}")
        pytest.skip(f"Claude Code CLI {version} unavailable: {reason}")
    return path


@pytest.fixture(scope="session")
def claude_bin(claude_installs: dict[str, tuple[Path | None, str]]) -> Path:
    """The pinned real `claude` executable."""
    return _available(claude_installs, CLI_VERSION)


@pytest.fixture(params=TESTED_VERSIONS)
def versioned_claude(
    request: pytest.FixtureRequest, claude_installs: dict[str, tuple[Path | None, str]]
) -> tuple[str, Path]:
    """(version, `claude` executable), for each tested version in turn."""
    version: str = request.param
    return version, _available(claude_installs, version)


@pytest.fixture
def fake_api() -> Iterator[FakeAnthropicAPI]:
    """A started fake Messages API; on failure, its request log helps (see request_summaries)."""
    with FakeAnthropicAPI() as fake:
        yield fake


@pytest.fixture
def cli_workdir(tmp_path: Path) -> Path:
    """An empty working directory for CLI runs."""
    workdir = tmp_path / "work"
    workdir.mkdir()
    return workdir


@pytest.fixture
def cli_env(tmp_path: Path) -> CliEnvFactory:
    """Factory: cli_env(base_url, max_retries=1, timeout_ms=3000) -> environment dict.

    Each call gets its own scratch HOME and TMPDIR under tmp_path, so parallel CLI processes
    share nothing.
    """
    counter = itertools.count(1)

    def factory(base_url: str, **options: int) -> dict[str, str]:
        scratch = tmp_path / f"cli-{next(counter)}"
        home, tmp = scratch / "home", scratch / "tmp"
        home.mkdir(parents=True)
        tmp.mkdir()
        return make_cli_env(base_url, home, tmp, **options)

    return factory
