"""The project's stream-json fixtures (tests/fixtures) are what the real CLI prints: a case
recorded again with the pinned CLI gives the stored manifest's figures (all of them:
`python tests/fixtures/record.py --check`)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest
from claude_cli import CLI_VERSION

pytestmark = pytest.mark.e2e

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def recorder() -> ModuleType:
    spec = importlib.util.spec_from_file_location("record_fixtures", FIXTURES / "record.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_a_recorded_case_reproduces_the_stored_figures(claude_bin: Path, tmp_path: Path) -> None:
    record = recorder()
    [chosen] = [c for c in record.CASES if c.name == "tool"]
    stored = json.loads((FIXTURES / "stream-json" / "MANIFEST.json").read_text())["fixtures"]

    name, entry = record.record(CLI_VERSION, chosen, claude_bin, tmp_path)

    assert entry == stored[name]
    assert "/tmp/cli-fixture/work" in (tmp_path / name).read_text()  # sanitized as stored
