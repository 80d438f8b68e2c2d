"""The stream-json transcripts the tests read: the project's own (recorded from the real CLI
against the tests' fake API, always there) and the shared set (the repo's sibling ../shared,
public transcripts), an extra check where it exists. No test skips for want of ../shared."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OWN = ROOT / "tests" / "fixtures" / "stream-json"
SHARED = ROOT.parent / "shared" / "fixtures" / "stream-json"


def folders() -> list[Path]:
    """The fixture folders present: ours, then the shared set if it is beside the repo."""
    return [OWN, *([SHARED] if (SHARED / "MANIFEST.json").is_file() else [])]


def label(folder: Path) -> str:
    return "own" if folder == OWN else "shared"


def manifest(folder: Path) -> dict[str, dict[str, Any]]:
    data = json.loads((folder / "MANIFEST.json").read_text(encoding="utf-8"))
    fixtures: dict[str, dict[str, Any]] = data["fixtures"]
    return fixtures


def files() -> list[Path]:
    """Every transcript listed in a present folder's manifest."""
    return [folder / name for folder in folders() for name in sorted(manifest(folder))]
