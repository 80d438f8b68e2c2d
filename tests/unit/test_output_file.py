"""The ``--summary-json`` file: what it may replace, how, and what it must leave alone.

Devices are made with mknod in the test's own folder (as root); the real /dev/null or
/dev/full is never handed to the code that writes.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.output_file import output_problem, replace_file

ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not ROOT, reason="mknod and chown need root")


@pytest.fixture
def umask() -> Iterator[None]:
    old = os.umask(0o027)
    yield
    os.umask(old)


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


# -- what is written, and how ------------------------------------------------------------------


def test_a_new_file_gets_the_umasks_mode_not_0600(tmp_path: Path, umask: None) -> None:
    path = tmp_path / "s.json"
    replace_file(str(path), "{}\n")
    assert path.read_text() == "{}\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~0o027


@pytest.mark.parametrize("mode", [0o600, 0o640, 0o664, 0o444])
def test_an_existing_file_keeps_its_mode(tmp_path: Path, umask: None, mode: int) -> None:
    path = tmp_path / "s.json"
    path.write_text("old")
    path.chmod(mode)
    if mode == 0o444 and not ROOT:
        assert output_problem(str(path)) == f"{path} is not writable"
        return
    replace_file(str(path), "new")
    assert path.read_text() == "new"
    assert stat.S_IMODE(path.stat().st_mode) == mode
    assert leftovers(tmp_path) == []


@needs_root
def test_root_keeps_an_existing_files_owner(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    path.write_text("old")
    os.chown(path, 65534, 65534)
    replace_file(str(path), "new")
    info = path.stat()
    assert (info.st_uid, info.st_gid) == (65534, 65534)
    assert path.read_text() == "new"


def test_a_symlink_is_followed_its_target_replaced_and_the_link_kept(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    target = elsewhere / "real.json"
    target.write_text("old")
    target.chmod(0o640)
    link = tmp_path / "s.json"
    link.symlink_to(target)

    assert output_problem(str(link)) is None
    replace_file(str(link), "new")

    assert link.is_symlink() and os.readlink(link) == str(target)
    assert target.read_text() == "new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert leftovers(tmp_path) == [] and leftovers(elsewhere) == []


def test_a_dangling_symlink_creates_its_target(tmp_path: Path) -> None:
    link = tmp_path / "s.json"
    link.symlink_to(tmp_path / "made.json")
    replace_file(str(link), "new")
    assert link.is_symlink() and (tmp_path / "made.json").read_text() == "new"


# -- what is refused ---------------------------------------------------------------------------


def test_a_fifo_is_refused_and_left_a_fifo(tmp_path: Path) -> None:
    fifo = tmp_path / "s.json"
    os.mkfifo(fifo)
    assert output_problem(str(fifo)) == (
        f"{fifo} is a FIFO (named pipe); only a regular file is written"
    )
    with pytest.raises(OSError, match="FIFO"):
        replace_file(str(fifo), "new")
    assert stat.S_ISFIFO(fifo.lstat().st_mode)
    assert leftovers(tmp_path) == []


@needs_root
def test_a_device_is_refused_and_left_a_device(tmp_path: Path) -> None:
    device = tmp_path / "full"
    os.mknod(device, stat.S_IFCHR | 0o666, os.makedev(1, 7))  # what /dev/full is
    link = tmp_path / "s.json"
    link.symlink_to(device)
    assert "is a character device" in (output_problem(str(device)) or "")
    assert f"{link} (a symlink to {device}) is a character device" in (
        output_problem(str(link)) or ""
    )
    for path in (device, link):
        with pytest.raises(OSError, match="character device"):
            replace_file(str(path), "new")
    assert stat.S_ISCHR(device.lstat().st_mode)


def test_a_folder_and_a_trailing_slash_are_refused(tmp_path: Path) -> None:
    assert output_problem(str(tmp_path)) == (
        f"{tmp_path} is a directory; only a regular file is written"
    )
    assert output_problem(f"{tmp_path}/new/") == f"{tmp_path}/new/ names a folder, not a file"
    assert (
        output_problem(str(tmp_path / "no" / "s.json"))
        == f"folder {tmp_path / 'no'} does not exist"
    )


def test_a_symlink_loop_is_refused(tmp_path: Path) -> None:
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    assert "symbolic links" in (output_problem(str(tmp_path / "a")) or "")


def test_an_input_of_the_run_is_refused_by_any_name(tmp_path: Path) -> None:
    config = tmp_path / "c.json"
    config.write_text("{}")
    (tmp_path / "link.json").symlink_to(config)
    os.link(config, tmp_path / "hard.json")
    inputs = [("the config file", str(config))]
    for name in ("c.json", "link.json", "hard.json"):
        problem = output_problem(str(tmp_path / name), inputs)
        assert problem is not None and problem.endswith(
            "is the config file; it would be overwritten"
        ), problem
        with pytest.raises(OSError):
            replace_file(str(tmp_path / name), "new", inputs)
    assert config.read_text() == "{}"
    assert output_problem(str(tmp_path / "other.json"), inputs) is None


# -- the file changing during the run ----------------------------------------------------------


def test_a_file_that_became_a_fifo_during_the_run_is_not_replaced(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    path.write_text("old")
    assert output_problem(str(path)) is None  # before the run
    path.unlink()
    os.mkfifo(path)
    with pytest.raises(OSError, match="FIFO"):
        replace_file(str(path), "new")
    assert stat.S_ISFIFO(path.lstat().st_mode)


def test_a_folder_removed_during_the_run_is_an_oserror(tmp_path: Path) -> None:
    folder = tmp_path / "out"
    folder.mkdir()
    assert output_problem(str(folder / "s.json")) is None
    folder.rmdir()
    with pytest.raises(OSError, match="does not exist"):
        replace_file(str(folder / "s.json"), "new")


def test_a_symlink_repointed_during_the_run_writes_its_new_target(tmp_path: Path) -> None:
    first, second = tmp_path / "first.json", tmp_path / "second.json"
    first.write_text("1")
    second.write_text("2")
    link = tmp_path / "s.json"
    link.symlink_to(first)
    assert output_problem(str(link)) is None
    link.unlink()
    link.symlink_to(second)
    replace_file(str(link), "new")
    assert (first.read_text(), second.read_text()) == ("1", "new")
