"""The instances' working directory, checked before anything starts.

Standard library only: the tests run this file as another user, from a copy in a folder that
user can read (root may enter any folder, so a mode-000 one is refused only for others).
"""

from __future__ import annotations

import os
import stat


def workspace_problem(path: str) -> str | None:
    """Why instances cannot run in ``path``, or None. Without this check a spawn into a
    folder we may not enter fails as "cannot start claude: Permission denied"."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return "does not exist"
    except (OSError, ValueError) as exc:
        return f"cannot be reached: {getattr(exc, 'strerror', None) or exc}"
    if not stat.S_ISDIR(info.st_mode):
        return "is not a directory"
    if not os.access(path, os.R_OK | os.X_OK):
        return "cannot be entered and read: permission denied"
    return None
