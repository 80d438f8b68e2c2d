"""budget_core is a pure library: importing and using it loads no UI, asyncio or subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = ("textual", "rich", "asyncio", "subprocess")

_PROBE = """
import json, sys
before = set(sys.modules)
import budget_core
tracker = budget_core.UsageTracker()
tracker.feed_line(b'{"type":"assistant","message":{"id":"m","model":"claude-opus-4-8",'
                  b'"usage":{"input_tokens":3,"output_tokens":1}}}')
tracker.feed_line('{"type":"result","subtype":"success","is_error":false,"total_cost_usd":0.1}')
manager = budget_core.BudgetManager()
manager.set_budget("/a", tokens=10)
manager.charge("/a", "i", tracker.usage, tracker.cost_usd)
budget_core.render_bar(1, 2)
budget_core.parse_budget_spec("/a=5k")
print(json.dumps({"before": sorted(before), "after": sorted(sys.modules)}))
"""


def _loaded_modules() -> tuple[set[str], set[str]]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    done = subprocess.run(
        [sys.executable, "-c", _PROBE],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    return set(report["before"]), set(report["after"])


def _forbidden(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if m.split(".")[0] in FORBIDDEN)


def test_importing_and_using_budget_core_loads_no_ui_asyncio_or_subprocess() -> None:
    before, after = _loaded_modules()
    assert "budget_core.tracker" in after - before  # the probe really imported the library
    assert _forbidden(after) == []
