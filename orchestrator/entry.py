"""The ``orchestrator`` command's entry point, kept free of imports.

The command's modules take a moment to import; a Ctrl-C in that moment must be the same one
line and exit 130 as any other, not a traceback. So they are imported in here, under the
handler.
"""

from __future__ import annotations

import sys
from typing import NoReturn


def entry_point() -> NoReturn:
    try:
        from orchestrator.cli import entry_point as run_command
    except KeyboardInterrupt:
        print("orchestrator: interrupted", file=sys.stderr)
        sys.exit(130)
    run_command()
