"""Every test, and every process a test starts, keeps away from the user's real ledger:
the default ledger lives under a throw-away XDG_DATA_HOME for the whole session."""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest

pytest_plugins = ("tests.pg_server",)  # pg_schema: a schema of its own on the real PostgreSQL

_DATA_HOME = tempfile.mkdtemp(prefix="orchestrator-tests-xdg-")
os.environ["XDG_DATA_HOME"] = _DATA_HOME  # inherited by every subprocess
os.environ.pop("ORCHESTRATOR_LEDGER", None)


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(_DATA_HOME, ignore_errors=True)
