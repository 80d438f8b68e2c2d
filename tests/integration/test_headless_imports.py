"""A headless run never imports textual: the TUI is imported only in the --tui branch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

SCRIPT = """
import json, sys
from orchestrator.cli import main
code = main(sys.argv[1:])
ui = sorted(m for m in sys.modules if m.split(".")[0] in ("textual", "tui"))
print("MODULES " + json.dumps(ui))
sys.exit(code)
"""


def test_a_headless_run_loads_no_textual(tmp_path: Path) -> None:
    config = tmp_path / "run.json"
    config.write_text(
        json.dumps(
            {"instances": [{"name": "a", "command": "/a", "claude_args": ["--sim-calls=1"]}]}
        )
    )
    fake = tmp_path / "claude"
    fake.write_text(
        f'#!/bin/sh\nexec "{sys.executable}" "{REPO / "orchestrator" / "simulator.py"}" "$@"\n'
    )
    fake.chmod(0o755)
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, "--config", str(config), "--claude-bin", str(fake), "--tui"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    # --tui with stdout not a terminal: one line saying so, then headless.
    assert "--tui needs a terminal" in done.stdout
    modules = json.loads(done.stdout.split("MODULES ", 1)[1])
    assert modules == []
