"""A file the user names for output (``--summary-json``): checked before anything is
launched, then written atomically at the end without harming what was there.

What is written is always a regular file, replaced whole (a temporary file in the same
folder, then a rename), so a reader never sees half of it. A symlink is followed and its
target replaced, the link kept. A FIFO, a device, a socket or a folder is refused: a rename
would put a new file in its place (as root, ``/dev/full`` would become a JSON file). The
file's mode (and, where allowed, owner) is kept; a new file gets ``0o666`` less the umask, as
a shell's ``>`` would. The run's own input files (its config file, ...) are refused too.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from collections.abc import Sequence
from pathlib import Path

_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def output_problem(path: str, inputs: Sequence[tuple[str, str]] = ()) -> str | None:
    """Why ``path`` (as the user typed it: ``Path`` drops a trailing slash) cannot be written
    as asked, or None. ``inputs`` are (what, path) pairs of files the run reads, which the
    output must not replace."""
    if not path:
        return "the path is empty"
    if stream := _own_stream(path):
        return f"{path} is the orchestrator's own {stream}; the log would be overwritten"
    if path.endswith(os.sep):
        return f"{path} names a folder, not a file"
    target = Path(os.path.realpath(path))  # through every symlink
    via = f"{path} (a symlink to {target})" if os.path.islink(path) else path
    try:
        info: os.stat_result | None = os.stat(target)
    except FileNotFoundError:
        info = None
    except OSError as exc:  # a symlink loop, a path through a file, a folder we may not enter
        return f"{path}: {exc.strerror}"
    folder = target.parent
    if info is not None:
        kind = next((name for test, name in _KINDS if test(info.st_mode)), None)
        if kind is not None or not stat.S_ISREG(info.st_mode):
            return f"{via} is {kind or 'not a regular file'}; only a regular file is written"
        if not os.access(target, os.W_OK):
            return f"{via} is not writable"
    elif not folder.is_dir():
        return f"folder {folder} does not exist"
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"folder {folder} is not writable (the file is written there, then renamed)"
    for what, other in inputs:
        if _same_file(target, other):
            return f"{via} is {what}; it would be overwritten"
    return None


def _own_stream(path: str) -> str | None:
    """``"standard output"`` when ``path`` is this process's stdout (``/dev/stdout``, or the
    file it is redirected to), likewise stderr; else None."""
    try:
        info = os.stat(path)  # through /proc's links too, to the pipe or file itself
    except OSError:
        return None
    for fd, name in ((1, "standard output"), (2, "standard error")):
        try:
            mine = os.fstat(fd)
        except OSError:
            continue
        if (info.st_dev, info.st_ino) == (mine.st_dev, mine.st_ino):
            return name
    return None


def replace_file(path: str, text: str, inputs: Sequence[tuple[str, str]] = ()) -> None:
    """Write ``text`` to ``path`` as ``output_problem`` describes. The checks run again, as
    the file may have changed during the run. Raises ``OSError`` with a message that says
    what went wrong."""
    if problem := output_problem(path, inputs):
        raise OSError(errno.EINVAL, problem)
    target = Path(os.path.realpath(path))
    try:
        old: os.stat_result | None = os.stat(target)
    except FileNotFoundError:
        old = None
    fd, temporary = _create_next_to(target)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            if old is not None:
                if (old.st_uid, old.st_gid) != (os.geteuid(), os.getegid()):
                    with contextlib.suppress(PermissionError):  # only root may give files away
                        os.fchown(out.fileno(), old.st_uid, old.st_gid)
                os.fchmod(out.fileno(), stat.S_IMODE(old.st_mode))  # after chown, which clears suid
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _create_next_to(target: Path) -> tuple[int, Path]:
    """A new empty file in ``target``'s folder. Mode 0o666 and the kernel applies the umask:
    what a new file would get (``mkstemp`` would give 0o600)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
    while True:
        temporary = target.with_name(f".{target.name}.{secrets.token_hex(6)}.tmp")
        with contextlib.suppress(FileExistsError):
            return os.open(temporary, flags, 0o666), temporary


def _same_file(a: Path, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except (OSError, ValueError):  # either is missing: they are not one file
        return False
